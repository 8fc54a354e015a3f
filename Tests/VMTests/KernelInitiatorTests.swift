import Foundation
import Testing

/// Every test that boots a VM, one at a time: TCG uses both of the machine's cores.
@Suite(.serialized) enum InVirtualMachine {}

extension InVirtualMachine {
    /// The Linux kernel initiator (open-iscsi, iscsi_tcp) against ferryd, both inside the guest:
    /// discovery, login, mkfs.ext4, mount, write, sync, umount, logout, fsck, and the file read
    /// back intact after a second login (guest/kernel-initiator.sh).
    @Suite struct KernelInitiatorTests {
        /// LUN 0 is an emulated disk on a sparse file in the guest's tmpfs.
        @Test func emulatedLUN() async throws {
            let run = try await VirtualMachine.run(
                script: "kernel-initiator.sh", arguments: ["emulated"],
                environment: ["FERRYD": try VirtualMachine.locateFerryd()], timeout: .seconds(240))
            VirtualMachine.expectSuccess(run, "kernel initiator on an emulated LUN")
        }

        /// LUN 0 passes through to scsi_debug's /dev/sgN (the sg backend); afterwards fsck runs
        /// directly against scsi_debug's /dev/sdX and the file is read there too.
        @Test func passthroughLUN() async throws {
            let run = try await VirtualMachine.run(
                script: "kernel-initiator.sh", arguments: ["sg"],
                environment: ["FERRYD": try VirtualMachine.locateFerryd()], timeout: .seconds(240))
            VirtualMachine.expectSuccess(run, "kernel initiator on a passthrough LUN")
        }
    }
}
