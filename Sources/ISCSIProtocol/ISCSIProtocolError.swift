public import NIOCore

/// An error found while framing or decoding iSCSI PDUs.
///
/// The errors are sorted by what RFC 7143 asks the receiver to do next:
///
/// - ``isConnectionFatal``: the framing can no longer be trusted (header digest error, data segment over the limit).
///   The connection must be closed (RFC 7143 §7.8: at ErrorRecoveryLevel 0 a header digest error ends the connection).
///   When ``rejectedHeader`` is set the target may still send a Reject carrying it before closing.
/// - Otherwise the whole PDU was consumed, the decoder is positioned at the next PDU and decoding can go on. The target
///   answers with a Reject whose reason is ``rejectReason`` and whose data segment is ``rejectedHeader``
///   (RFC 7143 §11.17.3: "the complete header of the rejected PDU"), or, for a login PDU, with a Login Response
///   carrying an initiator error.
public struct ISCSIProtocolError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, in the terms RFC 7143 uses.
    public var kind: Kind

    /// The 48-byte BHS of the offending PDU, when it can be trusted enough to be echoed in a Reject.
    public var rejectedHeader: ByteBuffer?

    /// The raw opcode of the offending PDU, when known.
    public var opcode: UInt8?

    /// Free-form details for the operator.
    public var diagnostics: String?

    private init(kind: Kind, rejectedHeader: ByteBuffer?, opcode: UInt8?, diagnostics: String?) {
        self.kind = kind
        self.rejectedHeader = rejectedHeader
        self.opcode = opcode
        self.diagnostics = diagnostics
    }

    /// Whether the connection must be closed because the byte stream cannot be framed any more.
    public var isConnectionFatal: Bool {
        switch self.kind.base {
        case .headerDigestError, .dataSegmentTooLong: true
        case .dataDigestError, .unknownOpcode, .invalidPDUField: false
        }
    }

    /// The Reject reason (RFC 7143 §11.17.1) a target answers with, when a Reject is the answer.
    public var rejectReason: Reject.Reason? {
        switch self.kind.base {
        case .headerDigestError: nil
        // RFC 7143 §7.8: the PDU is discarded and rejected; for SCSI Data-Out the target may recover with an R2T.
        case .dataDigestError: .dataDigestError
        // RFC 7143 §13.12: a data segment over the declared MaxRecvDataSegmentLength breaks the protocol.
        case .dataSegmentTooLong: .protocolError
        case .unknownOpcode: .commandNotSupported
        case .invalidPDUField: .invalidPDUField
        }
    }

    public var description: String {
        var text = "ISCSIProtocolError.\(self.kind)"
        if let opcode = self.opcode {
            text += " (opcode 0x\(String(opcode, radix: 16)))"
        }
        if let diagnostics = self.diagnostics {
            text += ": \(diagnostics)"
        }
        return text
    }
}

extension ISCSIProtocolError {
    /// The kinds of ``ISCSIProtocolError``; more may be added.
    public struct Kind: Sendable, Hashable, CustomStringConvertible {
        fileprivate enum Base: Sendable, Hashable {
            case headerDigestError
            case dataDigestError
            case dataSegmentTooLong
            case unknownOpcode
            case invalidPDUField
        }

        fileprivate var base: Base

        /// The HeaderDigest does not match the header: the connection must be dropped (RFC 7143 §7.8).
        public static let headerDigestError = Kind(base: .headerDigestError)
        /// The DataDigest does not match the data segment; the PDU was consumed and may be rejected with reason 0x02.
        public static let dataDigestError = Kind(base: .dataDigestError)
        /// DataSegmentLength exceeds MaxRecvDataSegmentLength; the data is not read, so the connection must close.
        public static let dataSegmentTooLong = Kind(base: .dataSegmentTooLong)
        /// The opcode is not one of RFC 7143 §11.1.1.1 (vendor-specific opcodes included).
        public static let unknownOpcode = Kind(base: .unknownOpcode)
        /// A field holds a value RFC 7143 does not allow (reserved stage, task attribute, both O and U set, bad AHS).
        public static let invalidPDUField = Kind(base: .invalidPDUField)

        public var description: String {
            switch self.base {
            case .headerDigestError: "headerDigestError"
            case .dataDigestError: "dataDigestError"
            case .dataSegmentTooLong: "dataSegmentTooLong"
            case .unknownOpcode: "unknownOpcode"
            case .invalidPDUField: "invalidPDUField"
            }
        }
    }
}

// MARK: - Factories

extension ISCSIProtocolError {
    @inline(never)
    internal static func headerDigestError(expected: UInt32, received: UInt32, opcode: UInt8) -> ISCSIProtocolError {
        ISCSIProtocolError(
            kind: .headerDigestError, rejectedHeader: nil, opcode: opcode,
            diagnostics: "header digest 0x\(String(received, radix: 16)) does not match the computed "
                + "0x\(String(expected, radix: 16)); close the connection "
                + "(check HeaderDigest negotiation and the network path)")
    }

    @inline(never)
    internal static func dataDigestError(
        expected: UInt32, received: UInt32, header: ByteBuffer, opcode: UInt8
    ) -> ISCSIProtocolError {
        ISCSIProtocolError(
            kind: .dataDigestError, rejectedHeader: header, opcode: opcode,
            diagnostics: "data digest 0x\(String(received, radix: 16)) does not match the computed "
                + "0x\(String(expected, radix: 16)); the PDU was discarded")
    }

    @inline(never)
    internal static func dataSegmentTooLong(length: Int, limit: Int, header: ByteBuffer, opcode: UInt8)
        -> ISCSIProtocolError
    {
        ISCSIProtocolError(
            kind: .dataSegmentTooLong, rejectedHeader: header, opcode: opcode,
            diagnostics: "DataSegmentLength \(length) exceeds MaxRecvDataSegmentLength \(limit)")
    }

    @inline(never)
    internal static func unknownOpcode(_ opcode: UInt8, header: ByteBuffer) -> ISCSIProtocolError {
        ISCSIProtocolError(
            kind: .unknownOpcode, rejectedHeader: header, opcode: opcode,
            diagnostics: "unsupported opcode 0x\(String(opcode, radix: 16))")
    }

    @inline(never)
    internal static func invalidPDUField(_ what: String, header: ByteBuffer, opcode: UInt8) -> ISCSIProtocolError {
        ISCSIProtocolError(kind: .invalidPDUField, rejectedHeader: header, opcode: opcode, diagnostics: what)
    }
}
