import FerrySync
import Synchronization

/// The unit attention conditions of one logical unit, queued per I_T nexus (SAM-5 §5.14, SPC-4 §5.14).
///
/// > If a device server is able to queue unit attention conditions, then it shall queue them for
/// > each I_T nexus […] the device server shall not queue more than one unit attention condition
/// > with the same additional sense code.
///
/// Power on, reset and I_T nexus loss conditions (29/xx) have the highest priority: one of them goes
/// to the head of the queue, supersedes a pending 29/xx of lower priority and clears every queued
/// condition of lower priority, as a reset makes those reports moot. A nexus the logical unit has
/// just met starts without a condition: iSCSI login is not a power on, and libiscsi's test tool
/// expects the first command of a new session to succeed.
///
/// The state is bounded, however many initiator names and ISIDs come and go (each is an I_T nexus):
/// at most ``nexusLimit`` I_T nexuses, and ``queueLimit`` conditions for each.
/// - Beyond ``nexusLimit`` I_T nexuses, the one whose session ended longest ago (I_T nexus loss) is
///   forgotten, with its conditions; else, if none has ended, the one met longest ago. A forgotten
///   nexus that comes back is met anew and starts without a condition. LIO and SCST do the same
///   sooner: LIO frees a dynamically generated node ACL, with the unit attentions of its LUNs, when
///   its session ends, and SCST frees a session's per-LU state (tgt_dev, and its UA list) with the
///   session. Ferry keeps them (I_T NEXUS LOSS OCCURRED, and what else was established while the
///   initiator was away) for as long as there is room: the limit is well above the number of
///   I_T nexuses that can be logged in at once, so that in practice only ended sessions are forgotten.
/// - A queue that is full takes 29/00 POWER ON, RESET, OR BUS DEVICE RESET OCCURRED in place of what
///   it held (it outranks every other condition): the broadest condition there is, which tells the
///   initiator that anything may have changed, so that no event is hidden from a live nexus.
public final class UnitAttentionConditions: Sendable {
    /// The most conditions queued for one I_T nexus; one more collapses the queue into 29/00.
    static let queueLimit = 16
    /// The most I_T nexuses tracked by default, at least: four times the default `max_sessions`,
    /// which bounds the I_T nexuses that can be logged in at once, so that the conditions of ended
    /// sessions are kept for three times as many more. A few hundred bytes each with their port names.
    public static let defaultNexusLimit = 1024

    /// The most I_T nexuses whose conditions are kept.
    public let nexusLimit: Int

    /// The queues and the I_T nexuses most recently noted, compared before the dictionary is hashed.
    private struct State {
        var queues: [ITNexus: [AdditionalSenseCode]] = [:]
        var recentNexuses: [ITNexus] = []
        /// Conditions of the whole target queued here (``TargetUnitAttention``), by their code.
        var targetConditions: [AdditionalSenseCode: TargetUnitAttention] = [:]
        /// I_T nexuses whose session ended (I_T nexus loss) and that have not come back.
        var lost: Set<ITNexus> = []
        /// ``lost`` in the order of their loss, oldest first from ``lossHead``; stale entries are skipped.
        var lossOrder: [ITNexus] = []
        var lossHead = 0
        /// The I_T nexuses in the order they were first tracked, oldest first from ``trackHead``; stale entries
        /// are skipped.
        var trackOrder: [ITNexus] = []
        var trackHead = 0

        /// Makes sure `nexus` has a queue, forgetting another I_T nexus if the limit is reached.
        mutating func track(_ nexus: ITNexus, limit: Int) {
            guard queues[nexus] == nil else { return }
            while queues.count >= limit, let victim = nextVictim() {
                queues.removeValue(forKey: victim)
                lost.remove(victim)
                recentNexuses.removeAll { $0 == victim }
            }
            queues[nexus] = []
            trackOrder.append(nexus)
            if trackOrder.count > 2 * limit {
                let tracked = queues
                Self.compact(&trackOrder, from: &trackHead) { tracked[$0] != nil }
            }
        }

        /// Drops from `order` the entries before `head`, those `keep` rejects and repeated ones (the first stays).
        private static func compact(_ order: inout [ITNexus], from head: inout Int, keep: (ITNexus) -> Bool) {
            var seen = Set<ITNexus>()
            order = order[head...].filter { keep($0) && seen.insert($0).inserted }
            head = 0
        }

        /// The I_T nexus to forget: the one lost longest ago, else the one tracked longest ago.
        private mutating func nextVictim() -> ITNexus? {
            while lossHead < lossOrder.count {
                let nexus = lossOrder[lossHead]
                lossHead += 1
                if lost.contains(nexus) { return nexus }
            }
            while trackHead < trackOrder.count {
                let nexus = trackOrder[trackHead]
                trackHead += 1
                if queues[nexus] != nil { return nexus }
            }
            return queues.keys.first
        }

