import Foundation
import RawISCSI
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension AgainstFerryd {
    /// Issue 10, "under a hostile mix": one target of a ferryd with the default `[limits]` carries 64 hostile
    /// connections at once, mixing every attack of the issue, while a well-behaved host (its own address) logs in,
    /// reads with a bounded latency and writes without losing anything, and ferryd's memory stays under a ceiling.
    @Suite struct HostileMixTests {
        static let target = "iqn.2026-11.dev.ferry:hostile-mix"
        static let reader = "iqn.2026-11.dev.ferry.test:reader"
        static let writer = "iqn.2026-11.dev.ferry.test:writer"
        static let attacker = "iqn.2026-11.dev.ferry.test:attacker"

        /// The well-behaved host, and where each kind of attack comes from (per-address limits apply to each).
        static let healthyAddress = "127.0.0.2"
        static let floodAddress = "127.0.0.3"
        static let sessionAddress = "127.0.0.4"
        static let discoveryAddress = "127.0.0.5"

        /// The attack's 64 connections held at once: half-open logins, non-readers, immediate-command storms and
        /// discovery sessions up to `max_discovery_sessions` (32 by default).
        static let silentLogins = 8
        static let partialLogins = 8
        static let pingFlooders = 8
        static let commandStorms = 8
        static let discoveryListers = 16
        static let discoveryCommanders = 16
        static var connectionsHeld: Int {
            silentLogins + partialLogins + pingFlooders + commandStorms + discoveryListers + discoveryCommanders
        }
        /// Beside them, connections that connect, send half a login and close, this many at a time from the flood's
        /// address: with the half-open logins held there, more than `max_logins_in_progress_per_address` (32).
        static let churnWidth = 24

        /// How long the healthy host works under the attack. Longer than `login_timeout` (15 s by default), so that
        /// ferryd closes the half-open logins and the attacker opens them again.
        static let attackDuration: Duration = .seconds(20)

        /// The READ p99 latency (4 KiB, one at a time) the healthy host must keep under attack. Measured with a debug
        /// ferryd on a 2-core machine shared with other builds: p99 0.3-1.8 ms without attack, 5-10 ms beside the
        /// attacks ferryd withstands (ping floods, half-open logins, churn, SendTargets), so 50 ms leaves 5x headroom.
        /// An initiator queued behind another session's storm fails it: beside 8 storms of immediate 64 KiB READs
        /// its p50 was 69 ms and its p99 262 ms.
        static let readP99Bound: Duration = .milliseconds(underThreadSanitizer ? 200 : 50)

        /// The most ferryd's resident set may reach (VmHWM) with the default limits under this mix: about 35 MiB at
        /// start; at most 1 MiB (the high water mark) of unsent PDUs and one PDU being read per connection, 72 MiB of
        /// Data-In for the storms' 64 KiB READs (144 tasks of 8 sessions; far below `max_data_buffer_mib`), and
        /// slack. Measured: 49 MiB beside the ping floods, half-open logins and discovery sessions; 142 MiB beside
        /// storms of 64 KiB READs alone.
        static let residentSetCeiling = (underThreadSanitizer ? 512 : 256) << 20

        /// How long the healthy host's login may take under attack. Measured: 1.5-2.0 s once the emulated device read
        /// only what the EDTL covers; 2.5-11 s before, when each immediate READ of 8 MiB with an EDTL of 0 kept an
        /// I/O worker reading 8 MiB, and more than 10 s before the per-nexus queues.
        static let loginBound: Duration = .seconds(underThreadSanitizer ? 20 : 5)

        /// ThreadSanitizer (`scripts/tsan` sets `FERRY_SANITIZER=thread`) runs ferryd 5-15 times slower and with 5-10
        /// times the memory: there the bounds above are 4 times the time and twice the memory, so that the run looks
        /// for data races in every path the mix takes, while the bounds themselves are held in the normal build.
        /// Measured under TSan: login 11.3 s, READ p99 23 ms, peak RSS 214 MiB.
        static let underThreadSanitizer = ProcessInfo.processInfo.environment["FERRY_SANITIZER"] == "thread"

        static func configuration(port: Int, directory: String) -> String {
            // No [limits]: the defaults are what is under test.
            ConfiguredFerryd.portal(port: port, directory: directory)
                + ConfiguredFerryd.target(target, directory: directory)
        }

        @Test func aWellBehavedHostIsServedUnderTheHostileMix() async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                let pid = ferryd.processIdentifier
                let startRSS = try Self.memory(pid, "VmRSS")

                // Without attack: the latency to compare with.
                let quiet = try Self.login(ferryd, as: Self.reader)
                let (baseline, quietFailure) = Self.readLatencies(quiet.client, count: 1000)
                try #require(quietFailure == nil, "without attack: \(quietFailure ?? "")")
                quiet.client.shutdown()

                // The attack: every kind at once, each on threads of its own.
                let attack = HostileMix(port: ferryd.port)
                try await attack.start()
                let rss = onThread { Self.sampleResidentSet(pid: pid, until: attack.stop) }

                // The healthy host logs in beside it, reads and writes.
                let loginStart = ContinuousClock.now
                let reading = try? Self.login(ferryd, as: Self.reader)
                let loginTime = ContinuousClock.now - loginStart
                let writing = try? Self.login(ferryd, as: Self.writer)
                let end = ContinuousClock.now + Self.attackDuration
                let reads = onThread {
                    reading.map { Self.readLatencies($0.client, until: end) } ?? ([], "the reader could not log in")
                }
                let writes = onThread {
                    writing.map { VerifiedWriter.run($0.client, until: end) }
                        ?? VerifiedWriter(failure: "the writer could not log in")
                }
                let (underAttack, readFailure) = await reads.value
                let written = await writes.value
                let figures = try await attack.finish()
                let peakSampled = await rss.value
                let peak = max(peakSampled, try Self.memory(pid, "VmHWM"))
                #expect(ferryd.isRunning)

                // After the attack: every acknowledged write reads back, in a session of its own.
                let checking = try? Self.login(ferryd, as: Self.writer)
                let mismatches = try checking.map { try written.verify($0.client) } ?? []

                let quietStats = LatencyFigures(baseline)
                let attackStats = LatencyFigures(underAttack)
                print(
                    """
                    HostileMixTests: READ 4 KiB without attack: \(quietStats); under attack: \(attackStats) \
                    (bound for p99: \(Self.readP99Bound); bounds for \(Self.underThreadSanitizer ? "ThreadSanitizer" : "a normal build"))
                    HostileMixTests: login under attack \(reading != nil ? "took" : "failed after") \(loginTime)
                    HostileMixTests: ferryd VmRSS \(startRSS >> 20) MiB at start, peak \(peak >> 20) MiB \
                    (ceiling \(Self.residentSetCeiling >> 20) MiB)
                    HostileMixTests: \(written.acknowledged) writes acknowledged, \(written.slots.count) LBA ranges \
                    verified, \(mismatches.count) mismatches
                    HostileMixTests: attack: \(figures)
                    """)
                #expect(reading != nil && writing != nil, "the healthy host logs in under attack (10 s)")
                #expect(loginTime < Self.loginBound, "the healthy host's login under attack took \(loginTime)")
                #expect(checking != nil, "the healthy host logs in after the attack")
                #expect(readFailure == nil, "the healthy host's READs: \(readFailure ?? "")")
                #expect(written.failure == nil, "the healthy host's WRITEs: \(written.failure ?? "")")
                #expect(attackStats.p99 < Self.readP99Bound, "READ p99 under attack: \(attackStats)")
                #expect(peak < Self.residentSetCeiling, "ferryd's peak RSS: \(peak >> 20) MiB")
                #expect(written.acknowledged > 0)
                #expect(mismatches.isEmpty, "LBAs that read back otherwise than written: \(mismatches.prefix(8))")
                // Every kind of attack happened.
                #expect(Self.connectionsHeld == 64)
                #expect(figures.discoveryRefused > 0, "discovery logins beyond max_discovery_sessions: \(figures)")
                #expect(figures.loginsClosedAtOnce > 0, "logins beyond the per-address cap: \(figures)")
                #expect(figures.halfOpenClosed > 0, "half-open logins closed at login_timeout: \(figures)")
                #expect(figures.pingBytes > 0 && figures.stormCommands > 0 && figures.discoveryCommands > 0)
                #expect(ferryd.logLines(containing: "too many logins in progress") >= 1)
                #expect(ferryd.logLines(containing: "not allowed in a discovery session") >= 1)
            }
        }

        // MARK: The healthy host

        /// A session of the healthy host, from its own address.
        private static func login(_ ferryd: ConfiguredFerryd, as initiator: String) throws -> Unchecked<RawISCSIClient> {
            let client = try RawISCSIClient(port: ferryd.port, sourceAddress: Self.healthyAddress)
            let login = try client.login(initiatorName: initiator, targetName: Self.target)
            guard login.succeeded else {
                throw IntegrationFailure("\(initiator) could not log in: \(login.response.loginStatus)")
            }
            return Unchecked(client)
        }

        /// READ(10)s of 8 blocks at random LBAs, one at a time, until `count` are done or `end` has passed: how
        /// long each took. Anything but GOOD fails.
        private static func readLatencies(
            _ client: RawISCSIClient, count: Int = .max, until end: ContinuousClock.Instant = .now + .seconds(3600)
        ) -> (latencies: [Duration], failure: String?) {
            var latencies: [Duration] = []
            do {
                while latencies.count < count, ContinuousClock.now < end {
                    let lba = UInt32.random(in: 0..<(Self.blocks / 8)) * 8
                    let start = ContinuousClock.now
                    let sent = try client.sendCommand(RawISCSIClient.read10(lba: lba, blocks: 8), readLength: 4096)
                    var status: UInt8?
                    var received = 0
                    while status == nil {
                        guard let pdu = try client.receivePDU(within: .seconds(10)) else {
                            return (latencies, "READ \(latencies.count + 1) got no answer in 10 s")
                        }
                        guard pdu.initiatorTaskTag == sent.initiatorTaskTag else { continue }
                        if pdu.opcode == RawOpcode.dataIn { received += pdu.data.count }
                        status = pdu.scsiStatus
                    }
                    latencies.append(ContinuousClock.now - start)
                    guard status == 0, received == 4096 else {
                        let ended = status.map { "0x" + String($0, radix: 16) } ?? "none"
                        return (latencies, "READ \(latencies.count) ended with status \(ended)")
                    }
                }
            } catch {
                return (latencies, "READ \(latencies.count + 1): \(error)")
            }
            return (latencies, nil)
        }

        /// The LUN's size in blocks (ConfiguredFerryd.target: 16 MiB of 512-byte blocks).
        static let blocks: UInt32 = 32768

        // MARK: ferryd's memory

        /// A `/proc/PID/status` field in bytes (VmRSS, VmHWM).
        static func memory(_ pid: Int32, _ field: String) throws -> Int {
            let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
            guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("\(field):") }),
                let kibibytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
            else { throw IntegrationFailure("no \(field) in /proc/\(pid)/status") }
            return kibibytes * 1024
        }

        /// The largest VmRSS seen, sampled every 50 ms until `stop` is raised.
        private static func sampleResidentSet(pid: Int32, until stop: StopFlag) -> Int {
            var peak = 0
            while !stop.raised {
                peak = max(peak, (try? memory(pid, "VmRSS")) ?? 0)
                Thread.sleep(forTimeInterval: 0.05)
            }
            return peak
        }
    }
}

