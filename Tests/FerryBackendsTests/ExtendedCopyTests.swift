import FerrySync
import NIOCore
import SCSI
import Testing

@testable import FerryBackends

/// A block store in memory for the EXTENDED COPY tests.
final class MemoryStoreForCopyTests: BlockStore {
    let bytes: Locked<[UInt8]>
    let byteCount: UInt64
    var supportsUnmap: Bool { false }
    var unmappedReadsZero: Bool { false }
    var identity: String { "memory-copy-\(byteCount)" }

    init(byteCount: Int) {
        self.byteCount = UInt64(byteCount)
        bytes = Locked([UInt8](repeating: 0, count: byteCount))
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
        guard offset + UInt64(buffer.count) <= byteCount else { throw BlockStoreError(operation: "read", errno: 5) }
        bytes.withLock { bytes in
            bytes.withUnsafeBytes { source in
                let range = Int(offset)..<Int(offset) + buffer.count
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[range]))
            }
        }
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, forceUnitAccess: Bool) throws(BlockStoreError) {
        guard offset + UInt64(buffer.count) <= byteCount else { throw BlockStoreError(operation: "write", errno: 5) }
        bytes.withLock { bytes in bytes.replaceSubrange(Int(offset)..<Int(offset) + buffer.count, with: buffer) }
    }

    func synchronize() throws(BlockStoreError) {}
    func unmap(offset: UInt64, length: UInt64) throws(BlockStoreError) {}
    func mappingStatus(at offset: UInt64) throws(BlockStoreError) -> (mapped: Bool, length: UInt64) {
        (true, byteCount - offset)
    }
}

/// Builds EXTENDED COPY parameter lists as libiscsi's test tool does.
struct CopyParameterList {
    var listIdentifier: UInt8 = 1
    var listIDUsage: UInt8 = 0
    var targets: [[UInt8]] = []
    var segments: [[UInt8]] = []

    static func identificationTarget(
        _ designator: [UInt8], blockSize: Int = 512, type: UInt8 = 0xe4, luIDType: UInt8 = 0, nul: Bool = false
    ) -> [UInt8] {
        var descriptor = [UInt8](repeating: 0, count: 32)
        descriptor[0] = type
        descriptor[1] = luIDType << 6 | (nul ? 0x20 : 0)
        descriptor[4] = 0x01  // binary
        descriptor[5] = 0x03  // NAA, associated with the logical unit
        descriptor[7] = UInt8(designator.count)
        descriptor.replaceSubrange(8..<8 + designator.count, with: designator)
        // PAD clear, DISK BLOCK LENGTH in bytes 29-31.
        descriptor.setBigEndian(UInt32(blockSize), at: 28)
        return descriptor
    }

    static func blockToBlock(
        source: UInt16 = 0, destination: UInt16 = 0, blocks: UInt16, sourceLBA: UInt64, destinationLBA: UInt64,
        type: UInt8 = 0x02, length: Int = 28
    ) -> [UInt8] {
        var descriptor = [UInt8](repeating: 0, count: length)
        descriptor[0] = type
        descriptor.setBigEndian(UInt16(length - 4), at: 2)
        guard length >= 28 else { return descriptor }
        descriptor.setBigEndian(source, at: 4)
        descriptor.setBigEndian(destination, at: 6)
        descriptor.setBigEndian(blocks, at: 10)
        descriptor.setBigEndian(sourceLBA, at: 12)
        descriptor.setBigEndian(destinationLBA, at: 20)
        return descriptor
    }

    var bytes: [UInt8] {
        let targetBytes = targets.flatMap { $0 }
        let segmentBytes = segments.flatMap { $0 }
        var header = [UInt8](repeating: 0, count: 16)
        header[0] = listIdentifier
        header[1] = listIDUsage << 3
        header.setBigEndian(UInt16(targetBytes.count), at: 2)
        header.setBigEndian(UInt32(segmentBytes.count), at: 8)
        return header + targetBytes + segmentBytes
    }
}

