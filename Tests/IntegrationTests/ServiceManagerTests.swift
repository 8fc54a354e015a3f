import Foundation
import RawISCSI
import Testing

#if canImport(Glibc)
    import Glibc
#endif

extension AgainstFerryd {
    /// ferryd as a systemd service: the unit file, and the sd_notify sequence through start,
    /// reload and stop, seen by a listener on `$NOTIFY_SOCKET` as systemd would see it.
    @Suite struct ServiceManagerTests {
        static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()

        @Test func unitVerifiesAndItsExposureStaysBelowThree() async throws {
            let analyze = try ExternalTool.locate("systemd-analyze", package: "systemd")
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            // verify insists that ExecStart= exists: point the unit at the ferryd just built.
            let unit = try String(
                contentsOf: Self.packageRoot.appendingPathComponent("systemd/ferryd.service"), encoding: .utf8)
            let file = directory.appendingPathComponent("ferryd.service")
            try unit.replacingOccurrences(of: "/usr/local/bin/ferryd", with: try FerrydProcess.locateFerryd())
                .write(to: file, atomically: true, encoding: .utf8)

            let verify = try await ExternalTool.run(analyze, ["verify", "--man=no", file.path], timeout: .seconds(60))
            #expect(verify.status == 0, "systemd-analyze verify:\n\(verify.output)")
            #expect(verify.output.isEmpty, "systemd-analyze verify has complaints:\n\(verify.output)")

            let security = try await ExternalTool.run(
                analyze, ["security", "--offline=true", "--no-pager", file.path], timeout: .seconds(60))
            let line = security.output.split(separator: "\n").first { $0.contains("Overall exposure level") }
            let score = line.flatMap { $0.split(separator: ":").last?.split(separator: " ").first }
                .flatMap { Double($0) }
            let exposure = try #require(score, "no overall exposure level: \(security.output)")
            #expect(exposure < 3.0, "systemd-analyze security:\n\(security.output)")
        }

        @Test func notifiesReadyReloadingAndStoppingInOrder() async throws {
            let listener = try NotifyListener()
            try await ConfiguredFerryd.with(
                configuration: { port, directory in
                    ConfiguredFerryd.portal(port: port, directory: directory)
                        + ConfiguredFerryd.target("iqn.2026-11.dev.ferry:notify", directory: directory)
                },
                environment: ["NOTIFY_SOCKET": listener.path, "WATCHDOG_USEC": "1000000"]
            ) { ferryd in
                let ready = try listener.next { $0.contains("READY=1") }
                #expect(
                    ready.contains("STATUS=serving 0 session(s), 1 LUN(s) of 1 target(s) on 1 portal(s)"), "\(ready)")
                _ = try listener.next { $0 == "WATCHDOG=1" }

                // A session changes the status line.
                let client = try RawISCSIClient(port: ferryd.port)
                let login = try client.login(
                    initiatorName: "iqn.2026-11.dev.ferry.test:notify", targetName: "iqn.2026-11.dev.ferry:notify")
                #expect(login.response.loginStatus == (0, 0))
                let status = try listener.next { $0.hasPrefix("STATUS=serving 1 session(s)") }
                #expect(status.contains("1 LUN(s)"), "\(status)")

                ferryd.send(SIGHUP)
                let reloading = try listener.next { $0.contains("RELOADING=1") }
                #expect(reloading.contains("MONOTONIC_USEC="), "\(reloading)")
                _ = try listener.next { $0.contains("READY=1") }
                #expect(try client.ping().opcode == RawOpcode.nopIn)
            }
            _ = try listener.next { $0.contains("STOPPING=1") }

            let states = listener.received.filter { !$0.hasPrefix("WATCHDOG=1") && !$0.hasPrefix("STATUS=") }
                .map { $0.split(separator: "\n").first.map(String.init) ?? "" }
            #expect(states == ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"], "\(listener.received)")
        }

        static func temporaryDirectory() throws -> URL {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "ferry-unit-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            return directory
        }
    }
}

/// A datagram socket that stands in for systemd's notification socket and keeps every message.
final class NotifyListener {
    let path: String
    private let descriptor: Int32
    private(set) var received: [String] = []
    private var unread = 0

    init() throws {
        path =
            FileManager.default.temporaryDirectory.appendingPathComponent("notify-\(UUID().uuidString.prefix(8))").path
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        guard descriptor >= 0 else { throw IntegrationFailure("socket(AF_UNIX) failed: errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let bound = withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
        guard bound else { throw IntegrationFailure("cannot bind \(path): errno \(errno)") }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit {
        close(descriptor)
        unlink(path)
    }

    /// The next message (after the ones already returned) that `matches`, within `timeout`.
    func next(within timeout: Duration = .seconds(20), _ matches: (String) -> Bool) throws -> String {
        let deadline = ContinuousClock.now + timeout
        while true {
            while unread < received.count {
                let message = received[unread]
                unread += 1
                if matches(message) { return message }
            }
            guard ContinuousClock.now < deadline else {
                throw IntegrationFailure("no matching notification within \(timeout); received: \(received)")
            }
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = recv(descriptor, &buffer, buffer.count, 0)
            if count > 0 { received.append(String(decoding: buffer[..<count], as: UTF8.self)) }
        }
    }
}
