public import NIOCore

/// Frames and decodes PDUs from a byte stream (RFC 7143 §11), in the shape of swift-nio-ssh's `SSHPacketParser`.
///
/// Feed received bytes with ``append(bytes:)`` and call ``nextPDU()`` until it returns `nil`. The parser
/// decodes every opcode of either direction; which PDUs are acceptable from the peer is the engine's business.
///
/// The data segment of a returned PDU is a slice of the received bytes, never a copy.
///
/// Errors are reported as ``ISCSIProtocolError``. When ``ISCSIProtocolError/isConnectionFatal`` is `false` the whole
/// offending PDU was consumed and ``nextPDU()`` can be called again; otherwise the connection must be closed and the
/// parser must not be used any more.
public struct PDUParser: Sendable {
    private var framer: PDUFrameDecoder
    private var buffer: ByteBuffer

    /// RFC 7143 §13.12: the default MaxRecvDataSegmentLength, which applies during login.
    public static let defaultMaxRecvDataSegmentLength = PDUFrameDecoder.defaultMaxRecvDataSegmentLength

    public init(
        maxRecvDataSegmentLength: Int = PDUParser.defaultMaxRecvDataSegmentLength, headerDigest: Bool = false,
        dataDigest: Bool = false
    ) {
        self.framer = PDUFrameDecoder(
            maxRecvDataSegmentLength: maxRecvDataSegmentLength, headerDigest: headerDigest, dataDigest: dataDigest)
        self.buffer = ByteBuffer()
    }

    /// The largest data segment accepted; a longer one is a connection-fatal
    /// ``ISCSIProtocolError/Kind/dataSegmentTooLong``.
    /// Raise it to the MaxRecvDataSegmentLength this side declared once login is complete.
    public var maxRecvDataSegmentLength: Int {
        get { self.framer.maxRecvDataSegmentLength }
        set { self.framer.maxRecvDataSegmentLength = newValue }
    }

    /// Whether a HeaderDigest is expected after each header segment.
    public var headerDigest: Bool { self.framer.headerDigest }

    /// Whether a DataDigest is expected after each non-empty data segment.
    public var dataDigest: Bool { self.framer.dataDigest }

    /// Switches digests for the PDUs not yet returned. Call it between two PDUs: after the one that ends the login.
    public mutating func enableDigests(header: Bool, data: Bool) {
        self.framer.enableDigests(header: header, data: data)
    }

    /// The number of received bytes not yet returned as PDUs.
    public var bufferedBytes: Int { self.buffer.readableBytes }

    /// Adds received bytes. `bytes` is left empty.
    public mutating func append(bytes: inout ByteBuffer) {
        if self.buffer.readableBytes == 0 {
            // Adopt the received buffer instead of copying it, so that data segments slice the original bytes.
            swap(&self.buffer, &bytes)
            bytes.clear()
        } else {
            self.buffer.writeBuffer(&bytes)
        }
    }

    /// Returns the next complete PDU, or `nil` when more bytes are needed.
    public mutating func nextPDU() throws(ISCSIProtocolError) -> PDU? {
        try self.framer.decode(buffer: &self.buffer)?.pdu
    }
}
