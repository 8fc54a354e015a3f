@testable import FerryTarget
import FerrySync
import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The control socket gets its mode without a process-wide umask change (LineSocketServer.listeningSocket).
@Suite struct ControlSocketModeTests {
    static func temporaryDirectory() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-socket-\(UUID())").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
        return path
    }

    /// The process's umask, read without setting it (umask(2) can only be read by changing it).
    static func currentUmask() throws -> mode_t {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("Umask:") })
        return try #require(mode_t(line.dropFirst("Umask:".count).trimmingCharacters(in: .whitespaces), radix: 8))
    }

    @Test func theSocketFileHasItsModeFromTheStartAndListens() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/control.sock"
        let descriptor = try LineSocketServer.listeningSocket(path: path, mode: 0o600)
        defer { close(descriptor) }
        var status = stat()
        #expect(lstat(path, &status) == 0)
        #expect(status.st_mode & S_IFMT == S_IFSOCK)
        #expect(status.st_mode & 0o777 == 0o600 & ~(try Self.currentUmask()))
        // It listens: a client connects without anyone calling accept.
        let client = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(client) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { bytes in
            bytes.copyBytes(from: path.utf8.prefix(bytes.count - 1))
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(connected == 0, "connect: \(String(cString: strerror(errno)))")
    }

    @Test func aLeftoverSocketIsReplacedAndAnotherFileIsNot() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/control.sock"
        close(try LineSocketServer.listeningSocket(path: path, mode: 0o600))
        let again = try LineSocketServer.listeningSocket(path: path, mode: 0o600)
        close(again)
        let plain = directory + "/plain"
        #expect(FileManager.default.createFile(atPath: plain, contents: Data("keep".utf8)))
        #expect(throws: (any Error).self) { try LineSocketServer.listeningSocket(path: plain, mode: 0o600) }
        #expect(FileManager.default.contents(atPath: plain) == Data("keep".utf8), "a file that is not a socket stays")
    }

    /// Files that another thread creates while sockets are being bound get the process's umask: binding never
    /// changes it. With the former `umask(0o177)` around bind, files created meanwhile came out 0600.
    @Test func filesCreatedMeanwhileByAnotherThreadKeepTheProcessUmask() throws {
        let directory = try Self.temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let mask = try Self.currentUmask()
        let expected = 0o777 & ~mask
        let binding = Atomic<Bool>(true)
        let started = DispatchSemaphore(value: 0)
        let finished = DispatchSemaphore(value: 0)
        let wrongModes = Locked<[String]>([])
        let created = Atomic<Int>(0)
        let creator = Thread {
            started.signal()
            var index = 0
            // At least 1000 files, and files all the time the sockets are bound.
            while binding.load(ordering: .acquiring) || index < 1000 {
                let file = "\(directory)/file-\(index)"
                let descriptor = open(file, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o777)
                if descriptor >= 0 {
                    var status = stat()
                    fstat(descriptor, &status)
                    close(descriptor)
                    unlink(file)
                    if status.st_mode & 0o777 != expected {
                        wrongModes.withLock { $0.append(String(status.st_mode & 0o777, radix: 8)) }
                    }
                }
                index += 1
            }
            created.store(index, ordering: .releasing)
            finished.signal()
        }
        creator.start()
        #expect(started.wait(timeout: .now() + 10) == .success)
        for round in 0..<200 {
            let descriptor = try LineSocketServer.listeningSocket(path: "\(directory)/control-\(round).sock", mode: 0o600)
            close(descriptor)
        }
        binding.store(false, ordering: .releasing)
        #expect(finished.wait(timeout: .now() + 60) == .success, "the file-creating thread did not finish")
        #expect(created.load(ordering: .acquiring) >= 1000)
        #expect(wrongModes.withLock { $0 }.isEmpty, "files created while binding got modes \(wrongModes.withLock { $0 })")
        #expect(try Self.currentUmask() == mask)
    }
}
