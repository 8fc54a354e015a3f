import Foundation

/// The per-test results of one `iscsi-test-cu` run, read from its verbose CUnit output.
///
/// libiscsi 1.19 prints, for each suite and test:
///
///     Suite: Read10
///       Test: Simple ...passed
///       Test: BeyondEol ...    [FAILED] READ10 successful but should have failed ...
///     FAILED
///         1. test_read10_beyond_eol.c:38  - CU_ASSERT_EQUAL(ret,0)
///       Test: DpoFua ...    [SKIPPED] ...
///     passed
///
/// CUnit writes `passed` or `FAILED` when the test returns, right after `...` or at the start of
/// a line; what the test printed comes before it, what the suite printed afterwards after it. A
/// test that passed after printing `[SKIPPED]` was skipped. A suite whose initialization failed
/// runs no test and counts as one failed test named `FAMILY.Suite.(initialization)`.
public struct ConformanceReport {
    public enum Outcome: Equatable {
        case passed
        case skipped(reason: String)
        case failed(reason: String)
    }

    public struct Result: Equatable {
        /// `FAMILY.Suite.Test`, as `iscsi-test-cu -l` names it.
        public var name: String
        public var outcome: Outcome

        public init(name: String, outcome: Outcome) {
            self.name = name
            self.outcome = outcome
        }
    }

    public var results: [Result] = []
    /// Whether the output reached CUnit's "Run Summary": false when iscsi-test-cu died or was killed.
    public var finished = false

    public var passed: [String] { results.filter { $0.outcome == .passed }.map(\.name) }
    public var skipped: [Result] { results.filter { if case .skipped = $0.outcome { true } else { false } } }
    public var failed: [Result] { results.filter { if case .failed = $0.outcome { true } else { false } } }

    /// An empty report, to gather the reports of several runs in.
    public init() { finished = true }

    /// Adds the results of another run; the whole is finished only when every part is.
    public mutating func append(_ other: ConformanceReport) {
        results += other.results
        finished = finished && other.finished
    }

    public init(output: String, family: String) {
        var suite = ""
        var current: (name: String, lines: [Substring])?
        func finish() {
            if let test = current { results.append(Self.result(name: test.name, lines: test.lines)) }
            current = nil
        }
        for line in output.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("Suite: ") {
                finish()
                suite = String(line.dropFirst("Suite: ".count))
            } else if line.hasPrefix("  Test: ") {
                finish()
                let rest = line.dropFirst("  Test: ".count)
                guard let dots = rest.range(of: " ...") else { continue }
                current = ("\(family).\(suite).\(rest[..<dots.lowerBound])", [rest[dots.upperBound...]])
            } else if let range = line.range(of: "Suite initialization failed for '") {
                // CUnit runs none of the suite's tests when its initialization (libiscsi: the
                // login) fails; count that as one failure so that it cannot pass unnoticed.
                finish()
                let failedSuite = line[range.upperBound...].prefix(while: { $0 != "'" })
                results.append(
                    Result(name: "\(family).\(failedSuite).(initialization)", outcome: .failed(reason: String(line))))
            } else if line.hasPrefix("Run Summary:") {
                finish()
                finished = true
                break
            } else {
                current?.lines.append(line)
            }
        }
        finish()
    }

    /// The reason given for the test that was running when iscsi-test-cu stopped.
    public static let noResult = "no result: iscsi-test-cu stopped during this test"

    private static func result(name: String, lines: [Substring]) -> Result {
        guard let end = lines.firstIndex(where: { $0.hasPrefix("passed") || $0.hasPrefix("FAILED") }) else {
            return Result(name: name, outcome: .failed(reason: Self.noResult))
        }
        let printed = lines[..<end].map { $0.trimmingCharacters(in: .whitespaces) }
        if lines[end].hasPrefix("FAILED") {
            let message =
                printed.first { $0.hasPrefix("[FAILED]") }
                ?? lines[(end + 1)...].first { $0.contains(". ") }?.trimmingCharacters(in: .whitespaces)
            return Result(name: name, outcome: .failed(reason: message ?? "FAILED"))
        }
        if let skip = printed.first(where: { $0.hasPrefix("[SKIPPED]") }) {
            return Result(
                name: name,
                outcome: .skipped(reason: skip.dropFirst("[SKIPPED]".count).trimmingCharacters(in: .whitespaces)))
        }
        return Result(name: name, outcome: .passed)
    }
}

/// A ratchet: tests that fail today, one `FAMILY.Suite.Test  # reason` a line. A failure not
/// listed fails the suite, and so does a listed test that no longer fails, so the list only shrinks.
public struct KnownFailures {
    public var reasons: [String: String] = [:]
    /// The list's file, named in the violations.
    public let file: URL

    public init(text: String, file: URL) {
        self.file = file
        for line in text.split(separator: "\n") {
            let hash = line.firstIndex(of: "#")
            let name = line[..<(hash ?? line.endIndex)].trimmingCharacters(in: .whitespaces)
            guard !name.isEmpty else { continue }
            reasons[name] = hash.map { line[line.index(after: $0)...].trimmingCharacters(in: .whitespaces) } ?? ""
        }
    }

    public static func load(from file: URL) throws -> KnownFailures {
        do {
            return KnownFailures(text: try String(contentsOf: file, encoding: .utf8), file: file)
        } catch {
            throw RatchetFileError(description: "cannot read the ratchet file \(file.path): \(error)")
        }
    }

    /// The problems that fail the conformance test for `report`; empty when it meets the ratchet.
    public func violations(in report: ConformanceReport, family: String) -> [String] {
        var violations: [String] = []
        for failure in report.failed where reasons[failure.name] == nil {
            if case .failed(let reason) = failure.outcome {
                violations.append("new failure \(failure.name): \(reason)")
            }
        }
        let ran = Dictionary(report.results.map { ($0.name, $0.outcome) }, uniquingKeysWith: { first, _ in first })
        for name in reasons.keys.sorted() where name.hasPrefix(family + ".") {
            switch ran[name] {
            case .failed: break
            case .passed, .skipped:
                violations.append("\(name) no longer fails: remove it from \(file.lastPathComponent)")
            case nil where report.finished:
                violations.append("\(name) is listed in \(file.lastPathComponent) but did not run")
            case nil: break
            }
        }
        return violations
    }
}

/// The ratchet file could not be read.
public struct RatchetFileError: Error, CustomStringConvertible {
    public var description: String
}
