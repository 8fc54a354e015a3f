public import NIOCore

/// The operation codes of RFC 7143 §11.1.1.1.
///
/// > Initiator opcodes are 0x00-0x1f, target opcodes are 0x20-0x3f.
public enum Opcode: UInt8, Sendable, Hashable {
    case nopOut = 0x00
    case scsiCommand = 0x01
    case taskManagementFunctionRequest = 0x02
    case loginRequest = 0x03
    case textRequest = 0x04
    case scsiDataOut = 0x05
    case logoutRequest = 0x06
    case snackRequest = 0x10
    case nopIn = 0x20
    case scsiResponse = 0x21
    case taskManagementFunctionResponse = 0x22
    case loginResponse = 0x23
    case textResponse = 0x24
    case scsiDataIn = 0x25
    case logoutResponse = 0x26
    case readyToTransfer = 0x31
    case asynchronousMessage = 0x32
    case reject = 0x3f
}

/// The reserved tag value 0xffffffff (RFC 7143 §11.2.1.8 / §11.18.1.1).
public let reservedTag: UInt32 = 0xffff_ffff

/// Task attributes carried in the ATTR field of a SCSI Command (RFC 7143 §11.3.1.2).
public enum TaskAttribute: UInt8, Sendable, Hashable {
    case untagged = 0
    case simple = 1
    case ordered = 2
    case headOfQueue = 3
    case aca = 4
}

/// Login stages, used in CSG and NSG (RFC 7143 §11.12.3).
public enum LoginStage: UInt8, Sendable, Hashable, Comparable {
    case securityNegotiation = 0
    case loginOperationalNegotiation = 1
    case fullFeaturePhase = 3

    public static func < (lhs: LoginStage, rhs: LoginStage) -> Bool { lhs.rawValue < rhs.rawValue }
}

// MARK: - Initiator PDUs

/// NOP-Out, RFC 7143 §11.18.
public struct NOPOut: Sendable, Hashable {
    public var immediate: Bool
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var cmdSN: UInt32
    public var expStatSN: UInt32
    public var pingData: ByteBuffer

    public init(
        immediate: Bool, lun: UInt64 = 0, initiatorTaskTag: UInt32, targetTransferTag: UInt32 = reservedTag,
        cmdSN: UInt32, expStatSN: UInt32, pingData: ByteBuffer = ByteBuffer()
    ) {
        self.immediate = immediate
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.targetTransferTag = targetTransferTag
        self.cmdSN = cmdSN
        self.expStatSN = expStatSN
        self.pingData = pingData
    }
}

/// SCSI Command, RFC 7143 §11.3.
public struct SCSICommand: Sendable, Hashable {
    public var immediate: Bool
    /// F: no unsolicited non-immediate Data-Out PDUs follow.
    public var final: Bool
    /// R: data is expected from the target.
    public var read: Bool
    /// W: data is expected from the initiator.
    public var write: Bool
    public var attribute: TaskAttribute
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var expectedDataTransferLength: UInt32
    public var cmdSN: UInt32
    public var expStatSN: UInt32
    /// The CDB: the 16 bytes of the BHS, followed by the Extended CDB AHS when one is present.
    public var cdb: ByteBuffer
    /// Bidirectional Expected Read-Data Length AHS, when present.
    public var bidirectionalReadDataLength: UInt32?
    /// Immediate data.
    public var data: ByteBuffer

    public init(
        immediate: Bool = false, final: Bool, read: Bool, write: Bool, attribute: TaskAttribute = .simple,
        lun: UInt64, initiatorTaskTag: UInt32, expectedDataTransferLength: UInt32, cmdSN: UInt32,
        expStatSN: UInt32, cdb: ByteBuffer, bidirectionalReadDataLength: UInt32? = nil,
        data: ByteBuffer = ByteBuffer()
    ) {
        self.immediate = immediate
        self.final = final
        self.read = read
        self.write = write
        self.attribute = attribute
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.expectedDataTransferLength = expectedDataTransferLength
        self.cmdSN = cmdSN
        self.expStatSN = expStatSN
        self.cdb = cdb
        self.bidirectionalReadDataLength = bidirectionalReadDataLength
        self.data = data
    }
}

