public import NIOCore

/// Layout of the Basic Header Segment, RFC 7143 §11.2.1.
///
/// ```
/// Byte/     0       |       1       |       2       |       3       |
///    0|.|I| Opcode  |F|  Opcode-specific fields                     |
///    4|TotalAHSLength | DataSegmentLength                             |
///    8| LUN or Opcode-specific fields                                 |
///   16| Initiator Task Tag                                            |
///   20/ Opcode-specific fields                                        /
///   48+---------------+---------------+---------------+---------------+
/// ```
enum BasicHeaderSegment {
    /// The BHS is always 48 bytes long.
    static let length = 48
    /// The largest DataSegmentLength the 24-bit field can carry.
    static let maximumDataSegmentLength = 0xff_ffff

    // Byte 0.
    static let immediateBit: UInt8 = 0x40
    static let opcodeMask: UInt8 = 0x3f
    // Byte 1.
    static let finalBit: UInt8 = 0x80

    // Offsets shared by most PDUs.
    static let totalAHSLengthOffset = 4
    static let dataSegmentLengthOffset = 5
    static let lunOffset = 8
    static let initiatorTaskTagOffset = 16

    /// Additional Header Segment types, RFC 7143 §11.2.2.1.
    enum AHSType: UInt8 {
        case extendedCDB = 1
        case bidirectionalReadDataLength = 2
    }

    /// The number of pad bytes that bring `length` to a multiple of 4 (RFC 7143 §11.2.3 / §11.2.4).
    @inline(__always)
    static func padding(for length: Int) -> Int {
        (4 - length & 3) & 3
    }
}

// MARK: - Reading fields

/// Random access to the fields of one received BHS, whose first byte is at `base`.
struct BHSReader {
    let buffer: ByteBuffer
    let base: Int

    init(_ buffer: ByteBuffer) {
        precondition(buffer.readableBytes >= BasicHeaderSegment.length)
        self.buffer = buffer
        self.base = buffer.readerIndex
    }

    @inline(__always) func u8(_ offset: Int) -> UInt8 { self.buffer.getInteger(at: self.base + offset)! }
    @inline(__always) func u16(_ offset: Int) -> UInt16 { self.buffer.getInteger(at: self.base + offset)! }
    @inline(__always) func u32(_ offset: Int) -> UInt32 { self.buffer.getInteger(at: self.base + offset)! }
    @inline(__always) func u64(_ offset: Int) -> UInt64 { self.buffer.getInteger(at: self.base + offset)! }
    @inline(__always) func bit(_ offset: Int, _ mask: UInt8) -> Bool { self.u8(offset) & mask != 0 }

    var opcode: UInt8 { self.u8(0) & BasicHeaderSegment.opcodeMask }
    var immediate: Bool { self.bit(0, BasicHeaderSegment.immediateBit) }
    var final: Bool { self.bit(1, BasicHeaderSegment.finalBit) }
    var lun: UInt64 { self.u64(BasicHeaderSegment.lunOffset) }
    var initiatorTaskTag: UInt32 { self.u32(BasicHeaderSegment.initiatorTaskTagOffset) }

    /// StatSN, ExpCmdSN and MaxCmdSN at bytes 24, 28 and 32 of every target PDU that carries them.
    var statusSequence: StatusSequence {
        StatusSequence(statSN: self.u32(24), expCmdSN: self.u32(28), maxCmdSN: self.u32(32))
    }

    /// The ISID at bytes 8-13 of Login Request and Response (RFC 7143 §11.12.5).
    var isid: ISID {
        ISID(rawValue: UInt64(self.u16(8)) << 32 | UInt64(self.u32(10)))
    }

    /// The 24-bit DataSegmentLength (RFC 7143 §11.2.1.5).
    var dataSegmentLength: Int {
        Int(self.u8(BasicHeaderSegment.dataSegmentLengthOffset)) << 16 | Int(self.u16(6))
    }

    /// TotalAHSLength in bytes (the field counts 4-byte words, RFC 7143 §11.2.1.4).
    var totalAHSLength: Int {
        Int(self.u8(BasicHeaderSegment.totalAHSLengthOffset)) * 4
    }
}

// MARK: - Writing fields

/// Writes the fields of one BHS into 48 zeroed bytes starting at `base`.
struct BHSWriter {
    let base: Int

    @inline(__always)
    func set<Integer: FixedWidthInteger>(_ value: Integer, at offset: Int, in buffer: inout ByteBuffer) {
        buffer.setInteger(value, at: self.base + offset)
    }

    @inline(__always)
    func setStatusSequence(_ sequence: StatusSequence, in buffer: inout ByteBuffer) {
        self.set(sequence.statSN, at: 24, in: &buffer)
        self.set(sequence.expCmdSN, at: 28, in: &buffer)
        self.set(sequence.maxCmdSN, at: 32, in: &buffer)
    }

