import FerryBackends
import FerryConfig
@testable import FerryPassthrough
import FerrySync
@testable import FerryTarget
import Foundation
import Logging
import NIOCore
import SCSI
import Testing

@Suite struct OfflineLogicalUnitTests {
    static let identity = DeviceIdentity(
        peripheralDeviceType: 0, vendor: "SEAGATE", product: "ST4000NM0023", revision: "0004", blockSize: 512,
        blockCount: 1 << 20, notReadyReason: nil)

    static func unit(topology: SysfsTopology = SysfsTopology()) -> OfflineLogicalUnit {
        OfflineLogicalUnit(
            configuration: LogicalUnit(lun: 0, path: "/dev/ferry/wwn-0x5000c500a1b2c3d4", backend: .sg),
            device: HotPlugDevice(
                worldWideName: "naa.5000c500a1b2c3d4", genericName: "sg3", blockDeviceName: "sdc", identity: identity,
                topology: topology),
            maximumTransferLength: 1 << 20)
    }

    static func cdb(_ bytes: [UInt8]) -> ByteBuffer { ByteBuffer(bytes: bytes) }

    @Test(arguments: [
        [0x00, 0, 0, 0, 0, 0] as [UInt8],  // TEST UNIT READY
        [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0],  // READ(10)
        [0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0],  // WRITE(10)
        [0x12, 1, 0x83, 0, 255, 0],  // INQUIRY, VPD page 83h
        [0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],  // READ CAPACITY(10)
    ])
    func commandsEndWithNotReadyManualInterventionRequired(_ bytes: [UInt8]) {
        let result = Self.unit().answer(Self.cdb(bytes))
        #expect(result.status == .checkCondition)
        #expect(result.sense?.senseKey == .notReady)
        #expect(result.sense?.code == AdditionalSenseCode(0x04, 0x03))
    }

    @Test func inquirySaysPeripheralQualifierOneWithTheDisksIdentity() throws {
        let result = Self.unit().answer(Self.cdb([0x12, 0, 0, 0, 96, 0]))
        #expect(result.status == .good)
        let data = Array(result.dataIn.readableBytesView)
        try #require(data.count == 36)
        #expect(data[0] == 0x20, "PERIPHERAL QUALIFIER 001b, PERIPHERAL DEVICE TYPE 00h")
        #expect(data[4] == 31)
        #expect(String(decoding: data[8..<16], as: UTF8.self) == "SEAGATE ")
        #expect(String(decoding: data[16..<32], as: UTF8.self) == "ST4000NM0023    ")
        #expect(String(decoding: data[32..<36], as: UTF8.self) == "0004")
        #expect(Self.unit().answer(Self.cdb([0x12, 0, 0, 0, 5, 0])).dataIn.readableBytes == 5)
    }

    @Test func requestSenseReturnsTheNotReadySenseAsData() throws {
        let fixed = Array(Self.unit().answer(Self.cdb([0x03, 0, 0, 0, 252, 0])).dataIn.readableBytesView)
        try #require(fixed.count >= 14)
        #expect(fixed[0] == 0x70)
        #expect(fixed[2] & 0x0f == 0x02)
        #expect(fixed[12] == 0x04 && fixed[13] == 0x03)
        let descriptor = Self.unit().answer(Self.cdb([0x03, 1, 0, 0, 252, 0]))
        #expect(descriptor.status == .good)
        #expect(Array(descriptor.dataIn.readableBytesView.prefix(4)) == [0x72, 0x02, 0x04, 0x03])
    }

    @Test func writesAskForTheirBlocksSoThatTheTransportCanEndThem() {
        #expect(Self.unit().dataOutLength(for: Self.cdb([0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0])) == 8 * 512)
    }
}

