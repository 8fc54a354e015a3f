import FerryConfig
import NIOCore
import Testing

@testable import FerryTarget
@testable import ISCSIProtocol

/// Admission of logins into the registry over real connections: the `[limits]` refuse a session with the status
/// ``TargetContext/admit(_:channel:logger:)`` gives, and session reinstatement replaces the old session of the same
/// I_T nexus.
@Suite struct RegistryAdmissionTests {
    /// RFC 7143 §11.13.5: a login refused for `max_sessions` gets 0x0302 Out of resources, and the connection closes;
    /// the session already admitted carries on.
    @Test func aLoginOverMaxSessionsIsRefusedWithOutOfResources() throws {
        var limits = Limits()
        limits.maxSessions = 1
        let target = try EmbeddedTarget(limits: limits)
        let first = try target.connect(isid: 0x8000_0000_0001)
        #expect(try first.logIn()?.statusClass == 0)

        let second = try target.connect(isid: 0x8000_0000_0002)
        let refused = try #require(try second.logIn())
        #expect(refused.statusClass == 3 && refused.statusDetail == 2)
        #expect(!refused.transit)
        #expect(!second.channel.isActive)
        #expect(target.context.registry.count == 1)
        #expect(try first.run(first.command(testUnitReady))?.status == good)
    }

    /// RFC 7143 §6.3.5: a leading login with the ISID and initiator name of a session of the same target reinstates
    /// it: the old session leaves the registry before the limits are checked (so `max_sessions` = 1 lets its
    /// successor in), its connection is closed, and the loss of its I_T nexus (SAM-5 §6.3.4) is established once, for
    /// the successor's first command: 06/29/07 I_T NEXUS LOSS OCCURRED.
    @Test func reinstatementReplacesTheOldSessionWhoseNexusIsLost() throws {
        var limits = Limits()
        limits.maxSessions = 1
        let target = try EmbeddedTarget(limits: limits)
        let old = try target.connect(isid: 0x8000_0000_0001)
        let oldLogin = try #require(try old.logIn())
        #expect(try old.run(old.command(testUnitReady))?.status == good)

        let successor = try target.connect(isid: 0x8000_0000_0001)
        let login = try #require(try successor.logIn())
        #expect(login.statusClass == 0)
        #expect(login.tsih != oldLogin.tsih)
        #expect(try old.receive().isEmpty)
        #expect(!old.channel.isActive)
        #expect(target.context.registry.count == 1)
        #expect(target.context.registry.session(tsih: oldLogin.tsih) == nil)
        #expect(target.context.registry.session(tsih: login.tsih) != nil)

        let first = try #require(try successor.run(successor.command(testUnitReady)))
        #expect(first.status == checkCondition)
        #expect(first.senseCode == [0x06, 0x29, 0x07])
        // The old session's own end does not lose the nexus a second time.
        #expect(try successor.run(successor.command(testUnitReady))?.status == good)
    }
}
