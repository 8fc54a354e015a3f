import Foundation
import Testing

extension AgainstFerryd {
    /// `ferryctl luns` shows a block device's size (BLKGETSIZE64), not its st_size of 0.
    @Suite struct LUNSizeTests {
        static let target = "iqn.2026-11.dev.ferry:sizes"

        @Test func aBlockDeviceShowsItsSize() async throws {
            try await ConfiguredFerryd.with(configuration: { port, directory in
                ConfiguredFerryd.portal(port: port, directory: directory)
                    + "[control]\nsocket = \"\(directory)/control.sock\"\n"
                    + ConfiguredFerryd.target(Self.target, directory: directory)
            }) { ferryd in
                let image = ferryd.directory.appendingPathComponent("loop.img").path
                #expect(FileManager.default.createFile(atPath: image, contents: nil) && truncate(image, 6 << 20) == 0)
                let attached = try await ExternalTool.run(
                    "/usr/sbin/losetup", ["--find", "--show", image], timeout: .seconds(30))
                let device = attached.output.trimmingCharacters(in: .whitespacesAndNewlines)
                #expect(attached.status == 0 && device.hasPrefix("/dev/loop"), "losetup (needs root): \(attached.output)")
                defer { _ = try? Process.run(URL(fileURLWithPath: "/usr/sbin/losetup"), arguments: ["-d", device]) }
                let socket = ferryd.directory.appendingPathComponent("control.sock").path
                let ferryctl = try FerrydProcess.locateFerryctl()
                let added = try await ExternalTool.run(
                    ferryctl, ["lun", "add", Self.target, "1", device, "--socket", socket], timeout: .seconds(30))
                #expect(added.status == 0, "\(added.output)")
                let luns = try await ExternalTool.run(ferryctl, ["luns", "--socket", socket], timeout: .seconds(30))
                #expect(luns.output.contains("  1    emulated  block   online  6 MiB"), "\(luns.output)")
                #expect(luns.output.contains("  0    emulated  file    online  16 MiB"), "\(luns.output)")
                let removed = try await ExternalTool.run(
                    ferryctl, ["lun", "remove", Self.target, "1", "--socket", socket], timeout: .seconds(30))
                #expect(removed.status == 0, "\(removed.output)")
            }
        }
    }
}
