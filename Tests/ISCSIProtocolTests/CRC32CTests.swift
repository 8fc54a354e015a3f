import ISCSIProtocol
import NIOCore
import Testing

/// RFC 3720 Appendix B.4 (carried over unchanged by RFC 7143).
@Suite struct CRC32CTests {
    @Test func thirtyTwoBytesOfZeros() {
        let buffer = ByteBuffer(repeating: 0, count: 32)
        #expect(CRC32C.checksum(buffer) == 0x8a91_36aa)
    }

    @Test func thirtyTwoBytesOfOnes() {
        let buffer = ByteBuffer(repeating: 0xff, count: 32)
        #expect(CRC32C.checksum(buffer) == 0x62a8_ab43)
    }

    @Test func incrementingBytes() {
        let buffer = ByteBuffer(bytes: Array(0..<32))
        #expect(CRC32C.checksum(buffer) == 0x46dd_794e)
    }

    @Test func decrementingBytes() {
        let buffer = ByteBuffer(bytes: (0..<32).reversed())
        #expect(CRC32C.checksum(buffer) == 0x113f_db5c)
    }

    @Test func emptyInput() {
        #expect(CRC32C.checksum(ByteBuffer()) == 0)
    }

    @Test func incrementalEqualsOneShot() {
        let whole = ByteBuffer(bytes: (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        for split in [0, 1, 3, 500, 999, 1000] {
            let head = whole.getSlice(at: 0, length: split)!
            let tail = whole.getSlice(at: split, length: 1000 - split)!
            #expect(CRC32C.checksum([head, tail]) == CRC32C.checksum(whole))
        }
    }

    @Test func readableBytesOnly() {
        var buffer = ByteBuffer(bytes: [1, 2, 3])
        buffer.writeRepeatingByte(0, count: 32)
        buffer.moveReaderIndex(forwardBy: 3)
        #expect(CRC32C.checksum(buffer) == 0x8a91_36aa)
    }

    @Test func zeroPaddingEqualsExplicitZeros() {
        var crc = CRC32C()
        crc.update(ByteBuffer(bytes: [0xde, 0xad, 0xbe]))
        crc.updateWithZeros(count: 1)
        #expect(crc.value == CRC32C.checksum(ByteBuffer(bytes: [0xde, 0xad, 0xbe, 0])))
    }

    /// RFC 3720 B.4 shows the zeros digest as the byte sequence `aa 36 91 8a`.
    @Test func digestIsLittleEndianOnTheWire() {
        var buffer = ByteBuffer()
        buffer.writeDigest(CRC32C.checksum(ByteBuffer(repeating: 0, count: 32)))
        #expect(Array(buffer.readableBytesView) == [0xaa, 0x36, 0x91, 0x8a])
        #expect(buffer.readDigest() == 0x8a91_36aa)
    }
}
