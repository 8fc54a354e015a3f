import Dispatch
import Foundation
import RawISCSI
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension AgainstFerryd {
    /// Sessions and logins used as weapons: discovery sessions that run commands or take every place, floods of
    /// logins that never finish, and an initiator that never reads what it asks for. A well-behaved initiator beside
    /// them still logs in and is served.
    @Suite struct HostileSessionTests {
        static let target = "iqn.2026-11.dev.ferry:hostile-session"
        static let initiator = "iqn.2026-11.dev.ferry.test:normal"
        static let attacker = "iqn.2026-11.dev.ferry.test:attacker"

        static func configuration(_ limits: String) -> (Int, String) -> String {
            { port, directory in
                ConfiguredFerryd.portal(port: port, directory: directory) + "[limits]\n\(limits)\n"
                    + ConfiguredFerryd.target(target, directory: directory)
            }
        }

        /// Waits until `condition` holds, at most `timeout`; whether it held.
        private static func eventually(within timeout: Duration = .seconds(10), _ condition: () -> Bool) async throws
            -> Bool
        {
            let deadline = ContinuousClock.now + timeout
            while !condition() {
                guard ContinuousClock.now < deadline else { return false }
                try await Task.sleep(for: .milliseconds(20))
            }
            return true
        }

        /// How many lines of ferryd's log were written for the connection of `client` and hold `text`.
        private static func lines(_ ferryd: ConfiguredFerryd, of client: RawISCSIClient, containing text: String) -> Int {
            let peer = "127.0.0.1:\(client.localPort) "
            return ferryd.log.split(separator: "\n").filter { $0.contains(peer) && $0.contains(text) }.count
        }

        /// Reads 4 KiB from LBA 0 and returns the status.
        private static func read(_ client: RawISCSIClient) throws -> UInt8? {
            let read = try client.sendCommand(RawISCSIClient.read10(lba: 0, blocks: 8), readLength: 4096)
            while let pdu = try client.receivePDU(within: .seconds(10)) {
                if pdu.initiatorTaskTag == read.initiatorTaskTag, let status = pdu.scsiStatus { return status }
            }
            return nil
        }

        // MARK: Sessions

        @Test func aDiscoverySessionGetsOnlyTextAndLogout() async throws {
            // The whole data buffer budget (16 MiB) is what the attacker's parked command asks for.
            try await ConfiguredFerryd.with(configuration: Self.configuration("max_data_buffer_mib = 16")) { ferryd in
                let discovery = try RawISCSIClient(port: ferryd.port)
                #expect(try discovery.login(initiatorName: Self.attacker, targetName: nil).succeeded)

                // A READ of 16 MiB with CmdSN = ExpCmdSN + 1: it would wait for its turn holding the budget.
                discovery.cmdSN &+= 1
                var command = discovery.header(opcode: RawOpcode.scsiCommand, flags: 0xc0, initiatorTaskTag: 7)
                RawISCSIClient.put(16 << 20, into: &command, at: 20)
                command.replaceSubrange(32..<42, with: RawISCSIClient.read10(lba: 0, blocks: 0x8000))
                discovery.cmdSN &-= 1
                try discovery.send(discovery.encode(header: command))
                // > RFC 7143 §4.3: in a Discovery session the target MUST ONLY accept Text Requests with the
                // > SendTargets key and a Logout Request with the reason "close the session". All other requests
                // > MUST be rejected.
                // > RFC 7143 §11.17.1: 0x04 Protocol Error.
                let reject = try discovery.expectPDU()
                #expect(reject.opcode == RawOpcode.reject, "opcode 0x\(String(reject.opcode, radix: 16))")
                #expect(reject.rejectReason == 0x04)
                #expect(Array(reject.data.prefix(48)) == command)

                // A normal session is not starved: its READ is served, not answered with TASK SET FULL.
                let normal = try RawISCSIClient(port: ferryd.port)
                #expect(try normal.login(initiatorName: Self.initiator, targetName: Self.target).succeeded)
                #expect(try Self.read(normal) == 0)

                // NOP-Out (a request, not the answer to a ping) and a task management function are rejected too.
                var nop = discovery.header(opcode: RawOpcode.nopOut, immediate: true, flags: 0x80, initiatorTaskTag: 8)
                RawISCSIClient.put(0xffff_ffff, into: &nop, at: 20)
                try discovery.send(discovery.encode(header: nop))
                let nopReject = try discovery.expectPDU()
                #expect(nopReject.opcode == RawOpcode.reject && nopReject.rejectReason == 0x04)
                try discovery.sendTaskManagement(.abortTaskSet)
                let functionReject = try discovery.expectPDU()
                #expect(functionReject.opcode == RawOpcode.reject && functionReject.rejectReason == 0x04)

                // What discovery is for still works, and the session's offence is logged once.
                #expect(try discovery.sendTargets().contains { $0.key == "TargetName" && $0.value == Self.target })
                #expect(Self.lines(ferryd, of: discovery, containing: "not allowed in a discovery session") == 1)
                #expect(try Self.read(normal) == 0)

                // A discovery session that keeps sending what it may not is closed at the 16th: each costs a Reject.
                for tag in UInt32(9)..<22 {
                    var nop = discovery.header(opcode: RawOpcode.nopOut, immediate: true, flags: 0x80, initiatorTaskTag: tag)
                    RawISCSIClient.put(0xffff_ffff, into: &nop, at: 20)
                    try discovery.send(discovery.encode(header: nop))
                }
                let last = try discovery.drainUntilClosed()
                #expect(last.count == 13 && last.allSatisfy { $0.opcode == RawOpcode.reject && $0.rejectReason == 0x04 })
                #expect(try await Self.eventually {
                    Self.lines(ferryd, of: discovery, containing: "discovery session sent only what a normal session") == 1
                })
                #expect(try Self.read(normal) == 0)
            }
        }


        @Test func discoverySessionsAndOneInitiatorCannotTakeEveryPlace() async throws {
            let limits = "max_sessions = 4\nmax_discovery_sessions = 4\nmax_sessions_per_initiator = 2"
            try await ConfiguredFerryd.with(configuration: Self.configuration(limits)) { ferryd in
                // Discovery sessions beyond max_sessions: they have places of their own.
                var discoveries: [RawISCSIClient] = []
                for index in 0..<4 {
                    let client = try RawISCSIClient(port: ferryd.port)
                    let login = try client.login(
                        initiatorName: "iqn.2026-11.dev.ferry.test:discoverer\(index)", targetName: nil)
                    #expect(login.succeeded, "discovery login \(index): \(login.response.loginStatus)")
                    discoveries.append(client)
                }
                // > RFC 7143 §11.13.5: 0x0302 Out of resources.
                let fifth = try RawISCSIClient(port: ferryd.port)
                let refused = try fifth.login(initiatorName: "iqn.2026-11.dev.ferry.test:discoverer4", targetName: nil)
                #expect(refused.response.loginStatus == (3, 0x02), "\(refused.response.loginStatus)")
                #expect(try await Self.eventually { Self.lines(ferryd, of: fifth, containing: "max_discovery_sessions") == 1 })

                // A normal login still gets in beside them.
                let normal = try RawISCSIClient(port: ferryd.port)
                #expect(try normal.login(initiatorName: Self.initiator, targetName: Self.target).succeeded)
                #expect(try Self.read(normal) == 0)

                // One initiator name holds at most max_sessions_per_initiator sessions; others still get in.
                var attackers: [RawISCSIClient] = []
                for _ in 0..<2 {
                    let client = try RawISCSIClient(port: ferryd.port)
                    #expect(try client.login(initiatorName: Self.attacker, targetName: Self.target).succeeded)
                    attackers.append(client)
                }
                let third = try RawISCSIClient(port: ferryd.port)
                let tooMany = try third.login(initiatorName: Self.attacker, targetName: Self.target)
                #expect(tooMany.response.loginStatus == (3, 0x02), "\(tooMany.response.loginStatus)")
                #expect(try await Self.eventually {
                    Self.lines(ferryd, of: third, containing: "max_sessions_per_initiator") == 1
                        && Self.lines(ferryd, of: third, containing: "initiator=\(Self.attacker)") == 1
                })
                let other = try RawISCSIClient(port: ferryd.port)
                #expect(try other.login(initiatorName: "iqn.2026-11.dev.ferry.test:other", targetName: Self.target)
                    .succeeded)
                withExtendedLifetime((discoveries, attackers)) {}
            }
        }

        // MARK: Logins in progress

        @Test func aFloodOfSilentConnectionsIsCappedAndALoginStillGetsIn() async throws {
            let limits = "login_timeout = 60\nmax_logins_in_progress = 24\nmax_logins_in_progress_per_address = 8"
            try await ConfiguredFerryd.with(configuration: Self.configuration(limits)) { ferryd in
                // 40 silent connections from one address: the 32 beyond its cap of 8 are closed at once, long
                // before the login timeout.
                let flood = try (0..<40).map { _ in try SilentConnection(port: ferryd.port, from: "127.0.0.1") }
                #expect(try await Self.eventually { flood.filter { $0.isClosedByPeer() }.count >= 32 },
                    "\(flood.filter { $0.isClosedByPeer() }.count) of 40 closed")

                // From other addresses, up to the global cap of 24 (8 held already): 16 more.
                let more = try (2..<6).flatMap { host in
                    try (0..<8).map { _ in try SilentConnection(port: ferryd.port, from: "127.0.0.\(host)") }
                }
                #expect(try await Self.eventually { more.filter { $0.isClosedByPeer() }.count >= 16 })

                // Once the flood's slots are free again (ferryd has seen them close), a normal initiator from another
                // address logs in and reads.
                flood.forEach { $0.close() }
                var normal: RawISCSIClient?
                #expect(try await Self.eventually {
                    guard let client = try? RawISCSIClient(port: ferryd.port, sourceAddress: "127.0.0.9"),
                        (try? client.login(initiatorName: Self.initiator, targetName: Self.target))?.succeeded == true
                    else { return false }
                    normal = client
                    return true
                })
                if let normal { #expect(try Self.read(normal) == 0) }
                #expect(ferryd.logLines(containing: "logins in progress") >= 1)
                #expect(ferryd.logLines(containing: "logins in progress") <= 4)
                withExtendedLifetime(more) {}
            }
        }

        @Test func aLoginFromAnotherAddressGetsInWhileOneAddressFloods() async throws {
            let limits = "login_timeout = 60\nmax_logins_in_progress_per_address = 8"
            try await ConfiguredFerryd.with(configuration: Self.configuration(limits)) { ferryd in
                let flood = try (0..<200).map { _ in try SilentConnection(port: ferryd.port, from: "127.0.0.1") }
                let normal = try RawISCSIClient(port: ferryd.port, sourceAddress: "127.0.0.2")
                #expect(try normal.login(initiatorName: Self.initiator, targetName: Self.target).succeeded)
                #expect(try Self.read(normal) == 0)
                #expect(try await Self.eventually { flood.filter { $0.isClosedByPeer() }.count >= 192 })
            }
        }

        // MARK: Backpressure

        /// ferryd's resident set, in bytes, from /proc/PID/status (VmRSS).
        private static func residentSetSize(_ ferryd: ConfiguredFerryd) throws -> Int {
            guard let pid = ferrydProcess(ferryd) else { throw IntegrationFailure("ferryd's process not found") }
            let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                let kibibytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
            else { throw IntegrationFailure("no VmRSS in /proc/\(pid)/status") }
            return kibibytes * 1024
        }

        /// The process whose command line names ferryd's configuration file.
        private static func ferrydProcess(_ ferryd: ConfiguredFerryd) -> Int32? {
            let file = ferryd.configurationFile.path
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return entries.compactMap(Int32.init).first { pid in
                let commandLine = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
                return String(decoding: commandLine, as: UTF8.self).contains(file)
            }
        }

        /// The most ferryd's resident set may grow while one initiator floods it with 256 KiB NOP-Out pings and reads
        /// nothing: the socket's write buffer up to its high water mark (1 MiB), one read batch of pings, the
        /// allocator's slack. Without backpressure it grew by the whole flood (300 MiB sent: +365 MiB).
        static let floodGrowthBound = 48 << 20

        @Test func anInitiatorThatDoesNotReadStopsBeingRead() async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration("max_sessions = 4")) { ferryd in
                let healthy = try RawISCSIClient(port: ferryd.port)
                #expect(try healthy.login(initiatorName: Self.initiator, targetName: Self.target).succeeded)
                let flooder = try RawISCSIClient(port: ferryd.port)
                #expect(try flooder.login(initiatorName: Self.attacker, targetName: Self.target).succeeded)
                _ = try healthy.ping()
                let before = try Self.residentSetSize(ferryd)

                // Immediate NOP-Outs with 256 KiB of ping data, 200 MiB in all, on a thread; never read.
                var nop = flooder.header(opcode: RawOpcode.nopOut, immediate: true, flags: 0x80, initiatorTaskTag: 1)
                RawISCSIClient.put(0xffff_ffff, into: &nop, at: 20)
                let ping = flooder.encode(header: nop, data: [UInt8](repeating: 0x5a, count: 256 << 10))
                let sent = SentCounter()
                // Only the sending thread uses the socket until the test shuts it down, which ends the thread's send.
                nonisolated(unsafe) let socket = flooder
                let sender = Thread {
                    for _ in 0..<800 {
                        guard (try? socket.send(ping)) != nil else { return }
                        sent.add(ping.count)
                    }
                }
                sender.start()
                // ferryd stops reading: what is sent stalls (the kernel's socket buffers fill), far short of 200 MiB.
                var last = -1
                let stalled = try await Self.eventually(within: .seconds(60)) {
                    let now = sent.value
                    defer { last = now }
                    Thread.sleep(forTimeInterval: 0.5)
                    return now == last
                }
                let after = try Self.residentSetSize(ferryd)
                print("HostileSessionTests: \(sent.value >> 20) MiB of pings sent unread; ferryd's VmRSS went from "
                    + "\(before >> 20) to \(after >> 20) MiB")
                #expect(stalled)
                #expect(sent.value < 100 << 20, "\(sent.value >> 20) MiB sent")
                #expect(after - before < Self.floodGrowthBound)

                // The healthy session is still served.
                _ = try healthy.ping(data: Array("still there".utf8))
                #expect(try Self.read(healthy) == 0)
                flooder.shutdown()
            }
        }
    }
}

/// Bytes sent so far by a thread, read by the test.
private final class SentCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var total = 0
    var value: Int { lock.withLock { total } }
    func add(_ count: Int) { lock.withLock { total += count } }
}

/// A TCP connection to the portal, from a loopback address of its choice, that never sends a byte.
private final class SilentConnection {
    private var descriptor: Int32

    init(port: Int, from sourceAddress: String) throws {
        descriptor = try RawISCSIClient.connectToLoopback(port: port, from: sourceAddress)
    }

    deinit { close() }

    func close() {
        if descriptor >= 0 { _ = Glibc.close(descriptor) }
        descriptor = -1
    }

    /// Whether the target has closed the connection (EOF or a reset).
    func isClosedByPeer() -> Bool {
        guard descriptor >= 0 else { return true }
        var buffer = [UInt8](repeating: 0, count: 64)
        let read = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        return read == 0 || (read < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }
}
