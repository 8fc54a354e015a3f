import Dispatch
import FerryBackends
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SCSI
import Testing

/// A 1 MiB store in memory whose reads wait at a gate until the test opens it.
private final class GatedStore: ReadingTestStore, @unchecked Sendable {
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
}

/// A 1 MiB store in memory whose read of each block waits until the test opens that block.
private final class BlockGatedStore: ReadingTestStore, @unchecked Sendable {
    let identity = "block-gated"
    /// Signalled when a read reaches its gate.
    let arrived = DispatchSemaphore(value: 0)
    private let state = NIOLockedValueBox((gates: [UInt32: DispatchSemaphore](), arrivals: [UInt32]()))

    /// The blocks whose reads reached their gates, in order.
    var arrivals: [UInt32] { state.withLockedValue { $0.arrivals } }

    private func gate(_ lba: UInt32) -> DispatchSemaphore {
        state.withLockedValue { state in
            if let gate = state.gates[lba] { return gate }
            let gate = DispatchSemaphore(value: 0)
            state.gates[lba] = gate
            return gate
        }
    }

    /// Lets the read of block `lba` through.
    func open(_ lba: UInt32) { gate(lba).signal() }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
        let lba = UInt32(offset / 512)
        state.withLockedValue { $0.arrivals.append(lba) }
        arrived.signal()
        gate(lba).wait()
        buffer.initializeMemory(as: UInt8.self, repeating: 0x5a)
    }
}

private let nexus = ITNexus(
    initiatorPortName: "iqn.2026-11.test:initiator,i,0x000000000001", targetPortName: "iqn.2026-11.test:target,t,0x1",
    relativeTargetPortIdentifier: 1)

private let secondNexus = ITNexus(
    initiatorPortName: "iqn.2026-11.test:other,i,0x000000000001", targetPortName: "iqn.2026-11.test:target,t,0x1",
    relativeTargetPortIdentifier: 1)

/// READ(10) of one 512-byte block at `lba`.
private func read10(
    lba: UInt32, from initiator: ITNexus = nexus, attribute: SCSITaskAttribute = .simple
) -> SCSIRequest {
    var cdb = ByteBuffer()
    cdb.writeInteger(UInt8(0x28))
    cdb.writeInteger(UInt8(0))
    cdb.writeInteger(lba)
    cdb.writeInteger(UInt8(0))
    cdb.writeInteger(UInt16(1))
    cdb.writeInteger(UInt8(0))
    return SCSIRequest(cdb: cdb, lun: 0, nexus: initiator, attribute: attribute, expectedDataTransferLength: 512)
}

/// The LBAs of the READs that completed, in the order they completed.
private final class CompletionOrder: Sendable {
    private let order = NIOLockedValueBox([UInt32]())
    let done = DispatchSemaphore(value: 0)
    var lbas: [UInt32] { order.withLockedValue { $0 } }

    func record(_ lba: UInt32) -> @Sendable (BackendCompletion) -> Void {
        { _ in
            self.order.withLockedValue { $0.append(lba) }
            self.done.signal()
        }
    }
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

    /// Fairness across I_T nexuses: one initiator's long queue does not stand before another's task.
    @Test func aSecondNexusIsServedBeforeTheHundredthQueuedTaskOfTheFirst() throws {
        try withBackend(concurrency: 1) { backend, store in
            let order = CompletionOrder()
            backend.submit(read10(lba: 0), tag: BackendTaskTag(0), completion: order.record(0))
            store.arrived.wait()  // the only worker is inside the first read
            for n in 1..<200 {
                backend.submit(read10(lba: UInt32(n)), tag: BackendTaskTag(UInt64(n)), completion: order.record(UInt32(n)))
            }
            backend.submit(
                read10(lba: 1000, from: secondNexus), tag: BackendTaskTag(1000), completion: order.record(1000))
            for _ in 0..<201 { store.gate.signal() }
            for _ in 0..<201 { order.done.wait() }
            let lbas = order.lbas
            let position = try #require(lbas.firstIndex(of: 1000))
            // The first nexus's running task, then its next one (its turn came first), then the second nexus.
            #expect(position < 99, "the second nexus's task completed at position \(position)")
            #expect(position == 2)
            // The first nexus's own tasks keep their order.
            #expect(lbas.filter { $0 != 1000 } == Array(0..<200))
        }
    }

