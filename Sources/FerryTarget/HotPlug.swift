import FerryBackends
import FerryConfig
import FerryPassthrough
import Foundation
import Logging
import NIOCore
import SCSI

/// The disk behind a passthrough logical unit, as it was when the logical unit was opened: what
/// hot-plug compares a returning disk with, and how it tells that the disk is still there.
struct HotPlugDevice: Sendable {
    /// The SCSI device's `wwid` in sysfs (`naa.5000c500…`, `t10.…`), from VPD page 83h; nil when
    /// the kernel reports none.
    var worldWideName: String?
    /// `sgN`, if the device has an sg node.
    var genericName: String?
    /// `sdX`, if sd is bound to it.
    var blockDeviceName: String?
    var identity: DeviceIdentity
    var topology: SysfsTopology

    init(
        worldWideName: String?, genericName: String?, blockDeviceName: String?, identity: DeviceIdentity,
        topology: SysfsTopology
    ) {
        self.worldWideName = worldWideName
        self.genericName = genericName
        self.blockDeviceName = blockDeviceName
        self.identity = identity
        self.topology = topology
    }

    /// The record of `backend`, or nil when it is not a passthrough logical unit.
    init?(_ backend: any LogicalUnitBackend) {
        guard let passthrough = HotPlugDevice.passthrough(backend) else { return nil }
        let device = passthrough.device
        topology = passthrough.configuration.topology
        genericName = device.genericName
        blockDeviceName = device.blockDeviceName
        identity = passthrough.identity
        worldWideName = Self.worldWideName(genericName: device.genericName, blockDeviceName: device.blockDeviceName, in: topology)
    }

    static func passthrough(_ backend: any LogicalUnitBackend) -> PassthroughBackend? {
        (backend as? PassthroughBackend) ?? ((backend as? MeteredBackend)?.base as? PassthroughBackend)
    }

    /// The `wwid` attribute of the SCSI device under `sgN` or `sdX`, trimmed.
    static func worldWideName(genericName: String?, blockDeviceName: String?, in topology: SysfsTopology) -> String? {
        let candidates = [
            genericName.map { "/sys/class/scsi_generic/\($0)/device/wwid" },
            blockDeviceName.map { "/sys/class/block/\($0)/device/wwid" },
        ]
        for case let path? in candidates {
            let file = topology.root == "/" ? path : topology.root + path
            if let text = try? String(contentsOfFile: file, encoding: .utf8) {
                let value = text.trimmingCharacters(in: .whitespacesAndNewlines)
                if !value.isEmpty { return value }
            }
        }
        return nil
    }

    /// Whether the kernel still has this disk under the names it had: the node is in sysfs and
    /// reports the same `wwid` (a reused `sgN` belongs to another disk).
    var isPresent: Bool {
        guard genericName != nil || blockDeviceName != nil else { return false }
        let current = Self.worldWideName(genericName: genericName, blockDeviceName: blockDeviceName, in: topology)
        if let worldWideName { return current == worldWideName }
        let node = genericName.map { "/sys/class/scsi_generic/\($0)" } ?? "/sys/class/block/\(blockDeviceName!)"
        return FileManager.default.fileExists(atPath: topology.root == "/" ? node : topology.root + node)
    }

    /// Whether `name` (udev's `%k`) is one of this disk's nodes.
    func isNamed(_ name: String) -> Bool {
        name == genericName || name == blockDeviceName
    }
}

/// A passthrough logical unit whose disk went away. It stays in the LUN map (REPORT LUNS still
/// lists it) and answers every command itself until the disk comes back:
///
/// - CHECK CONDITION, NOT READY, 04/03 LOGICAL UNIT NOT READY, MANUAL INTERVENTION REQUIRED.
///   > SPC-4 §4.5.6: NOT READY: Indicates that the logical unit is not accessible. Operator
///   > intervention may be required to correct this condition.
///   The logical unit still exists (it is configured and in REPORT LUNS), so ILLEGAL REQUEST,
///   25/00 LOGICAL UNIT NOT SUPPORTED, which is for a LUN with no logical unit, would be wrong,
///   and Linux takes ILLEGAL REQUEST for a target error that multipath does not fail over. NOT
///   READY fails the I/O at once (Linux retries only the "in progress" 04/xx qualifiers), and
///   04/03 is the qualifier for which Linux's sd does not try to spin the disk up.
/// - INQUIRY: standard data with PERIPHERAL QUALIFIER 001b:
///   > SPC-4 §6.6.2: The device server is capable of supporting the specified peripheral device
///   > type on this logical unit. However, the physical device is not currently connected to
///   > this logical unit.
/// - REQUEST SENSE: GOOD, with the NOT READY sense data as its parameter data (SPC-4 §6.39).
final class OfflineLogicalUnit: LogicalUnitBackend {
    /// What every command but INQUIRY and REQUEST SENSE ends with.
    static let sense = SenseData(.notReady, .logicalUnitNotReadyManualInterventionRequired)

