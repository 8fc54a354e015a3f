import Dispatch
import FerryConfig
@testable import FerryTarget
import Foundation
@testable import ISCSIProtocol
import Logging
import NIOEmbedded
import Testing

/// Admission of new sessions against `[limits]`: the check, the TSIH and the registration are one step, so that
/// logins admitted at the same time on different loops never exceed a limit.
@Suite struct SessionAdmissionTests {
    static let target = "iqn.2026-11.dev.ferry:admission"

    static func context(limits: Limits, directory: URL) throws -> TargetContext {
        let lun = LogicalUnit(lun: 0, path: directory.appendingPathComponent("lun0.img").path, size: 1 << 20)
        let configuration = FerryConfiguration(
            portals: [Portal(host: "127.0.0.1")], targets: [Target(name: target, luns: [lun])],
            stateDirectory: directory.path, limits: limits)
        return try TargetContext(configuration: configuration, logger: Logger(label: "test"))
    }

    static func summary(initiator: String, type: SessionType) -> LoginSummary {
        var parameters = NegotiatedParameters()
        parameters.sessionType = type
        return LoginSummary(
            isid: ISID(rawValue: UInt64.random(in: 0...0xffff_ffff_ffff)), tsih: 0, cid: 0, cmdSN: 1,
            initiatorName: initiator, initiatorAlias: nil, sessionType: type,
            target: type == .normal ? LoginTarget(name: target) : nil, authenticatedUser: nil, parameters: parameters)
    }

    /// Admits `logins` from as many threads at once, each on a channel of its own; how many were admitted.
    static func admitConcurrently(_ context: TargetContext, _ logins: [LoginSummary]) -> Int {
        let admitted = Counter()
        let start = DispatchSemaphore(value: 0)
        let done = DispatchGroup()
        for login in logins {
            done.enter()
            Thread {
                start.wait()
                let channel = EmbeddedChannel()
                context.admit(login, channel: channel, logger: context.logger).whenSuccess { _ in admitted.increment() }
                channel.embeddedEventLoop.run()
                done.leave()
            }.start()
        }
        for _ in logins { start.signal() }
        done.wait()
        return admitted.value
    }

    @Test func concurrentLoginsNeverExceedMaxSessions() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("admission-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var limits = Limits()
        limits.maxSessions = 8
        let context = try Self.context(limits: limits, directory: directory)
        defer { context.shutdown() }
        for round in 0..<50 {
            let logins = (0..<64).map { Self.summary(initiator: "iqn.2026-11.dev.ferry.test:host\(round)-\($0)", type: .normal) }
            let admitted = Self.admitConcurrently(context, logins)
            #expect(admitted == 8, "round \(round)")
            #expect(context.registry.count == 8, "round \(round)")
            for session in context.registry.all { context.registry.remove(session) }
        }
    }

    @Test func discoverySessionsAndEachInitiatorHaveLimitsOfTheirOwn() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("admission-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        var limits = Limits()
        limits.maxSessions = 8
        limits.maxDiscoverySessions = 4
        limits.maxSessionsPerInitiator = 3
        let context = try Self.context(limits: limits, directory: directory)
        defer { context.shutdown() }
        let discoveries = (0..<16).map { Self.summary(initiator: "iqn.2026-11.dev.ferry.test:d\($0)", type: .discovery) }
        #expect(Self.admitConcurrently(context, discoveries) == 4)
        let oneHost = (0..<16).map { _ in Self.summary(initiator: "iqn.2026-11.dev.ferry.test:greedy", type: .normal) }
        #expect(Self.admitConcurrently(context, oneHost) == 3)
        let others = (0..<16).map { Self.summary(initiator: "iqn.2026-11.dev.ferry.test:n\($0)", type: .normal) }
        #expect(Self.admitConcurrently(context, others) == 5)
        #expect(context.registry.count == 12)
    }
}

/// The pure admission: each limit, and places given back.
@Suite struct SessionAdmissionLimitTests {
    static let limits = SessionAdmission.Limits(maxSessions: 3, maxDiscoverySessions: 2, maxSessionsPerInitiator: 2)

    @Test func normalAndDiscoverySessionsAreCountedApart() {
        var admission = SessionAdmission()
        for index in 0..<2 {
            #expect((try? admission.admit(.discovery, initiatorName: "d\(index)", limits: Self.limits).get()) != nil)
        }
        #expect(admission.admit(.discovery, initiatorName: "d2", limits: Self.limits) == .failure(.maxDiscoverySessions(2)))
        for index in 0..<3 {
            #expect((try? admission.admit(.normal, initiatorName: "n\(index)", limits: Self.limits).get()) != nil)
        }
        #expect(admission.admit(.normal, initiatorName: "n3", limits: Self.limits) == .failure(.maxSessions(3)))
        #expect(admission.normalSessions == 3 && admission.discoverySessions == 2)
    }

    @Test func oneInitiatorHoldsAtMostItsShareOfEachType() throws {
        var admission = SessionAdmission()
        let first = admission.admit(.normal, initiatorName: "greedy", limits: Self.limits)
        _ = admission.admit(.normal, initiatorName: "greedy", limits: Self.limits)
        #expect(admission.admit(.normal, initiatorName: "greedy", limits: Self.limits) == .failure(.maxSessionsPerInitiator(2)))
        // Its discovery sessions are counted apart, and another initiator still gets in.
        #expect((try? admission.admit(.discovery, initiatorName: "greedy", limits: Self.limits).get()) != nil)
        #expect((try? admission.admit(.normal, initiatorName: "other", limits: Self.limits).get()) != nil)
        // A session that ends gives its place back.
        admission.release(tsih: try #require(try? first.get()))
        #expect((try? admission.admit(.normal, initiatorName: "greedy", limits: Self.limits).get()) != nil)
        // A TSIH that was never given changes nothing.
        admission.release(tsih: 0xffff)
        #expect(admission.normalSessions == 3)
    }

    @Test func tsihsAreNeverZeroNorInUse() {
        var admission = SessionAdmission()
        let limits = SessionAdmission.Limits(maxSessions: 65_536, maxDiscoverySessions: 1, maxSessionsPerInitiator: 65_536)
        var given = Set<UInt16>()
        for _ in 0..<65_535 {
            guard case .success(let tsih) = admission.admit(.normal, initiatorName: "i", limits: limits) else {
                Issue.record("refused before every TSIH was given")
                return
            }
            given.insert(tsih)
        }
        #expect(given.count == 65_535 && !given.contains(0))
        #expect(admission.admit(.normal, initiatorName: "i", limits: limits) == .failure(.noTSIH))
        admission.release(tsih: 7)
        #expect(admission.admit(.normal, initiatorName: "i", limits: limits) == .success(7))
    }
}

private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    var value: Int { lock.withLock { count } }
    func increment() { lock.withLock { count += 1 } }
}