/// Task Management Function Request, RFC 7143 §11.5.
public struct TaskManagementFunctionRequest: Sendable, Hashable {
    /// The function codes of RFC 7143 §11.5.1 and RFC 7144 §4.
    public enum Function: UInt8, Sendable, Hashable {
        case abortTask = 1
        case abortTaskSet = 2
        case clearACA = 3
        case clearTaskSet = 4
        case logicalUnitReset = 5
        case targetWarmReset = 6
        case targetColdReset = 7
        case taskReassign = 8
        case queryTask = 9
        case queryTaskSet = 10
        case itNexusReset = 11
        case queryAsynchronousEvent = 12
    }

    public var immediate: Bool
    /// The raw function code; decode with ``Function``. Unknown codes are kept so that the
    /// target can answer "function not supported" rather than rejecting the PDU.
    public var functionCode: UInt8
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var referencedTaskTag: UInt32
    public var cmdSN: UInt32
    public var expStatSN: UInt32
    public var refCmdSN: UInt32
    public var expDataSN: UInt32

    public var function: Function? { Function(rawValue: functionCode) }

    public init(
        immediate: Bool, function: Function, lun: UInt64, initiatorTaskTag: UInt32,
        referencedTaskTag: UInt32 = reservedTag, cmdSN: UInt32, expStatSN: UInt32, refCmdSN: UInt32 = 0,
        expDataSN: UInt32 = 0
    ) {
        self.init(
            immediate: immediate, functionCode: function.rawValue, lun: lun, initiatorTaskTag: initiatorTaskTag,
            referencedTaskTag: referencedTaskTag, cmdSN: cmdSN, expStatSN: expStatSN, refCmdSN: refCmdSN,
            expDataSN: expDataSN)
    }

    public init(
        immediate: Bool, functionCode: UInt8, lun: UInt64, initiatorTaskTag: UInt32, referencedTaskTag: UInt32,
        cmdSN: UInt32, expStatSN: UInt32, refCmdSN: UInt32, expDataSN: UInt32
    ) {
        self.immediate = immediate
        self.functionCode = functionCode
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.referencedTaskTag = referencedTaskTag
        self.cmdSN = cmdSN
        self.expStatSN = expStatSN
        self.refCmdSN = refCmdSN
        self.expDataSN = expDataSN
    }
}

/// The Initiator Session ID, RFC 7143 §11.12.5 (6 bytes: T, A, B, C, D fields).
public struct ISID: Sendable, Hashable, CustomStringConvertible {
    public var rawValue: UInt64  // low 48 bits

    public init(rawValue: UInt64) { self.rawValue = rawValue & 0xffff_ffff_ffff }

    public var description: String {
        let hex = String(rawValue, radix: 16)
        return "0x" + String(repeating: "0", count: max(0, 12 - hex.count)) + hex
    }
}

/// Login Request, RFC 7143 §11.12.
public struct LoginRequest: Sendable, Hashable {
    /// T: the initiator is ready to transit to NSG.
    public var transit: Bool
    /// C: the text is continued in the next PDU.
    public var `continue`: Bool
    public var currentStage: LoginStage
    public var nextStage: LoginStage
    public var versionMax: UInt8
    public var versionMin: UInt8
    public var isid: ISID
    public var tsih: UInt16
    public var initiatorTaskTag: UInt32
    public var cid: UInt16
    public var cmdSN: UInt32
    public var expStatSN: UInt32
    /// Text key=value pairs, NUL separated.
    public var data: ByteBuffer

