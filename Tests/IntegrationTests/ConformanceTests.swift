import ConformanceReporting
import Foundation
import Testing

/// Every test that runs a real ferryd, one at a time: each ferryd has a port of its own, and the
/// machine's cores are better spent on one target at a time.
@Suite(.serialized) enum AgainstFerryd {}

extension AgainstFerryd {
    /// libiscsi's conformance suite (`iscsi-test-cu`) against a real ferryd, with a ratchet
    /// (`conformance-known-failures.txt`) of the failures Ferry still causes.
    @Suite struct ConformanceTests {
        /// The ratchet of the emulated disk.
        static let ratchetFile = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("conformance-known-failures.txt")

        @Test func scsiFamily() async throws {
            try await Self.runFamily("SCSI", ratchet: Self.ratchetFile, start: Self.startFerryd)
        }

        @Test func iscsiFamily() async throws {
            try await Self.runFamily("iSCSI", ratchet: Self.ratchetFile, start: Self.startFerryd)
        }

        /// A ferryd with a 64 MiB file as LUN 0.
        static func startFerryd() async throws -> FerrydProcess {
            try await FerrydProcess.start(
                targetName: "iqn.2026-11.dev.ferry:conformance", lunSize: "64M", sanitizeRate: sanitizeRate)
        }

        /// How long one suite may take. A suite takes seconds against a working target, but for
        /// SCSI.Sanitize (about 90 s: Sanitize.Reset waits 60 s for a paced SANITIZE); a suite that
        /// runs longer has hung on a command Ferry never answers.
        static let suiteTimeout = Duration.seconds(120)

        /// The test LUN's `sanitize_rate`: a SANITIZE OVERWRITE of its 64 MiB takes 6.4 s, for
        /// Sanitize.Reset wants one still running after its TMFs, resets and reconnect (4-5 s).
        static let sanitizeRate = "10M"

        /// Runs one family of tests suite by suite against LUN 0 of the ferryd that `start` starts, with the same URL
        /// twice so that the MultipathIO tests run (once for SCSI.Sanitize), and checks the outcome against the ratchet
        /// in `ratchet`. A suite that hangs counts its running test as failed, and the rest of the family runs against
        /// a fresh ferryd.
        static func runFamily(
            _ family: String, ratchet: URL, start: () async throws -> FerrydProcess
        ) async throws {
            let tool = try ExternalTool.locate("iscsi-test-cu")
            let knownFailures = try KnownFailures.load(from: ratchet)
            let listing = try await ExternalTool.run(tool, ["-l"], timeout: .seconds(30))
            let suites = listing.output.split(separator: "\n").map(String.init).filter {
                $0.hasPrefix(family + ".") && $0.split(separator: ".").count == 2
            }
            guard !suites.isEmpty else {
                throw IntegrationFailure("iscsi-test-cu -l lists no \(family) suite:\n\(listing.output)")
            }

            var report = ConformanceReport()
            var problems: [String] = []
            var ferryd = try await start()
            do {
                for suite in suites {
                    let url = ferryd.url(lun: 0)
                    // With a second URL, Sanitize.Reservations takes its RESERVE(6) on the second
                    // path, which stays logged in, so Sanitize.Reset's SANITIZE meets a reservation
                    // conflict; with one URL it clones a session and closes it afterwards.
                    let urls = suite == "SCSI.Sanitize" ? [url] : [url, url]
                    let result = try await ExternalTool.run(
                        tool, ["-d", "-S", "-t", suite] + urls, timeout: Self.suiteTimeout)
                    var part = ConformanceReport(output: result.output, family: family)
                    if result.timedOut || !part.finished {
                        let why = result.timedOut ? "hung: no answer within \(Self.suiteTimeout)" : "iscsi-test-cu died"
                        part.results = part.results.map { result in
                            guard result.outcome == .failed(reason: ConformanceReport.noResult) else { return result }
                            return .init(name: result.name, outcome: .failed(reason: why))
                        }
                        if part.results.isEmpty {
                            part.results = [.init(name: "\(suite).(run)", outcome: .failed(reason: why))]
                        }
                        part.finished = true
                        print("\(suite): \(why); output:\n\(result.output.suffix(3000))")
                        print("--- ferryd log ---\n\(ferryd.log.suffix(4000))")
                        _ = await ferryd.stop()
                        if let reports = ferryd.sanitizerReports { problems.append(reports) }
                        ferryd = try await start()
                    }
                    report.append(part)
                }
            } catch {
                _ = await ferryd.stop()
                throw error
            }
            let status = await ferryd.stop()
            if let reports = ferryd.sanitizerReports { problems.append(reports) }
            if status != 0 {
                problems.append("ferryd did not stop cleanly on SIGTERM:\n\(ferryd.log.suffix(4000))")
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
            let violations = problems + knownFailures.violations(in: report, family: family)
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
                """, file: AgainstFerryd.ConformanceTests.ratchetFile)
        #expect(
            known.violations(in: report, family: "SCSI") == [
                "new failure SCSI.Read10.BeyondEol: 1. test_read10_beyond_eol.c:98  - CU_ASSERT_NOT_EQUAL(ret,0)",
                "new failure SCSI.Write10.(initialization): WARNING - Suite initialization failed for 'Write10'.",
                "SCSI.Read10.Gone is listed in conformance-known-failures.txt but did not run",
                "SCSI.Read10.Simple no longer fails: remove it from conformance-known-failures.txt",
            ])
    }
}
