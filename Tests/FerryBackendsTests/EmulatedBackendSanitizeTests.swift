import Dispatch
import FerryBackends
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SCSI
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A 1 MiB store in memory that ignores writes.
private final class NullStore: ReadingTestStore {
    let identity = "null"

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }
}

/// A pacing clock whose sleeps wait at a gate until the test opens it.
private final class GatedClock: ErasureClock {
    /// Signalled when a sleep reaches the gate.
    let arrived = DispatchSemaphore(value: 0)
    let gate = DispatchSemaphore(value: 0)

    var now: ContinuousClock.Instant { ContinuousClock.now }

    func sleep(for duration: Duration) {
        arrived.signal()
        gate.wait()
    }
}

private let nexus = ITNexus(
    initiatorPortName: "iqn.2026-11.test:initiator,i,0x000000000001", targetPortName: "iqn.2026-11.test:target,t,0x1",
    relativeTargetPortIdentifier: 1)

private func request(_ cdb: [UInt8], data: [UInt8] = []) -> SCSIRequest {
    SCSIRequest(
        cdb: ByteBuffer(bytes: cdb), lun: 0, nexus: nexus, expectedDataTransferLength: data.count,
        dataOut: ByteBuffer(bytes: data))
}

/// SANITIZE OVERWRITE, one pass of a 2-byte pattern.
private let overwrite = request([0x48, 0x01, 0, 0, 0, 0, 0, 0, 6, 0], data: [0x01, 0, 0, 2, 0xde, 0xad])
private let testUnitReady = request([0x00, 0, 0, 0, 0, 0])

/// A running SANITIZE outlives its task (SBC-4 §4.11): terminating it completes the task at once,
/// and the paced overwrite goes on, holding other commands off with NOT READY.
@Suite struct EmulatedBackendSanitizeTests {
    private func withBackend(_ body: (EmulatedBackend, GatedClock) throws -> Void) throws {
        let pool = NIOThreadPool(numberOfThreads: 2)
        pool.start()
        defer { try? pool.syncShutdownGracefully() }
        let store = NullStore()
        let clock = GatedClock()
        let device = EmulatedBlockDevice(
            store: store, configuration: .init(sanitizeRate: 1 << 20), copyTargets: CopyTargetDirectory(),
            erasureClock: clock)
        try body(EmulatedBackend(device: device, store: store, kind: "null", threadPool: pool, concurrency: 2), clock)
    }

    /// Runs `request` and waits for its completion.
    private func run(_ backend: EmulatedBackend, _ request: SCSIRequest, tag: UInt64) -> BackendCompletion {
        let box = NIOLockedValueBox<BackendCompletion?>(nil)
        let done = DispatchSemaphore(value: 0)
        backend.submit(request, tag: BackendTaskTag(tag)) { completion in
            box.withLockedValue { $0 = completion }
            done.signal()
        }
        done.wait()
        return box.withLockedValue { $0 }!
    }

    private func status(_ completion: BackendCompletion) -> SCSIStatus? {
        guard case .completed(let result) = completion else { return nil }
        return result.status
    }

    @Test func terminatedSanitizeCompletesAtOnceAndGoesOn() throws {
        try withBackend { backend, clock in
            let completions = NIOLockedValueBox<[BackendCompletion]>([])
            backend.submit(overwrite, tag: BackendTaskTag(1)) { completion in
                completions.withLockedValue { $0.append(completion) }
            }
            clock.arrived.wait()
            #expect(status(run(backend, testUnitReady, tag: 2)) == .checkCondition)
            backend.terminate(BackendTaskTag(1))
            let afterTerminate = completions.withLockedValue { $0 }
            #expect(afterTerminate.count == 1)
            if case .terminated = afterTerminate.first {} else { Issue.record("not terminated: \(afterTerminate)") }
            // The sanitize still runs: NOT READY until it is let go.
            #expect(status(run(backend, testUnitReady, tag: 3)) == .checkCondition)
            clock.gate.signal()
            var ready = false
            for attempt in 0..<500 where !ready {
                ready = status(run(backend, testUnitReady, tag: 4 + UInt64(attempt))) == .good
                if !ready { usleep(10_000) }
            }
            #expect(ready)
            #expect(completions.withLockedValue { $0.count } == 1)
        }
    }

    @Test func sanitizeNotTerminatedCompletesWithGood() throws {
        try withBackend { backend, clock in
            let done = DispatchSemaphore(value: 0)
            let completions = NIOLockedValueBox<[BackendCompletion]>([])
            backend.submit(overwrite, tag: BackendTaskTag(1)) { completion in
                completions.withLockedValue { $0.append(completion) }
                done.signal()
            }
            clock.arrived.wait()
            // Other tasks complete normally while a SANITIZE runs.
            #expect(status(run(backend, testUnitReady, tag: 2)) == .checkCondition)
            backend.terminate(BackendTaskTag(99))
            clock.gate.signal()
            done.wait()
            let all = completions.withLockedValue { $0 }
            #expect(all.count == 1 && all.first.flatMap(status) == .good)
        }
    }
}