struct CopyFixture {
    static let nexus = ITNexus(
        initiatorPortName: "iqn.2024-01.org.example:one,i,0x400001370000", targetPortName: "iqn.t,t,0x1",
        relativeTargetPortIdentifier: 1)
    let directory = CopyTargetDirectory()
    let manager: CopyManager
    let source: CopyEndpoint
    let other: CopyEndpoint
    static let blocks = 4096

    init() {
        manager = CopyManager(directory: directory)
        source = CopyEndpoint(
            store: MemoryStoreForCopyTests(byteCount: Self.blocks * 512), blockSize: 512,
            blockCount: UInt64(Self.blocks), designator: [0x60, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15])
        other = CopyEndpoint(
            store: MemoryStoreForCopyTests(byteCount: Self.blocks * 512), blockSize: 512,
            blockCount: UInt64(Self.blocks), designator: [0x50, 1, 2, 3, 4, 5, 6, 8])
        directory.register(source)
        directory.register(other)
    }

    func extendedCopy(_ parameters: [UInt8], parameterListLength: Int? = nil) -> SCSIResult {
        var cdb = [UInt8](repeating: 0, count: 16)
        cdb[0] = 0x83
        cdb.setBigEndian(UInt32(parameterListLength ?? parameters.count), at: 10)
        return manager.extendedCopy(
            SCSIRequest(
                cdb: ByteBuffer(bytes: cdb), lun: 0, nexus: Self.nexus, expectedDataTransferLength: parameters.count,
                dataOut: ByteBuffer(bytes: parameters)),
            source: source)
    }

    func receiveCopyResults(_ serviceAction: UInt8, listIdentifier: UInt8 = 0) -> SCSIResult {
        var cdb = [UInt8](repeating: 0, count: 16)
        cdb[0] = 0x84
        cdb[1] = serviceAction
        cdb[2] = listIdentifier
        cdb.setBigEndian(UInt32(1024), at: 10)
        return manager.receiveCopyResults(
            SCSIRequest(cdb: ByteBuffer(bytes: cdb), lun: 0, nexus: Self.nexus, expectedDataTransferLength: 1024))
    }

    func fill(_ endpoint: CopyEndpoint, lba: Int, blocks: Int, with byte: UInt8) {
        let data = [UInt8](repeating: byte, count: blocks * 512)
        data.withUnsafeBytes { try! endpoint.store.write($0, at: UInt64(lba * 512), forceUnitAccess: false) }
    }

    func contents(_ endpoint: CopyEndpoint, lba: Int, blocks: Int) -> [UInt8] {
        var data = [UInt8](repeating: 0, count: blocks * 512)
        data.withUnsafeMutableBytes { try! endpoint.store.read(into: $0, at: UInt64(lba * 512)) }
        return data
    }
}

@Suite struct ExtendedCopyTests {
    @Test func copiesWithinOneLogicalUnit() {
        let f = CopyFixture()
        f.fill(f.source, lba: 0, blocks: 2048, with: 0x41)
        var list = CopyParameterList()
        list.listIDUsage = 0b10
        list.targets = [CopyParameterList.identificationTarget(f.source.designator)]
        list.segments = [
            CopyParameterList.blockToBlock(
                blocks: 2048, sourceLBA: 0, destinationLBA: UInt64(CopyFixture.blocks - 2048))
        ]
        #expect(f.extendedCopy(list.bytes).status == .good)
        #expect(f.contents(f.source, lba: CopyFixture.blocks - 2048, blocks: 2048).allSatisfy { $0 == 0x41 })
    }

