import Testing

@testable import SCSI

@Suite struct UnitAttentionTests {
    let first = ITNexus(
        initiatorPortName: "iqn.2024-01.org.example:one,i,0x400001370000", targetPortName: "iqn.t,t,0x1",
        relativeTargetPortIdentifier: 1)
    let second = ITNexus(
        initiatorPortName: "iqn.2024-01.org.example:two,i,0x400001370001", targetPortName: "iqn.t,t,0x1",
        relativeTargetPortIdentifier: 1)

    @Test func newNexusHasNoCondition() {
        let conditions = UnitAttentionConditions()
        conditions.noteNexus(first)
        #expect(conditions.peek(for: first) == nil)
        #expect(conditions.take(for: first) == nil)
    }

    @Test func conditionsAreReportedInOrderWithoutDuplicates() {
        let conditions = UnitAttentionConditions()
        conditions.establish(.modeParametersChanged, for: first)
        conditions.establish(.capacityDataHasChanged, for: first)
        conditions.establish(.modeParametersChanged, for: first)
        #expect(conditions.peek(for: first) == .modeParametersChanged)
        #expect(conditions.take(for: first) == .modeParametersChanged)
        #expect(conditions.take(for: first) == .capacityDataHasChanged)
        #expect(conditions.take(for: first) == nil)
    }

    @Test func resetSupersedesLowerConditions() {
        let conditions = UnitAttentionConditions()
        conditions.establish(.modeParametersChanged, for: first)
        conditions.establish(.itNexusLossOccurred, for: first)
        conditions.establish(.busDeviceResetFunctionOccurred, for: first)
        // A lower-priority reset while a higher one is pending is covered by it.
        conditions.establish(.itNexusLossOccurred, for: first)
        #expect(conditions.take(for: first) == .busDeviceResetFunctionOccurred)
        #expect(conditions.take(for: first) == nil)
        // Conditions established after a reset queue behind it.
        conditions.establish(.powerOnOccurred, for: first)
        conditions.establish(.reservationsReleased, for: first)
        #expect(conditions.take(for: first) == .powerOnOccurred)
        #expect(conditions.take(for: first) == .reservationsReleased)
    }

    @Test func establishForAllNexusesSkipsTheSender() {
        let conditions = UnitAttentionConditions()
        conditions.noteNexus(first)
        conditions.noteNexus(second)
        conditions.establishForAllNexuses(.modeParametersChanged, except: first)
        #expect(conditions.peek(for: first) == nil)
        #expect(conditions.peek(for: second) == .modeParametersChanged)
    }

    @Test func queueIsBounded() {
        let conditions = UnitAttentionConditions()
        let limit = UnitAttentionConditions.queueLimit
        for ascq in 0..<limit { conditions.establish(AdditionalSenseCode(0x3f, UInt8(ascq)), for: first) }
        for ascq in 0..<limit { #expect(conditions.take(for: first) == AdditionalSenseCode(0x3f, UInt8(ascq))) }
        #expect(conditions.take(for: first) == nil)
        // One more than fits: 29/00 replaces the queue, and stands for what it held.
        for ascq in 0...limit { conditions.establish(AdditionalSenseCode(0x3f, UInt8(ascq)), for: first) }
        #expect(conditions.take(for: first) == .powerOnResetOrBusDeviceResetOccurred)
        #expect(conditions.take(for: first) == nil)
    }

    @Test func eventsEstablishTheirConditions() {
        let conditions = UnitAttentionConditions()
        conditions.noteNexus(first)
        conditions.noteNexus(second)
        conditions.apply(.logicalUnitReset)
        #expect(conditions.take(for: first) == .busDeviceResetFunctionOccurred)
        #expect(conditions.take(for: second) == .busDeviceResetFunctionOccurred)

        conditions.apply(.targetReset(cold: false))
        #expect(conditions.take(for: first) == .scsiBusResetOccurred)
        conditions.apply(.targetReset(cold: true))
        #expect(conditions.take(for: first) == .powerOnOccurred)
        #expect(conditions.take(for: second) == .powerOnOccurred)

        conditions.apply(.itNexusLoss(second))
        #expect(conditions.take(for: first) == nil)
        #expect(conditions.take(for: second) == .itNexusLossOccurred)

        conditions.apply(.tasksClearedByAnotherInitiator(by: first, otherNexuses: [second]))
        #expect(conditions.take(for: first) == nil)
        #expect(conditions.take(for: second) == .commandsClearedByAnotherInitiator)
    }

    private static func nexus(_ index: Int) -> ITNexus {
        ITNexus(
            initiatorPortName: "iqn.2024-01.org.example:host\(index % 97),i,0x4000\(String(index, radix: 16))",
            targetPortName: "iqn.t,t,0x1", relativeTargetPortIdentifier: 1)
    }

    @Test func nexusStateStaysBoundedOverManyInitiatorsAndISIDs() {
        let conditions = UnitAttentionConditions()
        for index in 0..<100_000 { conditions.noteNexus(Self.nexus(index)) }
        #expect(conditions.trackedNexusCount <= UnitAttentionConditions.defaultNexusLimit)
        // Sessions that log in, send a command and log out, each with a new ISID.
        for index in 100_000..<200_000 {
            conditions.noteNexus(Self.nexus(index))
            conditions.apply(.itNexusLoss(Self.nexus(index)))
        }
        #expect(conditions.trackedNexusCount <= UnitAttentionConditions.defaultNexusLimit)
    }

    @Test func endedSessionsAreForgottenFirst() {
        let conditions = UnitAttentionConditions(nexusLimit: 3)
        let (live, ended, third, newcomer) = (Self.nexus(1), Self.nexus(2), Self.nexus(3), Self.nexus(4))
        for nexus in [live, ended, third] { conditions.noteNexus(nexus) }
        conditions.apply(.itNexusLoss(ended))
        conditions.establish(.modeParametersChanged, for: live)
        conditions.establish(.modeParametersChanged, for: third)
        conditions.noteNexus(newcomer)
        #expect(conditions.trackedNexusCount == 3)
        // The live nexuses keep their conditions, although `live` was met before the ended one; the newcomer starts
        // without a condition.
        #expect(conditions.take(for: live) == .modeParametersChanged)
        #expect(conditions.take(for: third) == .modeParametersChanged)
        #expect(conditions.take(for: newcomer) == nil)
        // The ended session's 29/07 went with it: coming back, it is met anew, and the nexus met longest ago
        // (`live`) makes room.
        conditions.noteNexus(ended)
        #expect(conditions.trackedNexusCount == 3)
        #expect(conditions.take(for: ended) == nil)
    }

    @Test func withinTheLimitNothingIsForgotten() {
        let conditions = UnitAttentionConditions(nexusLimit: 3)
        let (one, two) = (Self.nexus(1), Self.nexus(2))
        conditions.noteNexus(one)
        conditions.noteNexus(two)
        conditions.apply(.itNexusLoss(two))
        conditions.noteNexus(two)
        #expect(conditions.take(for: two) == .itNexusLossOccurred)
        #expect(conditions.take(for: one) == nil)
        // A nexus the logical unit meets for the first time still starts without a condition.
        conditions.noteNexus(Self.nexus(3))
        #expect(conditions.take(for: Self.nexus(3)) == nil)
    }
}
