import Foundation
public import Logging
import NIOCore
import NIOPosix
public import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A Unix stream socket, mode 0600, that answers every line it receives with one line: the
/// transport of ferryctl's control protocol. The socket file is removed when the service stops.
public struct LineSocketServer: Service {
    public let path: String
    private let maximumLineLength: Int
    private let logger: Logger
    private let respond: @Sendable (String) async -> String

    /// - Parameter respond: the answer to one line (both without the newline).
    public init(
        path: String, maximumLineLength: Int, logger: Logger, respond: @escaping @Sendable (String) async -> String
    ) {
        self.path = path
        self.maximumLineLength = maximumLineLength
        self.logger = logger
        self.respond = respond
    }

    public func run() async throws {
        let maximumLineLength = self.maximumLineLength
        // The socket is created 0600 (not chmod-ed after the fact, when others could connect); see listeningSocket.
        let socket = try Self.listeningSocket(path: path, mode: 0o600)
        let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
        do {
            // The channel owns the descriptor from here on.
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(socket) { child in
                    child.eventLoop.makeCompletedFuture {
                        try child.pipeline.syncOperations.addHandler(
                            ByteToMessageHandler(LineFrameDecoder(maximumLineLength: maximumLineLength)))
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                    }
                }
        } catch {
            unlink(path)
            throw error
        }
        logger.info("control socket listening", metadata: ["path": "\(path)"])
        let respond = self.respond
        let logger = self.logger
        try await withGracefulShutdownHandler {
            try await server.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in connections {
                        group.addTask {
                            do {
                                try await connection.executeThenClose { lines, output in
                                    for try await line in lines {
                                        let answer = await respond(String(buffer: line))
                                        try await output.write(ByteBuffer(string: answer + "\n"))
                                    }
                                }
                            } catch {
                                logger.debug("control connection ended", metadata: ["error": "\(error)"])
                            }
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
        unlink(path)
    }

    /// A Unix stream socket listening at `path`, whose file is created with `mode` (less the umask), replacing a socket
    /// file left there; a file of another type at `path` is an error.
    ///
    /// The mode is the socket's before it is bound: on Linux, bind(2) gives the new file the mode of the socket's own
    /// inode less the umask (`unix_bind`: `S_IFSOCK | (SOCK_INODE(sock)->i_mode & ~current_umask())`), and fchmod(2) on
    /// the socket sets that inode's mode. So the file never exists with a wider mode. The alternatives are worse:
    /// chmod after bind leaves a moment in which the file is 0777 less the umask and anyone may connect; a umask set
    /// around bind is the whole process's, and changes the mode of every file another thread creates meanwhile.
    static func listeningSocket(path: String, mode: mode_t) throws -> CInt {
        let address = try SocketAddress(unixDomainSocketPath: path)
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw IOError(errnoCode: errno, reason: "socket(AF_UNIX)") }
        var bound = false
        do {
            guard fchmod(descriptor, mode) == 0 else {
                throw IOError(errnoCode: errno, reason: "fchmod on the socket before bind")
            }
            try removeSocketFile(at: path)
            let result = address.withSockAddr { bind(descriptor, $0, socklen_t($1)) }
            guard result == 0 else { throw IOError(errnoCode: errno, reason: "bind(\(path))") }
            bound = true
            guard listen(descriptor, 128) == 0 else { throw IOError(errnoCode: errno, reason: "listen(\(path))") }
            return descriptor
        } catch {
            close(descriptor)
            if bound { unlink(path) }
            throw error
        }
    }

    /// Removes the socket file at `path`, if there is one (a ferryd that did not stop left it); throws when `path`
    /// is a file of another type, which is not Ferry's to remove.
    private static func removeSocketFile(at path: String) throws {
        var status = stat()
        guard lstat(path, &status) == 0 else {
            if errno == ENOENT { return }
            throw IOError(errnoCode: errno, reason: "lstat(\(path))")
        }
        guard status.st_mode & S_IFMT == S_IFSOCK else {
            throw IOError(errnoCode: EEXIST, reason: "\(path) exists and is not a socket")
        }
        guard unlink(path) == 0 else { throw IOError(errnoCode: errno, reason: "unlink(\(path))") }
    }
}

/// Splits a byte stream at `\n` (dropping it), and fails on a line longer than the limit.
struct LineFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let maximumLineLength: Int

    struct LineTooLong: Error {}

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > maximumLineLength { throw LineTooLong() }
            return .needMoreData
        }
        let line = buffer.readSlice(length: newline - buffer.readerIndex)!
        buffer.moveReaderIndex(forwardBy: 1)
        context.fireChannelRead(wrapInboundOut(line))
        return .continue
    }
}
