import ISCSIProtocol
import NIOCore
import NIOEmbedded
import Testing

@testable import FerryTarget

private let sequence = StatusSequence(statSN: 7, expCmdSN: 8, maxCmdSN: 40)

private func dataIn(itt: UInt32, bytes: Int, status: UInt8? = nil) -> PDU {
    .scsiDataIn(
        SCSIDataIn(
            final: true, status: status, initiatorTaskTag: itt, sequence: sequence, dataSN: 0, bufferOffset: 0,
            data: ByteBuffer(repeating: UInt8(truncatingIfNeeded: itt), count: bytes)))
}

private func response(itt: UInt32) -> PDU {
    .scsiResponse(SCSIResponse(status: 0, initiatorTaskTag: itt, sequence: sequence))
}

/// Everything written to the channel, and the PDUs it decodes to.
private func wire(_ channel: EmbeddedChannel, headerDigest: Bool = false, dataDigest: Bool = false) throws -> (
    buffers: [ByteBuffer], pdus: [PDU]
) {
    var buffers: [ByteBuffer] = []
    while let buffer = try channel.readOutbound(as: ByteBuffer.self) { buffers.append(buffer) }
    // Each buffer arrives as one read, at a connection handler's decoder.
    let processor = NIOSingleStepByteToMessageProcessor(
        PDUFrameDecoder(maxRecvDataSegmentLength: 1 << 20, headerDigest: headerDigest, dataDigest: dataDigest))
    var pdus: [PDU] = []
    for buffer in buffers {
        try processor.process(buffer: buffer) { pdus.append($0.pdu) }
    }
    #expect(processor.unprocessedBytes == 0)
    return (buffers, pdus)
}

@Suite struct PDUWriterTests {
    @Test func batchGoesOutInOrderAtTheFlush() throws {
        let writer = PDUWriter()
        let channel = EmbeddedChannel(handler: writer)
        let pdus = [dataIn(itt: 1, bytes: 4097), response(itt: 2), dataIn(itt: 3, bytes: 100, status: 0)]
        writer.enqueue(pdus[0])
        channel.write(pdus[1], promise: nil)
        writer.enqueue(pdus[2])
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        channel.flush()
        #expect(try wire(channel).pdus == pdus)
    }

    @Test func largeDataSegmentsAreWrittenWithoutACopy() throws {
        let writer = PDUWriter()
        let channel = EmbeddedChannel(handler: writer)
        let payload = ByteBuffer(repeating: 0xa5, count: 65_536)
        writer.enqueue(
            .scsiDataIn(
                SCSIDataIn(
                    final: true, status: 0, initiatorTaskTag: 9, sequence: sequence, dataSN: 0, bufferOffset: 0,
                    data: payload)))
        channel.flush()
        let (buffers, pdus) = try wire(channel)
        #expect(pdus.count == 1)
        let address = { (buffer: ByteBuffer) in buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } }
        #expect(buffers.contains { address($0) == address(payload) })
    }

    @Test func digestsCoverEveryPDUOfTheBatch() throws {
        let writer = PDUWriter()
        writer.enableDigests(header: true, data: true)
        let channel = EmbeddedChannel(handler: writer)
        let pdus = [dataIn(itt: 1, bytes: 2051), dataIn(itt: 2, bytes: 6), response(itt: 3)]
        for pdu in pdus { writer.enqueue(pdu) }
        channel.flush()
        #expect(try wire(channel, headerDigest: true, dataDigest: true).pdus == pdus)
    }

    @Test func promiseCompletesWhenItsPDUIsWritten() throws {
        let writer = PDUWriter()
        let channel = EmbeddedChannel(handler: writer)
        let small = channel.write(response(itt: 1))
        // 8192 bytes: no padding, so the data segment is the PDU's last stretch.
        let large = channel.write(dataIn(itt: 2, bytes: 8192))
        channel.flush()
        try small.wait()
        try large.wait()
        #expect(try wire(channel).pdus.count == 2)
    }

    @Test func closeWritesWhatIsPending() throws {
        let writer = PDUWriter()
        let channel = EmbeddedChannel(handler: writer)
        let logout = PDU.logoutResponse(
            LogoutResponse(response: .closedSuccessfully, initiatorTaskTag: 5, sequence: sequence))
        writer.enqueue(logout)
        try channel.close().wait()
        #expect(try wire(channel).pdus == [logout])
    }
}
