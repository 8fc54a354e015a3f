public import NIOCore

/// A `NIOSingleStepByteToMessageDecoder` that frames PDUs for a channel pipeline:
/// `ByteToMessageHandler(PDUFrameDecoder(settings: settings))`.
///
/// Each decoded item is a `Result`: `.success(pdu)`, or `.failure(error)` for an error after which the stream is still
/// framed (data digest error, unknown opcode, invalid field). Those must not be thrown, because
/// `ByteToMessageHandler` stops decoding for good after a thrown error; the engine answers them with a Reject and
/// goes on. Connection-fatal errors (``ISCSIProtocolError/isConnectionFatal``) are thrown and reach `errorCaught`.
///
/// ## Changing digests and the data segment limit after login
///
/// `ByteToMessageHandler` does not expose its decoder, so the settings live in a shared ``Settings`` box: keep a
/// reference in the connection handler and change it on the channel's event loop. The decoder reads it before each
/// PDU. RFC 7143 §13.1 switches digests on for the first PDU after the final Login Response; since the initiator
/// sends nothing more until it has received that response, changing the settings when the final Login Request is
/// processed (in `channelRead`, or before writing the final Login Response) is always at a PDU boundary:
///
/// ```swift
/// settings.enableDigests(header: negotiated.headerDigest, data: negotiated.dataDigest)
/// settings.maxRecvDataSegmentLength = negotiated.targetMaxRecvDataSegmentLength  // the value the target declared
/// ```
public struct PDUFrameDecoder: NIOSingleStepByteToMessageDecoder {
    public typealias InboundOut = Result<PDU, ISCSIProtocolError>

    /// Settings shared between the decoder and the handler that owns the connection. Not thread-safe: touch it only
    /// on the channel's event loop.
    public final class Settings {
        /// See ``PDUParser/maxRecvDataSegmentLength``.
        public var maxRecvDataSegmentLength: Int
        public private(set) var headerDigest: Bool
        public private(set) var dataDigest: Bool

        public init(
            maxRecvDataSegmentLength: Int = PDUParser.defaultMaxRecvDataSegmentLength, headerDigest: Bool = false,
            dataDigest: Bool = false
        ) {
            self.maxRecvDataSegmentLength = maxRecvDataSegmentLength
            self.headerDigest = headerDigest
            self.dataDigest = dataDigest
        }

        /// Switches digests for the PDUs not yet decoded.
        public func enableDigests(header: Bool, data: Bool) {
            self.headerDigest = header
            self.dataDigest = data
        }
    }

    public let settings: Settings
    private var framer: PDUFramer

    public init(settings: Settings = Settings()) {
        self.settings = settings
        self.framer = PDUFramer(
            maxRecvDataSegmentLength: settings.maxRecvDataSegmentLength, headerDigest: settings.headerDigest,
            dataDigest: settings.dataDigest)
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> InboundOut? {
        self.applySettings()
        let result: InboundOut
        do {
            guard let pdu = try self.framer.nextPDU(from: &buffer) else { return nil }
            result = .success(pdu)
        } catch {
            guard !error.isConnectionFatal else { throw error }
            result = .failure(error)
        }
        return result
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> InboundOut? {
        // A partial PDU at EOF is dropped: there is nobody left to answer.
        try self.decode(buffer: &buffer)
    }

    private mutating func applySettings() {
        self.framer.maxRecvDataSegmentLength = self.settings.maxRecvDataSegmentLength
        if self.framer.headerDigest != self.settings.headerDigest
            || self.framer.dataDigest != self.settings.dataDigest
        {
            self.framer.enableDigests(header: self.settings.headerDigest, data: self.settings.dataDigest)
        }
    }
}

@available(*, unavailable)
extension PDUFrameDecoder.Settings: Sendable {}