    @Test func copiesBetweenLogicalUnitsAndHoldsStatus() {
        let f = CopyFixture()
        f.fill(f.source, lba: 10, blocks: 4, with: 0x5a)
        #expect(f.receiveCopyResults(0x00, listIdentifier: 7).sense?.code == .invalidFieldInCDB)
        var list = CopyParameterList()
        list.listIdentifier = 7
        list.targets = [
            CopyParameterList.identificationTarget(f.source.designator),
            CopyParameterList.identificationTarget(f.other.designator),
        ]
        list.segments = [
            CopyParameterList.blockToBlock(source: 0, destination: 1, blocks: 4, sourceLBA: 10, destinationLBA: 100),
            CopyParameterList.blockToBlock(source: 0, destination: 1, blocks: 0, sourceLBA: 0, destinationLBA: 0),
        ]
        #expect(f.extendedCopy(list.bytes).status == .good)
        #expect(f.contents(f.other, lba: 100, blocks: 4).allSatisfy { $0 == 0x5a })
        #expect(f.contents(f.other, lba: 104, blocks: 1).allSatisfy { $0 == 0 })
        let status = Array(f.receiveCopyResults(0x00, listIdentifier: 7).dataIn.readableBytesView)
        #expect(status == [0, 0, 0, 8, 0x01, 0, 1, 0, 0, 0, 0x08, 0x00])
    }

    @Test func writeProtectedDestinationAbortsTheCopy() {
        let f = CopyFixture()
        let locked = CopyEndpoint(
            store: MemoryStoreForCopyTests(byteCount: CopyFixture.blocks * 512), blockSize: 512,
            blockCount: UInt64(CopyFixture.blocks), designator: [0x50, 9, 9, 9, 9, 9, 9, 9], isWriteProtected: { true })
        f.directory.register(locked)
        f.fill(f.source, lba: 0, blocks: 1, with: 0x5a)
        var list = CopyParameterList()
        list.targets = [
            CopyParameterList.identificationTarget(f.source.designator),
            CopyParameterList.identificationTarget(locked.designator),
        ]
        list.segments = [
            CopyParameterList.blockToBlock(source: 0, destination: 1, blocks: 1, sourceLBA: 0, destinationLBA: 0)
        ]
        let result = f.extendedCopy(list.bytes)
        #expect(result.sense?.senseKey == .copyAborted)
        #expect(result.sense?.code == .writeProtected)
        #expect(f.contents(locked, lba: 0, blocks: 1).allSatisfy { $0 == 0 })
        // The protected logical unit may still be the source.
        list.segments = [
            CopyParameterList.blockToBlock(source: 1, destination: 0, blocks: 1, sourceLBA: 0, destinationLBA: 0)
        ]
        #expect(f.extendedCopy(list.bytes).status == .good)
    }

    @Test func overlappingCopyMovesDataIntact() {
        let f = CopyFixture()
        let pattern = (0..<(3000 * 512)).map { UInt8(truncatingIfNeeded: $0 / 512) }
        pattern.withUnsafeBytes { try! f.source.store.write($0, at: 0, forceUnitAccess: false) }
        var list = CopyParameterList()
        list.targets = [CopyParameterList.identificationTarget(f.source.designator)]
        list.segments = [CopyParameterList.blockToBlock(blocks: 3000, sourceLBA: 0, destinationLBA: 1000)]
        #expect(f.extendedCopy(list.bytes).status == .good)
        #expect(f.contents(f.source, lba: 1000, blocks: 3000) == pattern)
    }

    @Test func parameterListLength() {
        let f = CopyFixture()
        var list = CopyParameterList()
        list.targets = [CopyParameterList.identificationTarget(f.source.designator)]
        list.segments = [CopyParameterList.blockToBlock(blocks: 1, sourceLBA: 0, destinationLBA: 1)]
        let bytes = list.bytes
        #expect(f.extendedCopy(Array(bytes.prefix(16 + 31))).sense?.code == .parameterListLengthError)
        #expect(f.extendedCopy(Array(bytes.dropLast())).sense?.code == .parameterListLengthError)
        #expect(f.extendedCopy([]).status == .good)
    }