@Suite struct HotPlugDeviceTests {
    /// A sysfs tree with `sg3` reporting `wwid`, or without sg3 when `wwid` is nil.
    static func topology(wwid: String?) throws -> SysfsTopology {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-hotplug-\(UUID())").path
        if let wwid {
            let device = root + "/sys/class/scsi_generic/sg3/device"
            try FileManager.default.createDirectory(atPath: device, withIntermediateDirectories: true)
            try "\(wwid)\n".write(toFile: device + "/wwid", atomically: true, encoding: .utf8)
        } else {
            try FileManager.default.createDirectory(atPath: root + "/sys/class/scsi_generic", withIntermediateDirectories: true)
        }
        return SysfsTopology(root: root)
    }

    static func device(_ topology: SysfsTopology) -> HotPlugDevice {
        HotPlugDevice(
            worldWideName: "naa.5000c500a1b2c3d4", genericName: "sg3", blockDeviceName: nil,
            identity: OfflineLogicalUnitTests.identity, topology: topology)
    }

    @Test func theDiskIsPresentWhileItsNodeReportsItsWWN() throws {
        let topology = try Self.topology(wwid: "naa.5000c500a1b2c3d4")
        defer { try? FileManager.default.removeItem(atPath: topology.root) }
        #expect(Self.device(topology).isPresent)
        #expect(
            HotPlugDevice.worldWideName(genericName: "sg3", blockDeviceName: nil, in: topology)
                == "naa.5000c500a1b2c3d4")
    }

    @Test func aGoneNodeOrAReusedNumberIsNotTheDisk() throws {
        let gone = try Self.topology(wwid: nil)
        defer { try? FileManager.default.removeItem(atPath: gone.root) }
        #expect(!Self.device(gone).isPresent)
        let reused = try Self.topology(wwid: "naa.5000c500ffffffff")
        defer { try? FileManager.default.removeItem(atPath: reused.root) }
        #expect(!Self.device(reused).isPresent)
    }

    @Test func udevNamesTheDiskByEitherNode() throws {
        var device = Self.device(SysfsTopology())
        device.blockDeviceName = "sdc"
        #expect(device.isNamed("sg3") && device.isNamed("sdc"))
        #expect(!device.isNamed("sg4"))
    }
}

/// A passthrough channel that answers nothing: the hot-plug tests only need a backend that knows its disk.
final class IdleSGChannel: SGChannel {
    func start(_ command: SGCommand) { command.completion(.terminated) }
    func terminate(_ tag: BackendTaskTag) {}
    func holds(_ tag: BackendTaskTag) -> Bool { false }
    func reset(_ scope: DeviceResetScope) -> Result<Void, SGSystemCallError> { .success(()) }
    func shutdown() {}
}

/// A sysfs tree for one disk, `sg3` with WWN `naa.5000c500a1b2c3d4`, whose sd node `sdc` comes and goes.
struct FakeDisk {
    static let wwn = "naa.5000c500a1b2c3d4"
    let topology: SysfsTopology

    init() throws {
        topology = try HotPlugDeviceTests.topology(wwid: Self.wwn)
    }

    var genericDirectory: String { topology.root + "/sys/class/scsi_generic/sg3" }

    func bindBlockDevice() throws {
        try FileManager.default.createDirectory(atPath: genericDirectory + "/device/block/sdc", withIntermediateDirectories: true)
    }

    func remove() throws {
        try FileManager.default.removeItem(atPath: genericDirectory)
    }

    func cleanUp() {
        try? FileManager.default.removeItem(atPath: topology.root)
    }

    /// The configuration of a LUN that names the disk by its WWN.
    static func lun(_ number: UInt64) -> LogicalUnit {
        LogicalUnit(lun: number, path: wwn, backend: .sg)
    }

    /// A passthrough backend open on the disk, as if probed (its sd node `sdc`).
    func backend(lun: UInt64) -> PassthroughBackend {
        PassthroughBackend(
            configuration: PassthroughBackend.Configuration(path: Self.wwn, topology: topology),
            device: PassthroughDevice(node: "/dev/sg3", access: .generic, blockDeviceName: "sdc", genericName: "sg3"),
            identity: OfflineLogicalUnitTests.identity, maximumTransferLength: 1 << 20, channel: IdleSGChannel(),
            logger: Logger(label: "test"))
    }

