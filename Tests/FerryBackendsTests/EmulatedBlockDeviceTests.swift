import FerryBackends
import FerrySync
import NIOCore
import SCSI
import Testing

/// A device over a 1 MiB in-memory store (2048 blocks of 512 bytes) and helpers to drive it.
struct Harness {
    static let blocks = 2048
    let store: MemoryBlockStore
    let device: EmulatedBlockDevice
    let nexus = ITNexus(
        initiatorPortName: "iqn.2024-01.test:initiator,i,0x000000000001",
        targetPortName: "iqn.2024-01.test:target,t,0x0001", relativeTargetPortIdentifier: 1)
    let otherNexus = ITNexus(
        initiatorPortName: "iqn.2024-01.test:other,i,0x000000000002",
        targetPortName: "iqn.2024-01.test:target,t,0x0001", relativeTargetPortIdentifier: 1)

    init(
        readOnly: Bool = false, supportsUnmap: Bool = true, maximumTransferLength: UInt32? = nil,
        physicalBlockSize: Int = 0, asymmetricAccess: (any AsymmetricAccess)? = nil
    ) {
        store = MemoryBlockStore(
            byteCount: Self.blocks * 512, supportsUnmap: supportsUnmap, physicalBlockSize: physicalBlockSize)
        device = EmulatedBlockDevice(
            store: store,
            configuration: .init(readOnly: readOnly, serial: "SERIAL1", maximumTransferLength: maximumTransferLength),
            copyTargets: CopyTargetDirectory(), asymmetricAccess: asymmetricAccess)
    }

    func run(
        _ cdb: [UInt8], data: [UInt8] = [], from nexus: ITNexus? = nil, expectedDataTransferLength: Int? = nil
    ) -> SCSIResult {
        var padded = cdb
        padded += [UInt8](repeating: 0, count: max(0, 16 - cdb.count))
        let request = SCSIRequest(
            cdb: ByteBuffer(bytes: padded), lun: 0, nexus: nexus ?? self.nexus,
            expectedDataTransferLength: expectedDataTransferLength ?? (data.isEmpty ? 65536 : data.count),
            dataOut: ByteBuffer(bytes: data))
        return device.execute(request)
    }
}

func cdb10(_ op: UInt8, lba: UInt32, blocks: UInt16, flags: UInt8 = 0) -> [UInt8] {
    [op, flags, UInt8(lba >> 24), UInt8((lba >> 16) & 0xff), UInt8((lba >> 8) & 0xff), UInt8(lba & 0xff), 0,
     UInt8(blocks >> 8), UInt8(blocks & 0xff), 0]
}

func cdb16(_ op: UInt8, lba: UInt64, blocks: UInt32, flags: UInt8 = 0) -> [UInt8] {
    var cdb: [UInt8] = [op, flags]
    for shift in stride(from: 56, through: 0, by: -8) { cdb.append(UInt8((lba >> UInt64(shift)) & 0xff)) }
    for shift in stride(from: 24, through: 0, by: -8) { cdb.append(UInt8((blocks >> UInt32(shift)) & 0xff)) }
    return cdb + [0, 0]
}

@Suite struct EmulatedBlockDeviceTests {
    @Test func testUnitReadyAndUnsupportedOperationCode() {
        let h = Harness()
        #expect(h.run([0x00, 0, 0, 0, 0, 0]).status == .good)
        h.run([0xc0]).expectSense(.illegalRequest, .invalidCommandOperationCode, fieldPointer: (0, nil))
        // NACA in the CONTROL byte is not supported.
        h.run([0x00, 0, 0, 0, 0, 0x04]).expectSense(.illegalRequest, .invalidFieldInCDB, fieldPointer: (5, 2))
    }

    @Test func standardInquiry() throws {
        let h = Harness()
        let data = h.run([0x12, 0, 0, 0x01, 0x00, 0]).bytes
        try #require(data.count == 96)
        #expect(data[0] == 0x00)
        #expect(data[2] == 0x06)
        #expect(data[3] == 0x12)  // HISUP, response data format 2
        #expect(data[4] == 91)
        #expect(data[5] & 0x08 != 0)  // 3PC
        #expect(data[7] & 0x02 != 0)  // CMDQUE
        #expect(Array(data[8..<16]) == Array("FERRY   ".utf8))
        // Allocation length truncates.
        #expect(h.run([0x12, 0, 0, 0, 36, 0]).bytes.count == 36)
        // EVPD 0 with a page code.
        h.run([0x12, 0, 0x80, 0, 0xff, 0]).expectSense(.illegalRequest, .invalidFieldInCDB, fieldPointer: (2, nil))
        h.run([0x12, 0x01, 0x99, 0, 0xff, 0]).expectSense(.illegalRequest, .invalidFieldInCDB, fieldPointer: (2, nil))
    }