    @Test func descriptorLimits() {
        let f = CopyFixture()
        let target = CopyParameterList.identificationTarget(f.source.designator)
        let segment = CopyParameterList.blockToBlock(blocks: 1, sourceLBA: 0, destinationLBA: 1)
        var list = CopyParameterList()
        list.targets = Array(repeating: target, count: CopyManager.Limits.maximumTargetDescriptors + 1)
        list.segments = [segment]
        #expect(f.extendedCopy(list.bytes).sense?.code == .tooManyTargetDescriptors)
        list.targets = [target]
        list.segments = Array(repeating: segment, count: CopyManager.Limits.maximumSegmentDescriptors + 1)
        #expect(f.extendedCopy(list.bytes).sense?.code == .tooManySegmentDescriptors)
        list.targets = Array(repeating: target, count: CopyManager.Limits.maximumTargetDescriptors + 1)
        list.segments = Array(repeating: segment, count: 31)
        #expect(f.extendedCopy(list.bytes).sense?.code == .parameterListLengthError)
    }

    @Test func unsupportedDescriptorTypes() {
        let f = CopyFixture()
        var list = CopyParameterList()
        list.targets = [CopyParameterList.identificationTarget(f.source.designator, type: 0xe0)]
        list.segments = [CopyParameterList.blockToBlock(blocks: 1, sourceLBA: 0, destinationLBA: 1)]
        #expect(f.extendedCopy(list.bytes).sense?.code == .unsupportedTargetDescriptorTypeCode)
        list.targets = [CopyParameterList.identificationTarget(f.source.designator)]
        list.segments = [
            CopyParameterList.blockToBlock(blocks: 1, sourceLBA: 0, destinationLBA: 1, type: 0x03, length: 20)
        ]
        #expect(f.extendedCopy(list.bytes).sense?.code == .unsupportedSegmentDescriptorTypeCode)
    }

    @Test func targetDescriptorFields() {
        let f = CopyFixture()
        var list = CopyParameterList()
        list.segments = [CopyParameterList.blockToBlock(blocks: 1, sourceLBA: 0, destinationLBA: 1)]
        // LU ID TYPE is ignored: the designator names the logical unit.
        list.targets = [CopyParameterList.identificationTarget(f.source.designator, luIDType: 3)]
        #expect(f.extendedCopy(list.bytes).status == .good)
        list.targets = [CopyParameterList.identificationTarget(f.source.designator, nul: true)]
        #expect(f.extendedCopy(list.bytes).sense?.senseKey == .copyAborted)
        list.targets = [CopyParameterList.identificationTarget([0x50, 9, 9, 9, 9, 9, 9, 9])]
        let unknown = f.extendedCopy(list.bytes)
        #expect(unknown.sense?.senseKey == .copyAborted)
        #expect(unknown.sense?.code == .copyTargetDeviceNotReachable)
        f.directory.unregister(f.other)
        list.targets = [CopyParameterList.identificationTarget(f.other.designator)]
        #expect(f.extendedCopy(list.bytes).sense?.code == .copyTargetDeviceNotReachable)
    }

    @Test func segmentDescriptorFields() {
        let f = CopyFixture()
        f.fill(f.source, lba: 0, blocks: 4, with: 0x33)
        var list = CopyParameterList()
        list.targets = [CopyParameterList.identificationTarget(f.source.designator)]
        list.segments = [CopyParameterList.blockToBlock(destination: 1, blocks: 1, sourceLBA: 0, destinationLBA: 1)]
        #expect(f.extendedCopy(list.bytes).sense?.senseKey == .copyAborted)
        list.segments = [
            CopyParameterList.blockToBlock(blocks: 2048, sourceLBA: 0, destinationLBA: UInt64(CopyFixture.blocks - 1))
        ]
        #expect(f.extendedCopy(list.bytes).sense?.senseKey == .copyAborted)
        // A rejected list copies nothing, even segments before the bad one.
        list.segments = [
            CopyParameterList.blockToBlock(blocks: 1, sourceLBA: 0, destinationLBA: 8),
            CopyParameterList.blockToBlock(blocks: 2, sourceLBA: UInt64(CopyFixture.blocks - 1), destinationLBA: 0),
        ]
        #expect(f.extendedCopy(list.bytes).sense?.senseKey == .copyAborted)
        #expect(f.contents(f.source, lba: 8, blocks: 1).allSatisfy { $0 == 0 })
    }

