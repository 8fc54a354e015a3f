import FuzzSupport
import ISCSIProtocol
import NIOCore

/// libFuzzer target: PDU framing and decoding as a connection sees them.
///
/// Input: one byte of settings, then the byte stream from the initiator. Settings bit 0 and 1 switch header and
/// data digests on; bits 2-7 choose the size of the chunks the stream arrives in (1 to 64 bytes, or all at once
/// for 0), so that every split of a PDU across socket reads is tried.
///
/// Checked: decoding never traps, every call consumes bytes or waits for more, an error the connection survives
/// consumed the whole PDU and carries its BHS for the Reject, a connection-fatal error ends the stream as it ends the
/// connection, every decoded PDU comes with the BHS it was received with, and encodes and decodes back to itself.
func fuzzPDUFraming(_ input: UnsafeBufferPointer<UInt8>) {
    guard let settings = input.first else { return }
    let stream = input.dropFirst()
    let chunkSize = Int(settings >> 2) == 0 ? max(stream.count, 1) : Int(settings >> 2)
    let headerDigest = settings & 1 != 0
    let dataDigest = settings & 2 != 0

    var decoder = PDUFrameDecoder(
        maxRecvDataSegmentLength: 65_536, headerDigest: headerDigest, dataDigest: dataDigest)
    var buffer = ByteBuffer()
    var offset = stream.startIndex
    while offset < stream.endIndex {
        let end = min(offset + chunkSize, stream.endIndex)
        buffer.writeBytes(stream[offset..<end])
        offset = end
        while true {
            let before = buffer.readableBytes
            let received = buffer.getSlice(at: buffer.readerIndex, length: min(before, 48))!
            let decoded: InboundPDU?
            do throws(ISCSIProtocolError) {
                decoded = try decoder.decode(buffer: &buffer)
            } catch {
                if error.isConnectionFatal { return }
                require(buffer.readableBytes < before, "a rejected PDU consumed no bytes: \(error)")
                require(error.rejectedHeader == received, "a rejected PDU's header is not the one received: \(error)")
                continue
            }
            guard let decoded else { break }
            require(buffer.readableBytes < before, "a decoded PDU consumed no bytes")
            require(decoded.basicHeaderSegment == received, "a decoded PDU's BHS is not the one received")
            checkRoundTrip(decoded.pdu, headerDigest: headerDigest, dataDigest: dataDigest)
        }
    }
}

/// What the encoder writes for a decoded PDU, the decoder reads back as the same PDU.
private func checkRoundTrip(_ pdu: PDU, headerDigest: Bool, dataDigest: Bool) {
    var encoder = PDUEncoder()
    encoder.enableDigests(header: headerDigest, data: dataDigest)
    var encoded = ByteBuffer()
    encoder.encode(pdu, into: &encoded)
    var decoder = PDUFrameDecoder(maxRecvDataSegmentLength: 1 << 24, headerDigest: headerDigest, dataDigest: dataDigest)
    guard let again = try? decoder.decode(buffer: &encoded)?.pdu else {
        requireFailed("the encoding of \(pdu) does not decode")
    }
    require(again == pdu, "round trip changed \(pdu) into \(again)")
    require(encoded.readableBytes == 0, "the encoding of \(pdu) left \(encoded.readableBytes) bytes")
}

// Last, after every global of this file has its value: top-level code runs in order.
runFuzzer(fuzzPDUFraming)
