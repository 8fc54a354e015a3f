import Testing

@testable import SCSI

/// REPORTED LUNS DATA HAS CHANGED across the logical units of a target: reported once per I_T nexus (LUICLR).
@Suite struct TargetUnitAttentionTests {
    let first = ITNexus(
        initiatorPortName: "iqn.2024-01.org.example:one,i,0x400001370000", targetPortName: "iqn.t,t,0x1",
        relativeTargetPortIdentifier: 1)
    let second = ITNexus(
        initiatorPortName: "iqn.2024-01.org.example:two,i,0x400001370001", targetPortName: "iqn.t,t,0x1",
        relativeTargetPortIdentifier: 1)

    @Test func theFirstLogicalUnitToReportItClearsItOnTheOthers() {
        let (zero, one) = (UnitAttentionConditions(), UnitAttentionConditions())
        let changed = TargetUnitAttention(.reportedLUNsDataHasChanged)
        changed.establish(for: [first, second], on: [zero, one])
        #expect(one.take(for: first) == .reportedLUNsDataHasChanged)
        #expect(zero.peek(for: first) == nil, "reported once per I_T nexus")
        #expect(zero.take(for: first) == nil)
        #expect(zero.take(for: second) == .reportedLUNsDataHasChanged, "the other I_T nexus still has it")
        #expect(one.take(for: second) == nil)
    }

    @Test func reportLUNsClearsItEverywhereAndItCanBeEstablishedAgain() {
        let (zero, one) = (UnitAttentionConditions(), UnitAttentionConditions())
        let changed = TargetUnitAttention(.reportedLUNsDataHasChanged)
        zero.establish(.modeParametersChanged, for: first)
        changed.establish(for: [first], on: [zero, one])
        #expect(changed.clear(for: first), "what REPORT LUNS does")
        #expect(zero.take(for: first) == .modeParametersChanged, "a logical unit's own condition stays")
        #expect(zero.take(for: first) == nil)
        #expect(one.take(for: first) == nil)

        changed.establish(for: [first], on: [zero, one])
        #expect(zero.take(for: first) == .reportedLUNsDataHasChanged)
        #expect(one.take(for: first) == nil)
    }

    @Test func nexusLossEndsIt() {
        let zero = UnitAttentionConditions()
        let changed = TargetUnitAttention(.reportedLUNsDataHasChanged)
        changed.establish(for: [first], on: [zero])
        zero.apply(.itNexusLoss(first))
        #expect(!changed.isPending(for: first))
        #expect(zero.take(for: first) == .itNexusLossOccurred)
        #expect(zero.take(for: first) == nil)
    }
}