    /// A segment descriptor list too short for a descriptor's own header (2 bytes here) is blamed on the SEGMENT
    /// DESCRIPTOR LIST LENGTH, byte 8: before, the field pointer named byte 18 of an 18-byte parameter list (found
    /// by the EmulatedDevice fuzz target).
    @Test func aSegmentListTooShortForADescriptorBlamesItsLength() {
        let f = CopyFixture()
        var list = [UInt8](repeating: 0, count: 18)
        list[11] = 2
        let sense = f.extendedCopy(list).sense
        #expect(sense?.code == .invalidFieldInParameterList)
        #expect(sense?.senseKeySpecific == .fieldPointer(inCDB: false, byte: 8, bit: nil))
    }

    @Test func operatingParameters() throws {
        let f = CopyFixture()
        let data = Array(f.receiveCopyResults(0x03).dataIn.readableBytesView)
        try #require(data.count == 46)
        #expect(Int(data[3]) == data.count - 4)
        #expect(Int(data[8]) << 8 | Int(data[9]) == CopyManager.Limits.maximumTargetDescriptors)
        #expect(Int(data[10]) << 8 | Int(data[11]) == CopyManager.Limits.maximumSegmentDescriptors)
        #expect(data[43] == 2 && data[44...] == [0x02, 0xe4])
        #expect(f.receiveCopyResults(0x05).sense?.code == .invalidFieldInCDB)
    }

    @Test func thirdPartyCopyPage() throws {
        let page = CopyManager.thirdPartyCopyVPDPage()
        try #require(page.count >= 4)
        #expect(page[1] == 0x8f)
        #expect(Int(page[2]) << 8 | Int(page[3]) == page.count - 4)
        var descriptors: [UInt16: [UInt8]] = [:]
        var offset = 4
        while offset < page.count {
            try #require(offset + 4 <= page.count, "a descriptor header at \(offset)")
            let type = UInt16(page[offset]) << 8 | UInt16(page[offset + 1])
            let length = Int(page[offset + 2]) << 8 | Int(page[offset + 3])
            #expect(length % 4 == 0)
            try #require(offset + 4 + length <= page.count, "a descriptor of \(length) bytes at \(offset)")
            descriptors[type] = Array(page[offset + 4..<offset + 4 + length])
            offset += 4 + length
        }
        #expect(offset == page.count)
        #expect(descriptors[0x0001] == [7, 0x83, 1, 0x00, 0x84, 2, 0x00, 0x03])
        try #require(descriptors[0x0008]?.count == 0x1c)
        let maximumTargets = descriptors[0x0008].map { Int($0[4]) << 8 | Int($0[5]) }
        #expect(maximumTargets == CopyManager.Limits.maximumTargetDescriptors)
        #expect(descriptors[0x0009] == [2, 0x02, 0xe4, 0])
        #expect(descriptors[0x000c] == [0, 0, 0, 0])
        #expect(descriptors[0x8001]?.count == 0x20)
    }
}

