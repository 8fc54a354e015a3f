import NIOConcurrencyHelpers
public import NIOCore
public import NIOPosix
public import SCSI

/// The emulated SBC disk behind the backend seam: an ``EmulatedBlockDevice`` over a
/// ``BlockStore``, run on a thread pool so that blocking I/O never touches an event loop.
///
/// Tasks wait in the backend's own queue, and at most `concurrency` workers on the pool take
/// them one after the other: a burst of commands wakes a few threads, not one per command, and a
/// busy worker goes on to the next task without sleeping.
///
/// Termination follows SAM-5's "cancel if not started, otherwise wait": a task still queued
/// for an I/O thread completes at once with ``BackendCompletion/terminated``; a task whose
/// I/O has started completes when that I/O returns. A started SANITIZE is the exception: its
/// task completes at once and the sanitize operation goes on on its I/O thread, for SBC-4 has it
/// survive task management functions, resets and the loss of the I_T nexus.
public final class EmulatedBackend: LogicalUnitBackend {
    private struct Job {
        var tag: BackendTaskTag
        var request: SCSIRequest
        var completion: @Sendable (BackendCompletion) -> Void
    }

    private struct Queue {
        var waiting = CircularBuffer<Job>(initialCapacity: 64)
        /// Workers submitted to the pool and not yet finished.
        var workers = 0
        /// The completions of running SANITIZE tasks, until they complete or are terminated.
        var sanitizing: [BackendTaskTag: @Sendable (BackendCompletion) -> Void] = [:]
    }

    public let device: EmulatedBlockDevice

    public var unitAttentionConditions: UnitAttentionConditions? { device.unitAttentions }
    public var copyEndpoint: CopyEndpoint? { device.copyEndpoint }
    private let store: any BlockStore
    public let kind: String
    private let threadPool: NIOThreadPool
    private let concurrency: Int
    private let queue = NIOLockedValueBox(Queue())

    /// - Parameter concurrency: the most tasks the device runs at once (threads it occupies).
    public init(
        device: EmulatedBlockDevice, store: any BlockStore, kind: String, threadPool: NIOThreadPool,
        concurrency: Int = max(2, System.coreCount * 2)
    ) {
        self.store = store
        self.device = device
        self.kind = kind
        self.threadPool = threadPool
        self.concurrency = max(1, concurrency)
    }

    public var taskAbortedStatus: Bool { device.taskAbortedStatus }

    public func dataOutLength(for cdb: ByteBuffer) -> Int? {
        device.dataOutLength(for: cdb)
    }

    public func submit(
        _ request: SCSIRequest, tag: BackendTaskTag,
        completion: @escaping @Sendable (BackendCompletion) -> Void
    ) {
        let startWorker = queue.withLockedValue { queue in
            queue.waiting.append(Job(tag: tag, request: request, completion: completion))
            guard queue.workers < concurrency else { return false }
            queue.workers += 1
            return true
        }
        if startWorker { threadPool.submit { [self] _ in work() } }
    }

    /// A worker: runs queued tasks until there are none.
    private func work() {
        while let (job, isSanitize) = queue.withLockedValue({ queue -> (Job, Bool)? in
            guard let job = queue.waiting.popFirst() else {
                queue.workers -= 1
                return nil
            }
            let isSanitize = job.request.cdb.getInteger(at: job.request.cdb.readerIndex) == OperationCode.sanitize
            if isSanitize { queue.sanitizing[job.tag] = job.completion }
            return (job, isSanitize)
        }) {
            let result = device.execute(job.request)
            // A terminated SANITIZE task has completed already.
            if isSanitize, queue.withLockedValue({ $0.sanitizing.removeValue(forKey: job.tag) }) == nil { continue }
            job.completion(.completed(result))
        }
    }

    public func terminate(_ tag: BackendTaskTag) {
        let completion = queue.withLockedValue { queue -> (@Sendable (BackendCompletion) -> Void)? in
            guard let index = queue.waiting.firstIndex(where: { $0.tag == tag }) else {
                // A running SANITIZE: its task ends, the sanitize operation goes on (SBC-4 §4.11).
                return queue.sanitizing.removeValue(forKey: tag)
            }
            return queue.waiting.remove(at: index).completion
        }
        completion?(.terminated)
    }

    public func pendingUnitAttention(for nexus: ITNexus) -> (senseKey: SenseKey, code: AdditionalSenseCode)? {
        device.unitAttentions.peek(for: nexus).map { (senseKey: .unitAttention, code: $0) }
    }

    public func apply(_ event: LogicalUnitEvent) {
        device.apply(event)
    }

    public func shutdown() {
        try? store.synchronize()
    }
}
