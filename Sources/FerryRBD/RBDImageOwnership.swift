import Dispatch
public import FerryBackends
import FerrySync
public import Logging
public import SCSI

#if canImport(Glibc)
import Glibc
#endif

/// Which gateway serves an RBD image's media access (implicit ALUA, docs/ceph.md), and the failover between them.
///
/// The gateway holding the image's exclusive lock is active/optimized, every other standby. The lock is taken when the
/// logical unit opens, by whichever gateway comes first, and kept (`rbd_lock_acquire`): a standby gateway's writes
/// would fail with -EROFS rather than move it, so no initiator can make it bounce.
///
/// The owner writes a heartbeat every second into a RADOS object beside the image (`ferry.alua.<image id>`): its
/// target port groups and a count. Every standby gateway reads it every second, for REPORT TARGET PORT GROUPS (so that
/// every gateway reports the same states) and to see the owner live. When the count has not moved for
/// `takeoverAfter`, the standby breaks the lock, which blocklists the owner's RADOS client (fencing: nothing that
/// client sends is applied any more), takes the lock and becomes active/optimized. A fenced gateway finds out from its
/// next heartbeat (ESHUTDOWN), becomes standby, and makes a new RADOS client; it never takes the image back by itself
/// (no automatic failback). Every change of state a gateway sees raises ASYMMETRIC ACCESS STATE CHANGED (2A/06) on its
/// sessions.
public final class RBDImageOwnership: AsymmetricAccess {
    /// How often the owner writes its heartbeat and the standby gateways read it.
    public static let heartbeatInterval = Duration.seconds(1)

    private struct State {
        var owns: Bool
        /// The owner's target port groups, as last seen.
        var owners: [UInt16] = []
        /// The owner's heartbeat count as last seen, and when it last moved (standby).
        var beat: UInt64?
        var beatMoved = ContinuousClock.now
        /// The owner's own count.
        var beats: UInt64 = 0
        /// The old client was fenced and no new one could be made yet.
        var needsClient = false
        /// The heartbeat fails (for another reason than fencing): said once, and again when it works.
        var failing = false
        var unitAttentions: UnitAttentionConditions?
    }

    private let store: RBDBlockStore
    /// This gateway's target port groups (its portals' portal group tags).
    public let localGroups: [UInt16]
    /// Every gateway's target port group, this one's included.
    public let allGroups: [UInt16]
    /// How long the owner's heartbeat may stand still before a standby gateway takes the image over.
    public let takeoverAfter: Duration
    public let implicitTransitionSeconds: UInt8
    private let heartbeatObject: String
    private let logger: Logger
    private let state: Locked<State>
    private let queue: DispatchQueue
    /// Set up in init; cancelled in relinquish (a dispatch source may be cancelled from any thread).
    nonisolated(unsafe) private let timer: any DispatchSourceTimer

    /// Takes the image's exclusive lock if no other gateway holds it, and starts the heartbeat (as the owner) or
    /// following the owner's (as a standby).
    public init(
        store: RBDBlockStore, localGroups: [UInt16], allGroups: [UInt16], takeoverAfter: Duration, logger: Logger
    ) throws(BlockStoreError) {
        self.store = store
        self.localGroups = localGroups
        self.allGroups = allGroups
        self.takeoverAfter = takeoverAfter
        implicitTransitionSeconds = UInt8(clamping: takeoverAfter.components.seconds + 5)
        heartbeatObject = "ferry.alua.\(store.imageID)"
        self.logger = logger
        let owns = try store.acquireExclusiveLock()
        state = Locked(State(owns: owns, owners: owns ? localGroups : []))
        queue = DispatchQueue(label: "ferry-alua-\(store.imageID)")
        timer = DispatchSource.makeTimerSource(queue: queue)
        if owns {
            try beat()
        } else {
            try? follow()
        }
        let interval = Self.heartbeatInterval.components
        timer.schedule(
            deadline: .now(),
            repeating: .milliseconds(Int(interval.seconds) * 1_000 + Int(interval.attoseconds / 1_000_000_000_000_000)))
        timer.setEventHandler { [weak self] in self?.tick() }
        timer.resume()
    }

    /// Whether this gateway holds the image.
    public var ownsImage: Bool { state.withLock { $0.owns } }

    public var localState: AsymmetricAccessState { ownsImage ? .activeOptimized : .standby }

    public func targetPortGroups() -> [TargetPortGroup] {
        let owners = state.withLock { $0.owners }
        return allGroups.map { group in
            TargetPortGroup(
                identifier: group, state: owners.contains(group) ? .activeOptimized : .standby,
                relativeTargetPorts: [group])
        }
    }

    public func reportChanges(to unitAttentions: UnitAttentionConditions) {
        state.withLock { $0.unitAttentions = unitAttentions }
    }

    deinit {
        timer.cancel()
    }

    public func relinquish() {
        timer.cancel()
        // The event handler may be running: wait for it, so that nothing uses the store after this returns.
        queue.sync {}
    }

    // MARK: - On the queue, every heartbeatInterval