    /// The disk offline: the unit that answers for it while it is away.
    func offlineUnit(lun: UInt64, hadBlockDevice: Bool = true) -> OfflineLogicalUnit {
        OfflineLogicalUnit(
            configuration: Self.lun(lun),
            device: HotPlugDevice(
                worldWideName: Self.wwn, genericName: "sg3", blockDeviceName: hadBlockDevice ? "sdc" : nil,
                identity: OfflineLogicalUnitTests.identity, topology: topology),
            maximumTransferLength: 1 << 20)
    }
}

/// ferryctl's LUN list is a query; taking LUNs offline is the explicit device check (`deviceRemoved`).
@Suite struct LogicalUnitStateQueryTests {
    static let target = "iqn.2026-11.dev.ferry:hotplug"

    static func context(serving backend: PassthroughBackend, directory: String) throws -> TargetContext {
        let configuration = FerryConfiguration(
            portals: [Portal(host: "127.0.0.1")], targets: [], stateDirectory: directory)
        let context = try TargetContext(configuration: configuration, logger: Logger(label: "test"))
        let node = TargetNode(
            configuration: Target(name: target, luns: [FakeDisk.lun(2)]), portalGroupTag: 1, logicalUnits: [2: backend])
        context.state.withLock { $0.nodes[target] = node }
        return context
    }

    @Test func askingForTheStatesTakesNothingOfflineTheDeviceCheckDoes() throws {
        let disk = try FakeDisk()
        defer { disk.cleanUp() }
        let backend = disk.backend(lun: 2)
        let context = try Self.context(serving: backend, directory: disk.topology.root)
        defer { context.shutdown() }
        #expect(context.logicalUnitStates(target: Self.target) == [2: LogicalUnitState(kind: "sg", online: true)])

        try disk.remove()
        // The disk is gone from sysfs and no event came: the query says what is served, and changes nothing.
        #expect(context.logicalUnitStates(target: Self.target) == [2: LogicalUnitState(kind: "sg", online: true)])
        #expect(context.logicalUnitStates(target: Self.target) == [2: LogicalUnitState(kind: "sg", online: true)])
        #expect(context.nodes[Self.target]?.backend(lun: 0x0002_0000_0000_0000) === backend)

        // The explicit check takes it offline.
        #expect(context.deviceRemoved(name: nil) == ["LUN 2 of \(Self.target) is offline: its disk sg3 went away"])
        #expect(context.logicalUnitStates(target: Self.target) == [2: LogicalUnitState(kind: "sg", online: false)])
        #expect(context.deviceRemoved(name: nil).isEmpty, "an offline LUN is not taken offline twice")
        ReloadRetirementTests.settle(context.retirement)
        #expect(context.retirement.waiting == 0, "the old backend was shut down")
    }

    @Test func anEventNamesTheNodeThatWentAway() throws {
        let disk = try FakeDisk()
        defer { disk.cleanUp() }
        let context = try Self.context(serving: disk.backend(lun: 2), directory: disk.topology.root)
        defer { context.shutdown() }
        #expect(context.deviceRemoved(name: "sg4").isEmpty)
        #expect(context.deviceRemoved(name: "sdc").count == 1, "either of the disk's nodes names it")
        #expect(context.logicalUnitStates(target: Self.target)[2]?.online == false)
    }

