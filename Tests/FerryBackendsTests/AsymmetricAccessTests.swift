import FerryBackends
import FerrySync
import SCSI
import Testing

/// Implicit ALUA in the emulated device server (issue 13): TPGS, the target port group designator, REPORT TARGET
/// PORT GROUPS, and what a standby target port group still serves.
@Suite struct AsymmetricAccessTests {
    /// Two gateways: this one (group 1) in `state`, the other (group 2) in the complementary state.
    final class TwoGateways: AsymmetricAccess {
        let state: Locked<AsymmetricAccessState>
        let implicitTransitionSeconds: UInt8 = 30

        init(_ state: AsymmetricAccessState) { self.state = Locked(state) }

        var localState: AsymmetricAccessState { state.withLock { $0 } }

        func reportChanges(to unitAttentions: UnitAttentionConditions) {}

        func relinquish() {}

        func targetPortGroups() -> [TargetPortGroup] {
            let local = localState
            return [
                TargetPortGroup(identifier: 1, state: local, relativeTargetPorts: [1]),
                TargetPortGroup(
                    identifier: 2, state: local == .activeOptimized ? .standby : .activeOptimized,
                    relativeTargetPorts: [2]),
            ]
        }
    }

    static let reportTargetPortGroups: [UInt8] = [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]

    @Test func withoutGatewaysThereAreNoTargetPortGroups() {
        let h = Harness()
        #expect(h.run([0x12, 0, 0, 0, 96, 0]).bytes[5] & 0x30 == 0)
        h.run(Self.reportTargetPortGroups).expectSense(.illegalRequest, .invalidFieldInCDB, fieldPointer: (1, 4))
    }

    @Test func reportsTPGSTheGroupAndEveryGroupsState() {
        let h = Harness(asymmetricAccess: TwoGateways(.activeOptimized))
        #expect(h.run([0x12, 0, 0, 0, 96, 0]).bytes[5] & 0x30 == 0x10)
        let page = h.run([0x12, 0x01, 0x83, 0, 255, 0]).bytes
        // The target port group designator: binary, associated with the target port, type 5, group 1 (the nexus's
        // relative target port identifier).
        let designator: [UInt8] = [0x01, 0x15, 0, 4, 0, 0, 0, 1]
        #expect(page.indices.contains { Array(page[$0...].prefix(8)) == designator }, "\(page)")
        #expect(
            h.run(Self.reportTargetPortGroups).bytes == [
                0, 0, 0, 24,
                0x00, 0x0d, 0, 1, 0, 0x02, 0, 1, 0, 0, 0, 1,
                0x02, 0x0d, 0, 2, 0, 0x02, 0, 1, 0, 0, 0, 2,
            ])
        // PARAMETER DATA FORMAT 001b: the extended header with the implicit transition time.
        var extended = Self.reportTargetPortGroups
        extended[1] |= 0x20
        #expect(h.run(extended).bytes.prefix(8) == [0, 0, 0, 24, 0x10, 30, 0, 0])
        extended[1] = 0x40 | 0x0a
        h.run(extended).expectSense(.illegalRequest, .invalidFieldInCDB, fieldPointer: (1, 7))
        // REPORT SUPPORTED OPERATION CODES lists it: SUPPORT 011b, as the standard requires.
        let supported = h.run([0xa3, 0x0c, 0x02, 0xa3, 0, 0x0a, 0, 0, 0, 64, 0, 0])
        #expect(supported.status == .good)
        #expect(supported.bytes.count > 1 && supported.bytes[1] & 0x07 == 0x03, "\(supported.bytes)")
    }

    @Test func aStandbyGroupServesOnlyWhatSPC4Lists() {
        let access = TwoGateways(.standby)
        let h = Harness(asymmetricAccess: access)
        for cdb: [UInt8] in [
            [0x00, 0, 0, 0, 0, 0], cdb10(0x28, lba: 0, blocks: 1), cdb10(0x2a, lba: 0, blocks: 1),
            [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            h.run(cdb, data: cdb[0] == 0x2a ? [UInt8](repeating: 1, count: 512) : [])
                .expectSense(.notReady, .logicalUnitNotAccessibleTargetPortInStandbyState)
        }
        for cdb: [UInt8] in [
            [0x12, 0, 0, 0, 96, 0], [0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], [0x03, 0, 0, 0, 252, 0],
            [0x5e, 0, 0, 0, 0, 0, 0, 0, 255, 0], [0x1a, 0, 0x3f, 0, 255, 0], Self.reportTargetPortGroups,
        ] {
            #expect(h.run(cdb).status == .good, "\(cdb)")
        }
        // The group becomes active: media access works.
        access.state.withLock { $0 = .activeOptimized }
        #expect(h.run(cdb10(0x28, lba: 0, blocks: 1)).status == .good)
        access.state.withLock { $0 = .unavailable }
        h.run(cdb10(0x28, lba: 0, blocks: 1)).expectSense(.notReady, .logicalUnitNotAccessibleTargetPortInUnavailableState)
    }
}
