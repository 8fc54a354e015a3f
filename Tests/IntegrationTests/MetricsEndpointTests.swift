import Foundation
import RawISCSI
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension AgainstFerryd {
    /// Issue 10, finding 7: the metrics endpoint closes connections that do not finish their request in time and
    /// refuses connections beyond its cap, and ferryd does not spin while its descriptors are exhausted.
    @Suite struct MetricsEndpointTests {
        static let target = "iqn.2026-11.dev.ferry:metrics"

        static func configuration(metricsPort: Int, limits: String = "") -> (Int, String) -> String {
            { port, directory in
                ConfiguredFerryd.portal(port: port, directory: directory)
                    + "[metrics]\naddress = \"127.0.0.1:\(metricsPort)\"\n"
                    + (limits.isEmpty ? "" : "[limits]\n\(limits)\n")
                    + ConfiguredFerryd.target(Self.target, directory: directory)
            }
        }

        /// With the defaults (metrics_request_timeout = 10, max_metrics_connections = 16): the 17th connection is
        /// closed at once, the 16 idle ones and a slow-loris one are closed 10 s after they connect, and then
        /// GET /metrics answers.
        @Test func idleConnectionsAreClosedAtTheDeadlineAndTheCapHolds() async throws {
            let metricsPort = try FerrydProcess.freePort()
            try await ConfiguredFerryd.with(configuration: Self.configuration(metricsPort: metricsPort)) { ferryd in
                // No request before the flood: ferryd counts a served connection until its channel has closed,
                // which can come after the client has read the response, and would make the loris the 17th.
                let clock = ContinuousClock()
                let connected = clock.now
                var idle = try (0..<15).map { _ in try RawISCSIClient.connectToLoopback(port: metricsPort) }
                defer { for descriptor in idle { close(descriptor) } }
                // The 16th sends half a header, then a byte every 250 ms: it never finishes.
                let loris = try RawISCSIClient.connectToLoopback(port: metricsPort)
                idle.append(loris)
                try Self.send(loris, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                let refused = try RawISCSIClient.connectToLoopback(port: metricsPort)
                defer { close(refused) }
                #expect(Self.closed(refused, within: .seconds(2)) != nil, "the 17th connection is closed at once")

                var lorisClosedAfter: Duration?
                while lorisClosedAfter == nil, clock.now - connected < .seconds(15) {
                    _ = try? Self.send(loris, "X")
                    if Self.closed(loris, within: .milliseconds(250)) != nil {
                        lorisClosedAfter = clock.now - connected
                    }
                }
                #expect(
                    lorisClosedAfter.map { $0 > .milliseconds(9_500) && $0 < .milliseconds(11_500) } == true,
                    "slow-loris closed after \(String(describing: lorisClosedAfter))")
                for descriptor in idle.dropLast() {
                    let closed = Self.closed(descriptor, within: .seconds(15) - (clock.now - connected))
                        .map { _ in clock.now - connected }
                    #expect(
                        closed.map { $0 > .milliseconds(9_500) && $0 < .milliseconds(11_500) } == true,
                        "idle connection closed after \(String(describing: closed))")
                }
                let metrics = try FerryctlTests.httpGet(port: metricsPort, path: "/metrics")
                #expect(metrics.hasPrefix("HTTP/1.1 200 OK"), "\(metrics)")
                #expect(metrics.contains("ferry_lun_reads_total{target=\"\(Self.target)\",lun=\"0\"} 0"), "\(metrics)")
                #expect(ferryd.isRunning)
            }
        }

        /// The operator's values: metrics_request_timeout = 1, max_metrics_connections = 2. A request header larger
        /// than 8 KiB is refused too.
        @Test func theLimitsAreTunableAndRequestsAreBounded() async throws {
            let metricsPort = try FerrydProcess.freePort()
            let limits = "metrics_request_timeout = 1\nmax_metrics_connections = 2"
            try await ConfiguredFerryd.with(
                configuration: Self.configuration(metricsPort: metricsPort, limits: limits)
            ) { ferryd in
                let clock = ContinuousClock()
                let connected = clock.now
                let idle = try (0..<2).map { _ in try RawISCSIClient.connectToLoopback(port: metricsPort) }
                defer { for descriptor in idle { close(descriptor) } }
                let refused = try RawISCSIClient.connectToLoopback(port: metricsPort)
                defer { close(refused) }
                #expect(Self.closed(refused, within: .milliseconds(900)) != nil, "the 3rd connection is closed at once")
                for descriptor in idle {
                    let closed = Self.closed(descriptor, within: .seconds(5)).map { _ in clock.now - connected }
                    #expect(
                        closed.map { $0 > .milliseconds(900) && $0 < .milliseconds(2_500) } == true,
                        "idle connection closed after \(String(describing: closed))")
                }

                let large = try RawISCSIClient.connectToLoopback(port: metricsPort)
                defer { close(large) }
                let start = clock.now
                try? Self.send(large, "GET /metrics HTTP/1.1\r\nX-Padding: " + String(repeating: "a", count: 9_000))
                let cutOff = Self.closed(large, within: .seconds(5)).map { _ in clock.now - start }
                #expect(cutOff.map { $0 < .seconds(1) } == true, "a 9 KB header cut off after \(String(describing: cutOff))")

                let head = try Self.request(port: metricsPort, "HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                #expect(head.hasPrefix("HTTP/1.1 200 OK") && !head.contains("ferry_"), "\(head)")
                let post = try Self.request(port: metricsPort, "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
                #expect(post.hasPrefix("HTTP/1.1 405"), "\(post)")
                #expect(try FerryctlTests.httpGet(port: metricsPort, path: "/other").hasPrefix("HTTP/1.1 404"))
                #expect(try FerryctlTests.httpGet(port: metricsPort, path: "/metrics").hasPrefix("HTTP/1.1 200 OK"))
                #expect(ferryd.isRunning)
            }
        }

        /// ferryd's descriptor limit is lowered (prlimit) to what it holds plus 8, and 40 iSCSI connections wait in
        /// the portal's backlog: accept(2) fails with EMFILE. ferryd must not retry it in a busy loop (it kept one core
        /// at 100 % before), and must accept again once descriptors are freed.
        @Test func exhaustedDescriptorsDoNotSpinTheAcceptLoop() async throws {
            try await ConfiguredFerryd.with(configuration: { port, directory in
                ConfiguredFerryd.portal(port: port, directory: directory)
                    + ConfiguredFerryd.target(Self.target, directory: directory)
            }) { ferryd in
                let pid = ferryd.processIdentifier
                let limit = try Self.descriptorCount(pid) + 8
                let prlimit = try await ExternalTool.run(
                    try ExternalTool.locate("prlimit", package: "util-linux"),
                    ["--pid", "\(pid)", "--nofile=\(limit):\(limit)"], timeout: .seconds(10))
                #expect(prlimit.status == 0, "\(prlimit.output)")
                let clients = try (0..<40).map { _ in try RawISCSIClient.connectToLoopback(port: ferryd.port) }
                defer { for descriptor in clients { close(descriptor) } }
                let clock = ContinuousClock()
                let deadline = clock.now + .seconds(10)
                while try Self.descriptorCount(pid) < limit, clock.now < deadline {
                    try await Task.sleep(for: .milliseconds(20))
                }
                #expect(try Self.descriptorCount(pid) >= limit, "ferryd holds all the descriptors it may")

                let start = (cpu: try Self.cpuSeconds(pid), wall: clock.now)
                try await Task.sleep(for: .seconds(2))
                let cpu = try Self.cpuSeconds(pid) - start.cpu
                let wall = Double((clock.now - start.wall) / .milliseconds(1)) / 1000
                #expect(cpu < 0.1 * wall, "ferryd used \(cpu) s of CPU in \(wall) s with its descriptors exhausted")

                for descriptor in clients { shutdown(descriptor, Int32(SHUT_RDWR)) }
                let client = try RawISCSIClient(port: ferryd.port)
                let login = try client.login(
                    initiatorName: "iqn.2026-11.dev.ferry.test:emfile", targetName: Self.target)
                #expect(login.succeeded, "a login succeeds once descriptors are free")
                #expect(ferryd.log.contains("cannot accept connections"), "\(ferryd.log)")
            }
        }

        static func descriptorCount(_ pid: Int32) throws -> Int {
            try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count
        }

        /// User and system CPU time of process `pid` (/proc/PID/stat fields 14 and 15), in seconds.
        static func cpuSeconds(_ pid: Int32) throws -> Double {
            let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
            // The command name, in parentheses, may hold spaces and parentheses: the fields follow the last ')'.
            guard let name = stat.lastIndex(of: ")") else { throw IntegrationFailure("no command name in \(stat)") }
            let fields = stat[stat.index(after: name)...].split(separator: " ")
            // After the command name: field 3 (state) is fields[0], so field N is fields[N - 3].
            guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else {
                throw IntegrationFailure("no utime and stime (fields 14 and 15) in /proc/\(pid)/stat: \(stat)")
            }
            return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }

        static func send(_ descriptor: Int32, _ text: String) throws {
            let bytes = Array(text.utf8)
            guard Glibc.send(descriptor, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else {
                throw IntegrationFailure("send failed: errno \(errno)")
            }
        }

        /// Sends `text` on a new connection and returns everything that comes back until the server closes.
        static func request(port: Int, _ text: String) throws -> String {
            let descriptor = try RawISCSIClient.connectToLoopback(port: port)
            defer { close(descriptor) }
            try send(descriptor, text)
            var response: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = recv(descriptor, &chunk, chunk.count, 0)
                guard count > 0 else { break }
                response += chunk[..<count]
            }
            return String(decoding: response, as: UTF8.self)
        }

        /// Waits until the peer closes `descriptor` (end of file or reset), discarding what it sends, for at most
        /// `limit`; how long that took, or nil.
        static func closed(_ descriptor: Int32, within limit: Duration) -> Duration? {
            let clock = ContinuousClock()
            let start = clock.now
            var chunk = [UInt8](repeating: 0, count: 4096)
            while clock.now - start < limit {
                let remaining = limit - (clock.now - start)
                var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
                guard poll(&entry, 1, Int32(remaining / .milliseconds(1)) + 1) > 0 else { continue }
                let count = recv(descriptor, &chunk, chunk.count, Int32(MSG_DONTWAIT))
                if count == 0 || (count < 0 && errno == ECONNRESET) { return clock.now - start }
            }
            return nil
        }
    }
}
