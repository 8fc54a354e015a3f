import ISCSIProtocol
import NIOCore

/// The transmit end of a connection's pipeline: encodes each PDU's header segment into a small
/// buffer and writes the data segment as the slice it already is, so payload bytes (Data-In
/// read from the disk) reach the socket without a copy.
final class PDUWriter: ChannelOutboundHandler {
    typealias OutboundIn = PDU
    typealias OutboundOut = ByteBuffer

    /// Data segments up to this size are copied next to their header: one write instead of three.
    private static let inlineDataLimit = 1024

    private(set) var encoder = PDUEncoder()

    func enableDigests(header: Bool, data: Bool) {
        encoder.enableDigests(header: header, data: data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let pdu = unwrapOutboundIn(data)
        let dataSegment = pdu.dataSegment
        let length = dataSegment.readableBytes
        if length <= Self.inlineDataLimit {
            var buffer = context.channel.allocator.buffer(capacity: 48 + 8 + length + 8)
            encoder.encode(pdu, into: &buffer)
            context.write(wrapOutboundOut(buffer), promise: promise)
            return
        }
        var header = context.channel.allocator.buffer(capacity: 48 + 24 + 8)
        encoder.writeHeaderSegment(pdu, into: &header)
        let trailerLength = encoder.trailerLength(dataSegmentLength: length)
        context.write(wrapOutboundOut(header), promise: nil)
        if trailerLength == 0 {
            context.write(wrapOutboundOut(dataSegment), promise: promise)
        } else {
            context.write(wrapOutboundOut(dataSegment), promise: nil)
            var trailer = context.channel.allocator.buffer(capacity: trailerLength)
            encoder.writeTrailer(dataSegment: dataSegment, into: &trailer)
            context.write(wrapOutboundOut(trailer), promise: promise)
        }
    }
}