    private func tick() {
        let (owns, needsClient) = state.withLock { ($0.owns, $0.needsClient) }
        do throws(BlockStoreError) {
            if needsClient {
                try reconnect(readOnly: true)
            } else if owns {
                try beat()
            } else {
                try follow()
            }
            if state.withLock({ state in defer { state.failing = false }; return state.failing }) {
                logger.info("RBD gateway heartbeat works again", metadata: ["image": "\(store.imageSpec)"])
            }
        } catch where error.errno == ESHUTDOWN {
            // Blocklisted: another gateway broke the lock.
            fenced()
        } catch {
            if !state.withLock({ state in defer { state.failing = true }; return state.failing }) {
                logger.warning(
                    "RBD gateway heartbeat fails; retrying every second",
                    metadata: ["image": "\(store.imageSpec)", "error": "\(error)"])
            }
        }
    }

    /// The heartbeat record: `<count> <groups, comma-separated>`.
    private func beat() throws(BlockStoreError) {
        let count = state.withLock { state in
            state.beats &+= 1
            return state.beats
        }
        let record = "\(count) \(localGroups.map(String.init).joined(separator: ","))"
        try store.writeObject(heartbeatObject, Array(record.utf8))
    }

    /// The owner's heartbeat record as it is now: its count and target port groups (nil and none without one).
    private func readHeartbeat() throws(BlockStoreError) -> (count: UInt64?, owners: [UInt16]) {
        let record = try store.readObject(heartbeatObject).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let fields = record.split(separator: " ")
        let owners = fields.count > 1 ? fields[1].split(separator: ",").compactMap { UInt16($0) } : []
        return (fields.first.flatMap { UInt64($0) }, owners)
    }

    private func follow() throws(BlockStoreError) {
        let (count, owners) = try readHeartbeat()
        let now = ContinuousClock.now
        let (ownerChanged, silentFor) = state.withLock { state -> (Bool, Duration) in
            // From no known owner (at start, or just fenced, which reported the change already) it is no change.
            let changed = !state.owners.isEmpty && state.owners != owners
            state.owners = owners
            if state.beat != count {
                state.beat = count
                state.beatMoved = now
            }
            return (changed, now - state.beatMoved)
        }
        if ownerChanged {
            logger.info(
                "RBD image owner is now target port group(s) \(owners)", metadata: ["image": "\(store.imageSpec)"])
            raiseStateChanged()
        }
        if silentFor >= takeoverAfter + takeoverStagger(owners: owners) { try takeOver(silentFor: silentFor) }
    }

    /// With several standby gateways, each waits two heartbeats longer than the one before it (in the order of their
    /// target port groups), so that the first takes the image over and the others see its heartbeat instead of
    /// fencing it in turn.
    private func takeoverStagger(owners: [UInt16]) -> Duration {
        let standbys = allGroups.filter { !owners.contains($0) }.sorted()
        let rank = localGroups.compactMap { standbys.firstIndex(of: $0) }.min() ?? 0
        return Self.heartbeatInterval * (2 * rank)
    }

    private func takeOver(silentFor: Duration) throws(BlockStoreError) {
        // The owner's heartbeat once more, right before fencing it: another standby may have taken over meanwhile.
        let (count, _) = try readHeartbeat()
        guard state.withLock({ $0.beat == count }) else { return }
        let previous = state.withLock { $0.owners }
        logger.warning(
            "RBD image owner silent: breaking its lock (which fences it) and taking the image over",
            metadata: ["image": "\(store.imageSpec)", "owner": "\(previous)", "silent": "\(silentFor)"])
        // A gateway that was fenced follows with a read-only client: the owner needs a writable one.
        if store.isReadOnly { try reconnect(readOnly: false, thenFollow: false) }
        try store.breakExclusiveLockAndAcquire()
        state.withLock { state in
            state.owns = true
            state.owners = localGroups
            state.beats = state.beat ?? 0
        }
        try beat()
        logger.notice(
            "RBD image taken over: this gateway is active/optimized", metadata: ["image": "\(store.imageSpec)"])
        raiseStateChanged()
    }

    private func fenced() {
        state.withLock { state in
            state.owns = false
            state.owners = []
            state.needsClient = true
            state.beat = nil
            state.beatMoved = .now
        }
        logger.error(
            "RBD gateway fenced: another gateway took the image over; this one is standby, with a new client",
            metadata: ["image": "\(store.imageSpec)"])
        raiseStateChanged()
        try? reconnect(readOnly: true)
    }

    private func reconnect(readOnly: Bool, thenFollow: Bool = true) throws(BlockStoreError) {
        do throws(RBDBlockStore.OpenError) {
            try store.reconnect(readOnly: readOnly)
        } catch {
            throw BlockStoreError(operation: "reconnecting to the cluster", errno: error.errno)
        }
        state.withLock { $0.needsClient = false }
        if thenFollow { try follow() }
    }

    private func raiseStateChanged() {
        state.withLock { $0.unitAttentions }?.establishForAllNexuses(.asymmetricAccessStateChanged, except: nil)
    }
}
