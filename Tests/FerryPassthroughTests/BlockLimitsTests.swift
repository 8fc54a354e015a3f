import FerryPassthrough
import NIOCore
import SCSI
import Testing

@Suite struct BlockLimitsTests {
    /// A Block Limits page (SBC-4 §6.6.4, 64 bytes) with the given MAXIMUM and OPTIMAL TRANSFER LENGTH.
    private func page(maximum: UInt32, optimal: UInt32) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeBytes([0x00, 0xb0, 0x00, 0x3c, 0x00, 0x01, 0x00, 0x08])
        buffer.writeInteger(maximum)
        buffer.writeInteger(optimal)
        buffer.writeBytes([UInt8](repeating: 0x5a, count: 48))
        return buffer
    }

    /// MAXIMUM and OPTIMAL TRANSFER LENGTH of a clamped page: nil where the clamp left no field.
    private func fields(_ buffer: ByteBuffer) -> [UInt32?] {
        [buffer.getInteger(at: 8), buffer.getInteger(at: 12)]
    }

    @Test func lowersLargerLimits() {
        var data = page(maximum: 65_535, optimal: 4_096)
        BlockLimits.clamp(&data, maximumBlocks: 1_024)
        #expect(fields(data) == [1_024, 1_024])
        // Everything else stays as the device sent it.
        #expect(data.getBytes(at: 0, length: 8) == [0x00, 0xb0, 0x00, 0x3c, 0x00, 0x01, 0x00, 0x08])
        #expect(data.getBytes(at: 16, length: 48) == [UInt8](repeating: 0x5a, count: 48))
    }

    @Test func keepsSmallerLimits() {
        var data = page(maximum: 256, optimal: 8)
        BlockLimits.clamp(&data, maximumBlocks: 1_024)
        #expect(fields(data) == [256, 8])
    }

    @Test func noLimitReportedBecomesTheLimitAndUnreportedOptimalStays() {
        var data = page(maximum: 0, optimal: 0)
        BlockLimits.clamp(&data, maximumBlocks: 2_048)
        #expect(fields(data) == [2_048, 0])
    }

    @Test func truncatedPagesAreEditedWhereTheFieldsArePresent() {
        var short = page(maximum: 65_535, optimal: 65_535).getSlice(at: 0, length: 14)!
        BlockLimits.clamp(&short, maximumBlocks: 128)
        #expect(short.getInteger(at: 8, as: UInt32.self) == 128)
        #expect(short.getBytes(at: 12, length: 2) == [0x00, 0x00])
        var header = page(maximum: 65_535, optimal: 65_535).getSlice(at: 0, length: 8)!
        BlockLimits.clamp(&header, maximumBlocks: 128)
        #expect(header.readableBytes == 8)
    }

    @Test func otherPagesAreLeftAlone() {
        var data = page(maximum: 65_535, optimal: 65_535)
        data.setInteger(UInt8(0xb1), at: 1)
        BlockLimits.clamp(&data, maximumBlocks: 128)
        #expect(fields(data) == [65_535, 65_535])
    }

    @Test func recognisesTheInquiry() {
        func cdb(_ bytes: [UInt8]) -> CDB { CDB(ByteBuffer(bytes: bytes)) }
        #expect(BlockLimits.isBlockLimitsInquiry(cdb([0x12, 0x01, 0xb0, 0x00, 0x40, 0x00])))
        #expect(BlockLimits.isBlockLimitsInquiry(cdb([0x12, 0x00, 0xb0, 0x00, 0x40, 0x00])) == false)
        #expect(BlockLimits.isBlockLimitsInquiry(cdb([0x12, 0x01, 0x83, 0x00, 0x40, 0x00])) == false)
        #expect(BlockLimits.isBlockLimitsInquiry(cdb([0x1a, 0x01, 0xb0, 0x00, 0x40, 0x00])) == false)
    }
}