        /// Records that the session of `nexus` ended: it is the first to be forgotten when room is needed.
        mutating func lose(_ nexus: ITNexus, limit: Int) {
            guard queues[nexus] != nil, lost.insert(nexus).inserted else { return }
            recentNexuses.removeAll { $0 == nexus }
            lossOrder.append(nexus)
            if lossOrder.count > 2 * limit {
                let lost = self.lost
                Self.compact(&lossOrder, from: &lossHead) { lost.contains($0) }
            }
        }

        /// Records that `nexus` sends commands again.
        mutating func returned(_ nexus: ITNexus) {
            lost.remove(nexus)
        }
    }

    /// How many recently noted I_T nexuses ``noteNexus(_:)`` compares before it hashes one.
    static let recentNexusLimit = 8

    private let state = Locked(State())
    /// One bit per class of I_T nexus (``pendingBit(_:)``) with a condition queued, written under the lock
    /// and read without it, so that a command of a nexus without a condition neither locks nor hashes the
    /// nexus, even while the I_T nexus loss conditions of ended sessions stay queued for their return.
    private let pending = Atomic<UInt64>(0)

    /// - Parameter nexusLimit: the most I_T nexuses whose conditions are kept (at least 1).
    public init(nexusLimit: Int = UnitAttentionConditions.defaultNexusLimit) {
        self.nexusLimit = max(1, nexusLimit)
    }

    /// The number of I_T nexuses whose conditions are kept now.
    public var trackedNexusCount: Int {
        state.withLock { $0.queues.count }
    }

    /// Records an I_T nexus the logical unit has seen, so that conditions established for every
    /// I_T nexus reach it.
    public func noteNexus(_ nexus: ITNexus) {
        state.withLock { state in
            // A session passes the same port name strings with every command, so == is a comparison of
            // their storage; hashing both names is left to the first commands of a nexus.
            if state.recentNexuses.contains(nexus) { return }
            state.track(nexus, limit: nexusLimit)
            state.returned(nexus)
            if state.recentNexuses.count == Self.recentNexusLimit { state.recentNexuses.removeFirst() }
            state.recentNexuses.append(nexus)
        }
    }

    /// Establishes `code` for `nexus`.
    public func establish(_ code: AdditionalSenseCode, for nexus: ITNexus) {
        state.withLock { state in
            state.track(nexus, limit: nexusLimit)
            Self.enqueue(code, into: &state.queues[nexus]!)
            markPending(nexus)
        }
    }

    /// Establishes `code` for every I_T nexus the logical unit knows but `except`.
    public func establishForAllNexuses(_ code: AdditionalSenseCode, except: ITNexus?) {
        state.withLock { state in
            for nexus in state.queues.keys where nexus != except {
                Self.enqueue(code, into: &state.queues[nexus]!)
            }
            publishPending(state.queues)
        }
    }

    /// Queues `condition` for `nexuses` (``TargetUnitAttention/establish(for:on:)``).
    func queue(_ condition: TargetUnitAttention, for nexuses: Set<ITNexus>) {
        state.withLock { state in
            state.targetConditions[condition.code] = condition
            for nexus in nexuses {
                state.track(nexus, limit: nexusLimit)
                Self.enqueue(condition.code, into: &state.queues[nexus]!)
                markPending(nexus)
            }
        }
    }

    /// Removes and returns the condition to report to `nexus` next, if any.
    public func take(for nexus: ITNexus) -> AdditionalSenseCode? {
        guard pending.load(ordering: .acquiring) & Self.pendingBit(nexus) != 0 else { return nil }
        return state.withLock { state in
            guard state.queues[nexus]?.isEmpty == false else { return nil }
            defer { publishPending(state.queues) }
            while let code = state.queues[nexus]?.first {
                state.queues[nexus]!.removeFirst()
                // A condition of the target that another logical unit reported, or REPORT LUNS cleared, is gone.
                if let condition = state.targetConditions[code], !condition.clear(for: nexus) { continue }
                return code
            }
            return nil
        }
    }

    /// The condition that ``take(for:)`` would return, left pending.
    public func peek(for nexus: ITNexus) -> AdditionalSenseCode? {
        guard pending.load(ordering: .acquiring) & Self.pendingBit(nexus) != 0 else { return nil }
        return state.withLock { state in
            while let code = state.queues[nexus]?.first {
                guard let condition = state.targetConditions[code], !condition.isPending(for: nexus) else {
                    return code
                }
                state.queues[nexus]!.removeFirst()
                publishPending(state.queues)
            }
            return nil
        }
    }

    /// The bit of ``pending`` for `nexus`: from the length and last bytes of the initiator port name, which
    /// end in the ISID, rather than a hash of both port names.
    private static func pendingBit(_ nexus: ITNexus) -> UInt64 {
        let name = nexus.initiatorPortName.utf8
        var key = UInt64(name.count) &+ UInt64(nexus.relativeTargetPortIdentifier)
        for byte in name.suffix(8) { key = key &* 31 &+ UInt64(byte) }
        return 1 << (key % 64)
    }

    /// Sets the bit of `nexus` in ``pending`` once a condition is queued for it; called under the lock. A bit
    /// left set for a nexus with nothing queued only costs its next command the lock.
    private func markPending(_ nexus: ITNexus) {
        pending.bitwiseOr(Self.pendingBit(nexus), ordering: .releasing)
    }

