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

/// A PDU as it came off the wire, with its basic header segment.
///
/// The data segment of a Reject is the complete header of the PDU it refuses, without its digest (RFC 7143 §11.17).
/// The BHS is kept as the initiator sent it for that: encoded again from the decoded fields, it would lose the
/// reserved bits and the values the decoder does not keep.
public struct InboundPDU: Sendable, Hashable {
    public var pdu: PDU
    /// The 48 bytes of the BHS: a slice of the received bytes, without the AHS and the HeaderDigest.
    public var basicHeaderSegment: ByteBuffer

    public init(pdu: PDU, basicHeaderSegment: ByteBuffer) {
        self.pdu = pdu
        self.basicHeaderSegment = basicHeaderSegment
    }
}