// MARK: - The verified writer

/// Writes a distinct pattern to one 4 KiB range after another, one at a time, and remembers the last acknowledged
/// pattern of each range; afterwards reads every range back.
private struct VerifiedWriter: Sendable {
    /// The ranges written: the upper half of the LUN, 8 blocks each.
    static let firstLBA: UInt32 = 16384
    static let ranges: UInt32 = 2048

    /// The write number whose pattern each range holds.
    var slots: [UInt32: UInt64] = [:]
    var acknowledged = 0
    /// Why the writer stopped before the end, if it did.
    var failure: String?

    /// The 4 KiB a write holds: a xorshift stream seeded by its number and range, so that no two writes agree.
    static func pattern(write: UInt64, range: UInt32) -> [UInt8] {
        var state = (write &* 0x9E37_79B9_7F4A_7C15) ^ (UInt64(range) << 32 | 0x5555) | 1
        var bytes = [UInt8]()
        bytes.reserveCapacity(4096)
        for _ in 0..<512 {
            state ^= state << 13
            state ^= state >> 7
            state ^= state << 17
            withUnsafeBytes(of: state.bigEndian) { bytes += $0 }
        }
        return bytes
    }

    static func run(_ client: RawISCSIClient, until end: ContinuousClock.Instant) -> VerifiedWriter {
        var writer = VerifiedWriter()
        var number: UInt64 = 0
        do {
            while ContinuousClock.now < end {
                number += 1
                let range = UInt32.random(in: 0..<Self.ranges)
                let sent = try client.sendCommand(
                    RawISCSIClient.write10(lba: Self.firstLBA + range * 8, blocks: 8),
                    write: Self.pattern(write: number, range: range))
                var status: UInt8?
                while status == nil {
                    guard let pdu = try client.receivePDU(within: .seconds(10)) else {
                        writer.failure = "WRITE \(number) got no answer in 10 s"
                        return writer
                    }
                    if pdu.initiatorTaskTag == sent.initiatorTaskTag { status = pdu.scsiStatus }
                }
                guard status == 0 else {
                    let ended = status.map { "0x" + String($0, radix: 16) } ?? "none"
                    writer.failure = "WRITE \(number) ended with status \(ended)"
                    return writer
                }
                writer.slots[range] = number
                writer.acknowledged += 1
            }
        } catch {
            writer.failure = "WRITE \(number): \(error)"
        }
        return writer
    }

