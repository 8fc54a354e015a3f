import ISCSIProtocol
import NIOCore

/// The transmit end of a connection's pipeline. PDUs written to it wait until the next flush;
/// the flush encodes every header segment, trailer and small data segment of the batch into one
/// buffer and writes slices of it around the data segments, which go out as the slices they
/// already are. So payload bytes (Data-In read from the disk) reach the socket without a copy,
/// and a batch of PDUs costs one buffer allocation, not one per PDU.
///
/// The session hands PDUs over with ``enqueue(_:)`` when it runs on the connection's loop; that
/// skips the pipeline, which would box each PDU in an `NIOAny`.
final class PDUWriter: ChannelOutboundHandler {
    typealias OutboundIn = PDU
    typealias OutboundOut = ByteBuffer

    /// Data segments up to this size are copied next to their header: one iovec instead of three.
    private static let inlineDataLimit = 1024

    /// One stretch of the wire, in order.
    private enum Segment {
        /// Bytes of the batch buffer: header segments, trailers and inline data segments.
        case encoded(start: Int, end: Int, promise: EventLoopPromise<Void>?)
        /// A data segment, written as it is.
        case data(ByteBuffer, promise: EventLoopPromise<Void>?)
    }

    private(set) var encoder = PDUEncoder()
    /// PDUs written since the last flush.
    private var pending: [(pdu: PDU, promise: EventLoopPromise<Void>?)] = []
    private var segments: [Segment] = []
    /// Set while ``writePending(context:)`` writes; a write can call back into the session
    /// (writability), which may queue and flush more PDUs. Those wait for the loop below.
    private var writing = false

    /// Switches digests for the PDUs encoded from now on. PDUs are encoded when they are flushed,
    /// so every PDU meant to go out without digests must have been flushed.
    func enableDigests(header: Bool, data: Bool) {
        assert(pending.isEmpty, "digests switched with PDUs waiting for a flush")
        encoder.enableDigests(header: header, data: data)
    }

    /// Queues `pdu` for the next flush of the channel. Call it on the channel's event loop only.
    func enqueue(_ pdu: PDU) {
        pending.append((pdu, nil))
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        pending.append((unwrapOutboundIn(data), promise))
    }

    func flush(context: ChannelHandlerContext) {
        writePending(context: context)
        context.flush()
    }

    /// PDUs queued before a close (a Logout Response, a Reject) still go out first.
    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode != .input && !pending.isEmpty {
            writePending(context: context)
            context.flush()
        }
        context.close(mode: mode, promise: promise)
    }

    /// Encodes the pending PDUs into one buffer, then writes slices of it and the data segments
    /// in wire order. Slices are only taken once the buffer is complete, so that no write to it
    /// finds its storage shared and copies it.
    private func writePending(context: ChannelHandlerContext) {
        guard !writing else { return }
        writing = true
        defer { writing = false }
        while !pending.isEmpty { writeBatch(context: context) }
    }

    private func writeBatch(context: ChannelHandlerContext) {
        var capacity = 0
        for entry in pending {
            let length = entry.pdu.dataSegment.readableBytes
            capacity += 48 + 8 + 8 + (length <= Self.inlineDataLimit ? length : 0)
        }
        var buffer = context.channel.allocator.buffer(capacity: capacity)
        var start = 0
        for entry in pending {
            let dataSegment = entry.pdu.dataSegment
            if dataSegment.readableBytes <= Self.inlineDataLimit {
                encoder.encode(entry.pdu, into: &buffer)
            } else {
                encoder.writeHeaderSegment(entry.pdu, into: &buffer)
                segments.append(.encoded(start: start, end: buffer.writerIndex, promise: nil))
                start = buffer.writerIndex
                encoder.writeTrailer(dataSegment: dataSegment, into: &buffer)
                // Without a trailer, the data segment is the PDU's last stretch.
                let last = buffer.writerIndex == start
                segments.append(.data(dataSegment, promise: last ? entry.promise : nil))
                if last { continue }
            }
            if let promise = entry.promise {
                // The PDU is on the wire once its last byte is: end the stretch here.
                segments.append(.encoded(start: start, end: buffer.writerIndex, promise: promise))
                start = buffer.writerIndex
            }
        }
        segments.append(.encoded(start: start, end: buffer.writerIndex, promise: nil))
        pending.removeAll(keepingCapacity: true)
        for segment in segments {
            switch segment {
            case .encoded(let start, let end, let promise):
                // An empty stretch carries no promise: each one ends a PDU with bytes in it.
                if start < end {
                    context.write(wrapOutboundOut(buffer.getSlice(at: start, length: end - start)!), promise: promise)
                }
            case .data(let data, let promise):
                context.write(wrapOutboundOut(data), promise: promise)
            }
        }
        segments.removeAll(keepingCapacity: true)
    }
}
