import FerryBackends
import NIOCore
import SCSI
import Testing

/// `NullBlockStore` (issue 12), alone and under the emulated device server: zeroes out, writes dropped, the configured
/// capacity, everything deallocated, and identifiers that depend on the target and LUN only.
@Suite struct NullBlockStoreTests {
    private static let gibibyte: UInt64 = 1 << 30

    private let nexus = ITNexus(
        initiatorPortName: "iqn.2026-11.test:initiator,i,0x000000000001",
        targetPortName: "iqn.2026-11.dev.ferry:bench,t,0x0001", relativeTargetPortIdentifier: 1)

    private func device(
        byteCount: UInt64 = gibibyte, blockSize: Int = 512, target: String = "iqn.2026-11.dev.ferry:bench",
        lun: UInt64 = 0
    ) -> EmulatedBlockDevice {
        EmulatedBlockDevice(
            store: NullBlockStore(byteCount: byteCount, target: target, lun: lun),
            configuration: .init(blockSize: blockSize), copyTargets: CopyTargetDirectory())
    }

    private func run(_ device: EmulatedBlockDevice, _ cdb: [UInt8], data: [UInt8] = []) -> SCSIResult {
        let request = SCSIRequest(
            cdb: ByteBuffer(bytes: cdb + [UInt8](repeating: 0, count: max(0, 16 - cdb.count))), lun: 0, nexus: nexus,
            expectedDataTransferLength: data.isEmpty ? 65536 : data.count, dataOut: ByteBuffer(bytes: data))
        return device.execute(request)
    }

    @Test func theStoreReadsZeroesAndDropsWrites() throws {
        let store = NullBlockStore(byteCount: 1 << 20, target: "iqn.2026-11.dev.ferry:bench", lun: 3)
        #expect(store.kind == "null")
        #expect(store.byteCount == 1 << 20)
        #expect(store.supportsUnmap && store.unmappedReadsZero)
        let payload = [UInt8](repeating: 0xab, count: 8192)
        try payload.withUnsafeBytes { try store.write($0, at: 65536, forceUnitAccess: true) }
        try store.synchronize()
        // The buffer starts non-zero: a read that left it alone would fail.
        var back = [UInt8](repeating: 0xff, count: 8192)
        try back.withUnsafeMutableBytes { try store.read(into: $0, at: 65536) }
        #expect(back.allSatisfy { $0 == 0 })
        try store.unmap(offset: 0, length: 1 << 20)
        // Everything is deallocated, written or not, to the end of the store.
        #expect(try store.mappingStatus(at: 0) == (false, 1 << 20))
        #expect(try store.mappingStatus(at: 65536) == (false, (1 << 20) - 65536))
    }

