public import NIOCore

/// Frames the PDUs of one connection's byte stream (RFC 7143 §11) and decodes them, as a
/// `NIOSingleStepByteToMessageDecoder`. Its shape is swift-nio-ssh's `SSHPacketParser`: it waits for the BHS, then
/// for the rest of the header segment, then for the data segment, and its digests and data segment limit change
/// between two PDUs.
///
/// The connection handler holds it in a `NIOSingleStepByteToMessageProcessor` and calls
/// `process(buffer:_:)` from `channelRead`, as postgres-nio's `PostgresChannelHandler` holds its message decoder.
/// Each decoded PDU comes as an ``InboundPDU``, the PDU with its BHS; its data segment and its BHS are slices of the
/// received bytes, never copies. The decoder reads every opcode of either direction; which PDUs are acceptable from
/// the peer is the engine's business.
///
/// ## Errors
///
/// Errors are thrown as ``ISCSIProtocolError``:
///
/// - When ``ISCSIProtocolError/isConnectionFatal`` is `false` (data digest error, unknown opcode, invalid field),
///   the whole offending PDU was consumed and decoding can go on with the next one: call ``decode(buffer:)`` again,
///   or, with a processor, `process(buffer:_:)` with an empty buffer. The target answers the PDU with a Reject
///   carrying ``ISCSIProtocolError/rejectedHeader``, or, during login, with a Login Response.
/// - Otherwise (header digest error, data segment over the limit) the stream can no longer be framed: close the
///   connection and do not use the decoder again.
///
/// ## Digests and the data segment limit
///
/// The settings are the owner's to change, between two PDUs. RFC 7143 §13.1 switches digests on for the first PDU
/// after the final Login Response, and the MaxRecvDataSegmentLength the target declared applies from then on
/// (§13.12); login PDUs are held to the default 8192 bytes. Bytes already buffered are framed again with the new
/// settings. A `NIOSingleStepByteToMessageProcessor` does not give its decoder back, so its owner changes the
/// settings by starting a new processor with a new decoder, when the old one holds no bytes.
public struct PDUFrameDecoder: NIOSingleStepByteToMessageDecoder, Sendable {
    public typealias InboundOut = InboundPDU

    /// RFC 7143 §13.12: the default MaxRecvDataSegmentLength, which applies during login.
    public static let defaultMaxRecvDataSegmentLength = 8192

    private enum State: Sendable, Hashable {
        /// Waiting for the 48 bytes of the BHS.
        case waitingForBHS
        /// The BHS is here; waiting for the AHS and HeaderDigest, which is then checked.
        case waitingForHeaderSegment(Frame)
        /// The header segment is here and valid; waiting for data segment, padding and DataDigest.
        case waitingForBody(Frame)
    }

    /// The lengths of one PDU on the wire.
    private struct Frame: Sendable, Hashable {
        /// BHS plus AHS.
        var headerSegmentLength: Int
        var headerDigestLength: Int
        var dataSegmentLength: Int
        var paddingLength: Int
        var dataDigestLength: Int

        var headerLength: Int { self.headerSegmentLength + self.headerDigestLength }
        var totalLength: Int {
            self.headerLength + self.dataSegmentLength + self.paddingLength + self.dataDigestLength
        }
    }

    /// The reader index of the buffer is only moved once a whole PDU is available, so the state can always be rebuilt
    /// from the buffer; it merely caches the lengths read from the BHS.
    private var state: State = .waitingForBHS

    /// The largest data segment accepted; a longer one is a connection-fatal
    /// ``ISCSIProtocolError/Kind/dataSegmentTooLong``. Raise it to the MaxRecvDataSegmentLength this side declared
    /// once login is complete.
    public var maxRecvDataSegmentLength: Int

    /// Whether a HeaderDigest is expected after each header segment.
    public private(set) var headerDigest: Bool

    /// Whether a DataDigest is expected after each non-empty data segment.
    public private(set) var dataDigest: Bool

    public init(
        maxRecvDataSegmentLength: Int = PDUFrameDecoder.defaultMaxRecvDataSegmentLength, headerDigest: Bool = false,
        dataDigest: Bool = false
    ) {
        self.maxRecvDataSegmentLength = maxRecvDataSegmentLength
        self.headerDigest = headerDigest
        self.dataDigest = dataDigest
    }

