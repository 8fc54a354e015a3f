import NIOCore
import Testing

@testable import SCSI

/// Two I_T nexuses, a reservation state and helpers to send it commands.
struct ReservationFixture {
    let first = ITNexus(
        initiatorPortName: "iqn.2024-01.org.example:one,i,0x400001370000", targetPortName: "iqn.t,t,0x1",
        relativeTargetPortIdentifier: 1)
    let second = ITNexus(
        initiatorPortName: "iqn.2024-01.org.example:two,i,0x400001370001", targetPortName: "iqn.t,t,0x1",
        relativeTargetPortIdentifier: 1)
    let unitAttentions = UnitAttentionConditions()
    let reservations: ReservationState

    init() {
        reservations = ReservationState(unitAttentions: unitAttentions)
        unitAttentions.noteNexus(first)
        unitAttentions.noteNexus(second)
    }

    func request(_ cdb: [UInt8], from nexus: ITNexus, dataOut: [UInt8] = []) -> SCSIRequest {
        SCSIRequest(
            cdb: ByteBuffer(bytes: cdb), lun: 0, nexus: nexus, expectedDataTransferLength: max(dataOut.count, 4096),
            dataOut: ByteBuffer(bytes: dataOut))
    }

    /// Whether `cdb` from `nexus` passes the reservation check.
    func allowed(_ cdb: [UInt8], from nexus: ITNexus) -> Bool {
        reservations.check(ByteBuffer(bytes: cdb), from: nexus) == nil
    }

    static let read10: [UInt8] = [0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0]
    static let write10: [UInt8] = [0x2a, 0, 0, 0, 0, 1, 0, 0, 1, 0]
    static let inquiry: [UInt8] = [0x12, 0, 0, 0, 36, 0]
    static let modeSense6: [UInt8] = [0x1a, 0, 0x3f, 0, 255, 0]
    static let testUnitReady: [UInt8] = [0, 0, 0, 0, 0, 0]
    static let reserve6: [UInt8] = [0x16, 0, 0, 0, 0, 0]
    static let release6: [UInt8] = [0x17, 0, 0, 0, 0, 0]
}

@Suite struct ReservationTests {
    @Test func reserveConflictsForOtherNexus() {
        let f = ReservationFixture()
        #expect(f.reservations.reserve(f.request(ReservationFixture.reserve6, from: f.first)).status == .good)
        // Re-reserving by the holder is fine.
        #expect(f.reservations.reserve(f.request(ReservationFixture.reserve6, from: f.first)).status == .good)
        #expect(
            f.reservations.reserve(f.request(ReservationFixture.reserve6, from: f.second)).status
                == .reservationConflict)
        #expect(f.allowed(ReservationFixture.modeSense6, from: f.first))
        #expect(!f.allowed(ReservationFixture.modeSense6, from: f.second))
        #expect(!f.allowed(ReservationFixture.read10, from: f.second))
        #expect(!f.allowed(ReservationFixture.testUnitReady, from: f.second))
        #expect(f.allowed(ReservationFixture.inquiry, from: f.second))
        #expect(f.allowed(ReservationFixture.release6, from: f.second))
        // RELEASE from the other nexus does nothing.
        #expect(f.reservations.release(f.request(ReservationFixture.release6, from: f.second)).status == .good)
        #expect(!f.allowed(ReservationFixture.read10, from: f.second))
        #expect(f.reservations.release(f.request(ReservationFixture.release6, from: f.first)).status == .good)
        #expect(f.allowed(ReservationFixture.read10, from: f.second))
        #expect(f.reservations.reserve(f.request(ReservationFixture.reserve6, from: f.second)).status == .good)
    }

    @Test(arguments: [
        LogicalUnitEvent.logicalUnitReset, .targetReset(cold: true), .targetReset(cold: false),
    ])
    func resetsRelease(_ event: LogicalUnitEvent) {
        let f = ReservationFixture()
        _ = f.reservations.reserve(f.request(ReservationFixture.reserve6, from: f.first))
        f.reservations.apply(event)
        #expect(f.allowed(ReservationFixture.write10, from: f.second))
    }

    @Test func nexusLossReleasesOnlyItsOwnReservation() {
        let f = ReservationFixture()
        _ = f.reservations.reserve(f.request(ReservationFixture.reserve6, from: f.first))
        f.reservations.apply(.itNexusLoss(f.second))
        #expect(!f.allowed(ReservationFixture.write10, from: f.second))
        f.reservations.apply(.itNexusLoss(f.first))
        #expect(f.allowed(ReservationFixture.write10, from: f.second))
    }

    @Test func reserveConflictsWithPersistentRegistrations() {
        let f = ReservationFixture()
        #expect(f.registerAndIgnore(0x1111, from: f.second).status == .good)
        #expect(
            f.reservations.reserve(f.request(ReservationFixture.reserve6, from: f.first)).status
                == .reservationConflict)
    }

    @Test func thirdPartyReserveIsRejected() {
        let f = ReservationFixture()
        let result = f.reservations.reserve(f.request([0x56, 0x10, 0, 0, 0, 0, 0, 0, 0, 0], from: f.first))
        #expect(result.status == .checkCondition)
        #expect(result.sense?.code == .invalidFieldInCDB)
    }
}
