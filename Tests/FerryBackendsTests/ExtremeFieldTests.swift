import Foundation
import NIOCore
import SCSI
import Testing

@testable import FerryBackends

/// CDB fields and parameter list values at their extremes (LBA 2^64-1, TRANSFER LENGTH 0xFFFFFFFF, lengths that
/// overflow what follows them): every one gets the answer SBC-4 or SPC-4 prescribes, and none traps.
@Suite struct ExtremeFieldTests {
    static let lastLBA = UInt64.max
    static let longest = UInt32.max

    /// A 16-byte CDB with LBA in bytes 2-9 and a four-byte length in bytes 10-13.
    static func cdb16(_ operationCode: UInt8, lba: UInt64, length: UInt32, flags: UInt8 = 0) -> [UInt8] {
        var cdb = [UInt8](repeating: 0, count: 16)
        cdb[0] = operationCode
        cdb[1] = flags
        cdb.setBigEndian(lba, at: 2)
        cdb.setBigEndian(length, at: 10)
        return cdb
    }

    @Test(arguments: [0x88, 0x8a, 0x8e, 0x8f, 0x8b, 0x90, 0x91] as [UInt8])
    func sixteenByteMediumCommandsAtTheLastLBA(operationCode: UInt8) {
        let h = Harness()
        for (lba, length) in [(Self.lastLBA, Self.longest), (Self.lastLBA, UInt32(1)), (UInt64(0), Self.longest),
            (UInt64(Harness.blocks), UInt32(1)), (UInt64(1), UInt32(Harness.blocks))]
        {
            let result = h.run(Self.cdb16(operationCode, lba: lba, length: length), data: [UInt8](repeating: 0, count: 512))
            result.expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
        }
    }

    @Test func twelveByteCommandsWithTheLongestTransferLength() {
        let h = Harness()
        for operationCode: UInt8 in [0xa8, 0xaa, 0xae, 0xaf] {
            var cdb = [UInt8](repeating: 0, count: 12)
            cdb[0] = operationCode
            cdb.setBigEndian(UInt32.max, at: 2)
            cdb.setBigEndian(Self.longest, at: 6)
            h.run(cdb).expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
            cdb.setBigEndian(UInt32(0), at: 2)
            h.run(cdb).expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
        }
        // The Data-Out length a WRITE(16) of 0xFFFFFFFF blocks asks for is computed in 64 bits, not trapped.
        let write16 = Self.cdb16(0x8a, lba: 0, length: Self.longest)
        #expect(h.device.dataOutLength(for: ByteBuffer(bytes: write16)) == 0xffff_ffff * 512)
    }

    @Test func writeSameAndCompareAndWriteAtTheLastLBA() {
        let h = Harness()
        // WRITE SAME(16), NUMBER OF LOGICAL BLOCKS 0: to the end of the medium, from past it.
        h.run(Self.cdb16(0x93, lba: Self.lastLBA, length: 0), data: [UInt8](repeating: 0, count: 512))
            .expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
        h.run(Self.cdb16(0x93, lba: Self.lastLBA, length: Self.longest, flags: 0x08), data: [UInt8](repeating: 0, count: 512))
            .expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
        // COMPARE AND WRITE: NUMBER OF LOGICAL BLOCKS is byte 13.
        var compareAndWrite = Self.cdb16(0x89, lba: Self.lastLBA, length: 0)
        compareAndWrite[13] = 0xff
        h.run(compareAndWrite, data: [UInt8](repeating: 0, count: 1024))
            .expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
        // GET LBA STATUS from the last LBA, with the longest allocation length.
        var getLBAStatus = Self.cdb16(0x9e, lba: Self.lastLBA, length: Self.longest)
        getLBAStatus[1] = 0x12
        h.run(getLBAStatus).expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
    }