    @Test func vitalProductDataPagesAreWellFormed() throws {
        let h = Harness()
        let supported = h.run([0x12, 0x01, 0x00, 0x01, 0x00, 0]).bytes
        try #require(supported.count >= 4)
        #expect(Array(supported[4...]) == [0x00, 0x80, 0x83, 0x8f, 0xb0, 0xb1, 0xb2])
        for code in supported[4...] {
            let page = h.run([0x12, 0x01, code, 0x01, 0x00, 0]).bytes
            try #require(page.count >= 4, "VPD page \(code)")
            #expect(page[1] == code)
            #expect(Int(page[2]) << 8 | Int(page[3]) == page.count - 4)
        }
        let serial = h.run([0x12, 0x01, 0x80, 0, 0xff, 0]).bytes
        try #require(serial.count >= 4)
        #expect(Array(serial[4...]) == Array("SERIAL1".utf8))

        let identification = h.run([0x12, 0x01, 0x83, 0x01, 0x00, 0]).bytes
        var designators: [(association: UInt8, type: UInt8, value: [UInt8])] = []
        var index = 4
        while index < identification.count {
            try #require(index + 4 <= identification.count, "a designator header at \(index)")
            let length = Int(identification[index + 3])
            try #require(index + 4 + length <= identification.count, "a designator of \(length) bytes at \(index)")
            designators.append(
                ((identification[index + 1] >> 4) & 0x03, identification[index + 1] & 0x0f,
                 Array(identification[(index + 4)..<(index + 4 + length)])))
            index += 4 + length
        }
        #expect(index == identification.count)
        let naa = designators.first { $0.association == 0 && $0.type == 3 }
        #expect(naa?.value.count == 16)
        #expect(naa?.value.first.map { $0 >> 4 } == 6)
        #expect(designators.contains { $0.association == 0 && $0.type == 1 })
        #expect(designators.contains { $0.association == 1 && $0.type == 4 && $0.value == [0, 0, 0, 1] })
        let portName = designators.first { $0.association == 1 && $0.type == 8 }
        #expect(portName.map { $0.value.count % 4 } == 0)
        #expect(portName.map { Array($0.value.prefix(33)) } == Array("iqn.2024-01.test:target,t,0x0001\0".utf8))

        let provisioning = h.run([0x12, 0x01, 0xb2, 0, 0xff, 0]).bytes
        try #require(provisioning.count > 5)
        #expect(provisioning[5] == 0xe4)  // LBPU LBPWS LBPWS10 LBPRZ
        let limits = h.run([0x12, 0x01, 0xb0, 0, 0xff, 0]).bytes
        try #require(limits.count == 64)
        #expect(limits[4] & 0x01 == 0)  // WSNZ
        func field(_ offset: Int) -> Int { limits[offset..<(offset + 4)].reduce(0) { $0 << 8 | Int($1) } }
        #expect(field(8) == 16384)  // MAXIMUM TRANSFER LENGTH: 8 MiB
        #expect(field(20) == 1024 * 1024)  // MAXIMUM UNMAP LBA COUNT: 512 MiB
        #expect(field(40) == 16384)  // MAXIMUM WRITE SAME LENGTH (low half of eight bytes)
    }

