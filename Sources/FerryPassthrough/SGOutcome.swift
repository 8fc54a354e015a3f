public import SCSI

/// What the sg driver says about a finished request: the output fields of `sg_io_hdr`.
public struct SGOutcome: Sendable, Hashable {
    /// The SAM status byte the device returned.
    public var status: UInt8
    /// The low-level driver's verdict (`DID_*`, ``HostStatus``).
    public var hostStatus: UInt16
    /// The midlayer's verdict: the driver byte in the low nibble (`DRIVER_SENSE` = 08h when sense
    /// was copied), suggestion flags in the high nibble.
    public var driverStatus: UInt16
    /// Sense data the device returned (`sb_len_wr` bytes).
    public var sense: [UInt8]
    /// `dxfer_len` minus the bytes actually transferred.
    public var residual: Int32
    /// Milliseconds the command took.
    public var duration: UInt32

    public init(
        status: UInt8, hostStatus: UInt16 = 0, driverStatus: UInt16 = 0, sense: [UInt8] = [], residual: Int32 = 0,
        duration: UInt32 = 0
    ) {
        self.status = status
        self.hostStatus = hostStatus
        self.driverStatus = driverStatus
        self.sense = sense
        self.residual = residual
        self.duration = duration
    }
}

/// The host byte of a SCSI command's result (`DID_*` in the kernel's include/scsi/scsi_status.h).
public enum HostStatus: UInt16, Sendable, Hashable {
    case ok = 0x00
    case noConnect = 0x01
    case busBusy = 0x02
    case timeOut = 0x03
    case badTarget = 0x04
    case abort = 0x05
    case parity = 0x06
    case error = 0x07
    case reset = 0x08
    case badInterrupt = 0x09
    case passthrough = 0x0a
    case softError = 0x0b
    case immediateRetry = 0x0c
    case requeue = 0x0d
    case transportDisrupted = 0x0e
    case transportFailfast = 0x0f
    case targetFailure = 0x10
    case nexusFailure = 0x11
    case allocationFailure = 0x12
    case mediumError = 0x13
    case transportMarginal = 0x14
}

extension SGOutcome {
    /// The driver byte values that are not failures: none, and DRIVER_SENSE (sense copied).
    static let driverSense: UInt16 = 0x08
    /// DRIVER_TIMEOUT, still reported by older kernels for a command the midlayer timed out.
    static let driverTimeout: UInt16 = 0x06

