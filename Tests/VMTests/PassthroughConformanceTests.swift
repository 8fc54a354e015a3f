import ConformanceReporting
import Foundation
import Testing

extension InVirtualMachine {
    /// libiscsi's conformance suite (`iscsi-test-cu -d -S`, the SCSI family suite by suite) against
    /// ferryd exporting scsi_debug's /dev/sgN through the sg backend, all inside one VM
    /// (guest/conformance.sh), with the ratchet passthrough-known-failures.txt.
    @Suite struct PassthroughConformanceTests {
        /// The ratchet of the passthrough LUN: every reason names a scsi_debug behaviour or a Ferry bug.
        static let ratchetFile = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("passthrough-known-failures.txt")

        /// How long one suite may take under TCG before it counts as hung. CompareAndWrite, Verify10
        /// and Verify16 send hundreds of commands of up to 256 blocks and take 110 to 200 s on a
        /// loaded host; at 150 s they were cut off mid-test and looked hung.
        static let suiteTimeout = 400
        /// The whole run, boot included: under TCG the SCSI family takes minutes.
        static let timeout = Duration.seconds(2700)

        @Test func scsiFamily() async throws {
            let knownFailures = try KnownFailures.load(from: Self.ratchetFile)
            // A reason names the scsi_debug behaviour behind the failure, or starts with "Ferry:" and
            // says which Ferry bug causes it (unfinished work, listed honestly until fixed).
            for (name, reason) in knownFailures.reasons
            where !reason.contains("scsi_debug") && !reason.hasPrefix("Ferry:") {
                Issue.record(
                    """
                    \(name) in \(knownFailures.file.lastPathComponent) names neither a scsi_debug behaviour nor a \
                    Ferry bug: \(reason)
                    """)
            }
            let run = try await VirtualMachine.run(
                script: "conformance.sh", arguments: ["SCSI", "\(Self.suiteTimeout)"],
                environment: ["FERRYD": try VirtualMachine.locateFerryd()], timeout: Self.timeout)
            let report = Self.report(of: run, family: "SCSI")
            print("scsi_debug on its own (guest/scsi-debug-probes.sh):\n\(run.file("scsi-debug-probes.log"))")

            let counts = (report.passed.count, report.skipped.count, report.failed.count)
            print("passthrough SCSI: \(counts.0) passed, \(counts.1) skipped, \(counts.2) failed")
            for result in report.skipped {
                if case .skipped(let reason) = result.outcome { print("  skipped \(result.name): \(reason)") }
            }
            for result in report.failed {
                guard case .failed(let reason) = result.outcome else { continue }
                let known = knownFailures.reasons[result.name] != nil ? "known" : "NEW"
                print("  failed (\(known)) \(result.name): \(reason)")
            }
            var violations = knownFailures.violations(in: report, family: "SCSI")
            if run.exitCode != 0 { violations.append("the guest script failed") }
            if report.results.isEmpty { violations.append("no conformance test ran") }
            if violations.isEmpty {
                VirtualMachine.expectSuccess(run, "passthrough conformance")
            } else {
                print("VM passthrough conformance: \(VirtualMachine.seconds(run.duration)) in all")
                Issue.record("passthrough conformance:\n\(violations.joined(separator: "\n"))\n\(run.diagnostics)")
            }
        }

        /// Gathers the per-suite logs that guest/conformance.sh wrote. A suite that was killed at
        /// its timeout, or whose iscsi-test-cu died, fails the test it was running.
        static func report(of run: GuestRun, family: String) -> ConformanceReport {
            var report = ConformanceReport()
            for line in run.file("conformance/suites").split(separator: "\n") {
                let fields = line.split(separator: " ")
                guard fields.count == 2 else { continue }
                let suite = String(fields[0])
                var part = ConformanceReport(output: run.file("conformance/\(suite).log"), family: family)
                if fields[1] == "124" || !part.finished {
                    let why =
                        fields[1] == "124"
                        ? "hung: no answer within \(suiteTimeout) s" : "iscsi-test-cu died (status \(fields[1]))"
                    part.results = part.results.map { result in
                        guard result.outcome == .failed(reason: ConformanceReport.noResult) else { return result }
                        return .init(name: result.name, outcome: .failed(reason: why))
                    }
                    if part.results.isEmpty {
                        part.results = [.init(name: "\(suite).(run)", outcome: .failed(reason: why))]
                    }
                    part.finished = true
                }
                report.append(part)
            }
            if run.exitCode == nil { report.finished = false }
            return report
        }
    }
}