    /// Reads every range written back; the ranges that do not hold their last acknowledged pattern.
    func verify(_ client: RawISCSIClient) throws -> [UInt32] {
        var mismatches: [UInt32] = []
        for (range, number) in slots.sorted(by: { $0.key < $1.key }) {
            let outcome = try client.scsi(
                lun: 0, cdb: RawISCSIClient.read10(lba: Self.firstLBA + range * 8, blocks: 8), expectedLength: 4096)
            if outcome.status != 0 || outcome.data != Self.pattern(write: number, range: range) {
                mismatches.append(range)
            }
        }
        return mismatches
    }
}

/// p50 and p99 of a set of latencies.
private struct LatencyFigures: CustomStringConvertible {
    var count: Int
    var p50: Duration
    var p99: Duration
    var max: Duration

    init(_ latencies: [Duration]) {
        let sorted = latencies.sorted()
        count = sorted.count
        func percentile(_ p: Double) -> Duration {
            sorted.isEmpty ? .zero : sorted[Swift.min(sorted.count - 1, Int(Double(sorted.count) * p))]
        }
        p50 = percentile(0.50)
        p99 = percentile(0.99)
        max = sorted.last ?? .zero
    }

    var description: String {
        func ms(_ duration: Duration) -> String {
            let (seconds, attoseconds) = duration.components
            return String(format: "%.2f ms", Double(seconds) * 1000 + Double(attoseconds) / 1e15)
        }
        return "\(count) READs, p50 \(ms(p50)), p99 \(ms(p99)), max \(ms(max))"
    }
}

