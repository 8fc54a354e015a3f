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
        for ascq in 0..<40 { conditions.establish(AdditionalSenseCode(0x3f, UInt8(ascq)), for: first) }
        var count = 0
        while conditions.take(for: first) != nil { count += 1 }
        #expect(count == UnitAttentionConditions.queueLimit)
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
}