    @Test func unmapDescriptorsAtTheExtremes() {
        let h = Harness()
        var list = [UInt8](repeating: 0, count: 8 + 16)
        list.setBigEndian(UInt16(22), at: 0)
        list.setBigEndian(UInt16(16), at: 2)
        list.setBigEndian(Self.lastLBA, at: 8)
        list.setBigEndian(Self.longest, at: 16)
        var cdb: [UInt8] = [0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        cdb.setBigEndian(UInt16(list.count), at: 7)
        h.run(cdb, data: list).expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
        // A descriptor data length that claims more than the list holds: the whole descriptors only.
        list.setBigEndian(UInt16.max, at: 2)
        list.setBigEndian(UInt64(0), at: 8)
        list.setBigEndian(UInt32(1), at: 16)
        #expect(h.run(cdb, data: list).status == .good)
        // The longest parameter list length with eight bytes sent.
        cdb.setBigEndian(UInt16.max, at: 7)
        #expect(h.run(cdb, data: Array(list.prefix(8))).status == .good)
    }

    @Test func parameterListLengthsBeyondTheData() {
        let h = Harness()
        // PERSISTENT RESERVE OUT with PARAMETER LIST LENGTH 0xFFFFFFFF.
        var persistentReserveOut: [UInt8] = [0x5f, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]
        persistentReserveOut.setBigEndian(Self.longest, at: 5)
        h.run(persistentReserveOut, data: [UInt8](repeating: 0, count: 24))
            .expectSense(.illegalRequest, .parameterListLengthError)
        // MODE SELECT(10) whose BLOCK DESCRIPTOR LENGTH is 0xFFFF.
        var header = [UInt8](repeating: 0, count: 8)
        header.setBigEndian(UInt16.max, at: 6)
        var modeSelect: [UInt8] = [0x55, 0x10, 0, 0, 0, 0, 0, 0, 0, 0]
        modeSelect.setBigEndian(UInt16.max, at: 7)
        h.run(modeSelect, data: header).expectSense(.illegalRequest, .parameterListLengthError)
        // SANITIZE OVERWRITE with the longest parameter list length.
        var sanitize: [UInt8] = [0x48, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]
        sanitize.setBigEndian(UInt16.max, at: 7)
        h.run(sanitize, data: [0x01, 0, 0, 4, 1, 2, 3, 4]).expectSense(.illegalRequest, .invalidFieldInCDB)
        // EXTENDED COPY with PARAMETER LIST LENGTH 0xFFFFFFFF and 16 bytes sent.
        var extendedCopy = [UInt8](repeating: 0, count: 16)
        extendedCopy[0] = 0x83
        extendedCopy.setBigEndian(Self.longest, at: 10)
        h.run(extendedCopy, data: [UInt8](repeating: 0, count: 16)).expectSense(.illegalRequest, .parameterListLengthError)
    }

    @Test func extendedCopyDescriptorsAtTheExtremes() {
        let h = Harness()
        let designator = h.device.copyEndpoint.designator
        func run(_ list: [UInt8]) -> SCSIResult {
            var cdb = [UInt8](repeating: 0, count: 16)
            cdb[0] = 0x83
            cdb.setBigEndian(UInt32(list.count), at: 10)
            return h.run(cdb, data: list)
        }
        var list = CopyParameterList()
        list.targets = [CopyParameterList.identificationTarget(designator)]
        // Segment LBAs at 2^64-1 and the most blocks: out of the copy target's reach.
        list.segments = [
            CopyParameterList.blockToBlock(blocks: .max, sourceLBA: Self.lastLBA, destinationLBA: 0),
            CopyParameterList.blockToBlock(blocks: 1, sourceLBA: 0, destinationLBA: Self.lastLBA),
        ]
        let outOfReach = run(list.bytes)
        #expect(outOfReach.sense?.senseKey == .copyAborted)
        // Header lengths that claim more than the list holds: CSCD and segment descriptor lists, inline data.
        for (offset, width) in [(2, 2), (8, 4), (12, 4)] {
            var bytes = list.bytes
            for byte in 0..<width { bytes[offset + byte] = 0xff }
            #expect(run(bytes).sense?.code == .parameterListLengthError, "header field at \(offset)")
        }
        // A segment descriptor whose DESCRIPTOR LENGTH is 0xFFFF runs past the list.
        var bytes = list.bytes
        bytes[16 + 32 + 2] = 0xff
        bytes[16 + 32 + 3] = 0xff
        #expect(run(bytes).sense?.code == .invalidFieldInParameterList)
        // CSCD descriptor indexes of 0xFFFF.
        list.segments = [
            CopyParameterList.blockToBlock(source: .max, destination: .max, blocks: 1, sourceLBA: 0, destinationLBA: 0)
        ]
        #expect(run(list.bytes).sense?.code == .copyTargetDeviceNotReachable)
    }

    /// SANITIZE OVERWRITE's progress indication on a logical unit of 2^48 blocks or more (a 128 PiB sparse file on
    /// XFS): `blocksDone * 65536` no longer fits in 64 bits, and the progress must still be a fraction of 65536.
    @Test func sanitizeProgressOnTheLargestLogicalUnits() {
        let largest = UInt64.max / 512
        #expect(EmulatedBlockDevice.sanitizeProgress(blocksDone: largest / 2, of: largest) == 32767)
        #expect(EmulatedBlockDevice.sanitizeProgress(blocksDone: 31 * largest - 1, of: 31 * largest) == 65535)
        #expect(EmulatedBlockDevice.sanitizeProgress(blocksDone: 1 << 48, of: 1 << 50) == 16384)
        #expect(EmulatedBlockDevice.sanitizeProgress(blocksDone: 0, of: 0) == 0)
        #expect(EmulatedBlockDevice.sanitizeProgress(blocksDone: 5, of: 0) == 65535)
        #expect(EmulatedBlockDevice.sanitizeProgress(blocksDone: 1, of: 2) == 32768)
    }

    @Test func allocationLengthsAtTheirLargest() {
        let h = Harness()
        var reportLUNs = [UInt8](repeating: 0, count: 12)
        reportLUNs[0] = 0xa0
        reportLUNs.setBigEndian(Self.longest, at: 6)
        #expect(h.run(reportLUNs).status == .good)
        #expect(h.run([0x12, 0x01, 0x83, 0xff, 0xff, 0]).status == .good)
        var receiveCopyResults = [UInt8](repeating: 0, count: 16)
        receiveCopyResults[0] = 0x84
        receiveCopyResults[1] = 0x03
        receiveCopyResults.setBigEndian(Self.longest, at: 10)
        #expect(h.run(receiveCopyResults).status == .good)
        var readCapacity16 = Self.cdb16(0x9e, lba: 0, length: Self.longest)
        readCapacity16[1] = 0x10
        #expect(h.run(readCapacity16).status == .good)
        #expect(h.run([0x5e, 0x00, 0, 0, 0, 0, 0, 0xff, 0xff, 0]).status == .good)
    }
}

extension ExtremeFieldTests {
    static let randomRounds = Int(ProcessInfo.processInfo.environment["FERRY_CDB_ROUNDS"] ?? "") ?? 10_000

