import DequeModule
import ISCSIProtocol
public import NIOCore

/// The Data-Out of one write command as it comes in: immediate data, unsolicited Data-Out and the bursts its
/// R2Ts solicit (RFC 7143 §4.2.2.2, §11.7, §11.8). DataPDUInOrder and DataSequenceInOrder are Yes, so data
/// arrives in offset order within each sequence.
public struct DataOutProgress {
    /// Bytes the command takes from the initiator: min(EDTL, what the CDB asks for).
    public internal(set) var expected: Int
    /// Bytes received so far.
    public internal(set) var received: Int
    /// The gathered buffer; starts as the immediate data slice (no copy when that is all).
    var buffer: ByteBuffer
    /// Unsolicited (TTT 0xffffffff) data is still allowed up to this offset.
    var unsolicitedLimit: Int
    /// The unsolicited burst ended (F bit seen, or nothing unsolicited allowed).
    var unsolicitedDone: Bool
    /// Next DataSN expected in the unsolicited sequence.
    var expectedDataSN: UInt32
    /// Outstanding R2Ts in offset order.
    var outstanding: Deque<OutstandingR2T>
    /// Offset up to which R2Ts have been issued.
    var requestedUpTo: Int
    var nextR2TSN: UInt32

    var isComplete: Bool { received >= expected }

    /// The progress of a command whose turn came (or which got its first Data-Out): its immediate data is in.
    init(command: SCSICommand, expected: Int, parameters: SessionParameters) {
        let immediate = min(command.data.readableBytes, expected)
        self.expected = expected
        self.received = 0
        self.buffer = ByteBuffer()
        self.unsolicitedLimit = parameters.initialR2T ? immediate : min(expected, parameters.firstBurstLength)
        self.unsolicitedDone = parameters.initialR2T || command.final
        self.expectedDataSN = 0
        self.outstanding = []
        self.requestedUpTo = 0
        self.nextR2TSN = 0
        if immediate > 0 {
            append(command.data.getSlice(at: command.data.readerIndex, length: immediate)!)
        }
    }

    /// Takes one Data-Out PDU, or says why it cannot (the Reject reason, RFC 7143 §11.17.1).
    mutating func take(_ dataOut: SCSIDataOut) -> Reject.Reason? {
        let offset = Int(dataOut.bufferOffset)
        let length = dataOut.data.readableBytes
        if dataOut.targetTransferTag == reservedTag {
            // Unsolicited data (InitialR2T=No), DataSN from 0 in its own sequence.
            guard !unsolicitedDone, offset == received, length <= unsolicitedLimit - offset,
                dataOut.dataSN == expectedDataSN
            else {
                return .protocolError
            }
            expectedDataSN &+= 1
            if dataOut.final {
                unsolicitedDone = true
                expectedDataSN = 0
            }
        } else {
            guard let index = outstanding.firstIndex(where: { $0.targetTransferTag == dataOut.targetTransferTag }) else {
                return .invalidPDUField
            }
            var r2t = outstanding[index]
            guard offset == r2t.offset + r2t.received, length <= r2t.length - r2t.received,
                dataOut.dataSN == r2t.expectedDataSN
            else {
                return .protocolError
            }
            r2t.received += length
            r2t.expectedDataSN &+= 1
            if r2t.received == r2t.length || dataOut.final {
                outstanding.remove(at: index)
            } else {
                outstanding[index] = r2t
            }
        }
        append(dataOut.data)
        return nil
    }

    /// Issues R2Ts for the data still missing, as many as MaxOutstandingR2T allows, each at most MaxBurstLength
    /// (RFC 7143 §13.8, §13.17); returns their Target Transfer Tags. Nothing is solicited while unsolicited data
    /// may still come.
    mutating func solicit(parameters: SessionParameters, tags: inout TargetTransferTags) -> [UInt32] {
        guard unsolicitedDone else { return [] }
        if requestedUpTo < received { requestedUpTo = received }
        var issued: [UInt32] = []
        while outstanding.count < parameters.maxOutstandingR2T && requestedUpTo < expected {
            let length = min(parameters.maxBurstLength, expected - requestedUpTo)
            let ttt = tags.next()
            outstanding.append(
                OutstandingR2T(targetTransferTag: ttt, offset: requestedUpTo, length: length, received: 0, expectedDataSN: 0))
            requestedUpTo += length
            issued.append(ttt)
        }
        return issued
    }

    /// The R2T to send for `ttt`, with the next R2TSN, if it is still outstanding.
    mutating func readyToTransfer(_ ttt: UInt32) -> (r2t: OutstandingR2T, r2tSN: UInt32)? {
        guard let r2t = outstanding.first(where: { $0.targetTransferTag == ttt }) else { return nil }
        defer { nextR2TSN &+= 1 }
        return (r2t, nextR2TSN)
    }

    /// Gathers Data-Out: the first segment is kept as a slice; later ones are copied once into a buffer of
    /// the full expected size.
    private mutating func append(_ data: ByteBuffer) {
        var data = data
        let length = min(data.readableBytes, expected - received)
        guard length > 0 else { return }
        if received == 0 && length == expected {
            buffer = data.readSlice(length: length)!
        } else {
            if buffer.capacity < expected {
                var gathered = ByteBufferAllocator().buffer(capacity: expected)
                gathered.writeImmutableBuffer(buffer)
                buffer = gathered
            }
            buffer.writeImmutableBuffer(data.readSlice(length: length)!)
        }
        received += length
    }
}

/// One R2T the initiator has not yet answered in full.
public struct OutstandingR2T: Hashable, Sendable {
    public var targetTransferTag: UInt32
    public var offset: Int
    public var length: Int
    public var received: Int
    public var expectedDataSN: UInt32
}

/// The session's Target Transfer Tags (R2Ts and pings): never the reserved 0xffffffff, and not reused
/// until 2^32 - 2 others have been given out.
public struct TargetTransferTags: Sendable {
    private var following: UInt32 = 1

    public init() {}

    public mutating func next() -> UInt32 {
        let tag = following
        following = following &+ 1 == reservedTag ? 1 : following &+ 1
        return tag
    }
}
