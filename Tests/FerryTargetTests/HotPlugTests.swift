import FerryConfig
@testable import FerryPassthrough
@testable import FerryTarget
import Foundation
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