    /// Wiring: a `device added` event checks every offline LUN, and each check completes.
    @Test func anAddedEventChecksEveryOfflineLUNAndEachCheckCompletes() throws {
        let disk = try FakeDisk()
        defer { disk.cleanUp() }
        let context = try Self.context(serving: disk.backend(lun: 2), directory: disk.topology.root)
        defer { context.shutdown() }
        #expect(context.deviceAdded(name: "sg3").isEmpty, "nothing is offline")
        #expect(context.deviceRemoved(name: "sg3").count == 1)
        try disk.bindBlockDevice()
        let checks = context.deviceAdded(name: "sg3")
        #expect(checks.count == 1)
        for check in checks {
            // The disk is in the fake sysfs tree, with sd; the target opens its path in the real one, where that WWN
            // names no disk: it stays offline.
            #expect(Completion.value(of: check) == .refused)
        }
        #expect(context.logicalUnitStates(target: Self.target)[2]?.online == false)
    }
}

/// Bringing a disk back is driven by events and a deadline, not by polling.
@Suite struct DiskReturnsTests {
    /// What the bring-back step was asked to open.
    final class Openings: Sendable {
        private let found = Locked<[PassthroughDevice]>([])
        var all: [PassthroughDevice] { found.withLock { $0 } }

        /// Records the device and, as the target does, puts a backend in the unit's place.
        func bringBack(_ outcome: DiskReturns.Outcome = .online) -> DiskReturns.BringBack {
            { [found] candidate, device, _ in
                found.withLock { $0.append(device) }
                if outcome == .online {
                    _ = candidate.node.replace(lun: candidate.lun, expected: candidate.unit, with: StubBackend())
                }
                return outcome
            }
        }
    }

    static func candidate(_ unit: OfflineLogicalUnit, lun: UInt64) -> DiskReturns.Candidate {
        let node = TargetNode(
            configuration: Target(name: "iqn.2026-11.dev.ferry:hotplug", luns: [FakeDisk.lun(lun)]), portalGroupTag: 1,
            logicalUnits: [lun: unit])
        return DiskReturns.Candidate(node: node, lun: lun, unit: unit)
    }

    @Test func aDiskBackWithItsBlockDeviceIsOpenedAtOnce() throws {
        let disk = try FakeDisk()
        defer { disk.cleanUp() }
        try disk.bindBlockDevice()
        let returns = DiskReturns(blockDeviceWait: .seconds(600))
        defer { returns.shutdown() }
        let openings = Openings()
        // LUN 3: the LUN number, not LUN 0's field, decides whether the unit is still offline.
        let outcome = Completion.value(of: returns.check(
            Self.candidate(disk.offlineUnit(lun: 3), lun: 3), trigger: "sg3", bringBack: openings.bringBack()
        ))
        #expect(outcome == .online)
        #expect(openings.all.map(\.blockDeviceName) == ["sdc"])
        #expect(returns.waitingForBlockDevice == 0)
    }

    @Test func withoutItsBlockDeviceItWaitsForTheEventThatBringsIt() throws {
        let disk = try FakeDisk()
        defer { disk.cleanUp() }
        let returns = DiskReturns(blockDeviceWait: .seconds(600))
        defer { returns.shutdown() }
        let openings = Openings()
        let candidate = Self.candidate(disk.offlineUnit(lun: 3), lun: 3)
        let first = returns.check(candidate, trigger: "sg3", bringBack: openings.bringBack())
        // A second check of the same unit with sd still missing only joins the wait: it completes with it.
        let second = returns.check(candidate, trigger: "sg3", bringBack: openings.bringBack())
        // The reopener's thread runs checks in order: once a check of another disk has run, the first two have.
        let other = try FakeDisk()
        defer { other.cleanUp() }
        try other.bindBlockDevice()
        _ = Completion.value(of: returns.check(
            Self.candidate(other.offlineUnit(lun: 1), lun: 1), trigger: nil, bringBack: Openings().bringBack()
        ))
        #expect(returns.waitingForBlockDevice == 1)
        #expect(openings.all.isEmpty, "opened before sd came")
        // udev's event for sd.
        try disk.bindBlockDevice()
        let third = Completion.value(of: returns.check(candidate, trigger: "sdc", bringBack: openings.bringBack()))
        #expect(third == .online)
        #expect(Completion.value(of: first) == .online)
        #expect(Completion.value(of: second) == .online)
        #expect(openings.all.count == 1, "opened once")
        #expect(openings.all.first?.blockDeviceName == "sdc")
        #expect(returns.waitingForBlockDevice == 0, "the deadline was cancelled")
    }