    /// Every operation code, with each service action and the flags of byte 1, every other CDB byte 0xFF or 0x00,
    /// and Data-Out buffers of several sizes: the device server answers each, and a CHECK CONDITION carries sense.
    @Test func everyOperationCodeWithExtremeFields() {
        let h = Harness()
        let dataOuts: [[UInt8]] = [
            [], [UInt8](repeating: 0xff, count: 8), [UInt8](repeating: 0xff, count: 24),
            [UInt8](repeating: 0xff, count: 512), [UInt8](repeating: 0x00, count: 4096),
        ]
        for operationCode in 0...255 {
            for byte1 in Array(0..<32) + [0xe0, 0xff] {
                for rest: UInt8 in [0xff, 0x00, 0x7f, 0x80] {
                    var cdb = [UInt8](repeating: rest, count: 16)
                    cdb[0] = UInt8(operationCode)
                    cdb[1] = UInt8(byte1)
                    for data in dataOuts {
                        let result = h.run(cdb, data: data)
                        if result.status == .checkCondition {
                            #expect(result.sense != nil, "\(cdb)")
                        }
                    }
                }
            }
        }
    }

    /// Seeded random CDBs whose fields take boundary values, with Data-Out buffers of random sizes and contents
    /// (`FERRY_CDB_ROUNDS` rounds, 10 000 by default; 1 000 000 ran clean in 212 s).
    @Test func randomCDBsWithBoundaryFields() {
        let h = Harness()
        var generator = SplitMix64(seed: 0x5eed_cdb5)
        let boundaries: [UInt8] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff]
        for _ in 0..<Self.randomRounds {
            let length = [6, 10, 12, 16, 32][Int(generator.next() % 5)]
            var cdb = (0..<length).map { _ in
                generator.next() % 2 == 0 ? boundaries[Int(generator.next() % 6)] : UInt8(truncatingIfNeeded: generator.next())
            }
            cdb[0] = UInt8(truncatingIfNeeded: generator.next())
            let dataLength = [0, 8, 24, 28, 512, 1024, 4096, Int(generator.next() % 9000)][Int(generator.next() % 8)]
            var data = (0..<dataLength).map { _ in UInt8(truncatingIfNeeded: generator.next()) }
            if generator.next() % 2 == 0, data.count >= 8 {
                for index in 0..<min(data.count, 64) where generator.next() % 3 == 0 { data[index] = 0xff }
            }
            let edtl = [0, data.count, 512, Int(UInt32.max)][Int(generator.next() % 4)]
            let result = h.run(cdb, data: data, expectedDataTransferLength: edtl)
            if result.status == .checkCondition { #expect(result.sense != nil, "\(cdb)") }
        }
    }
}

/// SplitMix64: a small deterministic generator, so that a failing CDB can be reproduced.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
