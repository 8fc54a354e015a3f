import FerryControl
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One connection to ferryd's control socket: a request line out, a response line back.
struct ControlClient {
    let path: String
    /// Seconds to wait for ferryd's answer; nil: as long as it takes.
    var timeout: Int? = nil

    func exchange(_ request: ControlRequest) throws -> ControlResponse {
        let descriptor = try connect()
        defer { close(descriptor) }
        if let timeout {
            var limit = timeval(tv_sec: timeout, tv_usec: 0)
            for option in [SO_RCVTIMEO, SO_SNDTIMEO] {
                _ = setsockopt(descriptor, SOL_SOCKET, option, &limit, socklen_t(MemoryLayout<timeval>.size))
            }
        }
        let line = try ControlCodec.line(request)
        try line.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
                guard written > 0 else {
                    throw CommandFailure("cannot send to ferryd: \(String(cString: strerror(errno)))")
                }
                offset += written
            }
        }
        var lines = ControlLineBuffer()
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            if let answer = try lines.nextLine() {
                return try ControlCodec.decode(ControlResponse.self, from: answer)
            }
            let count = read(descriptor, &chunk, chunk.count)
            if count < 0, errno == EAGAIN || errno == EWOULDBLOCK, let timeout {
                throw CommandFailure("ferryd did not answer within \(timeout) s; see journalctl -u ferryd")
            }
            guard count > 0 else {
                throw CommandFailure("ferryd closed the control connection without answering; see journalctl -u ferryd")
            }
            lines.append(chunk[..<count])
        }
    }

    private func connect() throws -> Int32 {
        #if canImport(Glibc)
            let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #else
            let descriptor = socket(AF_UNIX, SOCK_STREAM, 0)
        #endif
        guard descriptor >= 0 else { throw CommandFailure("socket(AF_UNIX): \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            close(descriptor)
            throw CommandFailure("the socket path \(path) is too long for a Unix socket")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes + [0]) }
        let connected = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
        guard connected else {
            let error = errno
            close(descriptor)
            throw CommandFailure(Self.explain(error, path: path))
        }
        return descriptor
    }

    /// What a failed connect means for the operator.
    static func explain(_ error: Int32, path: String) -> String {
        switch error {
        case ENOENT:
            "\(path) does not exist: is ferryd running (systemctl status ferryd)? If its [control] socket is "
                + "elsewhere, pass --socket PATH"
        case EACCES, EPERM:
            "permission denied on \(path): the control socket is only for root (or ferryd's user); run sudo ferryctl"
        case ECONNREFUSED:
            "nothing listens on \(path): ferryd is not running (the socket file is stale); start it with "
                + "systemctl start ferryd"
        default:
            "cannot connect to \(path): \(String(cString: strerror(error)))"
        }
    }
}
