import Dispatch
import FerrySync
import Foundation
import NIOCore
import NIOPosix
import SCSI
import Testing

@testable import FerryBackends

/// READs served on the caller's thread when their blocks are in the page cache (`preadv2(RWF_NOWAIT)`), and
/// everything that must still go to the I/O threads.
@Suite struct ReadWithoutWaitingTests {
    private static func request(_ cdb: [UInt8], _ h: Harness, edtl: Int = 512, attribute: SCSITaskAttribute = .simple)
        -> SCSIRequest
    {
        SCSIRequest(
            cdb: ByteBuffer(bytes: cdb + [UInt8](repeating: 0, count: 16 - cdb.count)), lun: 0, nexus: h.nexus,
            attribute: attribute, expectedDataTransferLength: edtl)
    }

    @Test func aCachedReadAnswersAsTheWaitingOneWould() throws {
        let h = Harness()
        h.store.fill(0xa5, offset: 4096, count: 1024)
        h.store.cached.withLock { $0 = true }
        let read = Self.request(cdb10(0x28, lba: 8, blocks: 2), h, edtl: 1024)
        let answer = try #require(h.device.executeWithoutWaiting(read))
        #expect(answer.status == .good)
        #expect(answer.bytes == [UInt8](repeating: 0xa5, count: 1024))
        #expect(answer.bytes == h.device.execute(read).bytes)
    }

    @Test func aReadOfBlocksNotInTheCacheWaits() {
        let h = Harness()
        #expect(h.device.executeWithoutWaiting(Self.request(cdb10(0x28, lba: 0, blocks: 1), h)) == nil)
    }

    @Test func whatMayWaitIsLeftToTheIOThreads() {
        let h = Harness()
        h.store.cached.withLock { $0 = true }
        // WRITE(10), SYNCHRONIZE CACHE(10), a READ(10) with FUA, a READ(16) one block over the limit.
        let limit = EmulatedBlockDevice.withoutWaitingLimit
        #expect(h.device.executeWithoutWaiting(Self.request(cdb10(0x2a, lba: 0, blocks: 1), h)) == nil)
        #expect(h.device.executeWithoutWaiting(Self.request(cdb10(0x35, lba: 0, blocks: 0), h)) == nil)
        #expect(h.device.executeWithoutWaiting(Self.request(cdb10(0x28, lba: 0, blocks: 1, flags: 0x08), h)) == nil)
        let over = Self.request(cdb16(0x88, lba: 0, blocks: UInt32(limit / 512 + 1)), h, edtl: limit + 512)
        #expect(h.device.executeWithoutWaiting(over) == nil)
        // The largest read that is served here.
        let largest = Self.request(cdb16(0x88, lba: 0, blocks: UInt32(limit / 512)), h, edtl: limit)
        #expect(h.device.executeWithoutWaiting(largest)?.dataIn.readableBytes == limit)
    }

    @Test func aCommandHoldingTheWriteOrderingLockMakesTheReadWait() {
        let h = Harness()
        h.store.cached.withLock { $0 = true }
        let read = Self.request(cdb10(0x28, lba: 0, blocks: 1), h)
        let answer = h.device.ordering.exclusive { h.device.executeWithoutWaiting(read) }
        #expect(answer == nil)
        #expect(h.device.executeWithoutWaiting(read)?.status == .good)
    }

    @Test func checksComeFirstAndEndTheCommandHere() throws {
        let h = Harness()
        #expect(h.run([0x00, 0, 0, 0, 0, 0]).status == .good)
        h.device.apply(.logicalUnitReset)
        let read = Self.request(cdb10(0x28, lba: 0, blocks: 1), h)
        // Not cached: the unit attention is still reported here, once.
        try #require(h.device.executeWithoutWaiting(read)).expectSense(.unitAttention, .busDeviceResetFunctionOccurred)
        #expect(h.device.executeWithoutWaiting(read) == nil)
        let beyond = Self.request(cdb10(0x28, lba: UInt32(Harness.blocks), blocks: 1), h)
        try #require(h.device.executeWithoutWaiting(beyond)).expectSense(.illegalRequest, .logicalBlockAddressOutOfRange)
    }

    @Test func aFileInThePageCacheIsReadWithoutWaiting() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-nowait-\(UUID()).img").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let store = try FileBlockStore(path: path, createWithSize: 1 << 20)
        let written = (0..<8192).map { UInt8(truncatingIfNeeded: $0 * 7) }
        try written.withUnsafeBytes { try store.write($0, at: 65536, forceUnitAccess: false) }
        var read = [UInt8](repeating: 0, count: 8192)
        let served = try read.withUnsafeMutableBytes { try store.readWithoutWaiting(into: $0, at: 65536) }
        #expect(served)
        #expect(read == written)
        // Past the end is an error, as for a waiting read.
        #expect(throws: BlockStoreError.self) {
            try read.withUnsafeMutableBytes { try store.readWithoutWaiting(into: $0, at: (1 << 20) - 4096) }
        }
    }
}

/// The backend completes a cached READ inside `submit`, and keeps SAM-5's order: a READ behind an ORDERED task of
/// its nexus waits for it.
@Suite struct EmulatedBackendReadWithoutWaitingTests {
    /// Block 0 reads wait at a gate (and are never cached); every other block is cached.
    private final class FirstBlockGatedStore: ReadingTestStore, @unchecked Sendable {
        let identity = "first-block-gated"
        let arrived = DispatchSemaphore(value: 0)
        let gate = DispatchSemaphore(value: 0)