    public init(
        transit: Bool, continue: Bool = false, currentStage: LoginStage, nextStage: LoginStage,
        versionMax: UInt8 = 0, versionMin: UInt8 = 0, isid: ISID, tsih: UInt16, initiatorTaskTag: UInt32,
        cid: UInt16, cmdSN: UInt32, expStatSN: UInt32, data: ByteBuffer
    ) {
        self.transit = transit
        self.continue = `continue`
        self.currentStage = currentStage
        self.nextStage = nextStage
        self.versionMax = versionMax
        self.versionMin = versionMin
        self.isid = isid
        self.tsih = tsih
        self.initiatorTaskTag = initiatorTaskTag
        self.cid = cid
        self.cmdSN = cmdSN
        self.expStatSN = expStatSN
        self.data = data
    }
}

/// Text Request, RFC 7143 §11.10.
public struct TextRequest: Sendable, Hashable {
    public var immediate: Bool
    public var final: Bool
    public var `continue`: Bool
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var cmdSN: UInt32
    public var expStatSN: UInt32
    public var data: ByteBuffer

    public init(
        immediate: Bool = false, final: Bool = true, continue: Bool = false, lun: UInt64 = 0,
        initiatorTaskTag: UInt32, targetTransferTag: UInt32 = reservedTag, cmdSN: UInt32, expStatSN: UInt32,
        data: ByteBuffer
    ) {
        self.immediate = immediate
        self.final = final
        self.continue = `continue`
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.targetTransferTag = targetTransferTag
        self.cmdSN = cmdSN
        self.expStatSN = expStatSN
        self.data = data
    }
}

/// SCSI Data-Out, RFC 7143 §11.7.
public struct SCSIDataOut: Sendable, Hashable {
    public var final: Bool
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var expStatSN: UInt32
    public var dataSN: UInt32
    public var bufferOffset: UInt32
    public var data: ByteBuffer

    public init(
        final: Bool, lun: UInt64, initiatorTaskTag: UInt32, targetTransferTag: UInt32, expStatSN: UInt32,
        dataSN: UInt32, bufferOffset: UInt32, data: ByteBuffer
    ) {
        self.final = final
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.targetTransferTag = targetTransferTag
        self.expStatSN = expStatSN
        self.dataSN = dataSN
        self.bufferOffset = bufferOffset
        self.data = data
    }
}

/// Logout Request, RFC 7143 §11.14.
public struct LogoutRequest: Sendable, Hashable {
    public enum ReasonCode: UInt8, Sendable, Hashable {
        case closeSession = 0
        case closeConnection = 1
        case removeConnectionForRecovery = 2
    }

    public var immediate: Bool
    public var reasonCodeRaw: UInt8
    public var initiatorTaskTag: UInt32
    public var cid: UInt16
    public var cmdSN: UInt32
    public var expStatSN: UInt32

    public var reasonCode: ReasonCode? { ReasonCode(rawValue: reasonCodeRaw) }

    public init(
        immediate: Bool, reasonCode: ReasonCode, initiatorTaskTag: UInt32, cid: UInt16, cmdSN: UInt32,
        expStatSN: UInt32
    ) {
        self.immediate = immediate
        self.reasonCodeRaw = reasonCode.rawValue
        self.initiatorTaskTag = initiatorTaskTag
        self.cid = cid
        self.cmdSN = cmdSN
        self.expStatSN = expStatSN
    }
}

/// SNACK Request, RFC 7143 §11.16.
public struct SNACKRequest: Sendable, Hashable {
    public var type: UInt8
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var expStatSN: UInt32
    public var begRun: UInt32
    public var runLength: UInt32

    public init(
        type: UInt8, lun: UInt64, initiatorTaskTag: UInt32, targetTransferTag: UInt32, expStatSN: UInt32,
        begRun: UInt32, runLength: UInt32
    ) {
        self.type = type
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.targetTransferTag = targetTransferTag
        self.expStatSN = expStatSN
        self.begRun = begRun
        self.runLength = runLength
    }
}

// MARK: - Target PDUs

/// The three sequence numbers every target PDU after login carries.
public struct StatusSequence: Sendable, Hashable {
    public var statSN: UInt32
    public var expCmdSN: UInt32
    public var maxCmdSN: UInt32

