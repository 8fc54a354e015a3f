public import NIOCore

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