    @Test func rangesPastTheEndFail() {
        let store = NullBlockStore(byteCount: 4096, target: "iqn.2026-11.dev.ferry:bench", lun: 0)
        var buffer = [UInt8](repeating: 0, count: 512)
        #expect(throws: BlockStoreError.self) {
            try buffer.withUnsafeMutableBytes { try store.read(into: $0, at: 4096 - 511) }
        }
        #expect(throws: BlockStoreError.self) {
            try buffer.withUnsafeBytes { try store.write($0, at: UInt64.max, forceUnitAccess: false) }
        }
        #expect(throws: BlockStoreError.self) { try store.unmap(offset: 4096, length: 1) }
        // Up to the last byte is fine.
        #expect(throws: Never.self) {
            try buffer.withUnsafeMutableBytes { try store.read(into: $0, at: 4096 - 512) }
        }
    }

    /// The identity, and so the derived serial number and NAA designator, depends on the target and LUN only: the
    /// same after a restart, different for another LUN.
    @Test func identityIsStableAndPerLogicalUnit() {
        let identity = { (target: String, lun: UInt64) in
            NullBlockStore(byteCount: 4096, target: target, lun: lun).identity
        }
        #expect(identity("iqn.2026-11.dev.ferry:a", 0) == identity("iqn.2026-11.dev.ferry:a", 0))
        #expect(identity("iqn.2026-11.dev.ferry:a", 0) != identity("iqn.2026-11.dev.ferry:a", 1))
        #expect(identity("iqn.2026-11.dev.ferry:a", 0) != identity("iqn.2026-11.dev.ferry:b", 0))
        let serial = { (device: EmulatedBlockDevice) in self.run(device, [0x12, 0x01, 0x80, 0, 0xff, 0]).bytes }
        let naa = { (device: EmulatedBlockDevice) in self.run(device, [0x12, 0x01, 0x83, 0x01, 0x00, 0]).bytes }
        #expect(serial(device(lun: 2)).count > 4)
        #expect(serial(device(lun: 2)) == serial(device(lun: 2)))
        #expect(serial(device(lun: 2)) != serial(device(lun: 3)))
        #expect(naa(device(lun: 2)) == naa(device(lun: 2)))
        #expect(naa(device(lun: 2)) != naa(device(lun: 3)))
    }

    @Test func aReadAfterAWriteReturnsZeroes() throws {
        let device = device()
        let payload = [UInt8](repeating: 0xab, count: 8 * 512)
        #expect(run(device, cdb10(0x2a, lba: 1000, blocks: 8), data: payload).status == .good)
        // WRITE(16) with FUA, then SYNCHRONIZE CACHE(10): accepted, and dropped.
        #expect(run(device, cdb16(0x8a, lba: 1000, blocks: 8, flags: 0x08), data: payload).status == .good)
        #expect(run(device, [0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]).status == .good)
        let read = run(device, cdb10(0x28, lba: 1000, blocks: 8))
        #expect(read.status == .good)
        #expect(read.bytes.count == 8 * 512)
        #expect(read.bytes.allSatisfy { $0 == 0 })
        // The last block reads too, and the one after it is out of range as on any disk.
        #expect(run(device, cdb16(0x88, lba: 2_097_151, blocks: 1)).bytes == [UInt8](repeating: 0, count: 512))
        run(device, cdb16(0x88, lba: 2_097_151, blocks: 2)).expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
    }

    @Test func readCapacityGivesTheConfiguredSize() throws {
        // 1 GiB of 512-byte blocks: the last LBA is 2^21 - 1.
        #expect(run(device(), [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]).bytes == [0, 0x1f, 0xff, 0xff, 0, 0, 0x02, 0x00])
        // 16 TiB of 4096-byte blocks, far beyond any memory or disk here: 2^32 blocks.
        let readCapacity16 = [0x9e, 0x10] + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 32, 0, 0]
        let large = run(device(byteCount: 16 << 40, blockSize: 4096), readCapacity16).bytes
        try #require(large.count == 32)
        #expect(Array(large[0..<12]) == [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x10, 0x00])
        #expect(large[14] == 0xc0)  // LBPME, LBPRZ: deallocated blocks read as zeroes
    }

    /// GET LBA STATUS agrees with the reads: one deallocated extent from the starting LBA to the end, also after a
    /// write.
    @Test func getLBAStatusReportsEverythingDeallocated() throws {
        let device = device()
        #expect(run(device, cdb10(0x2a, lba: 0, blocks: 1), data: [UInt8](repeating: 0x5a, count: 512)).status == .good)
        let status = run(device, cdb16(0x9e, lba: 0, blocks: 1000, flags: 0x12)).bytes
        try #require(status.count == 8 + 16)
        // 2^21 blocks from LBA 0, PROVISIONING STATUS 1h (deallocated).
        #expect(Array(status[8..<24]) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 1, 0, 0, 0])
        let fromTheMiddle = run(device, cdb16(0x9e, lba: 1000, blocks: 1000, flags: 0x12)).bytes
        try #require(fromTheMiddle.count == 8 + 16)
        #expect(Array(fromTheMiddle[8..<24]) == [0, 0, 0, 0, 0, 0, 0x03, 0xe8, 0, 0x1f, 0xfc, 0x18, 1, 0, 0, 0])
    }
}
