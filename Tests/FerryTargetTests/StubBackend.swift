import FerryBackends
import FerrySync
import NIOCore
import SCSI

/// A logical unit that answers GOOD at once and counts its shutdowns, for tests of the LUN map and of retirement.
final class StubBackend: LogicalUnitBackend {
    let kind: String
    private let shutdowns = Locked(0)
    /// Called on the thread that shuts the backend down, after counting.
    private let onShutdown: (@Sendable () -> Void)?

    init(kind: String = "stub", onShutdown: (@Sendable () -> Void)? = nil) {
        self.kind = kind
        self.onShutdown = onShutdown
    }

    var shutdownCount: Int { shutdowns.withLock { $0 } }

    var taskAbortedStatus: Bool { false }

    func dataOutLength(for cdb: ByteBuffer) -> Int? { 0 }

    func submit(
        _ request: SCSIRequest, tag: BackendTaskTag, completion: @escaping @Sendable (BackendCompletion) -> Void
    ) {
        completion(.completed(.good))
    }

    func terminate(_ tag: BackendTaskTag) {}

    func pendingUnitAttention(for nexus: ITNexus) -> (senseKey: SenseKey, code: AdditionalSenseCode)? { nil }

    func apply(_ event: LogicalUnitEvent) {}

    func shutdown() {
        shutdowns.withLock { $0 += 1 }
        onShutdown?()
    }
}
