import Dispatch
import Foundation
import RawISCSI
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension AgainstFerryd {
    /// `[limits] login_timeout` and the NOP-In limits against a login flood and slow-loris initiators: a normal
    /// initiator logs in and reads within a few seconds while hundreds of connections hold the portal, and ferryd
    /// closes every connection that has not logged in when the login timeout ends.
    @Suite struct LoginFloodTests {
        static let target = "iqn.2026-11.dev.ferry:flood"
        static let initiator = "iqn.2026-11.dev.ferry.test:normal"
        static let loginTimeout = 2
        static let nopInInterval = 1
        static let nopInTimeout = 1
        /// How long after the login timeout a connection may still be open.
        static let slack: Duration = .seconds(3)

        static func configuration(port: Int, directory: String) -> String {
            ConfiguredFerryd.portal(port: port, directory: directory)
                + """
                [limits]
                max_sessions = 4
                login_timeout = \(loginTimeout)
                # These tests measure login_timeout, with every connection from 127.0.0.1: no cap cuts them short.
                max_logins_in_progress = 1024
                max_logins_in_progress_per_address = 1024
                nop_in_interval = \(nopInInterval)
                nop_in_timeout = \(nopInTimeout)

                """
                + ConfiguredFerryd.target(target, directory: directory)
        }

        /// Logs in a fresh session and reads 4 KiB from LBA 0; how long both took.
        private func loginAndRead(port: Int) throws -> Duration {
            let start = ContinuousClock.now
            let client = try RawISCSIClient(port: port)
            let login = try client.login(initiatorName: Self.initiator, targetName: Self.target)
            guard login.succeeded else { throw IntegrationFailure("login failed: \(login.response.loginStatus)") }
            let read = try client.sendCommand(RawISCSIClient.read10(lba: 0, blocks: 8), readLength: 4096)
            var status: UInt8?
            while status == nil, let pdu = try client.receivePDU(within: .seconds(10)) {
                if pdu.initiatorTaskTag == read.initiatorTaskTag { status = pdu.scsiStatus }
            }
            guard status == 0 else {
                throw IntegrationFailure("READ(10) ended with status \(String(describing: status))")
            }
            return ContinuousClock.now - start
        }

        @Test func idleConnectionsDoNotDelayALoginAndCloseAtTheLoginTimeout() async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                let idle = try (0..<200).map { _ in try RawIdleSocket(port: ferryd.port) }
                let deadline = Duration.seconds(Self.loginTimeout) + Self.slack
                let watch = onThread { RawIdleSocket.lifetimes(idle, deadline: deadline) }
                // 50 connections at a time that connect and close at once, for 1.5 s, beside the idle ones.
                let churned = Churn.start(port: ferryd.port, width: 50, for: .milliseconds(1500))

                let elapsed = try loginAndRead(port: ferryd.port)
                print("LoginFloodTests: login and READ beside 200 idle connections and the churn took \(elapsed)")
                #expect(elapsed < .seconds(3))
                print("LoginFloodTests: \(await churned.value) connections opened and closed during the churn")

                let lifetimes = await watch.value
                let closed = lifetimes.compactMap { $0 }
                print("LoginFloodTests: \(closed.count) of \(idle.count) idle connections closed by ferryd, "
                    + "after \(closed.min() ?? .zero) to \(closed.max() ?? .zero)")
                #expect(closed.count == idle.count)
                #expect(closed.allSatisfy { $0 >= .seconds(Self.loginTimeout) - .milliseconds(100) })
                #expect(ferryd.logLines(containing: "login timed out") >= idle.count)
                // Still serving after the flood.
                #expect(try loginAndRead(port: ferryd.port) < .seconds(3))
            }
        }

        @Test func slowLorisLoginsCloseAtTheLoginTimeoutAndDoNotDelayOthers() async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                // A Login Request header, one byte every 250 ms: 12 s for the BHS, far beyond the login timeout.
                let header: [UInt8] = [0x43, 0x87, 0, 0] + [UInt8](repeating: 0, count: 44)
                let lorises = try (0..<8).map { _ in try RawIdleSocket(port: ferryd.port) }
                let trickled = TrickledBytes()
                let trickle = onThread {
                    RawIdleSocket.trickle(header, to: lorises, every: .milliseconds(250),
                        deadline: .seconds(Self.loginTimeout) + Self.slack, progress: trickled)
                }
                // The normal login goes in once the lorises are mid-BHS: three bytes each (500 ms into the trickle).
                try await waitUntil("the slow-loris logins send their first bytes (\(trickled.value) sent)") {
                    trickled.value >= 3
                }
                let elapsed = try loginAndRead(port: ferryd.port)
                print("LoginFloodTests: login and READ beside 8 slow-loris logins took \(elapsed)")
                #expect(elapsed < .seconds(3))

                let lifetimes = await trickle.value
                let closed = lifetimes.compactMap { $0 }
                print("LoginFloodTests: \(closed.count) of \(lorises.count) slow-loris logins closed by ferryd, "
                    + "after \(closed.min() ?? .zero) to \(closed.max() ?? .zero)")
                #expect(closed.count == lorises.count)
                #expect(closed.allSatisfy { $0 >= .seconds(Self.loginTimeout) - .milliseconds(100) })
            }
        }

        @Test func aConnectionStalledMidPDUDoesNotDelayOthers() async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                // An idle initiator that answers the target's pings keeps its connection.
                let quiet = try RawISCSIClient(port: ferryd.port)
                #expect(try quiet.login(initiatorName: "iqn.2026-11.dev.ferry.test:quiet", targetName: Self.target).succeeded)
                var pings = 0
                func answerPings() throws {
                    while let pdu = try quiet.receivePDU(within: .milliseconds(20)) {
                        guard pdu.opcode == RawOpcode.nopIn, pdu.initiatorTaskTag == 0xffff_ffff else { continue }
                        pings += 1
                        // > RFC 7143 §11.18: the NOP-Out answering a ping echoes its Target Transfer Tag.
                        var answer = quiet.header(
                            opcode: RawOpcode.nopOut, immediate: true, flags: 0x80, initiatorTaskTag: 0xffff_ffff)
                        answer.replaceSubrange(20..<24, with: pdu.header[20..<24])
                        try quiet.send(quiet.encode(header: answer))
                    }
                }
                let staller = try RawISCSIClient(port: ferryd.port)
                #expect(try staller.login(initiatorName: "iqn.2026-11.dev.ferry.test:staller", targetName: Self.target)
                    .succeeded)
                // Half a SCSI Command BHS, then nothing: ferryd's decoder waits for the other 24 bytes.
                var command = staller.header(opcode: RawOpcode.scsiCommand, flags: 0xc1, initiatorTaskTag: 1)
                RawISCSIClient.put(4096, into: &command, at: 20)
                try staller.send(Array(command.prefix(24)))
                let stalledAt = ContinuousClock.now

                let elapsed = try loginAndRead(port: ferryd.port)
                print("LoginFloodTests: login and READ beside a connection stalled mid-PDU took \(elapsed)")
                #expect(elapsed < .seconds(3))

                // A NOP-In ping (RFC 7143 §11.19) that the connection cannot answer, being mid-PDU, ends it
                // after nop_in_interval + nop_in_timeout, and with it the session place it holds.
                let limit = Duration.seconds(Self.nopInInterval + Self.nopInTimeout) + Self.slack
                var ended = false
                while !ended, ContinuousClock.now - stalledAt < limit {
                    do {
                        // Any NOP-In that arrives is read (and left unanswered: the initiator is mid-PDU).
                        _ = try staller.receivePDU(within: .milliseconds(200))
                    } catch {
                        ended = true
                    }
                    try answerPings()
                }
                #expect(ended, "the stalled connection was still open after \(limit)")
                try answerPings()
                #expect(pings >= 1, "the quiet connection was pinged")
                #expect(try quiet.read10(lba: 0, blocks: 1).count == 512, "and, having answered, is still served")
                #expect(ferryd.logLines(containing: "no answer to NOP-In; closing the connection") == 1)
                #expect(try loginAndRead(port: ferryd.port) < .seconds(3))
            }
        }
    }
}

