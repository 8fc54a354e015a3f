import FerryConfig
import NIOCore
import Testing

@testable import FerryTarget
@testable import ISCSIProtocol

/// ``ISCSITarget/reload(_:)`` while a session is logged in: what the session's initiator sees.
@Suite struct ReloadSessionTests {
    /// SPC-4 §6.33: when the logical unit inventory changes, every I_T nexus gets REPORTED LUNS DATA HAS CHANGED,
    /// once for the target, and the session is not otherwise touched.
    @Test func aLUNAddedRaisesReportedLUNsDataHasChanged() throws {
        let target = try EmbeddedTarget(luns: [0])
        let initiator = try target.connect()
        #expect(try initiator.logIn()?.statusClass == 0)
        #expect(try initiator.run(initiator.command(testUnitReady))?.status == good)

        let luns = [target.logicalUnit(0), target.logicalUnit(1)]
        let report = try target.target.reload(
            target.configuration(targets: [Target(name: EmbeddedTarget.targetName, luns: luns)]))
        #expect(report.changes == ["added LUN 1 to \(EmbeddedTarget.targetName)"])
        #expect(report.sessionsLoggedOut == 0)
        target.relayBackends()
        #expect(try initiator.receive().isEmpty)

        let changed = try #require(try initiator.run(initiator.command(testUnitReady)))
        #expect(changed.status == checkCondition)
        #expect(changed.senseCode == [0x06, 0x3f, 0x0e])
        // Reported by LUN 0, the condition is gone from LUN 1 too.
        #expect(try initiator.run(initiator.command(testUnitReady, lun: 1))?.status == good)
        let reported = try #require(try initiator.run(initiator.command(reportLUNs, length: 256)))
        #expect(reportedLUNs(reported.dataIn) == [0, 1])
        #expect(initiator.channel.isActive)
    }

    /// RFC 7143 §11.9.1: the session of a removed target gets an Asynchronous Message asking for a logout within
    /// Parameter3 seconds, and is closed when they have passed.
    @Test func aRemovedTargetAsksItsSessionToLogOutAndClosesIt() throws {
        let target = try EmbeddedTarget()
        let initiator = try target.connect()
        let login = try #require(try initiator.logIn())

        let report = try target.target.reload(target.configuration(targets: []))
        #expect(report.changes == ["removed target \(EmbeddedTarget.targetName)"])
        #expect(report.sessionsLoggedOut == 1)
        let answers = try initiator.receive()
        #expect(answers.count == 1)
        guard case .asynchronousMessage(let message)? = answers.first else {
            Issue.record("no Asynchronous Message: \(answers)")
            return
        }
        #expect(message.event == .requestLogout)
        #expect(message.parameter3 == 5)
        #expect(message.sequence.statSN == login.sequence.statSN &+ 1)

        initiator.channel.embeddedEventLoop.advanceTime(by: .milliseconds(4_999))
        #expect(initiator.channel.isActive)
        #expect(target.context.registry.count == 1)
        initiator.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!initiator.channel.isActive)
        #expect(target.context.registry.count == 0)
    }
}