// MARK: - The attack

/// What the attack did.
private struct AttackFigures: CustomStringConvertible, Sendable {
    var heldAtOnce = 0
    var attackLoginsFailed = 0
    var connectionsOpened = 0
    var halfOpenClosed = 0
    var loginsClosedAtOnce = 0
    var pingBytes = 0
    var stormCommands = 0
    var discoveryCommands = 0
    var discoveryRefused = 0
    var sendTargets = 0

    var description: String {
        "\(connectionsOpened) connections opened, \(heldAtOnce) held at once "
            + "(\(attackLoginsFailed) of the attack's own logins refused or unanswered in 5 s); "
            + "\(halfOpenClosed) half-open logins closed by ferryd at login_timeout, "
            + "\(loginsClosedAtOnce) churned logins closed at once; \(pingBytes >> 20) MiB of pings sent unread; "
            + "\(stormCommands) immediate READs sent unread; \(discoveryCommands) SCSI/NOP/TMF PDUs in discovery "
            + "sessions; \(sendTargets) SendTargets; \(discoveryRefused) discovery logins refused (0x0302)"
    }
}

/// Raised once, read by many threads.
private final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var raised: Bool { flag.load(ordering: .acquiring) }
    func raise() { flag.store(true, ordering: .releasing) }
}