/// Two emulated logical units of one target, and a third of another target, for the tests of what EXTENDED COPY
/// may reach: copy targets of the I_T nexus's own target only, and only as far as their reservations let that
/// nexus read and write.
struct CopyReachFixture {
    static let blocks = 64
    let sender = ITNexus(
        initiatorPortName: "iqn.2024-01.org.example:sender,i,0x400001370000", targetPortName: "iqn.open,t,0x1",
        relativeTargetPortIdentifier: 1)
    let holder = ITNexus(
        initiatorPortName: "iqn.2024-01.org.example:holder,i,0x400001370001", targetPortName: "iqn.open,t,0x1",
        relativeTargetPortIdentifier: 1)
    /// The directory of the target the sender is logged in to, and that of another target.
    let ownTarget = CopyTargetDirectory()
    let otherTarget = CopyTargetDirectory()
    /// Receives the EXTENDED COPY; `peer` is the other logical unit of the same target, `foreign` one of the other.
    let receiver: EmulatedBlockDevice
    let peer: EmulatedBlockDevice
    let foreign: EmulatedBlockDevice
    let receiverStore = MemoryBlockStore(byteCount: Self.blocks * 512)
    let peerStore = MemoryBlockStore(byteCount: Self.blocks * 512)
    let foreignStore = MemoryBlockStore(byteCount: Self.blocks * 512)

    init() {
        func device(_ store: MemoryBlockStore, _ last: UInt8, _ directory: CopyTargetDirectory) -> EmulatedBlockDevice {
            let naa: [UInt8] = [0x60, 0x01, 0x40, 0x50, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, last]
            let device = EmulatedBlockDevice(
                store: store, configuration: .init(serial: "S\(last)", naaIdentifier: naa), copyTargets: directory)
            directory.register(device.copyEndpoint)
            return device
        }
        receiver = device(receiverStore, 1, ownTarget)
        peer = device(peerStore, 2, ownTarget)
        foreign = device(foreignStore, 3, otherTarget)
        for (store, byte) in [(receiverStore, UInt8(0x11)), (peerStore, 0x22), (foreignStore, 0x33)] {
            let data = [UInt8](repeating: byte, count: Self.blocks * 512)
            data.withUnsafeBytes { try! store.write($0, at: 0, forceUnitAccess: false) }
        }
    }

    func contents(_ store: MemoryBlockStore, lba: Int) -> [UInt8] {
        var data = [UInt8](repeating: 0, count: 512)
        data.withUnsafeMutableBytes { try! store.read(into: $0, at: UInt64(lba * 512)) }
        return data
    }

    func run(_ device: EmulatedBlockDevice, _ cdb: [UInt8], data: [UInt8] = [], from nexus: ITNexus) -> SCSIResult {
        device.execute(
            SCSIRequest(
                cdb: ByteBuffer(bytes: cdb), lun: 0, nexus: nexus, expectedDataTransferLength: max(data.count, 512),
                dataOut: ByteBuffer(bytes: data)))
    }

    /// EXTENDED COPY sent by `sender` to the receiver: one block from LBA 0 of `from` to LBA 1 of `to`.
    func copy(from: [UInt8], to: [UInt8]) -> SCSIResult {
        var list = CopyParameterList()
        list.targets = [CopyParameterList.identificationTarget(from), CopyParameterList.identificationTarget(to)]
        list.segments = [
            CopyParameterList.blockToBlock(source: 0, destination: 1, blocks: 1, sourceLBA: 0, destinationLBA: 1)
        ]
        let parameters = list.bytes
        var cdb = [UInt8](repeating: 0, count: 16)
        cdb[0] = 0x83
        cdb.setBigEndian(UInt32(parameters.count), at: 10)
        return run(receiver, cdb, data: parameters, from: sender)
    }

    /// PERSISTENT RESERVE OUT REGISTER then RESERVE with `type`, from `nexus`, on `device`.
    func persistentlyReserve(_ device: EmulatedBlockDevice, type: UInt8, by nexus: ITNexus) {
        var register = [UInt8](repeating: 0, count: 24)
        register.setBigEndian(UInt64(0xabcd), at: 8)
        var reserve = [UInt8](repeating: 0, count: 24)
        reserve.setBigEndian(UInt64(0xabcd), at: 0)
        let registerCDB: [UInt8] = [0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0]
        let reserveCDB: [UInt8] = [0x5f, 0x01, type, 0, 0, 0, 0, 0, 24, 0]
        #expect(run(device, registerCDB, data: register, from: nexus).status == .good)
        #expect(run(device, reserveCDB, data: reserve, from: nexus).status == .good)
    }
}