    public init(statSN: UInt32, expCmdSN: UInt32, maxCmdSN: UInt32) {
        self.statSN = statSN
        self.expCmdSN = expCmdSN
        self.maxCmdSN = maxCmdSN
    }
}

/// NOP-In, RFC 7143 §11.19.
public struct NOPIn: Sendable, Hashable {
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var sequence: StatusSequence
    public var pingData: ByteBuffer

    public init(
        lun: UInt64 = 0, initiatorTaskTag: UInt32, targetTransferTag: UInt32, sequence: StatusSequence,
        pingData: ByteBuffer = ByteBuffer()
    ) {
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.targetTransferTag = targetTransferTag
        self.sequence = sequence
        self.pingData = pingData
    }
}

/// Residual flags and count shared by SCSI Response and Data-In (RFC 7143 §11.4.5).
public enum Residual: Sendable, Hashable {
    case none
    /// O: the target would have transferred more than the Expected Data Transfer Length.
    case overflow(UInt32)
    /// U: the target transferred less than the Expected Data Transfer Length.
    case underflow(UInt32)

    public var count: UInt32 {
        switch self {
        case .none: 0
        case .overflow(let n), .underflow(let n): n
        }
    }
}

/// SCSI Response, RFC 7143 §11.4.
public struct SCSIResponse: Sendable, Hashable {
    /// The Response field: 0x00 Command Completed at Target, 0x01 Target Failure.
    public var response: UInt8
    public var status: UInt8
    public var initiatorTaskTag: UInt32
    public var snackTag: UInt32
    public var sequence: StatusSequence
    public var expDataSN: UInt32
    public var bidirectionalReadResidual: Residual
    public var residual: Residual
    /// The data segment: SenseLength (2 bytes) followed by sense data, or empty.
    public var data: ByteBuffer

    public init(
        response: UInt8 = 0, status: UInt8, initiatorTaskTag: UInt32, snackTag: UInt32 = 0,
        sequence: StatusSequence, expDataSN: UInt32 = 0, bidirectionalReadResidual: Residual = .none,
        residual: Residual = .none, data: ByteBuffer = ByteBuffer()
    ) {
        self.response = response
        self.status = status
        self.initiatorTaskTag = initiatorTaskTag
        self.snackTag = snackTag
        self.sequence = sequence
        self.expDataSN = expDataSN
        self.bidirectionalReadResidual = bidirectionalReadResidual
        self.residual = residual
        self.data = data
    }
}

/// Task Management Function Response, RFC 7143 §11.6.
public struct TaskManagementFunctionResponse: Sendable, Hashable {
    /// The Response field of RFC 7143 §11.6.1 and RFC 7144 §4.
    public enum Response: UInt8, Sendable, Hashable {
        case functionComplete = 0
        case taskDoesNotExist = 1
        case lunDoesNotExist = 2
        case taskStillAllegiant = 3
        case taskAllegianceReassignmentNotSupported = 4
        case functionNotSupported = 5
        case functionAuthorizationFailed = 6
        case functionSucceeded = 7
        case functionRejected = 255
    }

    public var response: Response
    public var initiatorTaskTag: UInt32
    public var sequence: StatusSequence
    /// RFC 7144: QUERY ASYNCHRONOUS EVENT returns the additional response information (sense
    /// key, ASC, ASCQ: 3 bytes), carried in bytes 36-38 of the header.
    public var additionalResponseInformation: UInt32

    public init(
        response: Response, initiatorTaskTag: UInt32, sequence: StatusSequence,
        additionalResponseInformation: UInt32 = 0
    ) {
        self.response = response
        self.initiatorTaskTag = initiatorTaskTag
        self.sequence = sequence
        self.additionalResponseInformation = additionalResponseInformation
    }
}

/// Login Response, RFC 7143 §11.13.
public struct LoginResponse: Sendable, Hashable {
    public var transit: Bool
    public var `continue`: Bool
    public var currentStage: LoginStage
    public var nextStage: LoginStage
    public var versionMax: UInt8
    public var versionActive: UInt8
    public var isid: ISID
    public var tsih: UInt16
    public var initiatorTaskTag: UInt32
    public var sequence: StatusSequence
    public var statusClass: UInt8
    public var statusDetail: UInt8
    public var data: ByteBuffer