/// A count kept by many threads.
private final class Counter: Sendable {
    private let count = Atomic<Int>(0)
    var value: Int { count.load(ordering: .relaxed) }
    func add(_ amount: Int = 1) { count.add(amount, ordering: .relaxed) }
}

/// A value handed to one other thread at a time (the attack's sockets, the healthy host's sessions).
private final class Unchecked<Value>: @unchecked Sendable {
    let client: Value
    init(_ client: Value) { self.client = client }
}

/// Every attack of issue 10 at once against one target, each on threads of its own (blocking sockets).
private final class HostileMix: @unchecked Sendable {
    typealias Tests = AgainstFerryd.HostileMixTests
    let port: Int
    let stop = StopFlag()
    private let opened = Counter()
    private let halfOpenClosed = Counter()
    private let closedAtOnce = Counter()
    private let pingBytes = Counter()
    private let stormCommands = Counter()
    private let discoveryCommands = Counter()
    private let discoveryRefused = Counter()
    private let sendTargets = Counter()
    private let attackLoginsFailed = Counter()
    /// The attack's own logins stop being tried after this (ferryd may be too slow to take them all).
    private let setupDeadline = ContinuousClock.now + .seconds(30)
    private let lock = NSLock()
    /// Logged-in attack sessions, shut down at the end to free their blocked senders.
    private var sessions: [RawISCSIClient] = []
    private var workers: [Task<Void, Never>] = []
    private var held = 0

    init(port: Int) { self.port = port }

    /// A logged-in attack session, or nil when ferryd refused it or did not answer within 5 s (counted: the
    /// attack goes on with the sessions it got).
    private func session(_ name: String, discovery: Bool, from address: String) -> RawISCSIClient? {
        guard ContinuousClock.now < setupDeadline,
            let client = try? RawISCSIClient(port: port, timeout: .seconds(5), sourceAddress: address)
        else { return nil }
        opened.add()
        guard (try? client.login(initiatorName: name, targetName: discovery ? nil : Tests.target))?.succeeded == true
        else {
            attackLoginsFailed.add()
            return nil
        }
        lock.withLock { sessions.append(client) }
        return client
    }

    private func spawn(_ work: @escaping @Sendable () -> Void) {
        workers.append(onThread(work))
    }

    /// Opens the 64 connections and sets each to its attack; returns once all of them are held.
    func start() async throws {
        // Every attack session logs in first, while ferryd is idle, so that each attack runs whatever the order.
        func logIn(_ count: Int, discovery: Bool) -> [Unchecked<RawISCSIClient>] {
            (0..<count).compactMap { _ in
                session(
                    Tests.attacker, discovery: discovery,
                    from: discovery ? Tests.discoveryAddress : Tests.sessionAddress
                ).map(Unchecked.init)
            }
        }
        let listers = Unchecked(logIn(Tests.discoveryListers, discovery: true).map(\.client))
        let commanders = logIn(Tests.discoveryCommanders, discovery: true)
        let flooders = logIn(Tests.pingFlooders, discovery: false)
        let storms = logIn(Tests.commandStorms, discovery: false)

        // Half-open logins held (reopened when ferryd closes them), and a churn of partial logins beside them.
        let halfOpen = HalfOpenLogins(port: port, silent: Tests.silentLogins, partial: Tests.partialLogins)
        try halfOpen.open(opened)
        spawn { [self] in halfOpen.hold(until: stop, opened: opened, closed: halfOpenClosed) }
        spawn { [self] in churn() }
        // Discovery sessions up to max_discovery_sessions: half list targets, half send what a discovery session
        // may not (a READ of 16 MiB at CmdSN + 1, an immediate READ, a NOP-Out, a task management function) and
        // never read the Rejects. Discovery logins beyond max_discovery_sessions, again and again.
        spawn { [self] in listTargets(listers.client) }
        for client in commanders { spawn { [self] in discoveryCommands(client.client) } }
        spawn { [self] in discoveryBeyondTheLimit() }
        // Non-readers: immediate NOP-Outs with 256 KiB of ping data, never reading the NOP-Ins.
        for client in flooders { spawn { [self] in pingFlood(client.client) } }
        // Immediate-command storms: immediate READ(10)s past the CmdSN window, half of them of 8 MiB with an
        // Expected Data Transfer Length of 0; never reading the answers.
        for client in storms { spawn { [self] in commandStorm(client.client) } }

        held = lock.withLock { sessions.count } + halfOpen.count
        // Let the floods fill what they can before the healthy host starts.
        try await Task.sleep(for: .seconds(1))
    }