    let kind = "sg"
    /// The logical unit's configuration, to open it again.
    let configuration: LogicalUnit
    /// The disk it had.
    let device: HotPlugDevice
    let maximumTransferLength: Int?

    init(configuration: LogicalUnit, device: HotPlugDevice, maximumTransferLength: Int?) {
        self.configuration = configuration
        self.device = device
        self.maximumTransferLength = maximumTransferLength
    }

    var taskAbortedStatus: Bool { false }

    func dataOutLength(for cdb: ByteBuffer) -> Int? {
        CDB(cdb).dataOutLength(blockSize: device.identity.blockSize)
    }

    func submit(
        _ request: SCSIRequest, tag: BackendTaskTag, completion: @escaping @Sendable (BackendCompletion) -> Void
    ) {
        completion(.completed(answer(request.cdb)))
    }

    /// The answer to `cdb` while the disk is away.
    func answer(_ cdb: ByteBuffer) -> SCSIResult {
        let cdb = CDB(cdb)
        guard cdb.count >= 6 else { return .checkCondition(Self.sense) }
        switch cdb.operationCode {
        case OperationCode.inquiry where cdb[1] & 0x03 == 0 && cdb[2] == 0:
            return Self.bytes(standardInquiry, allocationLength: Int(cdb.uint16(at: 3)))
        case OperationCode.requestSense:
            return Self.bytes(Self.sense.bytes(descriptorFormat: cdb[1] & 0x01 != 0), allocationLength: Int(cdb[4]))
        default:
            return .checkCondition(Self.sense)
        }
    }

    /// Standard INQUIRY data: PERIPHERAL QUALIFIER 001b with the disk's device type, vendor,
    /// product and revision.
    var standardInquiry: [UInt8] {
        let identity = device.identity
        var data: [UInt8] = [0x20 | (identity.peripheralDeviceType & 0x1f), 0x00, 0x06, 0x02, 31, 0x00, 0x00, 0x02]
        for (text, width) in [(identity.vendor, 8), (identity.product, 16), (identity.revision, 4)] {
            let ascii = Array(text.utf8.filter { $0 >= 0x20 && $0 < 0x7f }.prefix(width))
            data += ascii + [UInt8](repeating: 0x20, count: width - ascii.count)
        }
        return data
    }

    private static func bytes(_ bytes: [UInt8], allocationLength: Int) -> SCSIResult {
        var buffer = ByteBuffer()
        buffer.writeBytes(bytes.prefix(allocationLength))
        return SCSIResult(status: .good, dataIn: buffer)
    }

    func terminate(_ tag: BackendTaskTag) {}

    func pendingUnitAttention(for nexus: ITNexus) -> (senseKey: SenseKey, code: AdditionalSenseCode)? { nil }

    func apply(_ event: LogicalUnitEvent) {}

    func shutdown() {}
}

/// Whether a logical unit serves commands, for ferryctl.
public struct LogicalUnitState: Sendable, Hashable {
    /// "file", "block", "sg", "null".
    public var kind: String
    /// False while a passthrough logical unit's disk is away.
    public var online: Bool
}

extension ISCSITarget {
    /// The kind and state of each LUN of `target`, as the target serves them now. A query: it changes nothing. A
    /// passthrough LUN whose disk went away without a udev event is online here until ``deviceRemoved(name:)``
    /// looks (ferryctl's `luns` command asks for that first).
    public func logicalUnitStates(target: String) -> [UInt64: LogicalUnitState] {
        context.logicalUnitStates(target: target)
    }

    /// A SCSI device went away (`name` is its kernel name, `sg3` or `sdc`; nil: check every disk in sysfs, its node
    /// still there with the same `wwid`): the passthrough LUNs it backs go offline. Commands they hold complete as
    /// the kernel fails them (NOT READY); new ones end with NOT READY, 04/03 (``OfflineLogicalUnit``). Returns what
    /// went offline, in sentences.
    public func deviceRemoved(name: String?) -> [String] {
        context.deviceRemoved(name: name)
    }

    /// A SCSI device appeared: each offline LUN whose path names a disk again is opened, in the
    /// background, if the disk has the WWN the LUN had; then every session of the target gets a
    /// unit attention, 29/00 POWER ON, RESET, OR BUS DEVICE RESET OCCURRED. Returns how many
    /// offline LUNs are being checked.
    public func deviceAdded(name: String?) -> Int {
        context.deviceAdded(name: name).count
    }
}

