import FerryPassthrough
import Foundation
import Testing

/// Name resolution against a fake root holding /sys and /dev as the kernel lays them out.
@Suite struct SysfsTopologyTests {
    final class FakeRoot {
        let path: String

        init() throws {
            let base = NSTemporaryDirectory() + "ferry-sysfs-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
            path = (base as NSString).resolvingSymlinksInPath
            // sg0 and sda: one SCSI disk with both nodes.
            try directory("sys/class/scsi_generic/sg0/device/block/sda")
            try file("sys/class/scsi_generic/sg0/device/wwid", "naa.5000c500a1b2c3d4\n")
            try directory("sys/class/block/sda/device/scsi_device/0:0:0:0")
            try directory("sys/class/block/sda/device/scsi_generic/sg0")
            try file("sys/class/block/sda/queue/max_hw_sectors_kb", "1280\n")
            // sda1: a partition (no device link).
            try directory("sys/class/block/sda1")
            // sdb: a SCSI disk whose sg node is missing (the sg module is not loaded).
            try directory("sys/class/block/sdb/device/scsi_device/0:0:1:0")
            try file("sys/class/block/sdb/queue/max_hw_sectors_kb", "512\n")
            // sg1: an sg node without a disk (scsi_debug no_uld=1).
            try directory("sys/class/scsi_generic/sg1/device")
            try file("sys/class/scsi_generic/sg1/device/wwid", "t10.Linux   scsi_debug      2000\n")
            // vda: a virtio disk, not SCSI.
            try directory("sys/class/block/vda/device")
            for node in ["sg0", "sg1", "sda", "sda1", "sdb", "vda"] { try file("dev/\(node)", "") }
            try directory("dev/disk/by-id")
            try FileManager.default.createSymbolicLink(
                atPath: path + "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4", withDestinationPath: "../../sda")
            try FileManager.default.createSymbolicLink(
                atPath: path + "/dev/disk/by-id/scsi-SATA_other", withDestinationPath: "../../sdb")
        }

        deinit { try? FileManager.default.removeItem(atPath: path) }

        func directory(_ relative: String) throws {
            try FileManager.default.createDirectory(atPath: path + "/" + relative, withIntermediateDirectories: true)
        }

        func file(_ relative: String, _ contents: String) throws {
            try directory((relative as NSString).deletingLastPathComponent)
            try contents.write(toFile: path + "/" + relative, atomically: false, encoding: .utf8)
        }
    }

    @Test func sgNodesAreUsedAsTheyAre() throws {
        let root = try FakeRoot()
        let topology = SysfsTopology(root: root.path)
        let device = try topology.resolve("/dev/sg0")
        #expect(device.node == root.path + "/dev/sg0")
        #expect(device.access == .generic)
        #expect(device.genericName == "sg0")
        #expect(device.blockDeviceName == "sda")
        #expect(topology.maximumTransferBytes(of: device) == 1280 * 1024)
        let bare = try topology.resolve("/dev/sg1")
        #expect(bare.blockDeviceName == nil)
        #expect(topology.maximumTransferBytes(of: bare) == nil)
    }

    @Test func blockDevicesAndStableNamesResolveToTheirSGNode() throws {
        let root = try FakeRoot()
        let topology = SysfsTopology(root: root.path)
        for path in ["/dev/sda", "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"] {
            let device = try topology.resolve(path)
            #expect(device.node == root.path + "/dev/sg0")
            #expect(device.access == .generic)
            #expect(device.blockDeviceName == "sda")
        }
    }

    @Test func aDiskWithoutSGNodeUsesSGIOOnTheBlockDevice() throws {
        let root = try FakeRoot()
        let topology = SysfsTopology(root: root.path)
        let device = try topology.resolve("/dev/disk/by-id/scsi-SATA_other")
        #expect(device.node == root.path + "/dev/sdb")
        #expect(device.access == .block)
        #expect(topology.maximumTransferBytes(of: device) == 512 * 1024)
    }

    @Test func worldWideNamesAreMatchedAgainstWWID() throws {
        let root = try FakeRoot()
        let topology = SysfsTopology(root: root.path)
        for wwn in ["naa.5000c500a1b2c3d4", "0x5000C500A1B2C3D4", "wwn-0x5000c500a1b2c3d4"] {
            #expect(try topology.resolve(wwn).node == root.path + "/dev/sg0")
        }
        #expect(throws: PassthroughError.self) { try topology.resolve("naa.6000000000000001") }
    }

    @Test func partitionsAndOtherDisksAreRefused() throws {
        let root = try FakeRoot()
        let topology = SysfsTopology(root: root.path)
        for path in ["/dev/sda1", "/dev/vda", "/dev/nothing"] {
            #expect(throws: PassthroughError.self) { try topology.resolve(path) }
        }
        do {
            _ = try topology.resolve("/dev/sda1")
        } catch {
            #expect(error.description.contains(#"use backend "emulated""#))
        }
    }
}