extension ExtendedCopyTests {
    @Test func designatorOfAnotherTargetAnswersAsOneThatExistsNowhere() {
        let f = CopyReachFixture()
        let nowhere: [UInt8] = [0x60, 0x01, 0x40, 0x50, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]
        let missing = f.copy(from: nowhere, to: f.receiver.copyEndpoint.designator)
        #expect(missing.sense?.senseKey == .copyAborted)
        #expect(missing.sense?.code == .copyTargetDeviceNotReachable)
        // Reading from, and writing to, the other target's logical unit: the same status and sense bytes.
        for result in [
            f.copy(from: f.foreign.copyEndpoint.designator, to: f.receiver.copyEndpoint.designator),
            f.copy(from: f.receiver.copyEndpoint.designator, to: f.foreign.copyEndpoint.designator),
        ] {
            #expect(result.status == missing.status)
            #expect(result.sense?.bytes() == missing.sense?.bytes())
        }
        #expect(f.contents(f.receiverStore, lba: 1).allSatisfy { $0 == 0x11 })
        #expect(f.contents(f.foreignStore, lba: 1).allSatisfy { $0 == 0x33 })
        // The same target's other logical unit is reachable.
        #expect(f.copy(from: f.peer.copyEndpoint.designator, to: f.receiver.copyEndpoint.designator).status == .good)
        #expect(f.contents(f.receiverStore, lba: 1).allSatisfy { $0 == 0x22 })
    }

    @Test func destinationPersistentReservationOfAnotherNexusConflicts() {
        let f = CopyReachFixture()
        // Write Exclusive held by another I_T nexus: the sender may read the peer, not write it.
        f.persistentlyReserve(f.peer, type: 0x1, by: f.holder)
        let result = f.copy(from: f.receiver.copyEndpoint.designator, to: f.peer.copyEndpoint.designator)
        #expect(result.status == .reservationConflict)
        #expect(f.contents(f.peerStore, lba: 1).allSatisfy { $0 == 0x22 })
        #expect(f.copy(from: f.peer.copyEndpoint.designator, to: f.receiver.copyEndpoint.designator).status == .good)
    }

    @Test func sourceExclusiveAccessOfAnotherNexusConflicts() {
        let f = CopyReachFixture()
        f.persistentlyReserve(f.peer, type: 0x3, by: f.holder)
        let result = f.copy(from: f.peer.copyEndpoint.designator, to: f.receiver.copyEndpoint.designator)
        #expect(result.status == .reservationConflict)
        #expect(f.contents(f.receiverStore, lba: 1).allSatisfy { $0 == 0x11 })
    }

    @Test func destinationSPC2ReservationOfAnotherNexusConflicts() {
        let f = CopyReachFixture()
        #expect(f.run(f.peer, [0x16, 0, 0, 0, 0, 0], from: f.holder).status == .good)
        let result = f.copy(from: f.receiver.copyEndpoint.designator, to: f.peer.copyEndpoint.designator)
        #expect(result.status == .reservationConflict)
        #expect(f.contents(f.peerStore, lba: 1).allSatisfy { $0 == 0x22 })
        // Released, the copy goes through.
        #expect(f.run(f.peer, [0x17, 0, 0, 0, 0, 0], from: f.holder).status == .good)
        #expect(f.copy(from: f.receiver.copyEndpoint.designator, to: f.peer.copyEndpoint.designator).status == .good)
        #expect(f.contents(f.peerStore, lba: 1).allSatisfy { $0 == 0x11 })
    }
}