    /// Stops every attack, closes its connections and returns what it did.
    func finish() async throws -> AttackFigures {
        stop.raise()
        for client in lock.withLock({ sessions }) { client.shutdown() }
        for worker in workers { await worker.value }
        return AttackFigures(
            heldAtOnce: held, attackLoginsFailed: attackLoginsFailed.value, connectionsOpened: opened.value, halfOpenClosed: halfOpenClosed.value,
            loginsClosedAtOnce: closedAtOnce.value, pingBytes: pingBytes.value, stormCommands: stormCommands.value,
            discoveryCommands: discoveryCommands.value, discoveryRefused: discoveryRefused.value,
            sendTargets: sendTargets.value)
    }

    // MARK: Each attack

    private func pingFlood(_ client: RawISCSIClient) {
        var nop = client.header(opcode: RawOpcode.nopOut, immediate: true, flags: 0x80, initiatorTaskTag: 1)
        RawISCSIClient.put(0xffff_ffff, into: &nop, at: 20)
        let ping = client.encode(header: nop, data: [UInt8](repeating: 0x5a, count: 256 << 10))
        // At most 64 MiB each: ferryd takes a few MiB and stops reading; the send then blocks until the end.
        for _ in 0..<256 where !stop.raised {
            guard (try? client.send(ping)) != nil else { return }
            pingBytes.add(ping.count)
        }
    }

    private func commandStorm(_ client: RawISCSIClient) {
        var index = 0
        while !stop.raised {
            index += 1
            // READ(10) of 16384 blocks (8 MiB) with EDTL 0, or of 128 blocks with EDTL 64 KiB.
            let (blocks, edtl): (UInt16, UInt32) = index % 2 == 0 ? (16384, 0) : (128, 64 << 10)
            var bytes = client.header(
                opcode: RawOpcode.scsiCommand, immediate: true, flags: 0x80 | 0x40 | 0x01,
                initiatorTaskTag: client.nextTaskTag())
            RawISCSIClient.put(edtl, into: &bytes, at: 20)
            let lba = UInt32.random(in: 0...16384)
            bytes.replaceSubrange(32..<42, with: RawISCSIClient.read10(lba: lba, blocks: blocks))
            guard (try? client.send(client.encode(header: bytes))) != nil else { return }
            stormCommands.add()
        }
    }

    private func discoveryCommands(_ client: RawISCSIClient) {
        var tag: UInt32 = 100
        while !stop.raised {
            tag &+= 1
            // A READ of 16 MiB waiting for CmdSN + 1.
            client.cmdSN &+= 1
            var read = client.header(opcode: RawOpcode.scsiCommand, flags: 0xc0, initiatorTaskTag: tag)
            client.cmdSN &-= 1
            RawISCSIClient.put(16 << 20, into: &read, at: 20)
            read.replaceSubrange(32..<42, with: RawISCSIClient.read10(lba: 0, blocks: 0x8000))
            // An immediate READ of 8 MiB.
            var immediate = client.header(
                opcode: RawOpcode.scsiCommand, immediate: true, flags: 0xc0, initiatorTaskTag: tag | 0x8000_0000)
            RawISCSIClient.put(8 << 20, into: &immediate, at: 20)
            immediate.replaceSubrange(32..<42, with: RawISCSIClient.read10(lba: 0, blocks: 16384))
            var nop = client.header(opcode: RawOpcode.nopOut, immediate: true, flags: 0x80, initiatorTaskTag: tag)
            RawISCSIClient.put(0xffff_ffff, into: &nop, at: 20)
            let bytes = client.encode(header: read) + client.encode(header: immediate) + client.encode(header: nop)
            guard (try? client.send(bytes)) != nil, (try? client.sendTaskManagement(.abortTaskSet)) != nil else {
                return
            }
            discoveryCommands.add(4)
            Thread.sleep(forTimeInterval: 0.005)
        }
    }