    @Test func readCapacity() throws {
        let h = Harness()
        #expect(h.run([0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]).bytes == [0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00])
        let data = h.run([0x9e, 0x10] + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 32, 0, 0]).bytes
        try #require(data.count == 32)
        #expect(Array(data[0..<12]) == [0, 0, 0, 0, 0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00])
        #expect(data[14] == 0xc0)  // LBPME, LBPRZ
        #expect(h.run([0x9e, 0x10] + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 12, 0, 0]).bytes.count == 12)
        #expect(data[13] == 0)  // one logical block per physical block when the store does not say
    }

    @Test func physicalBlocks() throws {
        // 4096-byte physical blocks of 512-byte logical blocks: exponent 3, granularities of 8.
        let h = Harness(physicalBlockSize: 4096)
        let capacity = h.run([0x9e, 0x10] + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 32, 0, 0]).bytes
        try #require(capacity.count >= 16)
        #expect(capacity[13] == 3 && capacity[14] & 0x3f == 0 && capacity[15] == 0)
        let limits = h.run([0x12, 0x01, 0xb0, 0, 0xff, 0]).bytes
        try #require(limits.count >= 32)
        #expect(Array(limits[6...7]) == [0, 8])  // OPTIMAL TRANSFER LENGTH GRANULARITY
        #expect(Array(limits[28...31]) == [0, 0, 0, 8])  // OPTIMAL UNMAP GRANULARITY
        // Physical blocks that are no power of two of logical ones are not reported.
        let odd = Harness(physicalBlockSize: 1536)
        let oddCapacity = odd.run([0x9e, 0x10] + [UInt8](repeating: 0, count: 8) + [0, 0, 0, 32, 0, 0]).bytes
        try #require(oddCapacity.count >= 14)
        #expect(oddCapacity[13] == 0)
        // An unaligned WRITE SAME with UNMAP deallocates within physical blocks.
        h.store.fill(0x55, offset: 0, count: 8 * 512)
        #expect(h.run(cdb16(0x93, lba: 1, blocks: 6, flags: 0x09)).status == .good)
        #expect(h.run(cdb16(0x88, lba: 1, blocks: 6)).bytes.allSatisfy { $0 == 0 })
        #expect(h.store.bytes[0] == 0x55 && h.store.bytes[7 * 512] == 0x55)
    }

    @Test func writeThenRead() {
        let h = Harness()
        let payload = (0..<1024).map { UInt8(truncatingIfNeeded: $0 * 7) }
        #expect(h.run(cdb10(0x2a, lba: 10, blocks: 2), data: payload).status == .good)
        #expect(h.run(cdb10(0x28, lba: 10, blocks: 2)).bytes == payload)
        #expect(h.run(cdb16(0x88, lba: 10, blocks: 2)).bytes == payload)
        #expect(h.run([0xa8, 0, 0, 0, 0, 10, 0, 0, 0, 2, 0, 0]).bytes == payload)
        // READ(6) with TRANSFER LENGTH 0 reads 256 blocks.
        #expect(h.run([0x08, 0, 0, 0, 0, 0], expectedDataTransferLength: 256 * 512).bytes.count == 256 * 512)
        // Zero blocks is not an error.
        #expect(h.run(cdb10(0x28, lba: 0, blocks: 0)).status == .good)
        // FUA: a durable write.
        #expect(h.run(cdb10(0x2a, lba: 0, blocks: 1, flags: 0x08), data: [UInt8](repeating: 1, count: 512)).status == .good)
        #expect(h.store.forcedWrites == 1)
    }

    /// A READ whose Expected Data Transfer Length holds fewer bytes than its TRANSFER LENGTH asks for reads only
    /// the blocks that cover the EDTL: the transport would discard the rest, and an initiator could otherwise make
    /// Ferry read (and hold) 8 MiB for each READ(10) of 16384 blocks sent with EDTL 0. The range is still checked
    /// whole, and the result says how much Data-In the command asked for, for the overflow residual.
    @Test(arguments: [
        (edtl: 0, read: 0), (1, 512), (512, 512), (1000, 1024), (1024, 1024), (2048 * 512, 2048 * 512),
        (Int(UInt32.max), 2048 * 512),
    ])
    func readsOnlyTheBlocksTheExpectedLengthCovers(edtl: Int, read: Int) {
        let h = Harness()
        h.store.fill(0x3c, offset: 0, count: 2048 * 512)
        for cdb in [cdb10(0x28, lba: 0, blocks: 2048), cdb16(0x88, lba: 0, blocks: 2048)] {
            let before = h.store.bytesRead
            let result = h.run(cdb, expectedDataTransferLength: edtl)
            #expect(result.status == .good)
            #expect(result.dataIn.readableBytes == read)
            #expect(result.requestedDataInLength == (read < 2048 * 512 ? 2048 * 512 : nil))
            #expect(h.store.bytesRead - before == read)
            #expect(result.bytes.allSatisfy { $0 == 0x3c })
        }
        // Past the end: LOGICAL BLOCK ADDRESS OUT OF RANGE whatever the EDTL, and nothing is read.
        let before = h.store.bytesRead
        h.run(cdb10(0x28, lba: 1, blocks: 2048), expectedDataTransferLength: edtl)
            .expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
        #expect(h.store.bytesRead == before)
    }

    @Test func readErrors() {
        let h = Harness()
        h.run(cdb10(0x28, lba: 2047, blocks: 2)).expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
        h.run(cdb10(0x28, lba: 2049, blocks: 0)).expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
        #expect(h.run(cdb10(0x28, lba: 2048, blocks: 0)).status == .good)
        h.run(cdb10(0x28, lba: 0, blocks: 1, flags: 0x20)).expectSense(
            .illegalRequest, .invalidFieldInCDB, fieldPointer: (1, 7))
        h.run(cdb10(0x28, lba: 0, blocks: 1, flags: 0x04)).expectSense(
            .illegalRequest, .invalidFieldInCDB, fieldPointer: (1, 2))
        let limited = EmulatedBlockDevice(
            store: MemoryBlockStore(byteCount: 1 << 20), configuration: .init(maximumTransferLength: 16),
            copyTargets: CopyTargetDirectory())
        let request = SCSIRequest(
            cdb: ByteBuffer(bytes: cdb10(0x28, lba: 0, blocks: 17)), lun: 0, nexus: h.nexus,
            expectedDataTransferLength: 17 * 512)
        limited.execute(request).expectSense(.illegalRequest, .invalidFieldInCDB, fieldPointer: (7, nil))
    }

    @Test func writeErrors() {
        let readOnly = Harness(readOnly: true)
        readOnly.run(cdb10(0x2a, lba: 0, blocks: 1), data: [UInt8](repeating: 1, count: 512))
            .expectSense(.dataProtect, .writeProtected)
        let h = Harness()
        // Fewer Data-Out bytes than the transfer length (EDTL below it): only the whole blocks
        // that arrived are written, and the command ends GOOD (the transport reports the overflow).
        #expect(h.run(cdb10(0x2a, lba: 0, blocks: 2), data: [UInt8](repeating: 0xaa, count: 512 + 100)).status == .good)
        #expect(h.store.bytes[0] == 0xaa && h.store.bytes[511] == 0xaa)
        #expect(h.store.bytes[512] == 0)
        h.run(cdb10(0x2a, lba: 0, blocks: 1, flags: 0x40), data: [UInt8](repeating: 1, count: 512))
            .expectSense(.illegalRequest, .invalidFieldInCDB, fieldPointer: (1, 7))
    }

    @Test func compareAndWrite() {
        let h = Harness()
        h.store.fill(0x11, offset: 512, count: 512)
        var cdb = cdb16(0x89, lba: 1, blocks: 0)
        cdb[13] = 1
        let good = [UInt8](repeating: 0x11, count: 512) + [UInt8](repeating: 0x22, count: 512)
        #expect(h.run(cdb, data: good).status == .good)
        #expect(h.store.bytes[512] == 0x22)
        var mismatch = [UInt8](repeating: 0x22, count: 512) + [UInt8](repeating: 0x33, count: 512)
        mismatch[100] = 0x99
        let result = h.run(cdb, data: mismatch)
        result.expectSense(.miscompare, .miscompareDuringVerifyOperation)
        #expect(result.sense?.information == 100)
        #expect(h.store.bytes[512] == 0x22)
    }

    @Test func compareAndWriteDataOutOfAnotherSize() {
        let h = Harness()
        var cdb = cdb16(0x89, lba: 0, blocks: 0)
        cdb[13] = 1
        // Four blocks for a one-block compare (two needed): refused, nothing written.
        h.run(cdb, data: [UInt8](repeating: 0, count: 4 * 512)).expectSense(
            .illegalRequest, .invalidFieldInCDB, fieldPointer: (13, nil))
        // One block where two are needed.
        h.run(cdb, data: [UInt8](repeating: 0, count: 512)).expectSense(
            .illegalRequest, .invalidFieldInCommandInformationUnit)
    }

    @Test func compareAndWriteOfZeroBlocks() {
        let h = Harness()
        let cdb = cdb16(0x89, lba: 1, blocks: 0)
        #expect(h.run(cdb, expectedDataTransferLength: 0).status == .good)
        // 256 blocks do not fit the one-byte field: a Data-Out buffer with a zero count is refused.
        h.run(cdb, data: [UInt8](repeating: 0, count: 2 * 256 * 512), expectedDataTransferLength: 2 * 256 * 512)
            .expectSense(.illegalRequest, .invalidFieldInCDB, fieldPointer: (13, nil))
    }

    @Test func verify() {
        let h = Harness()
        h.store.fill(0x5a, offset: 0, count: 1024)
        #expect(h.run(cdb10(0x2f, lba: 0, blocks: 2)).status == .good)
        #expect(h.run(cdb10(0x2f, lba: 0, blocks: 2, flags: 0x02), data: [UInt8](repeating: 0x5a, count: 1024)).status == .good)
        var data = [UInt8](repeating: 0x5a, count: 1024)
        data[700] = 0
        let result = h.run(cdb10(0x2f, lba: 0, blocks: 2, flags: 0x02), data: data)
        result.expectSense(.miscompare, .miscompareDuringVerifyOperation)
        #expect(result.sense?.information == 700)
        #expect(h.run(cdb10(0x2f, lba: 0, blocks: 2, flags: 0x06), data: [UInt8](repeating: 0x5a, count: 512)).status == .good)
        h.run(cdb10(0x2f, lba: 0, blocks: 2, flags: 0x04)).expectSense(
            .illegalRequest, .invalidFieldInCDB, fieldPointer: (1, 2))
        #expect(h.device.dataOutLength(for: ByteBuffer(bytes: cdb10(0x2f, lba: 0, blocks: 2, flags: 0x06))) == 512)
    }

    /// VERIFY reads the medium in pieces of ``EmulatedBlockDevice/verifyChunkLength``, so that a VERIFY of
    /// 65535 blocks with an Expected Data Transfer Length of 0 (BYTCHK 0, nothing counted against the data
    /// buffer budget) holds one piece at a time, not 32 MiB; a miscompare still names its byte.
    @Test func verifyReadsTheMediumInPieces() {
        let h = Harness()
        h.store.fill(0x5a, offset: 0, count: Harness.blocks * 512)
        let blocks = UInt16(Harness.blocks)
        #expect(h.run(cdb10(0x2f, lba: 0, blocks: blocks), expectedDataTransferLength: 0).status == .good)
        #expect(h.store.bytesRead == Harness.blocks * 512)
        #expect(h.store.largestRead <= EmulatedBlockDevice.verifyChunkLength)
        var data = [UInt8](repeating: 0x5a, count: Harness.blocks * 512)
        data[700_000] = 0
        let byteCheck = h.run(cdb10(0x2f, lba: 0, blocks: blocks, flags: 0x02), data: data)
        byteCheck.expectSense(.miscompare, .miscompareDuringVerifyOperation)
        #expect(byteCheck.sense?.information == 700_000)
        h.store.fill(0x00, offset: 1500 * 512 + 3, count: 1)
        let sameBlock = h.run(
            cdb10(0x2f, lba: 0, blocks: blocks, flags: 0x06), data: [UInt8](repeating: 0x5a, count: 512))
        sameBlock.expectSense(.miscompare, .miscompareDuringVerifyOperation)
        #expect(sameBlock.sense?.information == 1500 * 512 + 3)
    }

    @Test func modeSenseAndSelectRoundTrip() throws {
        let h = Harness()
        #expect(h.run([0x00, 0, 0, 0, 0, 0], from: h.otherNexus).status == .good)
        let all = h.run([0x1a, 0, 0x3f, 0, 0xff, 0]).bytes
        try #require(all.count >= 4)
        #expect(Int(all[0]) == all.count - 1)
        #expect(all[3] == 8)  // one short block descriptor
        #expect(all.count == 4 + 8 + 20 + 12 + 12)
        // Caching page alone, no block descriptor.
        let caching = h.run([0x1a, 0x08, 0x08, 0, 0xff, 0]).bytes
        try #require(caching.count >= 8)
        #expect(caching[4] == 0x08 && caching[6] & 0x04 != 0)
        // Clear WCE, set D_SENSE.
        var list: [UInt8] = [0, 0, 0, 0] + Array(caching[4...])
        list[6] &= ~0x04
        let control = h.run([0x1a, 0x08, 0x0a, 0, 0xff, 0]).bytes
        try #require(control.count >= 7)
        var controlPage = Array(control[4...])
        controlPage[2] |= 0x04
        list += controlPage
        #expect(h.run([0x15, 0x10, 0, 0, UInt8(list.count), 0], data: list).status == .good)
        let cleared = h.run([0x1a, 0x08, 0x08, 0, 0xff, 0]).bytes
        try #require(cleared.count >= 7)
        #expect(cleared[6] & 0x04 == 0)
        // The other nexus sees MODE PARAMETERS CHANGED.
        #expect(h.run([0x00, 0, 0, 0, 0, 0], from: h.otherNexus).sense?.code == .modeParametersChanged)
        // D_SENSE: descriptor format sense from now on.
        #expect(h.run([0xc0]).descriptorFormatSense)
        // A bit that is not changeable.
        var bad: [UInt8] = [0, 0, 0, 0] + Array(caching[4...])
        bad[7] = 0x01
        let result = h.run([0x15, 0x10, 0, 0, UInt8(bad.count), 0], data: bad)
        result.expectSense(.illegalRequest, .invalidFieldInParameterList)
        // Saved values are not supported.
        h.run([0x1a, 0, 0xff, 0, 0xff, 0]).expectSense(.illegalRequest, .savingParametersNotSupported)
        h.run([0x15, 0x11, 0, 0, 0, 0]).expectSense(.illegalRequest, .invalidFieldInCDB, fieldPointer: (1, 0))
        // A logical unit reset restores the defaults.
        h.device.apply(.logicalUnitReset)
        _ = h.run([0x03, 0, 0, 0, 0xff, 0])
        let restored = h.run([0x1a, 0x08, 0x08, 0, 0xff, 0]).bytes
        try #require(restored.count >= 7)
        #expect(restored[6] & 0x04 != 0)
    }

    @Test func unitAttentionIsReportedOnceThenCleared() {
        let h = Harness()
        #expect(h.run([0x00, 0, 0, 0, 0, 0]).status == .good)
        h.device.apply(.logicalUnitReset)
        #expect(h.run([0x12, 0, 0, 0, 36, 0]).status == .good)
        h.run([0x00, 0, 0, 0, 0, 0]).expectSense(.unitAttention, .busDeviceResetFunctionOccurred)
        #expect(h.run([0x00, 0, 0, 0, 0, 0]).status == .good)
    }

    @Test func requestSenseReportsUnitAttention() throws {
        let h = Harness()
        _ = h.run([0x00, 0, 0, 0, 0, 0])
        h.device.apply(.itNexusLoss(h.nexus))
        let sense = h.run([0x03, 0, 0, 0, 0xff, 0]).bytes
        try #require(sense.count >= 14)
        #expect(sense[0] == 0x70 && sense[2] == 0x06 && sense[12] == 0x29 && sense[13] == 0x07)
        let none = h.run([0x03, 0x01, 0, 0, 0xff, 0]).bytes
        try #require(none.count >= 2)
        #expect(none[0] == 0x72 && none[1] == 0x00)
    }

    @Test func unmapAndGetLBAStatus() throws {
        let h = Harness()
        h.store.fill(0x77, offset: 0, count: 2048 * 512)
        var list: [UInt8] = [0, 22, 0, 16, 0, 0, 0, 0]
        list += [0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 8, 0, 0, 0, 0]
        #expect(h.run([0x42, 0, 0, 0, 0, 0, 0, 0, UInt8(list.count), 0], data: list).status == .good)
        #expect(h.store.bytes[8 * 512] == 0)
        let status = h.run(cdb16(0x9e, lba: 0, blocks: 1000, flags: 0x12)).bytes
        try #require(status.count == 8 + 3 * 16)
        #expect(Array(status[8..<24]) == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0])
        #expect(Array(status[24..<40]) == [0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 8, 1, 0, 0, 0])
        h.run(cdb16(0x9e, lba: 2048, blocks: 1000, flags: 0x12)).expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
        // Parameter list shorter than the header.
        h.run([0x42, 0, 0, 0, 0, 0, 0, 0, 4, 0], data: [0, 0, 0, 0]).expectSense(.illegalRequest, .parameterListLengthError)
        // Beyond the end of the medium.
        var far: [UInt8] = [0, 22, 0, 16, 0, 0, 0, 0]
        far += [0, 0, 0, 0, 0, 0, 0x07, 0xff, 0, 0, 0, 2, 0, 0, 0, 0]
        h.run([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], data: far).expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
        #expect(Harness(supportsUnmap: false).run([0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0]).sense?.code == .invalidCommandOperationCode)
    }

    @Test func writeSame() throws {
        let h = Harness()
        h.store.fill(0x77, offset: 0, count: 64 * 512)
        let pattern = [UInt8](repeating: 0xab, count: 512)
        #expect(h.run(cdb10(0x41, lba: 0, blocks: 4), data: pattern).status == .good)
        #expect(h.store.bytes[3 * 512 + 511] == 0xab && h.store.bytes[4 * 512] == 0x77)
        // UNMAP with zeroes deallocates.
        #expect(h.run(cdb16(0x93, lba: 16, blocks: 16, flags: 0x08), data: [UInt8](repeating: 0, count: 512)).status == .good)
        #expect(try h.store.mappingStatus(at: 16 * 512).mapped == false)
        // NDOB: no Data-Out buffer.
        #expect(h.device.dataOutLength(for: ByteBuffer(bytes: cdb16(0x93, lba: 0, blocks: 1, flags: 0x09))) == 0)
        #expect(h.run(cdb16(0x93, lba: 0, blocks: 1, flags: 0x09)).status == .good)
        #expect(h.store.bytes[0] == 0)
        // Zero blocks: to the end of the medium.
        #expect(h.run(cdb10(0x41, lba: 2040, blocks: 0), data: pattern).status == .good)
        #expect(h.store.bytes[2039 * 512] == 0 && h.store.bytes[2040 * 512] == 0xab && h.store.bytes.last == 0xab)
        h.run(cdb10(0x41, lba: 2048, blocks: 0), data: pattern).expectSense(
            .illegalRequest, .logicalBlockAddressOutOfRange)
        // Beyond MAXIMUM WRITE SAME LENGTH, whether counted in the CDB or to the end of the medium.
        let small = Harness(maximumTransferLength: 8)
        small.run(cdb10(0x41, lba: 0, blocks: 9), data: pattern).expectSense(
            .illegalRequest, .invalidFieldInCDB, fieldPointer: (7, nil))
        small.run(cdb10(0x41, lba: 2039, blocks: 0), data: pattern).expectSense(
            .illegalRequest, .invalidFieldInCDB, fieldPointer: (7, nil))
        #expect(small.run(cdb10(0x41, lba: 2040, blocks: 0), data: pattern).status == .good)
        // The Data-Out buffer is one block, no more and no less.
        h.run(cdb10(0x41, lba: 0, blocks: 1), data: pattern + pattern).expectSense(
            .illegalRequest, .invalidFieldInCommandInformationUnit)
        h.run(cdb10(0x41, lba: 0, blocks: 1), data: Array(pattern[..<256])).expectSense(
            .illegalRequest, .invalidFieldInCommandInformationUnit)
        // ANCHOR is not supported.
        h.run(cdb10(0x41, lba: 0, blocks: 1, flags: 0x10), data: pattern).expectSense(
            .illegalRequest, .invalidFieldInCDB, fieldPointer: (1, 4))
    }

    /// SBC-4 §4.7.3.4.4: with LBPRZ set, WRITE SAME with UNMAP and a Data-Out block that is not
    /// all zeroes writes that block and unmaps nothing (libiscsi's WriteSame10.UnmapUntilEnd wants zeroes).
    @Test func writeSameUnmapWithNonZeroBlockWrites() throws {
        let h = Harness()
        let capacity = h.run(cdb16(0x9e, lba: 0, blocks: 32, flags: 0x10)).bytes
        try #require(capacity.count >= 15)
        #expect(capacity[14] & 0x40 != 0)  // LBPRZ
        h.store.fill(0x77, offset: 0, count: 2048 * 512)
        let ones = [UInt8](repeating: 0xff, count: 512)
        #expect(h.run(cdb10(0x41, lba: 2040, blocks: 0, flags: 0x08), data: ones).status == .good)
        #expect(h.store.bytes[2039 * 512] == 0x77 && h.store.bytes[(2040 * 512)...].allSatisfy { $0 == 0xff })
        #expect(try h.store.mappingStatus(at: 2040 * 512).mapped)
    }

    /// SBC-4 §5.6.2.3: the first LBA status descriptor starts at the starting LBA (report type 0h),
    /// also in the middle of a physical block (libiscsi's GetLBAStatus.UnmapSingle wants the next one).
    @Test func getLBAStatusStartsAtTheStartingLBA() throws {
        let h = Harness(physicalBlockSize: 4096)
        h.store.fill(0x41, offset: 0, count: 264 * 512)
        var list: [UInt8] = [0, 22, 0, 16, 0, 0, 0, 0]
        list += [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0]
        #expect(h.run([0x42, 0, 0, 0, 0, 0, 0, 0, UInt8(list.count), 0], data: list).status == .good)
        let inside = h.run(cdb16(0x9e, lba: 1, blocks: 24, flags: 0x12)).bytes
        try #require(inside.count >= 24)
        #expect(Array(inside[8..<24]) == [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 7, 1, 0, 0, 0])
        let after = h.run(cdb16(0x9e, lba: 9, blocks: 24, flags: 0x12)).bytes
        try #require(after.count >= 24)
        #expect(Array(after[8..<16]) == [0, 0, 0, 0, 0, 0, 0, 9] && after[20] == 0)
    }

    @Test func reportSupportedOperationCodes() throws {
        let h = Harness()
        let all = h.run([0xa3, 0x0c, 0x00, 0, 0, 0, 0, 0, 0x40, 0, 0, 0]).bytes
        try #require(all.count >= 4)
        let length = Int(all[0]) << 24 | Int(all[1]) << 16 | Int(all[2]) << 8 | Int(all[3])
        try #require(length == all.count - 4 && length % 8 == 0)
        var descriptors: [(UInt8, UInt16, Bool)] = []
        for index in stride(from: 4, to: all.count, by: 8) {
            descriptors.append((all[index], UInt16(all[index + 2]) << 8 | UInt16(all[index + 3]), all[index + 5] & 1 != 0))
        }
        #expect(descriptors.contains { $0.0 == 0x28 && !$0.2 })
        #expect(descriptors.contains { $0.0 == 0x9e && $0.1 == 0x12 && $0.2 })
        // Every command: one-command format agrees, the CDB usage data starts with the opcode.
        for (opcode, action, hasActions) in descriptors {
            let one = h.run([0xa3, 0x0c, hasActions ? 0x02 : 0x01, opcode, UInt8(action >> 8), UInt8(action & 0xff), 0, 0, 1, 0, 0, 0])
            #expect(one.status == .good)
            let usage = one.bytes
            try #require(usage.count >= 5, "REPORT SUPPORTED OPERATION CODES for \(opcode)")
            #expect(usage[1] & 0x07 == 0x03)
            #expect(usage[4] == opcode)
            let wrong = h.run([0xa3, 0x0c, hasActions ? 0x01 : 0x02, opcode, 0, UInt8(action & 0xff), 0, 0, 1, 0, 0, 0])
            wrong.expectSense(.illegalRequest, .invalidFieldInCDB)
        }
        // RCTD adds the command timeouts descriptor.
        let timed = h.run([0xa3, 0x0c, 0x81, 0x28, 0, 0, 0, 0, 1, 0, 0, 0]).bytes
        try #require(timed.count == 4 + 10 + 12)
        #expect(timed[1] == 0x83)
        // Allocation length truncates.
        #expect(h.run([0xa3, 0x0c, 0x00, 0, 0, 0, 0, 0, 0, 10, 0, 0]).bytes.count == 10)
    }

    @Test func reportSupportedTaskManagementFunctions() {
        let h = Harness()
        #expect(h.run([0xa3, 0x0d, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0]).bytes == [0xde, 0x07, 0, 0])
        #expect(h.run([0xa3, 0x0d, 0x80, 0, 0, 0, 0, 0, 0, 16, 0, 0]).bytes.count == 16)
    }

    @Test func sanitize() throws {
        let h = Harness()
        h.store.fill(0x77, offset: 0, count: 2048 * 512)
        let parameters: [UInt8] = [0x01, 0, 0, 2, 0xde, 0xad]
        #expect(h.run([0x48, 0x01, 0, 0, 0, 0, 0, 0, 6, 0], data: parameters).status == .good)
        #expect(Array(h.store.bytes[510..<514]) == [0xde, 0xad, 0xde, 0xad])
        #expect(h.run([0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]).status == .good)
        #expect(try h.store.mappingStatus(at: 0) == (false, 2048 * 512))
        h.run([0x48, 0x02, 0, 0, 0, 0, 0, 0, 8, 0], data: [UInt8](repeating: 0, count: 8))
            .expectSense(.illegalRequest, .invalidFieldInCDB, fieldPointer: (7, nil))
        h.run([0x48, 0x03, 0, 0, 0, 0, 0, 0, 0, 0]).expectSense(.illegalRequest, .invalidFieldInCDB, fieldPointer: (1, 4))
        #expect(h.run([0x48, 0x1f, 0, 0, 0, 0, 0, 0, 0, 0]).status == .good)
        h.run([0x48, 0x01, 0, 0, 0, 0, 0, 0, 6, 0], data: [0x00, 0, 0, 2, 1, 1])
            .expectSense(.illegalRequest, .invalidFieldInParameterList)
    }

    @Test func commandsDuringSanitizeReportSanitizeInProgress() throws {
        let h = Harness()
        let seen = Locked<[SCSIResult]>([])
        h.store.duringUnmap.withLock {
            $0 = {
                let results = [
                    h.run([0x00, 0, 0, 0, 0, 0]), h.run(cdb16(0x88, lba: 0, blocks: 1)),
                    h.run([0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]), h.run([0x03, 0, 0, 0, 18, 0]),
                    h.run([0x12, 0, 0, 0, 36, 0]),
                ]
                seen.withLock { $0 += results }
            }
        }
        #expect(h.run([0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]).status == .good)
        let results = seen.withLock { $0 }
        try #require(results.count == 5)
        for result in results.prefix(3) {
            result.expectSense(.notReady, .logicalUnitNotReadySanitizeInProgress)
        }
        let requestSense = results[3].bytes
        try #require(requestSense.count >= 14)
        #expect(Array(requestSense[12...13]) == [0x04, 0x1b])  // REQUEST SENSE
        #expect(results[4].status == .good)  // INQUIRY
        #expect(h.run([0x00, 0, 0, 0, 0, 0]).status == .good)
    }

    @Test func softwareWriteProtect() throws {
        let h = Harness()
        let changeable = h.run([0x1a, 0x08, 0x4a, 0, 0xff, 0]).bytes
        try #require(changeable.count > 4 + 4)
        #expect(changeable[4 + 4] & 0x08 != 0)  // SWP is changeable
        let control = h.run([0x1a, 0x08, 0x0a, 0, 0xff, 0]).bytes
        try #require(control.count > 4 + 4)
        var parameters: [UInt8] = [0, 0, 0, 0] + control[4...]
        parameters[4 + 4] |= 0x08
        let select: [UInt8] = [0x15, 0x10, 0, 0, UInt8(parameters.count), 0]
        #expect(h.run(select, data: parameters, from: h.otherNexus).status == .good)
        h.run([0x00, 0, 0, 0, 0, 0]).expectSense(.unitAttention, .modeParametersChanged)
        // WP in the mode parameter header; writes, UNMAP and SANITIZE fail.
        let protected = h.run([0x1a, 0x08, 0x3f, 0, 0xff, 0]).bytes
        try #require(protected.count >= 4)
        #expect(protected[2] & 0x80 != 0)
        let block = [UInt8](repeating: 1, count: 512)
        h.run(cdb10(0x2a, lba: 0, blocks: 1), data: block).expectSense(.dataProtect, .writeProtected)
        h.run(cdb10(0x41, lba: 0, blocks: 1), data: block).expectSense(.dataProtect, .writeProtected)
        h.run([0x48, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]).expectSense(.dataProtect, .writeProtected)
        #expect(h.run(cdb10(0x28, lba: 0, blocks: 1)).status == .good)
        // Cleared again, writes work.
        parameters[4 + 4] &= ~0x08
        #expect(h.run(select, data: parameters, from: h.otherNexus).status == .good)
        _ = h.run([0x00, 0, 0, 0, 0, 0])
        #expect(h.run(cdb10(0x2a, lba: 0, blocks: 1), data: block).status == .good)
        let writable = h.run([0x1a, 0x08, 0x3f, 0, 0xff, 0]).bytes
        try #require(writable.count >= 4)
        #expect(writable[2] & 0x80 == 0)
    }

    @Test func preFetchAndSynchronizeCache() {
        let h = Harness()
        #expect(h.run(cdb10(0x34, lba: 0, blocks: 8)).status == .conditionMet)
        h.run(cdb16(0x90, lba: 2048, blocks: 1)).expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
        #expect(h.run(cdb10(0x35, lba: 0, blocks: 0)).status == .good)
        #expect(h.store.synchronizations == 1)
    }

    @Test func dataOutLengths() {
        let h = Harness()
        #expect(h.device.dataOutLength(for: ByteBuffer(bytes: cdb10(0x2a, lba: 0, blocks: 3))) == 1536)
        #expect(h.device.dataOutLength(for: ByteBuffer(bytes: [0x0a, 0, 0, 0, 0, 0])) == 256 * 512)
        #expect(h.device.dataOutLength(for: ByteBuffer(bytes: cdb10(0x28, lba: 0, blocks: 3))) == 0)
        #expect(h.device.dataOutLength(for: ByteBuffer(bytes: [0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0])) == 24)
        #expect(h.device.dataOutLength(for: ByteBuffer(bytes: [0xc0])) == nil)
    }
}
