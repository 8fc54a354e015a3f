public import NIOCore
public import NIOPosix
public import SCSI
import Synchronization

/// The emulated SBC disk behind the backend seam: an ``EmulatedBlockDevice`` over a
/// ``BlockStore``, run on a thread pool so that blocking I/O never touches an event loop.
///
/// Termination follows SAM-5's "cancel if not started, otherwise wait": a task still queued
/// for an I/O thread completes at once with ``BackendCompletion/terminated``; a task whose
/// I/O has started completes when that I/O returns.
public final class EmulatedBackend: LogicalUnitBackend {
    private enum Entry {
        case queued(@Sendable (BackendCompletion) -> Void)
        case running
    }

    public let device: EmulatedBlockDevice
    private let store: any BlockStore
    public let kind: String
    private let threadPool: NIOThreadPool
    private let entries = Mutex<[BackendTaskTag: Entry]>([:])

    public init(device: EmulatedBlockDevice, store: any BlockStore, kind: String, threadPool: NIOThreadPool) {
        self.store = store
        self.device = device
        self.kind = kind
        self.threadPool = threadPool
    }

    public var taskAbortedStatus: Bool { device.taskAbortedStatus }

    public func dataOutLength(for cdb: ByteBuffer) -> Int? {
        device.dataOutLength(for: cdb)
    }

    public func submit(
        _ request: SCSIRequest, tag: BackendTaskTag,
        completion: @escaping @Sendable (BackendCompletion) -> Void
    ) {
        entries.withLock { $0[tag] = .queued(completion) }
        threadPool.submit { [self] _ in
            let start = entries.withLock { entries -> Bool in
                guard case .queued = entries[tag] else { return false }
                entries[tag] = .running
                return true
            }
            guard start else { return }  // terminated while queued: already completed
            let result = device.execute(request)
            entries.withLock { _ = $0.removeValue(forKey: tag) }
            completion(.completed(result))
        }
    }

    public func terminate(_ tag: BackendTaskTag) {
        let dropped = entries.withLock { entries -> (@Sendable (BackendCompletion) -> Void)? in
            guard case .queued(let completion) = entries[tag] else { return nil }
            entries.removeValue(forKey: tag)
            return completion
        }
        dropped?(.terminated)
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
