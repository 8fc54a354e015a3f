import FerryBackends
import FerryConfig
import FerrySync
import ISCSIProtocol
import NIOCore
import SCSI
import Synchronization

/// One iSCSI target node as the engine serves it: its name, its LUN map and its ACL. A reload
/// changes the LUN map and the ACL in place, so that the node's sessions carry on.
final class TargetNode: Sendable {
    /// The LUN map as one immutable value, what commands are routed by. Every change replaces it whole, with the
    /// next generation, so a map once read stays consistent without the lock.
    struct LUNMap: Sendable {
        /// Counts the changes of the node's map: equal generations are the same map.
        let generation: UInt64
        let logicalUnits: [UInt64: any LogicalUnitBackend]

        /// The backend of a LUN field (SAM-5 addressing, see ``TargetNode/normalize(_:)``); nil when it is not mapped.
        func backend(lun: UInt64) -> (any LogicalUnitBackend)? {
            logicalUnits[TargetNode.normalize(lun)]
        }
    }

    private struct State {
        var configuration: Target
        var map: LUNMap
        /// The disk of each online passthrough LUN as it was opened, for hot-plug.
        var devices: [UInt64: HotPlugDevice] = [:]

        init(configuration: Target, logicalUnits: [UInt64: any LogicalUnitBackend], previous: State? = nil) {
            self.configuration = configuration
            self.map = LUNMap(generation: previous.map { $0.map.generation &+ 1 } ?? 0, logicalUnits: logicalUnits)
            for (lun, backend) in logicalUnits {
                if let previous, previous.map.logicalUnits[lun] === backend {
                    devices[lun] = previous.devices[lun]
                } else {
                    devices[lun] = HotPlugDevice(backend)
                }
            }
        }
    }

    let name: String
    let portalGroupTag: UInt16
    private let state: Locked<State>
    /// The generation of ``State/map``, stored under the lock with it and readable without it: a session whose map
    /// is of this generation has the current one (``refresh(_:)``).
    private let generation = Atomic<UInt64>(0)
    /// The copy targets EXTENDED COPY may name from a session of this node: the logical units of its LUN map, and
    /// no other. Kept equal to the map, so that a LUN removed by a reload or `ferryctl` is no longer reachable.
    let copyTargets: CopyTargetDirectory
    /// REPORTED LUNS DATA HAS CHANGED, established on every logical unit when the LUN map changes.
    let reportedLUNsDataChanged = TargetUnitAttention(.reportedLUNsDataHasChanged)

    init(
        configuration: Target, portalGroupTag: UInt16, logicalUnits: [UInt64: any LogicalUnitBackend],
        copyTargets: CopyTargetDirectory = CopyTargetDirectory()
    ) {
        self.name = configuration.name
        self.portalGroupTag = portalGroupTag
        self.state = Locked(State(configuration: configuration, logicalUnits: logicalUnits))
        self.copyTargets = copyTargets
        copyTargets.replaceAll(with: logicalUnits.values.compactMap(\.copyEndpoint))
    }

    var configuration: Target { state.withLock { $0.configuration } }

    var alias: String? { configuration.alias }

    /// The LUN map now: one lock acquisition.
    var lunMap: LUNMap { state.withLock { $0.map } }

    /// Brings `map` up to date: an atomic load when it is current, which is nearly always, and one lock acquisition
    /// when the map changed since `map` was read. What a session calls for each command, on its own copy.
    func refresh(_ map: inout LUNMap) {
        guard generation.load(ordering: .acquiring) != map.generation else { return }
        map = lunMap
    }

    func backend(lun: UInt64) -> (any LogicalUnitBackend)? {
        lunMap.backend(lun: lun)
    }

    var allBackends: [any LogicalUnitBackend] { Array(lunMap.logicalUnits.values) }

    var lunNumbers: [UInt64] { lunMap.logicalUnits.keys.sorted() }

    /// Serves `configuration` from now on, with `logicalUnits` as the LUN map.
    func update(configuration: Target, logicalUnits: [UInt64: any LogicalUnitBackend]) {
        state.withLock { state in
            state = State(configuration: configuration, logicalUnits: logicalUnits, previous: state)
            generation.store(state.map.generation, ordering: .releasing)
            copyTargets.replaceAll(with: logicalUnits.values.compactMap(\.copyEndpoint))
        }
    }

    /// The disk LUN `lun` was opened on, if it is an online passthrough LUN.
    func device(lun: UInt64) -> HotPlugDevice? {
        state.withLock { $0.devices[lun] }
    }

    /// Serves LUN `lun` with `replacement` instead of `expected` (hot-plug); false, changing
    /// nothing, when the map no longer holds `expected` there.
    func replace(lun: UInt64, expected: any LogicalUnitBackend, with replacement: any LogicalUnitBackend) -> Bool {
        state.withLock { state in
            guard state.map.logicalUnits[lun] === expected else { return false }
            var logicalUnits = state.map.logicalUnits
            logicalUnits[lun] = replacement
            state.map = LUNMap(generation: state.map.generation &+ 1, logicalUnits: logicalUnits)
            generation.store(state.map.generation, ordering: .releasing)
            state.devices[lun] = HotPlugDevice(replacement)
            copyTargets.replaceAll(with: logicalUnits.values.compactMap(\.copyEndpoint))
            return true
        }
    }

    /// The LUN map, for a reload to build the next one from.
    var logicalUnits: [UInt64: any LogicalUnitBackend] { lunMap.logicalUnits }

    /// Whether `initiatorName` may log in to this target and see it in SendTargets.
    func admits(initiatorName: String) -> Bool {
        Self.admits(initiatorName: initiatorName, allowedInitiators: configuration.allowedInitiators)
    }

    static func admits(initiatorName: String, allowedInitiators: [String]) -> Bool {
        allowedInitiators.isEmpty
            || allowedInitiators.contains { $0.caseInsensitiveCompare(initiatorName) == .orderedSame }
    }

    /// Commands the target answers for every LUN itself: REPORT LUNS (its LUN map is not a
    /// device's).
    static func answersItself(_ cdb: ByteBuffer) -> Bool {
        cdb.getInteger(at: cdb.readerIndex, as: UInt8.self) == 0xa0
    }

    /// Answers REPORT LUNS, and any command to a LUN that is not mapped (SPC-4 §4.6.4).
    func answer(_ request: SCSIRequest) -> SCSIResult {
        switch request.cdb.getInteger(at: request.cdb.readerIndex, as: UInt8.self) {
        case 0xa0?:
            // > the REPORTED LUNS DATA HAS CHANGED unit attention condition is cleared by REPORT LUNS.
            reportedLUNsDataChanged.clear(for: request.nexus)
            return ReportLUNs.response(luns: lunNumbers, cdb: request.cdb)
        case 0x12?:
            return Inquiry.logicalUnitNotPresent(cdb: request.cdb)
        case 0x03?:
            // REQUEST SENSE to an unmapped LUN: LOGICAL UNIT NOT SUPPORTED as sense data.
            var data = ByteBuffer()
            data.writeBytes(SenseData.logicalUnitNotSupported.bytes())
            return SCSIResult(status: .good, dataIn: data)
        default:
            return .checkCondition(.logicalUnitNotSupported)
        }
    }

    /// LUN field to LUN number: SAM-5 single-level peripheral (00b) and flat (01b) addressing.
    static func normalize(_ lun: UInt64) -> UInt64 {
        let first = UInt16(truncatingIfNeeded: lun >> 48)
        switch first >> 14 {
        case 0: return UInt64(first & 0xff)
        case 1: return UInt64(first & 0x3fff)
        default: return UInt64.max
        }
    }
}
