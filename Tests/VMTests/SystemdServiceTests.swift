import Foundation
import Testing

extension InVirtualMachine {
    /// systemd/ferryd.service installed in a guest whose PID 1 is systemd (guest/systemd-service.sh):
    /// `systemctl start` returns once ferryd is ready, ferryd runs as `ferry` with its three ambient
    /// capabilities, an open-iscsi session survives `systemctl reload` (with a LUN added) and logs out
    /// on `systemctl stop`, which ends with a clean exit.
    @Suite struct SystemdServiceTests {
        @Test func sessionSurvivesReloadAndLogsOutOnStop() async throws {
            let unitDirectory = VirtualMachine.packageRoot.appendingPathComponent("systemd")
            var environment = ["FERRYD": try VirtualMachine.locateFerryd()]
            // The script puts it in a drop-in (ExecStart= with --log-level).
            environment["FERRYD_LOG_LEVEL"] = ProcessInfo.processInfo.environment["FERRYD_LOG_LEVEL"]
            let run = try await VirtualMachine.run(
                script: "systemd-service.sh", environment: environment, timeout: .seconds(300),
                files: [
                    unitDirectory.appendingPathComponent("ferryd.service"),
                    unitDirectory.appendingPathComponent("ferry.sysusers.conf"),
                ],
                init: .systemd)
            VirtualMachine.expectSuccess(run, "ferryd.service under systemd")
        }
    }
}
