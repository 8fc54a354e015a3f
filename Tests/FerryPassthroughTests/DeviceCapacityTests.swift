import Testing

@testable import FerryPassthrough

/// READ CAPACITY data from the disk behind a passthrough LUN is input Ferry does not control: a RETURNED LOGICAL
/// BLOCK ADDRESS of 2^64 - 1, or a capacity beyond 2^64 bytes, must not trap the probe or the geometry that
/// `ferryctl` shows.
@Suite struct DeviceCapacityTests {
    private func readCapacity16(lastLBA: UInt64, blockSize: UInt32) -> [UInt8] {
        var data = [UInt8](repeating: 0, count: 32)
        for byte in 0..<8 { data[byte] = UInt8(truncatingIfNeeded: lastLBA >> UInt64(56 - 8 * byte)) }
        for byte in 0..<4 { data[8 + byte] = UInt8(truncatingIfNeeded: blockSize >> UInt32(24 - 8 * byte)) }
        return data
    }

    @Test func readCapacity16WithTheLargestLastLBA() {
        let capacity = SGProbe.capacity(readCapacity16: readCapacity16(lastLBA: .max, blockSize: 512))
        #expect(capacity.blockCount == nil)
        #expect(capacity.blockSize == 512)
        let ordinary = SGProbe.capacity(readCapacity16: readCapacity16(lastLBA: 131_071, blockSize: 4096))
        #expect(ordinary.blockCount == 131_072 && ordinary.blockSize == 4096)
    }

    @Test func readCapacity10WithTheLargestLastLBA() {
        let capacity = SGProbe.capacity(readCapacity10: [0xff, 0xff, 0xff, 0xff, 0, 0, 0x02, 0x00])
        #expect(capacity.blockCount == 0x1_0000_0000 && capacity.blockSize == 512)
    }

    @Test func byteCountBeyondSixtyFourBits() {
        var identity = DeviceIdentity(
            peripheralDeviceType: 0, vendor: "V", product: "P", revision: "R", blockSize: 4096,
            blockCount: UInt64.max / 512, notReadyReason: nil)
        #expect(identity.byteCount == nil)
        identity.blockCount = 131_072
        #expect(identity.byteCount == 131_072 * 4096)
        identity.blockCount = nil
        #expect(identity.byteCount == nil)
    }
}