    public init(
        transit: Bool, continue: Bool = false, currentStage: LoginStage, nextStage: LoginStage,
        versionMax: UInt8 = 0, versionActive: UInt8 = 0, isid: ISID, tsih: UInt16, initiatorTaskTag: UInt32,
        sequence: StatusSequence, statusClass: UInt8, statusDetail: UInt8, data: ByteBuffer
    ) {
        self.transit = transit
        self.continue = `continue`
        self.currentStage = currentStage
        self.nextStage = nextStage
        self.versionMax = versionMax
        self.versionActive = versionActive
        self.isid = isid
        self.tsih = tsih
        self.initiatorTaskTag = initiatorTaskTag
        self.sequence = sequence
        self.statusClass = statusClass
        self.statusDetail = statusDetail
        self.data = data
    }
}

/// Text Response, RFC 7143 §11.11.
public struct TextResponse: Sendable, Hashable {
    public var final: Bool
    public var `continue`: Bool
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var sequence: StatusSequence
    public var data: ByteBuffer

    public init(
        final: Bool, continue: Bool = false, lun: UInt64 = 0, initiatorTaskTag: UInt32,
        targetTransferTag: UInt32 = reservedTag, sequence: StatusSequence, data: ByteBuffer
    ) {
        self.final = final
        self.continue = `continue`
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.targetTransferTag = targetTransferTag
        self.sequence = sequence
        self.data = data
    }
}

/// SCSI Data-In, RFC 7143 §11.7.
public struct SCSIDataIn: Sendable, Hashable {
    public var final: Bool
    /// A: the target requests a positive acknowledgement (ERL > 0 only).
    public var acknowledge: Bool
    /// S and Status: phase collapse. When non-nil the PDU carries the command's status, and
    /// ``residual`` is meaningful.
    public var status: UInt8?
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    /// StatSN is only valid when ``status`` is set; ExpCmdSN and MaxCmdSN always are.
    public var sequence: StatusSequence
    public var dataSN: UInt32
    public var bufferOffset: UInt32
    public var residual: Residual
    public var data: ByteBuffer

    public init(
        final: Bool, acknowledge: Bool = false, status: UInt8? = nil, lun: UInt64 = 0, initiatorTaskTag: UInt32,
        targetTransferTag: UInt32 = reservedTag, sequence: StatusSequence, dataSN: UInt32, bufferOffset: UInt32,
        residual: Residual = .none, data: ByteBuffer
    ) {
        self.final = final
        self.acknowledge = acknowledge
        self.status = status
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.targetTransferTag = targetTransferTag
        self.sequence = sequence
        self.dataSN = dataSN
        self.bufferOffset = bufferOffset
        self.residual = residual
        self.data = data
    }
}

/// Logout Response, RFC 7143 §11.15.
public struct LogoutResponse: Sendable, Hashable {
    public enum Response: UInt8, Sendable, Hashable {
        case closedSuccessfully = 0
        case cidNotFound = 1
        case connectionRecoveryNotSupported = 2
        case cleanupFailed = 3
    }

    public var response: Response
    public var initiatorTaskTag: UInt32
    public var sequence: StatusSequence
    public var time2Wait: UInt16
    public var time2Retain: UInt16

    public init(
        response: Response, initiatorTaskTag: UInt32, sequence: StatusSequence, time2Wait: UInt16 = 0,
        time2Retain: UInt16 = 0
    ) {
        self.response = response
        self.initiatorTaskTag = initiatorTaskTag
        self.sequence = sequence
        self.time2Wait = time2Wait
        self.time2Retain = time2Retain
    }
}

/// Ready To Transfer, RFC 7143 §11.8.
public struct ReadyToTransfer: Sendable, Hashable {
    public var lun: UInt64
    public var initiatorTaskTag: UInt32
    public var targetTransferTag: UInt32
    public var sequence: StatusSequence
    public var r2tSN: UInt32
    public var bufferOffset: UInt32
    public var desiredDataTransferLength: UInt32

