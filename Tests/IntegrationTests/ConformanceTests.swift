import Foundation
import Testing

/// Every test that runs a real ferryd, one at a time: each ferryd has a port of its own, and the
/// machine's cores are better spent on one target at a time.
@Suite(.serialized) enum AgainstFerryd {}

extension AgainstFerryd {
    /// libiscsi's conformance suite (`iscsi-test-cu`) against a real ferryd, with a ratchet
    /// (`conformance-known-failures.txt`) of the failures Ferry still causes.
    @Suite struct ConformanceTests {
        @Test func scsiFamily() async throws {
            try await runFamily("SCSI", timeout: .seconds(20 * 60))
        }

        @Test func iscsiFamily() async throws {
            try await runFamily("iSCSI", timeout: .seconds(5 * 60))
        }

        /// Runs one family of tests, with the same URL twice so that the MultipathIO tests run.
        private func runFamily(_ family: String, timeout: Duration) async throws {
            let tool = try ExternalTool.locate("iscsi-test-cu")
            let knownFailures = try KnownFailures.load()
            let report = try await FerrydProcess.with(targetName: "iqn.2026-11.dev.ferry:conformance", lunSize: "64M") {
                ferryd in
                let url = ferryd.url(lun: 0)
                let result = try await ExternalTool.run(tool, ["-d", "-S", "-t", family, url, url], timeout: timeout)
                let report = ConformanceReport(output: result.output, family: family)
                guard report.finished, !report.results.isEmpty else {
                    throw IntegrationFailure(
                        "iscsi-test-cu -t \(family) did not complete (exit status \(result.status)); output:\n"
                            + result.output.suffix(6000))
                }
                return report
            }

            let counts = (report.passed.count, report.skipped.count, report.failed.count)
            print("\(family): \(counts.0) passed, \(counts.1) skipped, \(counts.2) failed")
            for result in report.skipped {
                if case .skipped(let reason) = result.outcome { print("  skipped \(result.name): \(reason)") }
            }
            for result in report.failed {
                guard case .failed(let reason) = result.outcome else { continue }
                let known = knownFailures.reasons[result.name] != nil ? "known" : "NEW"
                print("  failed (\(known)) \(result.name): \(reason)")
            }
            let violations = knownFailures.violations(in: report, family: family)
            #expect(violations.isEmpty, "\(family) conformance:\n\(violations.joined(separator: "\n"))")
        }
    }
}

/// The output parser and the ratchet logic, on output captured from iscsi-test-cu 1.19.
@Suite struct ConformanceReportTests {
    static let output = """
        found matching LU device identifier for all (2) paths

             CUnit - A unit testing framework for C - Version 2.1-3
             http://cunit.sourceforge.net/


        Suite: CompareAndWrite
          Test: Simple ...    [SKIPPED] COMPAREANDWRITE is not implemented.
            [SKIPPED] COMPAREANDWRITE is not implemented.
        passed
        Suite: GetLBAStatus
          Test: BeyondEol ...    [FAILED] GET_LBA_STATUS successful but should have failed
        FAILED
            1. test_get_lba_status_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)
        Suite: ModeSense6
          Test: Residuals ...passed    [FAILED] PRIN command: failed with sense.

        Suite: Read10
          Test: Simple ...passed
          Test: BeyondEol ...FAILED
            1. test_read10_beyond_eol.c:98  - CU_ASSERT_NOT_EQUAL(ret,0)

        WARNING - Suite initialization failed for 'Write10'.
        Run Summary:    Type  Total    Ran Passed Failed Inactive
                       tests      5      5      3      2        0
        """

    @Test func parsesOutcomes() {
        let report = ConformanceReport(output: Self.output, family: "SCSI")
        #expect(report.finished)
        #expect(
            report.results == [
                .init(
                    name: "SCSI.CompareAndWrite.Simple",
                    outcome: .skipped(reason: "COMPAREANDWRITE is not implemented.")),
                .init(
                    name: "SCSI.GetLBAStatus.BeyondEol",
                    outcome: .failed(reason: "[FAILED] GET_LBA_STATUS successful but should have failed")),
                .init(name: "SCSI.ModeSense6.Residuals", outcome: .passed),
                .init(name: "SCSI.Read10.Simple", outcome: .passed),
                .init(
                    name: "SCSI.Read10.BeyondEol",
                    outcome: .failed(reason: "1. test_read10_beyond_eol.c:98  - CU_ASSERT_NOT_EQUAL(ret,0)")),
                .init(
                    name: "SCSI.Write10.(initialization)",
                    outcome: .failed(reason: "WARNING - Suite initialization failed for 'Write10'.")),
            ])
    }

    @Test func unfinishedRunFailsTheTestInProgress() {
        let report = ConformanceReport(
            output: "Suite: Read10\n  Test: Simple ...passed\n  Test: Async ...", family: "SCSI")
        #expect(!report.finished)
        #expect(report.failed.map(\.name) == ["SCSI.Read10.Async"])
    }

    @Test func ratchet() {
        let report = ConformanceReport(output: Self.output, family: "SCSI")
        let known = KnownFailures(
            text: """
                # comment
                SCSI.GetLBAStatus.BeyondEol  # beyond-EOL LBA not checked
                SCSI.Read10.Simple  # fixed since
                SCSI.Read10.Gone
                iSCSI.iSCSIdatasn.iSCSIDataSnInvalid  # other family
                """)
        #expect(
            known.violations(in: report, family: "SCSI") == [
                "new failure SCSI.Read10.BeyondEol: 1. test_read10_beyond_eol.c:98  - CU_ASSERT_NOT_EQUAL(ret,0)",
                "new failure SCSI.Write10.(initialization): WARNING - Suite initialization failed for 'Write10'.",
                "SCSI.Read10.Gone is listed in conformance-known-failures.txt but did not run",
                "SCSI.Read10.Simple no longer fails: remove it from conformance-known-failures.txt",
            ])
    }
}
