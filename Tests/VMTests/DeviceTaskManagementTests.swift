import ConformanceReporting
import Foundation
import Testing

extension InVirtualMachine {
    /// Issue 4's task management tests on the device path: ferryd's sg backend on scsi_debug, slowed
    /// through its `delay`, with open-iscsi, libiscsi and TMFProbe (Tests/TMFProbe, a raw initiator
    /// that drives exact PDU sequences and times every PDU) as initiators (guest/tmf.sh). They hold on
    /// Debian's 6.1 kernel, where a scsi_debug device reset leaves delayed commands to finish, and on
    /// newer ones, where they come back at the sg timeout.
    @Suite struct DeviceTaskManagementTests {
        /// Test 1: ABORT TASK of a READ and a WRITE in the device. Each response waits for the device
        /// to return the command (the hold is measured against the delay left), nothing of the aborted
        /// commands ever arrives, the WRITE's blocks read back old or new, and the device is not reset.
        @Test func abortTaskWaitsForTheDevice() async throws {
            let run = try await Self.run("abort-in-device")
            VirtualMachine.expectSuccess(run, "ABORT TASK of commands in the device")
        }

        /// Test 2: ABORT TASK of a READ the device keeps past abort_deadline (2 s; command_timeout 6 s):
        /// scsi_debug logs a device reset (never a bus or host reset), the response comes within
        /// command_timeout + 5 s, and the session reads again with at most one unit attention (29h).
        @Test func abortDeadlineResetsTheDevice() async throws {
            let run = try await Self.run("abort-deadline")
            VirtualMachine.expectSuccess(run, "ABORT TASK past the abort deadline")
        }

        /// Test 3: LOGICAL UNIT RESET while two sessions have commands in the device: the response waits
        /// for the device, the issuing session gets nothing for its tasks and the other at most TASK
        /// ABORTED, each sees unit attention 29/03 once, and scsi_debug logs the device reset.
        @Test func logicalUnitResetReachesTheDevice() async throws {
            let run = try await Self.run("logical-unit-reset")
            VirtualMachine.expectSuccess(run, "LOGICAL UNIT RESET with two sessions")
        }

        /// Test 4: libiscsi's iSCSI.iSCSITMF suite against the passthrough LUN passes whole. It passes
        /// tgt's wrong behaviour too: tests 1 to 3 are what prove Ferry right.
        @Test func libiscsiTaskManagementSuite() async throws {
            let run = try await Self.run("conformance", timeout: .seconds(200))
            let report = ConformanceReport(output: run.file("conformance/iSCSI.iSCSITMF.log"), family: "iSCSI")
            print(
                "iSCSI.iSCSITMF on the sg backend: \(report.passed.count) passed, \(report.skipped.count) skipped, "
                    + "\(report.failed.count) failed")
            for skipped in report.skipped { print("  skipped \(skipped.name): \(skipped.outcome)") }
            #expect(report.finished, "iscsi-test-cu did not finish\n\(run.diagnostics)")
            #expect(!report.passed.isEmpty, "no iSCSI.iSCSITMF test passed\n\(run.diagnostics)")
            #expect(report.failed.isEmpty, "failed: \(report.failed)\n\(run.diagnostics)")
            VirtualMachine.expectSuccess(run, "iscsi-test-cu iSCSI.iSCSITMF on the sg backend")
        }

        /// Test 5: open-iscsi with a 2 s SCSI timeout and a 5 s abort timeout writes with fsync to a file
        /// system on a device slowed to 5 s a command: its error handler aborts through Ferry, the write
        /// completes once the device is fast again, and fsck finds scsi_debug's disk clean.
        @Test func kernelInitiatorErrorHandlerThroughFerry() async throws {
            let run = try await Self.run("kernel-initiator")
            VirtualMachine.expectSuccess(run, "the kernel initiator's error handler on a slowed device")
        }

        /// Runs guest/tmf.sh `scenario` with ferryd and TMFProbe in the results share, and prints what it
        /// measured, the aborts and resets scsi_debug logged, and ferryd's task management log lines.
        static func run(_ scenario: String, timeout: Duration = .seconds(230)) async throws -> GuestRun {
            let ferryd = try VirtualMachine.locateFerryd()
            let probe =
                ProcessInfo.processInfo.environment["TMF_PROBE"]
                ?? URL(fileURLWithPath: ferryd).deletingLastPathComponent().appendingPathComponent("TMFProbe").path
            guard FileManager.default.isExecutableFile(atPath: probe) else {
                throw VMFailure("TMFProbe was not found at \(probe) (beside ferryd): run swift build")
            }
            let run = try await VirtualMachine.run(
                script: "tmf.sh", arguments: [scenario], environment: ["FERRYD": ferryd], timeout: timeout,
                files: [URL(fileURLWithPath: probe)])
            let evidence = ["measured:", "FAIL", "scsi_debug", "task management function answered", "device reset"]
            for line in run.output.split(separator: "\n") where evidence.contains(where: line.contains) {
                print("tmf.sh \(scenario): \(line)")
            }
            return run
        }
    }
}
