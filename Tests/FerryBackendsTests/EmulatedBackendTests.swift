import Dispatch
import FerryBackends
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SCSI
import Testing

/// A 1 MiB store in memory whose reads wait at a gate until the test opens it.
private final class GatedStore: BlockStore, @unchecked Sendable {
    let byteCount: UInt64 = 1 << 20
    let supportsUnmap = false
    let unmappedReadsZero = false
    let identity = "gated"
    /// Signalled when a read reaches the gate.
    let arrived = DispatchSemaphore(value: 0)
    /// Each signal lets one read through.
    let gate = DispatchSemaphore(value: 0)

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
        arrived.signal()
        gate.wait()
        buffer.initializeMemory(as: UInt8.self, repeating: 0x5a)
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, forceUnitAccess: Bool) throws(BlockStoreError) {}
    func synchronize() throws(BlockStoreError) {}
    func unmap(offset: UInt64, length: UInt64) throws(BlockStoreError) {}
    func mappingStatus(at offset: UInt64) throws(BlockStoreError) -> (mapped: Bool, length: UInt64) {
        (true, byteCount - offset)
    }
}

private let nexus = ITNexus(
    initiatorPortName: "iqn.2026-11.test:initiator,i,0x000000000001", targetPortName: "iqn.2026-11.test:target,t,0x1",
    relativeTargetPortIdentifier: 1)

/// READ(10) of one 512-byte block at `lba`.
private func read10(lba: UInt32) -> SCSIRequest {
    var cdb = ByteBuffer()
    cdb.writeInteger(UInt8(0x28))
    cdb.writeInteger(UInt8(0))
    cdb.writeInteger(lba)
    cdb.writeInteger(UInt8(0))
    cdb.writeInteger(UInt16(1))
    cdb.writeInteger(UInt8(0))
    return SCSIRequest(cdb: cdb, lun: 0, nexus: nexus, expectedDataTransferLength: 512)
}

@Suite struct EmulatedBackendTests {
    private func withBackend(
        concurrency: Int, _ body: (EmulatedBackend, GatedStore) throws -> Void
    ) throws {
        let pool = NIOThreadPool(numberOfThreads: 4)
        pool.start()
        defer { try? pool.syncShutdownGracefully() }
        let store = GatedStore()
        let device = EmulatedBlockDevice(
            store: store, configuration: EmulatedBlockDevice.Configuration(), copyTargets: CopyTargetDirectory())
        let backend = EmulatedBackend(
            device: device, store: store, kind: "gated", threadPool: pool, concurrency: concurrency)
        try body(backend, store)
    }

    @Test func everyTaskCompletesOnceWithItsData() throws {
        try withBackend(concurrency: 2) { backend, store in
            let done = DispatchSemaphore(value: 0)
            let results = NIOLockedValueBox([UInt64: Int]())
            for n in 0..<32 {
                backend.submit(read10(lba: UInt32(n)), tag: BackendTaskTag(UInt64(n))) { completion in
                    defer { done.signal() }
                    guard case .completed(let result) = completion, result.status == .good else { return }
                    results.withLockedValue { $0[UInt64(n), default: 0] += result.dataIn.readableBytes }
                }
            }
            for _ in 0..<32 { store.gate.signal() }
            for _ in 0..<32 { done.wait() }
            let expected = Dictionary(uniqueKeysWithValues: (0..<32).map { (UInt64($0), 512) })
            #expect(results.withLockedValue { $0 } == expected)
        }
    }

    @Test func aQueuedTaskTerminatesAtOnceAndARunningOneWhenItsIOReturns() throws {
        try withBackend(concurrency: 1) { backend, store in
            let outcomes = NIOLockedValueBox([String]())
            let done = DispatchSemaphore(value: 0)
            func record(_ name: String) -> @Sendable (BackendCompletion) -> Void {
                { completion in
                    let outcome: String
                    switch completion {
                    case .completed: outcome = "\(name) completed"
                    case .terminated: outcome = "\(name) terminated"
                    }
                    outcomes.withLockedValue { $0.append(outcome) }
                    done.signal()
                }
            }
            backend.submit(read10(lba: 0), tag: BackendTaskTag(1), completion: record("running"))
            store.arrived.wait()  // the only worker is inside the first read
            backend.submit(read10(lba: 1), tag: BackendTaskTag(2), completion: record("queued"))
            backend.terminate(BackendTaskTag(2))
            backend.terminate(BackendTaskTag(1))
            done.wait()
            #expect(outcomes.withLockedValue { $0 } == ["queued terminated"])
            store.gate.signal()
            done.wait()
            #expect(outcomes.withLockedValue { $0 } == ["queued terminated", "running completed"])
        }
    }
}