    public init(
        lun: UInt64, initiatorTaskTag: UInt32, targetTransferTag: UInt32, sequence: StatusSequence, r2tSN: UInt32,
        bufferOffset: UInt32, desiredDataTransferLength: UInt32
    ) {
        self.lun = lun
        self.initiatorTaskTag = initiatorTaskTag
        self.targetTransferTag = targetTransferTag
        self.sequence = sequence
        self.r2tSN = r2tSN
        self.bufferOffset = bufferOffset
        self.desiredDataTransferLength = desiredDataTransferLength
    }
}

/// Asynchronous Message, RFC 7143 §11.9.
public struct AsynchronousMessage: Sendable, Hashable {
    public enum Event: UInt8, Sendable, Hashable {
        case scsiAsynchronousEvent = 0
        case requestLogout = 1
        case connectionWillBeDropped = 2
        case allConnectionsWillBeDropped = 3
        case requestParameterNegotiation = 4
        case vendorSpecific = 255
    }

    public var lun: UInt64
    public var sequence: StatusSequence
    public var event: Event
    public var vendorCode: UInt8
    public var parameter1: UInt16
    public var parameter2: UInt16
    public var parameter3: UInt16
    /// Sense data (with its 2-byte SenseLength) for SCSI asynchronous events, or iSCSI event data.
    public var data: ByteBuffer

    public init(
        lun: UInt64 = 0, sequence: StatusSequence, event: Event, vendorCode: UInt8 = 0, parameter1: UInt16 = 0,
        parameter2: UInt16 = 0, parameter3: UInt16 = 0, data: ByteBuffer = ByteBuffer()
    ) {
        self.lun = lun
        self.sequence = sequence
        self.event = event
        self.vendorCode = vendorCode
        self.parameter1 = parameter1
        self.parameter2 = parameter2
        self.parameter3 = parameter3
        self.data = data
    }
}

/// Reject, RFC 7143 §11.17.
public struct Reject: Sendable, Hashable {
    public enum Reason: UInt8, Sendable, Hashable {
        case dataDigestError = 0x02
        case snackReject = 0x03
        case protocolError = 0x04
        case commandNotSupported = 0x05
        case immediateCommandRejected = 0x06
        case taskInProgress = 0x07
        case invalidDataACK = 0x08
        case invalidPDUField = 0x09
        case longOperationReject = 0x0a
        case deprecated = 0x0b
        case waitingForLogout = 0x0c
    }

    public var reason: Reason
    public var sequence: StatusSequence
    public var dataSN: UInt32
    /// The complete header (BHS) of the rejected PDU.
    public var data: ByteBuffer

    public init(reason: Reason, sequence: StatusSequence, dataSN: UInt32 = 0, data: ByteBuffer) {
        self.reason = reason
        self.sequence = sequence
        self.dataSN = dataSN
        self.data = data
    }
}

// MARK: - The PDU sum type

/// Every iSCSI PDU, in either direction.
public enum PDU: Sendable, Hashable {
    case nopOut(NOPOut)
    case scsiCommand(SCSICommand)
    case taskManagementFunctionRequest(TaskManagementFunctionRequest)
    case loginRequest(LoginRequest)
    case textRequest(TextRequest)
    case scsiDataOut(SCSIDataOut)
    case logoutRequest(LogoutRequest)
    case snackRequest(SNACKRequest)
    case nopIn(NOPIn)
    case scsiResponse(SCSIResponse)
    case taskManagementFunctionResponse(TaskManagementFunctionResponse)
    case loginResponse(LoginResponse)
    case textResponse(TextResponse)
    case scsiDataIn(SCSIDataIn)
    case logoutResponse(LogoutResponse)
    case readyToTransfer(ReadyToTransfer)
    case asynchronousMessage(AsynchronousMessage)
    case reject(Reject)
}
