import SCSI
import Testing

@testable import FerryPassthrough

@Suite struct SGOutcomeTests {
    @Test func goodPassesThrough() {
        let result = SGOutcome(status: 0x00).result
        #expect(result.status == .good)
        #expect(result.sense == nil)
    }

    @Test func deviceSenseIsKeptByteForByte() {
        // Fixed format, MEDIUM ERROR 11/00 with the INFORMATION field and a vendor byte at the end.
        var sense: [UInt8] = [0xf0, 0, 0x03, 0, 0, 0x12, 0x34, 10, 0, 0, 0, 0, 0x11, 0x00, 0, 0, 0, 0, 0xaa]
        sense[2] |= 0x20  // ILI
        let result = SGOutcome(status: 0x02, driverStatus: 0x08, sense: sense).result
        #expect(result.status == .checkCondition)
        #expect(result.sense?.senseKey == .mediumError)
        #expect(result.sense?.code == .unrecoveredReadError)
        #expect(result.sense?.bytes() == sense)
        #expect(result.sense?.bytes(descriptorFormat: true) == sense)
    }

    @Test func descriptorSenseIsKept() {
        let sense: [UInt8] = [0x72, 0x06, 0x29, 0x00, 0, 0, 0, 0]
        let result = SGOutcome(status: 0x02, sense: sense).result
        #expect(result.sense?.senseKey == .unitAttention)
        #expect(result.sense?.code == .powerOnResetOrBusDeviceResetOccurred)
        #expect(result.sense?.bytes() == sense)
    }

    @Test func otherStatusesPassThrough() {
        #expect(SGOutcome(status: 0x18).result.status == .reservationConflict)
        #expect(SGOutcome(status: 0x08).result.status == .busy)
        #expect(SGOutcome(status: 0x28).result.status == .taskSetFull)
        #expect(SGOutcome(status: 0x40).result.status == .taskAborted)
    }

    @Test func checkConditionWithoutSenseGetsSome() {
        let result = SGOutcome(status: 0x02).result
        #expect(result.sense == SenseData(.abortedCommand, .internalTargetFailure))
    }

    @Test func undefinedStatusBecomesAbortedCommand() {
        #expect(SGOutcome(status: 0x22).result.sense == SenseData(.abortedCommand, .internalTargetFailure))
    }

    @Test(arguments: [
        (HostStatus.timeOut, SenseKey.abortedCommand, AdditionalSenseCode(0x08, 0x01)),
        (.reset, .abortedCommand, AdditionalSenseCode(0x08, 0x00)),
        (.abort, .abortedCommand, AdditionalSenseCode(0x08, 0x00)),
        (.busBusy, .abortedCommand, AdditionalSenseCode(0x08, 0x00)),
        (.transportDisrupted, .abortedCommand, AdditionalSenseCode(0x08, 0x00)),
        (.parity, .abortedCommand, AdditionalSenseCode(0x47, 0x00)),
        (.error, .abortedCommand, AdditionalSenseCode(0x44, 0x00)),
        (.targetFailure, .hardwareError, AdditionalSenseCode(0x44, 0x00)),
        (.mediumError, .mediumError, AdditionalSenseCode(0x00, 0x00)),
        (.noConnect, .notReady, AdditionalSenseCode(0x04, 0x00)),
        (.badTarget, .notReady, AdditionalSenseCode(0x04, 0x00)),
        (.transportFailfast, .notReady, AdditionalSenseCode(0x04, 0x00)),
    ])
    func hostFailuresBecomeCheckCondition(host: HostStatus, key: SenseKey, code: AdditionalSenseCode) {
        // Whatever status and sense came with it, a host failure decides.
        let result = SGOutcome(status: 0x00, hostStatus: host.rawValue, sense: [0x70, 0, 0x05]).result
        #expect(result.status == .checkCondition)
        #expect(result.sense == SenseData(key, code))
    }

    @Test func nexusFailureIsAReservationConflict() {
        let result = SGOutcome(status: 0x00, hostStatus: HostStatus.nexusFailure.rawValue).result
        #expect(result.status == .reservationConflict)
        #expect(result.sense == nil)
    }

    @Test func unknownHostStatusAndDriverErrors() {
        #expect(
            SGOutcome(status: 0, hostStatus: 0x7f).result.sense == SenseData(.abortedCommand, .internalTargetFailure))
        // DRIVER_TIMEOUT (06h) without a host byte, from older kernels.
        #expect(
            SGOutcome(status: 0, driverStatus: 0x06).result.sense
                == SenseData(.abortedCommand, AdditionalSenseCode(0x08, 0x01)))
        // DRIVER_ERROR (04h) with a suggestion flag in the high nibble.
        #expect(
            SGOutcome(status: 0, driverStatus: 0x24).result.sense == SenseData(.abortedCommand, .internalTargetFailure))
        // DRIVER_SENSE alone is no error.
        #expect(SGOutcome(status: 0, driverStatus: 0x08).result.status == .good)
    }

    @Test func submissionErrors() {
        #expect(SGOutcome.result(forSubmissionError: SGErrno.noDevice).sense?.senseKey == .notReady)
        #expect(SGOutcome.result(forSubmissionError: SGErrno.outOfMemory).status == .busy)
        #expect(SGOutcome.result(forSubmissionError: SGErrno.notPermitted).sense == .invalidCommandOperationCode)
        #expect(SGOutcome.result(forSubmissionError: SGErrno.invalidArgument).sense?.code == .invalidFieldInCDB)
        #expect(SGOutcome.result(forSubmissionError: SGErrno.interrupted).sense?.code == .internalTargetFailure)
    }

    @Test func transferredBytesFromTheResidual() {
        #expect(SGCommand.transferred(dataLength: 4096, residual: 0) == 4096)
        #expect(SGCommand.transferred(dataLength: 4096, residual: 512) == 3584)
        #expect(SGCommand.transferred(dataLength: 4096, residual: 5000) == 0)
        #expect(SGCommand.transferred(dataLength: 4096, residual: -1) == 4096)
    }
}