        func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
            if offset == 0 {
                arrived.signal()
                gate.wait()
            }
            buffer.initializeMemory(as: UInt8.self, repeating: 0x5a)
        }

        func readWithoutWaiting(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError)
            -> Bool
        {
            guard offset != 0 else { return false }
            buffer.initializeMemory(as: UInt8.self, repeating: 0x5a)
            return true
        }
    }

    private let nexus = ITNexus(
        initiatorPortName: "iqn.2026-12.test:initiator,i,0x000000000001",
        targetPortName: "iqn.2026-12.test:target,t,0x1", relativeTargetPortIdentifier: 1)

    private func read10(lba: UInt32, attribute: SCSITaskAttribute = .simple) -> SCSIRequest {
        SCSIRequest(
            cdb: ByteBuffer(bytes: cdb10(0x28, lba: lba, blocks: 1) + [UInt8](repeating: 0, count: 6)), lun: 0,
            nexus: nexus, attribute: attribute, expectedDataTransferLength: 512)
    }

    private func withBackend(_ body: (EmulatedBackend, FirstBlockGatedStore) throws -> Void) throws {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        defer { try? pool.syncShutdownGracefully() }
        let store = FirstBlockGatedStore()
        let device = EmulatedBlockDevice(
            store: store, configuration: EmulatedBlockDevice.Configuration(), copyTargets: CopyTargetDirectory())
        try body(EmulatedBackend(device: device, store: store, kind: "gated", threadPool: pool), store)
    }

    @Test func aCachedReadCompletesBeforeSubmitReturns() throws {
        try withBackend { backend, _ in
            let completed = Locked<SCSIStatus?>(nil)
            backend.submit(read10(lba: 1), tag: BackendTaskTag(1)) { completion in
                guard case .completed(let result) = completion else { return }
                completed.withLock { $0 = result.status }
            }
            #expect(completed.withLock { $0 } == .good)
        }
    }

    @Test func aReadBehindAnOrderedTaskWaitsForIt() throws {
        try withBackend { backend, store in
            let order = Locked<[UInt32]>([])
            let done = DispatchSemaphore(value: 0)
            for (lba, attribute) in [(UInt32(0), SCSITaskAttribute.ordered), (1, .simple)] {
                backend.submit(read10(lba: lba, attribute: attribute), tag: BackendTaskTag(UInt64(lba))) { _ in
                    order.withLock { $0.append(lba) }
                    done.signal()
                }
            }
            store.arrived.wait()
            #expect(order.withLock { $0 }.isEmpty, "the cached READ went ahead of the ORDERED task")
            store.gate.signal()
            done.wait()
            done.wait()
            #expect(order.withLock { $0 } == [0, 1])
        }
    }
}

/// A null store waits for nothing: its WRITEs complete on the caller's thread too, within the same rules.
@Suite struct NullStoreWithoutWaitingTests {
    private let nexus = ITNexus(
        initiatorPortName: "iqn.2026-12.test:initiator,i,0x000000000001",
        targetPortName: "iqn.2026-12.test:target,t,0x1", relativeTargetPortIdentifier: 1)

    private func device(readOnly: Bool = false) -> EmulatedBlockDevice {
        EmulatedBlockDevice(
            store: NullBlockStore(byteCount: 1 << 20, target: "iqn.2026-12.test:target", lun: 0),
            configuration: .init(readOnly: readOnly), copyTargets: CopyTargetDirectory())
    }

    private func write10(lba: UInt32, blocks: UInt16, flags: UInt8 = 0, data: Int) -> SCSIRequest {
        SCSIRequest(
            cdb: ByteBuffer(bytes: cdb10(0x2a, lba: lba, blocks: blocks, flags: flags) + [UInt8](repeating: 0, count: 6)),
            lun: 0, nexus: nexus, expectedDataTransferLength: data,
            dataOut: ByteBuffer(repeating: 0xee, count: data))
    }

    @Test func writesAndReadsCompleteHere() throws {
        let device = device()
        #expect(device.executeWithoutWaiting(write10(lba: 0, blocks: 8, data: 4096))?.status == .good)
        let read = SCSIRequest(
            cdb: ByteBuffer(bytes: cdb10(0x28, lba: 0, blocks: 8) + [UInt8](repeating: 0, count: 6)), lun: 0,
            nexus: nexus, expectedDataTransferLength: 4096)
        let answer = try #require(device.executeWithoutWaiting(read))
        #expect(answer.bytes == [UInt8](repeating: 0, count: 4096))
    }

    @Test func aWriteThatMustBeDurableOrIsTooLargeWaits() {
        let device = device()
        #expect(device.executeWithoutWaiting(write10(lba: 0, blocks: 1, flags: 0x08, data: 512)) == nil)
        #expect(device.executeWithoutWaiting(write10(lba: 0, blocks: 1024, data: 1 << 19)) == nil)
        let exclusive = device.ordering.exclusive { device.executeWithoutWaiting(write10(lba: 0, blocks: 1, data: 512)) }
        #expect(exclusive == nil)
    }

    @Test func aWriteToAWriteProtectedUnitEndsHereWithItsSense() throws {
        try #require(device(readOnly: true).executeWithoutWaiting(write10(lba: 0, blocks: 1, data: 512)))
            .expectSense(.dataProtect, .writeProtected)
    }
}