    private func listTargets(_ clients: [RawISCSIClient]) {
        while !stop.raised {
            for client in clients where !stop.raised {
                guard (try? client.sendTargets()) != nil else { return }
                sendTargets.add()
            }
        }
    }

    /// Discovery logins while max_discovery_sessions are held: each must be refused with 0x0302.
    private func discoveryBeyondTheLimit() {
        while !stop.raised {
            if let client = try? RawISCSIClient(port: port, sourceAddress: Tests.discoveryAddress) {
                opened.add()
                if let login = try? client.login(initiatorName: Tests.attacker, targetName: nil) {
                    if login.response.loginStatus == (3, 0x02) { discoveryRefused.add() }
                    if login.succeeded { lock.withLock { sessions.append(client) } }
                }
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    /// Connects `churnWidth` at a time from the flood's address, sends half a Login Request and closes; counts
    /// those that ferryd closed first (beyond max_logins_in_progress_per_address).
    private func churn() {
        let half: [UInt8] = [0x43, 0x87, 0, 0] + [UInt8](repeating: 0, count: 20)
        while !stop.raised {
            let batch = (0..<Tests.churnWidth).compactMap { _ in
                try? RawISCSIClient.connectToLoopback(port: port, from: Tests.floodAddress)
            }
            opened.add(batch.count)
            for descriptor in batch {
                _ = half.withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            }
            Thread.sleep(forTimeInterval: 0.02)
            for descriptor in batch {
                if HalfOpenLogins.isClosedByPeer(descriptor) { closedAtOnce.add() }
                close(descriptor)
            }
            Thread.sleep(forTimeInterval: 0.03)
        }
    }
}

/// Connections from the flood's address that send nothing, or a Login Request cut short, and are opened again when
/// ferryd closes them.
private final class HalfOpenLogins: @unchecked Sendable {
    let port: Int
    let silent: Int
    let partial: Int
    private var descriptors: [Int32] = []
    var count: Int { descriptors.count }

    init(port: Int, silent: Int, partial: Int) {
        self.port = port
        self.silent = silent
        self.partial = partial
    }

    /// The header of a Login Request announcing 512 bytes of keys, and the first 100 of them.
    static let partialLogin: [UInt8] = {
        var header: [UInt8] = [0x43, 0x87, 0, 0, 0, 0, 0x02, 0x00] + [UInt8](repeating: 0, count: 40)
        header[8] = 0xc0
        return header + Array("InitiatorName=iqn.2026-11.dev.ferry.test:half-open\0SessionType=Normal\0Target".utf8)
    }()

    private func connect(_ index: Int) throws -> Int32 {
        let descriptor = try RawISCSIClient.connectToLoopback(port: port, from: AgainstFerryd.HostileMixTests.floodAddress)
        if index >= silent {
            _ = Self.partialLogin.withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
        return descriptor
    }

    func open(_ opened: Counter) throws {
        descriptors = try (0..<silent + partial).map { try connect($0) }
        opened.add(descriptors.count)
    }

    /// Until `stop`: every 100 ms, opens again each connection ferryd has closed.
    func hold(until stop: StopFlag, opened: Counter, closed: Counter) {
        while !stop.raised {
            Thread.sleep(forTimeInterval: 0.1)
            for index in descriptors.indices where descriptors[index] < 0 || Self.isClosedByPeer(descriptors[index]) {
                if descriptors[index] >= 0 {
                    closed.add()
                    close(descriptors[index])
                }
                if let descriptor = try? connect(index) {
                    descriptors[index] = descriptor
                    opened.add()
                } else {
                    descriptors[index] = -1
                }
            }
        }
        for descriptor in descriptors where descriptor >= 0 { close(descriptor) }
    }

    /// Whether the peer has closed `descriptor` (EOF or a reset); drops anything it sent.
    static func isClosedByPeer(_ descriptor: Int32) -> Bool {
        guard descriptor >= 0 else { return false }
        var buffer = [UInt8](repeating: 0, count: 512)
        let read = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        return read == 0 || (read < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
    }
}

/// Runs blocking `work` on a thread of its own (the attack's senders block for long), off the cooperative pool.
private func onThread<Value: Sendable>(_ work: @escaping @Sendable () -> Value) -> Task<Value, Never> {
    Task {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: work()) }.start()
        }
    }
}