/// A TCP connection to the portal that sends nothing of its own accord and notes when the target closes it.
private final class RawIdleSocket: @unchecked Sendable {
    let descriptor: Int32
    /// When connect() returned.
    let connected: ContinuousClock.Instant

    init(port: Int) throws {
        descriptor = try RawISCSIClient.connectToLoopback(port: port)
        connected = .now
    }

    deinit { close(descriptor) }

    /// Whether the target has closed the connection (EOF or a reset); reads and drops anything it sent.
    func isClosedByPeer() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 512)
        let read = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        return read == 0 || (read < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }

    /// For each socket, how long after its connect the target closed it; nil for one still open `deadline` after it
    /// connected.
    static func lifetimes(_ sockets: [RawIdleSocket], deadline: Duration) -> [Duration?] {
        trickle([], to: sockets, every: .milliseconds(50), deadline: deadline)
    }

    /// Sends `bytes` one at a time to every socket still open, one byte each `interval`, and returns how long after
    /// its connect the target closed each socket (nil for one still open `deadline` after it connected).
    static func trickle(
        _ bytes: [UInt8], to sockets: [RawIdleSocket], every interval: Duration, deadline: Duration,
        progress: TrickledBytes? = nil
    ) -> [Duration?] {
        var lifetimes = [Duration?](repeating: nil, count: sockets.count)
        var sent = 0
        var nextByte = ContinuousClock.now
        while let start = sockets.first?.connected, ContinuousClock.now - start < deadline,
            lifetimes.contains(where: { $0 == nil }) {
            var descriptors = sockets.map { pollfd(fd: $0.descriptor, events: Int16(POLLIN), revents: 0) }
            _ = poll(&descriptors, nfds_t(descriptors.count), 20)
            for (index, socket) in sockets.enumerated() where lifetimes[index] == nil {
                if descriptors[index].revents != 0, socket.isClosedByPeer() {
                    lifetimes[index] = .now - socket.connected
                }
            }
            if sent < bytes.count, ContinuousClock.now >= nextByte {
                for (index, socket) in sockets.enumerated() where lifetimes[index] == nil {
                    _ = [bytes[sent]].withUnsafeBytes {
                        send(socket.descriptor, $0.baseAddress, 1, Int32(MSG_NOSIGNAL))
                    }
                }
                sent += 1
                progress?.store(sent)
                nextByte = ContinuousClock.now + interval
            }
        }
        return lifetimes
    }
}

/// How many bytes of its header ``RawIdleSocket/trickle(_:to:every:deadline:progress:)`` has sent to each socket, read
/// by the test while the trickle runs on a thread of its own.
private final class TrickledBytes: Sendable {
    private let sent = Atomic<Int>(0)
    var value: Int { sent.load(ordering: .acquiring) }
    func store(_ count: Int) { sent.store(count, ordering: .releasing) }
}

/// Connections that connect to the portal and close at once, `width` at a time, on a thread of their own.
private enum Churn {
    /// Starts the churn; its value is how many connections it opened and closed.
    static func start(port: Int, width: Int, for duration: Duration) -> Task<Int, Never> {
        onThread {
            let end = ContinuousClock.now + duration
            var count = 0
            while ContinuousClock.now < end {
                let batch = (0..<width).compactMap { _ in try? RawISCSIClient.connectToLoopback(port: port) }
                batch.forEach { close($0) }
                count += batch.count
            }
            return count
        }
    }
}

/// Runs blocking `work` on a Dispatch thread, off the cooperative pool that the test's own blocking calls share.
private func onThread<Value: Sendable>(_ work: @escaping @Sendable () -> Value) -> Task<Value, Never> {
    Task {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(returning: work()) }
        }
    }
}
