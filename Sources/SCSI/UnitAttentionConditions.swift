import Synchronization

/// Unit attention conditions of one logical unit, queued per I_T nexus (SAM-5 §5.14, SPC-4 §5.14).
public final class UnitAttentionConditions: Sendable {
    private let queues = Mutex<[ITNexus: [AdditionalSenseCode]]>([:])

    public init() {}

    /// Records an I_T nexus the logical unit has seen, so that conditions established for every
    /// I_T nexus reach it.
    public func noteNexus(_ nexus: ITNexus) {
        queues.withLock { if $0[nexus] == nil { $0[nexus] = [] } }
    }

    /// Establishes `code` for `nexus`.
    public func establish(_ code: AdditionalSenseCode, for nexus: ITNexus) {
        queues.withLock { $0[nexus, default: []].append(code) }
    }

    /// Establishes `code` for every known I_T nexus but `except`.
    public func establishForAllNexuses(_ code: AdditionalSenseCode, except: ITNexus?) {
        queues.withLock { queues in
            for nexus in queues.keys where nexus != except { queues[nexus, default: []].append(code) }
        }
    }

    /// Removes and returns the condition to report to `nexus`.
    public func take(for nexus: ITNexus) -> AdditionalSenseCode? {
        queues.withLock { $0[nexus]?.isEmpty == false ? $0[nexus]!.removeFirst() : nil }
    }

    /// The condition that ``take(for:)`` would return, left in place.
    public func peek(for nexus: ITNexus) -> AdditionalSenseCode? {
        queues.withLock { $0[nexus]?.first }
    }

    /// Establishes the conditions a task management event implies.
    public func apply(_ event: LogicalUnitEvent) {}
}