    /// The result the initiator receives for this outcome.
    ///
    /// A command the device answered (host byte DID_OK, no driver error) passes through intact:
    /// its status, and its sense data byte for byte. A command the device never answered, or
    /// whose answer was lost, ends with CHECK CONDITION and sense data chosen per SPC-4 §4.5.6 so
    /// that the initiator's usual reaction is the right one:
    ///
    /// - DID_TIME_OUT (and DRIVER_TIMEOUT): ABORTED COMMAND, 08/01 LOGICAL UNIT COMMUNICATION
    ///   TIME-OUT. The kernel aborted it after `command_timeout`; a retry may succeed.
    /// - DID_RESET, DID_ABORT, DID_BUS_BUSY, DID_SOFT_ERROR, DID_IMM_RETRY, DID_REQUEUE,
    ///   DID_TRANSPORT_DISRUPTED, DID_TRANSPORT_MARGINAL: ABORTED COMMAND, 08/00 LOGICAL UNIT
    ///   COMMUNICATION FAILURE. Lost on the way to the device; retry.
    /// - DID_PARITY: ABORTED COMMAND, 47/00 SCSI PARITY ERROR, as the device would say it.
    /// - DID_ERROR, DID_BAD_INTR, DID_ALLOC_FAILURE, unknown host bytes and other driver errors:
    ///   ABORTED COMMAND, 44/00 INTERNAL TARGET FAILURE. The host adapter failed it; a retry may succeed.
    /// - DID_TARGET_FAILURE: HARDWARE ERROR, 44/00. Permanent: the midlayer says not to retry.
    /// - DID_MEDIUM_ERROR: MEDIUM ERROR, 00/00 (the midlayer did not keep the device's sense).
    /// - DID_NO_CONNECT, DID_BAD_TARGET, DID_TRANSPORT_FAILFAST: NOT READY, 04/00 LOGICAL UNIT NOT
    ///   READY, CAUSE NOT REPORTABLE. The device is unreachable.
    /// - DID_NEXUS_FAILURE: status RESERVATION CONFLICT (the midlayer's rewrite of a conflict).
    ///
    /// ASC 2Eh (COMMAND TIMEOUT …) is avoided: Linux 6.5 and later take it for a command duration
    /// limit abort and fail the I/O without a retry.
    ///
    /// CHECK CONDITION from the device without sense data (SAM-5 requires some), and a status
    /// byte SAM-5 no longer defines, become ABORTED COMMAND 44/00.
    public var result: SCSIResult {
        let driverByte = driverStatus & 0x0f
        let host = HostStatus(rawValue: hostStatus)
        if host == .ok || host == .passthrough, driverByte == 0 || driverByte == Self.driverSense {
            guard let status = SCSIStatus(rawValue: status & 0xfe) else {
                // An obsolete or vendor status byte (INTERMEDIATE, COMMAND TERMINATED…).
                return .checkCondition(SenseData(.abortedCommand, .internalTargetFailure))
            }
            guard status == .checkCondition else { return SCSIResult(status: status) }
            return .checkCondition(SenseData(verbatim: sense) ?? SenseData(.abortedCommand, .internalTargetFailure))
        }
        switch host {
        case .ok?, .passthrough?:
            // A driver error without a host error.
            let code: AdditionalSenseCode =
                driverByte == Self.driverTimeout ? .logicalUnitCommunicationTimeOut : .internalTargetFailure
            return .checkCondition(SenseData(.abortedCommand, code))
        case .timeOut?:
            return .checkCondition(SenseData(.abortedCommand, .logicalUnitCommunicationTimeOut))
        case .reset?, .abort?, .busBusy?, .softError?, .immediateRetry?, .requeue?, .transportDisrupted?,
            .transportMarginal?:
            return .checkCondition(SenseData(.abortedCommand, .logicalUnitCommunicationFailure))
        case .parity?:
            return .checkCondition(SenseData(.abortedCommand, .scsiParityError))
        case .targetFailure?:
            return .checkCondition(SenseData(.hardwareError, .internalTargetFailure))
        case .mediumError?:
            return .checkCondition(SenseData(.mediumError, .noAdditionalSenseInformation))
        case .noConnect?, .badTarget?, .transportFailfast?:
            return .checkCondition(SenseData(.notReady, .logicalUnitNotReadyCauseNotReportable))
        case .nexusFailure?:
            return SCSIResult(status: .reservationConflict)
        case .error?, .badInterrupt?, .allocationFailure?, nil:
            return .checkCondition(SenseData(.abortedCommand, .internalTargetFailure))
        }
    }

    /// The result for a command the sg driver refused to take (`write()` or `SG_IO` failed with
    /// `errno`, other than the queue-full `EDOM`/`EAGAIN` that Ferry queues through):
    /// ENODEV/ENXIO (device gone) NOT READY 04/00; ENOMEM BUSY, for the initiator to retry;
    /// EPERM (the kernel's command filter, without CAP_SYS_RAWIO) INVALID COMMAND OPERATION CODE;
    /// EINVAL/EMSGSIZE/E2BIG/EOVERFLOW (a CDB or transfer sg cannot carry) ILLEGAL REQUEST
    /// INVALID FIELD IN CDB; anything else ABORTED COMMAND 44/00.
    public static func result(forSubmissionError errno: Int32) -> SCSIResult {
        switch errno {
        case SGErrno.noDevice, SGErrno.noSuchDeviceOrAddress:
            return .checkCondition(SenseData(.notReady, .logicalUnitNotReadyCauseNotReportable))
        case SGErrno.outOfMemory:
            return SCSIResult(status: .busy)
        case SGErrno.notPermitted:
            return .checkCondition(.invalidCommandOperationCode)
        case SGErrno.invalidArgument, SGErrno.messageTooLong, SGErrno.argumentListTooLong, SGErrno.overflow:
            return .checkCondition(SenseData(.illegalRequest, .invalidFieldInCDB))
        default:
            return .checkCondition(SenseData(.abortedCommand, .internalTargetFailure))
        }
    }
}

extension AdditionalSenseCode {
    /// 08/01 LOGICAL UNIT COMMUNICATION TIME-OUT.
    static let logicalUnitCommunicationTimeOut = AdditionalSenseCode(0x08, 0x01)
    /// 47/00 SCSI PARITY ERROR.
    static let scsiParityError = AdditionalSenseCode(0x47, 0x00)
}
