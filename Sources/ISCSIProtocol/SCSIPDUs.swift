public import NIOCore

/// Task attributes carried in the ATTR field of a SCSI Command (RFC 7143 §11.3.1.2).
public enum TaskAttribute: UInt8, Sendable, Hashable {
    case untagged = 0
    case simple = 1
    case ordered = 2
    case headOfQueue = 3
    case aca = 4
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
