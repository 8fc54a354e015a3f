public import NIOCore
public import SCSI

/// The seam between the target engine and a device: the emulated SBC disk, and SG_IO passthrough
/// (FerryPassthrough). A backend is shared by every session that can reach the logical unit, so it is
/// thread safe, and it never blocks the caller: work runs on the backend's own threads, and the
/// completion is called from there (the engine hops back onto its event loop).
public protocol LogicalUnitBackend: AnyObject, Sendable {
    /// A short name for logs and ferryctl: "file", "block", "sg".
    var kind: String { get }

    /// The number of bytes the command asks the initiator for, decoded from the CDB; nil when
    /// the backend cannot tell, in which case the transport takes the Expected Data Transfer
    /// Length. The transport sizes R2Ts and residuals with it.
    func dataOutLength(for cdb: ByteBuffer) -> Int?

    /// Whether TAS (control mode page) is set: a task aborted by another I_T nexus then ends
    /// with TASK ABORTED status instead of no status.
    var taskAbortedStatus: Bool { get }

    /// Hands a command to the device server.
    func submit(
        _ request: SCSIRequest, tag: BackendTaskTag,
        completion: @escaping @Sendable (BackendCompletion) -> Void)

    /// Asks the backend to terminate a task it holds. A task that has not started is dropped
    /// and completes with ``BackendCompletion/terminated``; one that the device is running is
    /// completed when the device lets go of it (emulated: when the I/O returns; sg: possibly
    /// after a device reset). Either way the completion arrives exactly once.
    func terminate(_ tag: BackendTaskTag)

    /// The unit attention condition that the next command from `nexus` would report, for
    /// QUERY ASYNCHRONOUS EVENT (RFC 7144 §4.5); it stays pending.
    func pendingUnitAttention(for nexus: ITNexus) -> (senseKey: SenseKey, code: AdditionalSenseCode)?

    /// Applies the logical-unit side effects of a task management function.
    func apply(_ event: LogicalUnitEvent)

    /// The logical unit's unit attention conditions, where conditions of the whole target (such as
    /// REPORTED LUNS DATA HAS CHANGED) are queued; nil for a logical unit that reports none.
    var unitAttentionConditions: UnitAttentionConditions? { get }

    /// The logical unit as a copy target of EXTENDED COPY, which its target node lists in its
    /// ``CopyTargetDirectory`` while the logical unit is in its LUN map; nil for a logical unit
    /// that EXTENDED COPY cannot name (a passthrough device).
    var copyEndpoint: CopyEndpoint? { get }

    /// Flushes and releases the device. Called once when the logical unit is removed.
    func shutdown()

    /// The largest Data-In or Data-Out buffer, in bytes, that one command may move; nil when
    /// the backend has no limit of its own. A passthrough device's limit is its request queue's
    /// max_hw_sectors_kb: the transport keeps MaxBurstLength and FirstBurstLength within it.
    var maximumTransferLength: Int? { get }

    /// The real SCSI target behind the logical unit ("host:channel:target"), so that a target reset
    /// reaches each real target once; nil when there is none (an emulated disk).
    var deviceTarget: String? { get }

    /// Carries a reset function to the device itself, after the engine has terminated the affected
    /// tasks: a passthrough backend holds new commands, resets the device (SG_SCSI_RESET with
    /// NO_ESCALATE), absorbs the device's own unit attention and resumes. `completion` is called
    /// once, from any thread, when the device may be used again; the engine holds the function's
    /// response until then. An emulated backend has nothing to reset and completes at once.
    /// - Parameter siblings: for ``DeviceReset/target``, the other logical units on the same real
    ///   target, held and cleared of the device's unit attention with this one.
    func resetDevice(
        _ reset: DeviceReset, siblings: [any LogicalUnitBackend], completion: @escaping @Sendable () -> Void)
}

/// What a reset function asks of the device behind a logical unit.
public enum DeviceReset: Sendable, Hashable, CustomStringConvertible {
    /// LOGICAL UNIT RESET: the device (SG_SCSI_RESET_DEVICE).
    case logicalUnit
    /// TARGET WARM/COLD RESET: the device's SCSI target (SG_SCSI_RESET_TARGET).
    case target

    public var description: String {
        switch self {
        case .logicalUnit: "logical unit"
        case .target: "target"
        }
    }
}

extension LogicalUnitBackend {
    public var maximumTransferLength: Int? { nil }

    public var deviceTarget: String? { nil }

    public var unitAttentionConditions: UnitAttentionConditions? { nil }

    public var copyEndpoint: CopyEndpoint? { nil }

    public func resetDevice(
        _ reset: DeviceReset, siblings: [any LogicalUnitBackend], completion: @escaping @Sendable () -> Void
    ) {
        completion()
    }
}