    @Test func theDeadlineOpensItWithoutItsBlockDevice() throws {
        let disk = try FakeDisk()
        defer { disk.cleanUp() }
        let returns = DiskReturns(blockDeviceWait: .milliseconds(50))
        defer { returns.shutdown() }
        let openings = Openings()
        let start = ContinuousClock.now
        let outcome = Completion.value(of: returns.check(
            Self.candidate(disk.offlineUnit(lun: 0), lun: 0), trigger: "sg3", bringBack: openings.bringBack()
        ))
        #expect(outcome == .online)
        #expect(ContinuousClock.now - start >= .milliseconds(50))
        #expect(openings.all.count == 1)
        #expect(openings.all.first?.blockDeviceName == nil)
        #expect(openings.all.first?.genericName == "sg3")
    }

    @Test func aDiskThatNeverHadABlockDeviceDoesNotWait() throws {
        let disk = try FakeDisk()
        defer { disk.cleanUp() }
        let returns = DiskReturns(blockDeviceWait: .seconds(600))
        defer { returns.shutdown() }
        let outcome = Completion.value(of: returns.check(
            Self.candidate(disk.offlineUnit(lun: 0, hadBlockDevice: false), lun: 0), trigger: nil,
            bringBack: Openings().bringBack()
        ))
        #expect(outcome == .online)
    }

    @Test func shutdownEndsAWaitAtOnce() throws {
        let disk = try FakeDisk()
        defer { disk.cleanUp() }
        let returns = DiskReturns(blockDeviceWait: .seconds(600))
        let openings = Openings()
        let candidate = Self.candidate(disk.offlineUnit(lun: 0), lun: 0)
        let waiting = returns.check(candidate, trigger: "sg3", bringBack: openings.bringBack())
        // A check of another disk runs after the first on the one thread: once it is done, the first waits.
        let other = try FakeDisk()
        defer { other.cleanUp() }
        try other.bindBlockDevice()
        _ = Completion.value(of: returns.check(
            Self.candidate(other.offlineUnit(lun: 1), lun: 1), trigger: nil, bringBack: Openings().bringBack()
        ))
        #expect(returns.waitingForBlockDevice == 1)
        let start = ContinuousClock.now
        returns.shutdown()
        #expect(Completion.value(of: waiting) == .stopped)
        #expect(ContinuousClock.now - start < .seconds(5), "the shutdown waited for the deadline")
        #expect(openings.all.isEmpty)
        // After the shutdown a check ends at once.
        #expect(Completion.value(of: returns.check(candidate, trigger: nil, bringBack: openings.bringBack())) == .stopped)
    }

    @Test func aUnitNoLongerOfflineOrADiskNotThereEndsTheCheck() throws {
        let disk = try FakeDisk()
        defer { disk.cleanUp() }
        let returns = DiskReturns(blockDeviceWait: .seconds(600))
        defer { returns.shutdown() }
        let candidate = Self.candidate(disk.offlineUnit(lun: 0), lun: 0)
        #expect(candidate.node.replace(lun: 0, expected: candidate.unit, with: StubBackend()))
        #expect(Completion.value(of: returns.check(candidate, trigger: nil, bringBack: Openings().bringBack())) == .superseded)
        try disk.remove()
        let gone = Self.candidate(disk.offlineUnit(lun: 0), lun: 0)
        #expect(Completion.value(of: returns.check(gone, trigger: nil, bringBack: Openings().bringBack())) == .noDisk)
    }
}