extension TargetContext {
    func logicalUnitStates(target: String) -> [UInt64: LogicalUnitState] {
        guard let node = nodes[target] else { return [:] }
        return node.logicalUnits.mapValues { LogicalUnitState(kind: $0.kind, online: !($0 is OfflineLogicalUnit)) }
    }

    func deviceRemoved(name: String?) -> [String] {
        var changes: [String] = []
        var retired: [any LogicalUnitBackend] = []
        reloadLock.withLock { _ in
            for node in nodes.values {
                let configurations = node.configuration.luns
                for (lun, backend) in node.logicalUnits where !(backend is OfflineLogicalUnit) {
                    guard let device = node.device(lun: lun),
                        name.map(device.isNamed) ?? !device.isPresent,
                        let configuration = configurations.first(where: { $0.lun == lun })
                    else { continue }
                    let offline = OfflineLogicalUnit(
                        configuration: configuration, device: device, maximumTransferLength: backend.maximumTransferLength)
                    guard node.replace(lun: lun, expected: backend, with: offline) else { continue }
                    retired.append(backend)
                    let disk = device.genericName ?? device.blockDeviceName ?? "?"
                    changes.append("LUN \(lun) of \(node.name) is offline: its disk \(disk) went away")
                    logger.notice(
                        "logical unit offline: its disk went away",
                        metadata: [
                            "target": "\(node.name)", "lun": "\(lun)", "node": "\(disk)",
                            "wwid": "\(device.worldWideName ?? "none")",
                        ])
                }
            }
        }
        // The commands the old backend holds come back as the kernel fails them; its shutdown waits for them, on the
        // retirement thread. Nothing reaches it any more: the LUN map holds the offline unit.
        if !retired.isEmpty { retirement.retire(retired)() }
        return changes
    }

    /// Checks every offline logical unit for its disk, in the background (``DiskReturns``).
    func deviceAdded(name: String?) -> [EventLoopFuture<DiskReturns.Outcome>] {
        offlineLogicalUnits().map { candidate in
            diskReturns.check(candidate, trigger: name) { [self] in bringBack($0, found: $1, trigger: $2) }
        }
    }

    func offlineLogicalUnits() -> [DiskReturns.Candidate] {
        nodes.values.flatMap { node in
            node.logicalUnits.compactMap { lun, backend in
                (backend as? OfflineLogicalUnit).map { DiskReturns.Candidate(node: node, lun: lun, unit: $0) }
            }
        }
    }

    /// Opens the disk that an offline logical unit's path names again and puts it in the LUN map, if it is the disk
    /// the logical unit had. Blocks (probes); on ``DiskReturns``' thread.
    func bringBack(_ candidate: DiskReturns.Candidate, found: PassthroughDevice, trigger: String?) -> DiskReturns.Outcome {
        let (node, lun, unit) = (candidate.node, candidate.lun, candidate.unit)
        return reloadLock.withLock { _ -> DiskReturns.Outcome in
            guard candidate.isStillOffline else { return .superseded }
            let backend: any LogicalUnitBackend
            do {
                backend = try openBackend(unit.configuration, target: node.name, copyTargets: node.copyTargets)
            } catch {
                logger.warning(
                    "an offline logical unit's disk is back but cannot be opened; it stays offline",
                    metadata: ["target": "\(node.name)", "lun": "\(lun)", "error": "\(error)"])
                return .refused
            }
            let device = HotPlugDevice(backend)
            if let wanted = unit.device.worldWideName, device?.worldWideName != wanted {
                logger.warning(
                    "another disk answers to an offline logical unit's path; it stays offline",
                    metadata: [
                        "target": "\(node.name)", "lun": "\(lun)", "path": "\(unit.configuration.path)",
                        "wanted": "\(wanted)", "found": "\(device?.worldWideName ?? "none")",
                    ])
                backend.shutdown()
                return .refused
            }
            // > SPC-4 §6.47 / SAM-5 §6.3.2: after a power on or hard reset the logical unit
            // > establishes 29/00 for every I_T nexus. The disk came back reset, and Ferry's
            // > reservations for it were dropped with the old backend.
            if let passthrough = HotPlugDevice.passthrough(backend) {
                for session in registry.all where session.node === node {
                    passthrough.unitAttentions.establish(.powerOnResetOrBusDeviceResetOccurred, for: session.nexus)
                }
            }
            guard node.replace(lun: lun, expected: unit, with: backend) else {
                backend.shutdown()
                return .superseded
            }
            logger.notice(
                "logical unit back online",
                metadata: [
                    "target": "\(node.name)", "lun": "\(lun)", "node": "\(found.node)",
                    "wwid": "\(device?.worldWideName ?? "none")", "udevName": "\(trigger ?? "-")",
                ])
            return .online
        }
    }
}