    /// Switches digests for the PDUs not yet decoded. Call it between two PDUs: after the one that ends the login.
    public mutating func enableDigests(header: Bool, data: Bool) {
        self.headerDigest = header
        self.dataDigest = data
        // Nothing has been consumed yet: re-read the lengths of a partly received PDU with the new settings.
        self.state = .waitingForBHS
    }

    /// Returns the next complete PDU, or `nil` when more bytes are needed.
    public mutating func decode(buffer: inout ByteBuffer) throws(ISCSIProtocolError) -> InboundPDU? {
        while true {
            switch self.state {
            case .waitingForBHS:
                guard buffer.readableBytes >= BasicHeaderSegment.length else { return nil }
                let bhs = BHSReader(buffer)
                let dataSegmentLength = bhs.dataSegmentLength
                let frame = Frame(
                    headerSegmentLength: BasicHeaderSegment.length + bhs.totalAHSLength,
                    headerDigestLength: self.headerDigest ? 4 : 0,
                    dataSegmentLength: dataSegmentLength,
                    paddingLength: BasicHeaderSegment.padding(for: dataSegmentLength),
                    dataDigestLength: self.dataDigest && dataSegmentLength > 0 ? 4 : 0)
                self.state = .waitingForHeaderSegment(frame)

            case .waitingForHeaderSegment(let frame):
                guard buffer.readableBytes >= frame.headerLength else { return nil }
                let start = buffer.readerIndex
                let opcode = BHSReader(buffer).opcode
                if frame.headerDigestLength > 0 {
                    let expected = CRC32C.checksum(buffer.getSlice(at: start, length: frame.headerSegmentLength)!)
                    let received = buffer.getDigest(at: start + frame.headerSegmentLength)!
                    guard expected == received else {
                        throw .headerDigestError(expected: expected, received: received, opcode: opcode)
                    }
                }
                // Only now is DataSegmentLength trustworthy enough to be checked against the limit.
                guard frame.dataSegmentLength <= self.maxRecvDataSegmentLength else {
                    throw .dataSegmentTooLong(
                        length: frame.dataSegmentLength, limit: self.maxRecvDataSegmentLength,
                        header: buffer.getSlice(at: start, length: BasicHeaderSegment.length)!, opcode: opcode)
                }
                self.state = .waitingForBody(frame)

            case .waitingForBody(let frame):
                guard buffer.readableBytes >= frame.totalLength else { return nil }
                self.state = .waitingForBHS
                return try Self.consumePDU(frame, from: &buffer)
            }
        }
    }

    /// A partial PDU at EOF is dropped: there is nobody left to answer.
    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws(ISCSIProtocolError)
        -> InboundPDU?
    {
        try self.decode(buffer: &buffer)
    }

    /// Consumes one complete PDU and decodes it. Throws only errors that leave the stream framed.
    private static func consumePDU(_ frame: Frame, from buffer: inout ByteBuffer) throws(ISCSIProtocolError)
        -> InboundPDU
    {
        let header = buffer.readSlice(length: BasicHeaderSegment.length)!
        let ahs = buffer.readSlice(length: frame.headerSegmentLength - BasicHeaderSegment.length)!
        buffer.moveReaderIndex(forwardBy: frame.headerDigestLength)
        let data = buffer.readSlice(length: frame.dataSegmentLength)!
        let padding = buffer.readSlice(length: frame.paddingLength)!
        if frame.dataDigestLength > 0 {
            // RFC 7143 §13.1: the pad bytes are covered by the DataDigest.
            var crc = CRC32C()
            crc.update(data)
            crc.update(padding)
            let received = buffer.readDigest()!
            guard crc.value == received else {
                throw .dataDigestError(
                    expected: crc.value, received: received, header: header, opcode: BHSReader(header).opcode)
            }
        }
        let pdu = try PDUDecoder(header: header, ahs: ahs).decode(data: data)
        return InboundPDU(pdu: pdu, basicHeaderSegment: header)
    }
}