    @inline(__always)
    func setISID(_ isid: ISID, in buffer: inout ByteBuffer) {
        self.set(UInt16(truncatingIfNeeded: isid.rawValue >> 32), at: 8, in: &buffer)
        self.set(UInt32(truncatingIfNeeded: isid.rawValue), at: 10, in: &buffer)
    }
}

// MARK: - Residuals

/// The residual flag bits of SCSI Response byte 1 (RFC 7143 §11.4.1) and SCSI Data-In byte 1 (§11.7.1).
enum ResidualBits {
    // o and u: Bidirectional Read Residual Overflow and Underflow (SCSI Response only).
    static let bidirectionalOverflow: UInt8 = 0x10
    static let bidirectionalUnderflow: UInt8 = 0x08
    // O and U: Residual Overflow and Underflow.
    static let overflow: UInt8 = 0x04
    static let underflow: UInt8 = 0x02

    static func flags(for residual: Residual, overflow: UInt8, underflow: UInt8) -> UInt8 {
        switch residual {
        case .none: 0
        case .overflow: overflow
        case .underflow: underflow
        }
    }

    /// Decodes a residual; `nil` when both bits are set, which RFC 7143 §11.4.5.1 forbids.
    static func residual(flags: UInt8, overflow: UInt8, underflow: UInt8, count: UInt32) -> Residual? {
        switch (flags & overflow != 0, flags & underflow != 0) {
        case (false, false): Residual.none
        case (true, false): .overflow(count)
        case (false, true): .underflow(count)
        case (true, true): nil
        }
    }
}

// MARK: - PDU accessors

extension PDU {
    /// The opcode of this PDU (RFC 7143 §11.1.1.1).
    public var opcode: Opcode {
        switch self {
        case .nopOut: .nopOut
        case .scsiCommand: .scsiCommand
        case .taskManagementFunctionRequest: .taskManagementFunctionRequest
        case .loginRequest: .loginRequest
        case .textRequest: .textRequest
        case .scsiDataOut: .scsiDataOut
        case .logoutRequest: .logoutRequest
        case .snackRequest: .snackRequest
        case .nopIn: .nopIn
        case .scsiResponse: .scsiResponse
        case .taskManagementFunctionResponse: .taskManagementFunctionResponse
        case .loginResponse: .loginResponse
        case .textResponse: .textResponse
        case .scsiDataIn: .scsiDataIn
        case .logoutResponse: .logoutResponse
        case .readyToTransfer: .readyToTransfer
        case .asynchronousMessage: .asynchronousMessage
        case .reject: .reject
        }
    }

    /// The data segment (without padding or digest); empty for PDUs that carry none.
    public var dataSegment: ByteBuffer {
        switch self {
        case .nopOut(let pdu): pdu.pingData
        case .scsiCommand(let pdu): pdu.data
        case .loginRequest(let pdu): pdu.data
        case .textRequest(let pdu): pdu.data
        case .scsiDataOut(let pdu): pdu.data
        case .nopIn(let pdu): pdu.pingData
        case .scsiResponse(let pdu): pdu.data
        case .loginResponse(let pdu): pdu.data
        case .textResponse(let pdu): pdu.data
        case .scsiDataIn(let pdu): pdu.data
        case .asynchronousMessage(let pdu): pdu.data
        case .reject(let pdu): pdu.data
        case .taskManagementFunctionRequest, .logoutRequest, .snackRequest, .taskManagementFunctionResponse,
            .logoutResponse, .readyToTransfer:
            ByteBuffer()
        }
    }

    /// The Initiator Task Tag, for PDUs where it names a task; `nil` for Asynchronous Message and Reject, whose
    /// ITT field is the reserved 0xffffffff.
    public var initiatorTaskTag: UInt32? {
        switch self {
        case .nopOut(let pdu): pdu.initiatorTaskTag
        case .scsiCommand(let pdu): pdu.initiatorTaskTag
        case .taskManagementFunctionRequest(let pdu): pdu.initiatorTaskTag
        case .loginRequest(let pdu): pdu.initiatorTaskTag
        case .textRequest(let pdu): pdu.initiatorTaskTag
        case .scsiDataOut(let pdu): pdu.initiatorTaskTag
        case .logoutRequest(let pdu): pdu.initiatorTaskTag
        case .snackRequest(let pdu): pdu.initiatorTaskTag
        case .nopIn(let pdu): pdu.initiatorTaskTag
        case .scsiResponse(let pdu): pdu.initiatorTaskTag
        case .taskManagementFunctionResponse(let pdu): pdu.initiatorTaskTag
        case .loginResponse(let pdu): pdu.initiatorTaskTag
        case .textResponse(let pdu): pdu.initiatorTaskTag
        case .scsiDataIn(let pdu): pdu.initiatorTaskTag
        case .logoutResponse(let pdu): pdu.initiatorTaskTag
        case .readyToTransfer(let pdu): pdu.initiatorTaskTag
        case .asynchronousMessage, .reject: nil
        }
    }
}
