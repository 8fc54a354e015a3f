import FerrySync
public import NIOCore
public import NIOPosix
public import SCSI

/// The emulated SBC disk behind the backend seam: an ``EmulatedBlockDevice`` over a
/// ``BlockStore``, run on a thread pool so that blocking I/O never touches an event loop.
///
/// Tasks wait in the backend's own queues, one first-in first-out queue per I_T nexus, and at most
/// `concurrency` workers on the pool take them one after the other, serving the nexuses in turn
/// (round robin): a burst of commands wakes a few threads, not one per command, a busy worker goes on
/// to the next task without sleeping, and an initiator that queues hundreds of tasks delays another
/// initiator's task by at most one of its own per turn, not by all of them.
///
/// Within one nexus, the task attributes of SAM-5 §8.6 order the tasks: a SIMPLE task starts once
/// the tasks queued before it have started (and no ORDERED task runs); an ORDERED task starts once
/// every earlier task of the nexus has completed, and the tasks after it wait for it to complete;
/// a HEAD OF QUEUE task goes before every task of its nexus that waits (the newest first) and may
/// start while an ORDERED one runs. Tasks of different nexuses are not ordered with each other.
///
/// A SIMPLE READ whose blocks are all in the page cache does not queue: `submit` reads it with
/// `preadv2(RWF_NOWAIT)` and completes it on the caller's thread (``EmulatedBlockDevice/executeWithoutWaiting(_:)``);
/// so does a SIMPLE WRITE that the file system takes with `pwritev2(RWF_NOWAIT)` (XFS, btrfs; not ext4), and every
/// READ and WRITE of a null store.
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

    /// The tasks of one I_T nexus.
    private struct NexusQueue {
        var waiting = CircularBuffer<Job>(initialCapacity: 16)
        /// Tasks of this nexus that workers are running.
        var running = 0
        /// An ORDERED task of this nexus is running: no other task of the nexus starts before it completes,
        /// HEAD OF QUEUE tasks apart.
        var orderedRunning = false
        /// The nexus has its place in ``Queue/rotation``.
        var inRotation = false

        /// Whether the task at the head of the queue may start now.
        var canStart: Bool {
            guard let head = waiting.first else { return false }
            switch head.request.attribute {
            case .headOfQueue: return true
            case .ordered: return running == 0
            case .simple, .aca: return !orderedRunning
            }
        }
    }

    private struct Queue {
        var nexuses: [ITNexus: NexusQueue] = [:]
        /// The nexuses whose next task may start, in the order the workers serve them: a nexus served goes
        /// to the back.
        var rotation = CircularBuffer<ITNexus>(initialCapacity: 16)
        /// Workers submitted to the pool and not yet finished.
        var workers = 0
        /// The completions of running SANITIZE tasks, until they complete or are terminated.
        var sanitizing: [BackendTaskTag: @Sendable (BackendCompletion) -> Void] = [:]

        /// Puts `nexus` in the rotation when its next task may start, takes it out when it has nothing left
        /// to start, and forgets it when it holds no task at all.
        mutating func settle(_ nexus: ITNexus) {
            guard var entry = nexuses[nexus] else { return }
            if entry.canStart {
                if !entry.inRotation {
                    entry.inRotation = true
                    rotation.append(nexus)
                }
            } else if entry.inRotation, entry.waiting.isEmpty, let index = rotation.firstIndex(of: nexus) {
                rotation.remove(at: index)
                entry.inRotation = false
            }
            if entry.waiting.isEmpty && entry.running == 0 && !entry.inRotation {
                nexuses[nexus] = nil
            } else {
                nexuses[nexus] = entry
            }
        }

        /// Takes the next task to run: the next of the nexus whose turn it is. Nil when no task may start.
        mutating func next() -> Job? {
            while let nexus = rotation.popFirst() {
                guard var entry = nexuses[nexus] else { continue }
                entry.inRotation = false
                guard entry.canStart else {
                    // Held back by an ORDERED task: the nexus comes back when that task completes.
                    nexuses[nexus] = entry
                    settle(nexus)
                    continue
                }
                let job = entry.waiting.removeFirst()
                entry.running += 1
                if job.request.attribute == .ordered { entry.orderedRunning = true }
                nexuses[nexus] = entry
                settle(nexus)
                return job
            }
            return nil
        }

        /// A task that a worker ran has completed.
        mutating func finished(_ job: Job) {
            let nexus = job.request.nexus
            guard var entry = nexuses[nexus] else { return }
            entry.running -= 1
            if job.request.attribute == .ordered { entry.orderedRunning = false }
            nexuses[nexus] = entry
            settle(nexus)
        }

        /// Whether one more worker is wanted: a task may start and fewer than `concurrency` workers run.
        mutating func wantsWorker(concurrency: Int) -> Bool {
            guard !rotation.isEmpty, workers < concurrency else { return false }
            workers += 1
            return true
        }
    }

    public let device: EmulatedBlockDevice

    public var unitAttentionConditions: UnitAttentionConditions? { device.unitAttentions }
    public var copyEndpoint: CopyEndpoint? { device.copyEndpoint }
    private let store: any BlockStore
    public let kind: String
    private let threadPool: NIOThreadPool
    private let concurrency: Int
    private let ownsThreadPool: Bool
    private let queue = Locked(Queue())

    /// - Parameters:
    ///   - concurrency: the most tasks the device runs at once (threads it occupies).
    ///   - ownsThreadPool: ``shutdown()`` shuts `threadPool` down: it is the backend's own (a store whose every call
    ///     waits on the network keeps more tasks in flight than the target's shared pool has threads).
    public init(
        device: EmulatedBlockDevice, store: any BlockStore, kind: String, threadPool: NIOThreadPool,
        concurrency: Int = max(2, System.coreCount * 2), ownsThreadPool: Bool = false
    ) {
        self.store = store
        self.device = device
        self.kind = kind
        self.threadPool = threadPool
        self.concurrency = max(1, concurrency)
        self.ownsThreadPool = ownsThreadPool
    }

    public var taskAbortedStatus: Bool { device.taskAbortedStatus }

    public func dataOutLength(for cdb: ByteBuffer) -> Int? {
        device.dataOutLength(for: cdb)
    }

    public func submit(
        _ request: SCSIRequest, tag: BackendTaskTag,
        completion: @escaping @Sendable (BackendCompletion) -> Void
    ) {
        // A SIMPLE READ whose blocks are in the page cache, or a WRITE the store takes without waiting (XFS, btrfs,
        // a null store), completes here, on the caller's event loop, without either thread hop. It may start now if no task of its nexus waits or runs ORDERED (SAM-5 §8.6), and the
        // session submits each nexus's tasks from one thread, so none can come in meanwhile.
        if request.attribute == .simple,
            queue.withLock({ $0.nexuses[request.nexus].map { $0.waiting.isEmpty && !$0.orderedRunning } ?? true }),
            let result = device.executeWithoutWaiting(request)
        {
            return completion(.completed(result))
        }
        let startWorker = queue.withLock { queue in
            let job = Job(tag: tag, request: request, completion: completion)
            if request.attribute == .headOfQueue {
                queue.nexuses[request.nexus, default: NexusQueue()].waiting.prepend(job)
            } else {
                queue.nexuses[request.nexus, default: NexusQueue()].waiting.append(job)
            }
            queue.settle(request.nexus)
            return queue.wantsWorker(concurrency: concurrency)
        }
        if startWorker { threadPool.submit { [self] _ in work() } }
    }

    /// A worker: runs tasks until none may start.
    private func work() {
        var finished: Job? = nil
        while true {
            let (next, another) = queue.withLock { queue -> ((Job, Bool)?, Bool) in
                if let finished { queue.finished(finished) }
                guard let job = queue.next() else {
                    queue.workers -= 1
                    return (nil, false)
                }
                let isSanitize =
                    job.request.cdb.getInteger(at: job.request.cdb.readerIndex) == OperationCode.sanitize
                if isSanitize { queue.sanitizing[job.tag] = job.completion }
                // More tasks may start (an ORDERED task completed, or tasks came in while the workers were busy).
                return ((job, isSanitize), queue.wantsWorker(concurrency: concurrency))
            }
            if another { threadPool.submit { [self] _ in work() } }
            guard let (job, isSanitize) = next else { return }
            finished = job
            let result = device.execute(job.request)
            // A terminated SANITIZE task has completed already.
            if isSanitize, queue.withLock({ $0.sanitizing.removeValue(forKey: job.tag) }) == nil { continue }
            job.completion(.completed(result))
        }
    }

    public func terminate(_ tag: BackendTaskTag) {
        let (completion, startWorker) = queue.withLock {
            queue -> ((@Sendable (BackendCompletion) -> Void)?, Bool) in
            for (nexus, entry) in queue.nexuses {
                guard let index = entry.waiting.firstIndex(where: { $0.tag == tag }) else { continue }
                let job = queue.nexuses[nexus]!.waiting.remove(at: index)
                // The task removed may have held others back (an ORDERED task waiting for its turn).
                queue.settle(nexus)
                return (job.completion, queue.wantsWorker(concurrency: concurrency))
            }
            // A running SANITIZE: its task ends, the sanitize operation goes on (SBC-4 §4.11).
            return (queue.sanitizing.removeValue(forKey: tag), false)
        }
        if startWorker { threadPool.submit { [self] _ in work() } }
        completion?(.terminated)
    }

    public func pendingUnitAttention(for nexus: ITNexus) -> (senseKey: SenseKey, code: AdditionalSenseCode)? {
        device.unitAttentions.peek(for: nexus).map { (senseKey: .unitAttention, code: $0) }
    }

    public func apply(_ event: LogicalUnitEvent) {
        device.apply(event)
    }

    public func shutdown() {
        device.asymmetricAccess?.relinquish()
        try? store.synchronize()
        if ownsThreadPool { try? threadPool.syncShutdownGracefully() }
        store.release()
    }
}
