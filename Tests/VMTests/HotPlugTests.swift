import Foundation
import Testing

extension InVirtualMachine {
    /// udev rules and hot-plug (guest/hotplug.sh): systemd-udevd with udev/60-ferry.rules gives the
    /// chosen scsi_debug disk (and not the other) to group ferry with /dev/ferry names; ferryd
    /// serves it by that name; deleting the disk under I/O takes the LUN offline (NOT READY 04/03,
    /// no hang), and scanning it back (same WWN) brings it back with a 29/00 unit attention.
    @Suite struct HotPlugTests {
        static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()

        @Test func passthroughDiskGoesAwayAndComesBack() async throws {
            let ferryd = try VirtualMachine.locateFerryd()
            let ferryctl = URL(fileURLWithPath: ferryd).deletingLastPathComponent().appendingPathComponent("ferryctl")
            try #require(
                FileManager.default.isExecutableFile(atPath: ferryctl.path),
                "no ferryctl beside \(ferryd): swift build --product ferryctl")
            let rules = Self.repository.appendingPathComponent("udev/60-ferry.rules")
            let run = try await VirtualMachine.run(
                script: "hotplug.sh", environment: ["FERRYD": ferryd], timeout: .seconds(300),
                files: [rules, ferryctl])
            // The sense data, INQUIRY and ferryctl tables the script saw, also when it passes.
            print(run.output)
            VirtualMachine.expectSuccess(run, "udev rules and hot-plug of a passthrough disk")
        }
    }
}