    /// SAM-5 §8.6 within one nexus: an ORDERED task waits for the tasks before it to complete, and the tasks
    /// after it wait for it; another nexus is not held back by it.
    @Test func anOrderedTaskRunsAloneWithinItsNexus() throws {
        let pool = NIOThreadPool(numberOfThreads: 4)
        pool.start()
        defer { try? pool.syncShutdownGracefully() }
        let store = BlockGatedStore()
        let device = EmulatedBlockDevice(
            store: store, configuration: EmulatedBlockDevice.Configuration(), copyTargets: CopyTargetDirectory())
        let backend = EmulatedBackend(device: device, store: store, kind: "gated", threadPool: pool, concurrency: 2)
        let order = CompletionOrder()
        let arrivedSoon = { store.arrived.wait(timeout: .now() + .seconds(10)) == .success }
        let nothingArrives = { store.arrived.wait(timeout: .now() + .milliseconds(200)) == .timedOut }
        backend.submit(read10(lba: 1), tag: BackendTaskTag(1), completion: order.record(1))
        #expect(arrivedSoon())
        backend.submit(read10(lba: 2, attribute: .ordered), tag: BackendTaskTag(2), completion: order.record(2))
        backend.submit(read10(lba: 3), tag: BackendTaskTag(3), completion: order.record(3))
        // A second worker is free, but the ORDERED task waits for task 1, and task 3 for the ORDERED one.
        #expect(nothingArrives())
        // Another nexus's task is not held back.
        backend.submit(read10(lba: 9, from: secondNexus), tag: BackendTaskTag(9), completion: order.record(9))
        #expect(arrivedSoon())
        #expect(store.arrivals == [1, 9])
        // Task 1 completes: the ORDERED task starts, and runs alone within its nexus.
        store.open(1)
        order.done.wait()
        #expect(arrivedSoon())
        #expect(nothingArrives())
        #expect(store.arrivals == [1, 9, 2])
        store.open(9)
        store.open(2)
        order.done.wait()
        order.done.wait()
        // The ORDERED task completed: task 3 starts.
        #expect(arrivedSoon())
        #expect(store.arrivals == [1, 9, 2, 3])
        store.open(3)
        order.done.wait()
        #expect(order.lbas.first == 1 && order.lbas.last == 3)
    }

    /// A HEAD OF QUEUE task goes before the waiting tasks of its nexus, the newest first.
    @Test func headOfQueueTasksGoFirstWithinTheirNexus() throws {
        try withBackend(concurrency: 1) { backend, store in
            let order = CompletionOrder()
            backend.submit(read10(lba: 1), tag: BackendTaskTag(1), completion: order.record(1))
            store.arrived.wait()
            backend.submit(read10(lba: 2), tag: BackendTaskTag(2), completion: order.record(2))
            backend.submit(read10(lba: 3, attribute: .headOfQueue), tag: BackendTaskTag(3), completion: order.record(3))
            backend.submit(read10(lba: 4, attribute: .headOfQueue), tag: BackendTaskTag(4), completion: order.record(4))
            for _ in 0..<4 { store.gate.signal() }
            for _ in 0..<4 { order.done.wait() }
            #expect(order.lbas == [1, 4, 3, 2])
        }
    }

    /// Terminating a queued ORDERED task lets the tasks behind it start.
    @Test func terminatingAQueuedOrderedTaskReleasesTheTasksBehindIt() throws {
        try withBackend(concurrency: 2) { backend, store in
            let order = CompletionOrder()
            backend.submit(read10(lba: 1), tag: BackendTaskTag(1), completion: order.record(1))
            store.arrived.wait()
            backend.submit(read10(lba: 2, attribute: .ordered), tag: BackendTaskTag(2), completion: order.record(2))
            backend.submit(read10(lba: 3), tag: BackendTaskTag(3), completion: order.record(3))
            backend.terminate(BackendTaskTag(2))
            order.done.wait()
            #expect(order.lbas == [2])
            // Task 3 starts beside task 1 on the second worker.
            #expect(store.arrived.wait(timeout: .now() + .seconds(10)) == .success)
            store.gate.signal()
            store.gate.signal()
            order.done.wait()
            order.done.wait()
            #expect(Set(order.lbas) == [1, 2, 3])
        }
    }
}