    /// Stores in ``pending`` the bits of the I_T nexuses with a condition queued; called under the lock.
    private func publishPending(_ queues: [ITNexus: [AdditionalSenseCode]]) {
        var bits: UInt64 = 0
        for (nexus, queue) in queues where !queue.isEmpty { bits |= Self.pendingBit(nexus) }
        pending.store(bits, ordering: .releasing)
    }

    /// Establishes the conditions a task management event implies (SAM-5 §6.3, §6.6):
    /// 29/03 to every I_T nexus for a logical unit reset, 29/02 (warm) or 29/01 (cold) for a target
    /// reset, 29/07 to a lost I_T nexus, and 2F/00 to the I_T nexuses whose tasks another I_T nexus
    /// cleared. The caller decides the last one: with TAS set in the control mode page the aborted
    /// tasks end with TASK ABORTED instead, and the event is not to be applied here.
    public func apply(_ event: LogicalUnitEvent) {
        switch event {
        case .logicalUnitReset:
            establishForAllNexuses(.busDeviceResetFunctionOccurred, except: nil)
        case .targetReset(let cold):
            establishForAllNexuses(cold ? .powerOnOccurred : .scsiBusResetOccurred, except: nil)
        case .itNexusLoss(let nexus):
            establish(.itNexusLossOccurred, for: nexus)
            state.withLock { $0.lose(nexus, limit: nexusLimit) }
            for condition in state.withLock({ Array($0.targetConditions.values) }) { condition.clear(for: nexus) }
        case .tasksClearedByAnotherInitiator(_, let otherNexuses):
            for nexus in otherNexuses { establish(.commandsClearedByAnotherInitiator, for: nexus) }
        }
    }

    /// The rank of a power on or reset condition (0 highest), nil for every other condition.
    private static func resetRank(_ code: AdditionalSenseCode) -> Int? {
        guard code.asc == 0x29 else { return nil }
        switch code.ascq {
        case 0x01: return 0  // POWER ON OCCURRED
        case 0x00: return 1  // POWER ON, RESET, OR BUS DEVICE RESET OCCURRED
        case 0x02: return 2  // SCSI BUS RESET OCCURRED (target warm reset)
        case 0x03: return 3  // BUS DEVICE RESET FUNCTION OCCURRED (logical unit reset)
        case 0x04: return 4  // DEVICE INTERNAL RESET
        case 0x07: return 5  // I_T NEXUS LOSS OCCURRED
        default: return 6
        }
    }

    private static func enqueue(_ code: AdditionalSenseCode, into queue: inout [AdditionalSenseCode]) {
        guard !queue.contains(code) else { return }
        guard let rank = resetRank(code) else {
            if queue.count < queueLimit {
                queue.append(code)
            } else {
                // No room: 29/00 stands for what is queued and for this condition.
                enqueue(.powerOnResetOrBusDeviceResetOccurred, into: &queue)
            }
            return
        }
        if let pending = queue.first, let pendingRank = resetRank(pending), pendingRank <= rank {
            // A reset of the same or higher priority is already pending; it covers this one.
            return
        }
        queue.removeAll()
        queue.append(code)
    }
}

/// A unit attention condition of the SCSI target device rather than of one logical unit: REPORTED LUNS DATA HAS
/// CHANGED (SAM-5 §5.14, SPC-4 §5.14). Every logical unit of the target queues it for the I_T nexuses concerned, and
/// the first one to report it to an I_T nexus clears it on all of them, as REPORT LUNS does:
///
/// > A logical unit I_T nexus clear (LUICLR) bit set to one indicates the SCSI target device clears any unit
/// > attention condition with an additional sense code of REPORTED LUNS DATA HAS CHANGED in each logical unit
/// > accessible to an I_T nexus after reporting the unit attention condition for any logical unit over that I_T
/// > nexus (SPC-4, Extended INQUIRY Data VPD page)
public final class TargetUnitAttention: Sendable {
    public let code: AdditionalSenseCode
    /// The I_T nexuses the condition is established for and not yet reported to.
    private let outstanding = Locked(Set<ITNexus>())

    public init(_ code: AdditionalSenseCode) {
        self.code = code
    }

    /// Establishes the condition for `nexuses` on every one of `logicalUnits`.
    public func establish(for nexuses: Set<ITNexus>, on logicalUnits: [UnitAttentionConditions]) {
        guard !nexuses.isEmpty else { return }
        outstanding.withLock { $0.formUnion(nexuses) }
        for unit in logicalUnits { unit.queue(self, for: nexuses) }
    }

    /// Clears the condition for `nexus` on every logical unit; whether it was established.
    @discardableResult
    public func clear(for nexus: ITNexus) -> Bool {
        outstanding.withLock { $0.remove(nexus) != nil }
    }

    /// Whether the condition is established for `nexus` and not yet reported.
    public func isPending(for nexus: ITNexus) -> Bool {
        outstanding.withLock { $0.contains(nexus) }
    }
}
