import Foundation

/// An error that says what went wrong and what to do about it; swift-testing prints it as is.
struct IntegrationFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// ThreadSanitizer reports in what Ferry's own programs print. `scripts/tsan` builds ferryd and ferryctl with
/// `-sanitize=thread`, and these tests start the binaries of the same build (``FerrydProcess/locateFerryd()``).
/// TSan prints each report on the process's stderr, which every test captures (ferryd's log file, a tool's
/// output), and then goes on (`halt_on_error=0`), so a report would otherwise only show in the exit status
/// (`exitcode=66`) of a process that exits normally. A report anywhere in that output fails the test that started
/// the process, with the report.
enum ThreadSanitizer {
    static let marker = "WARNING: ThreadSanitizer"

    /// The reports in `output` of `program`, as a failure message; nil when there are none.
    static func reports(in output: String, of program: String) -> String? {
        guard let start = output.range(of: marker) else { return nil }
        let count = output.components(separatedBy: marker).count - 1
        return "ThreadSanitizer reported \(count) warning(s) in \(program):\n\(output[start.lowerBound...].prefix(16000))"
    }

    /// Throws when `output` of `program` holds a report.
    static func check(_ output: String, of program: String) throws {
        if let reports = reports(in: output, of: program) { throw IntegrationFailure(reports) }
    }
}

/// What a finished command left: its exit status and everything it printed.
struct ToolResult {
    var status: Int32
    var output: String
    /// Whether the command was killed because it ran past its timeout.
    var timedOut: Bool
}

/// Runs the real peers the integration tests talk to (libiscsi's utilities and iscsi-test-cu).
enum ExternalTool {
    /// The full path of `name` on PATH (or in /usr/bin, /usr/sbin); fails with how to install it.
    static func locate(_ name: String, package: String = "libiscsi-bin") throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        for directory in directories where FileManager.default.isExecutableFile(atPath: "\(directory)/\(name)") {
            return "\(directory)/\(name)"
        }
        throw IntegrationFailure(
            "\(name) is not installed: install \(package) (scripts/install-deps --test). "
                + "The integration tests need real peers and never skip.")
    }

    /// Runs `executable` to completion with stdout and stderr in one capture; kills it after
    /// `timeout` (the result then says `timedOut`).
    static func run(_ executable: String, _ arguments: [String], timeout: Duration) async throws -> ToolResult {
        let outputFile = FileManager.default.temporaryDirectory
            .appendingPathComponent("ferry-tool-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: outputFile.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outputFile) }
        let handle = try FileHandle(forWritingTo: outputFile)
        defer { try? handle.close() }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()

        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        let timedOut = process.isRunning
        if timedOut {
            process.terminate()
            try? await Task.sleep(for: .seconds(2))
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        var output = String(decoding: (try? Data(contentsOf: outputFile)) ?? Data(), as: UTF8.self)
        if timedOut { output += "\n[killed: \(executable) did not finish within \(timeout)]\n" }
        try ThreadSanitizer.check(output, of: executable)
        return ToolResult(status: process.terminationStatus, output: output, timedOut: timedOut)
    }
}
