import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A `ferryd` subprocess with a configuration the test writes itself (CHAP, access lists, several targets), in a
/// temporary directory of its own. ``FerrydProcess`` serves the plain one-target shape.
final class ConfiguredFerryd {
    let port: Int
    let directory: URL
    private let process: Process
    private let logFile: URL

    /// Everything ferryd has logged so far.
    var log: String { String(decoding: (try? Data(contentsOf: logFile)) ?? Data(), as: UTF8.self) }

    /// How many lines of the log contain `text`.
    func logLines(containing text: String) -> Int {
        log.split(separator: "\n").filter { $0.contains(text) }.count
    }

    /// Whether ferryd still runs.
    var isRunning: Bool { process.isRunning }

    /// ferryd's process ID.
    var processIdentifier: Int32 { process.processIdentifier }

    /// The configuration file ferryd reads (again on SIGHUP).
    var configurationFile: URL { directory.appendingPathComponent("ferry.toml") }

    /// Sends `signal` (SIGHUP: reload) to ferryd.
    func send(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Runs `body` against a ferryd whose configuration `configuration(port, directory)` returns (a free port on
    /// 127.0.0.1 and the temporary directory for backing files). ferryd must stop cleanly on SIGTERM afterwards.
    /// `environment` adds to the test's environment (e.g. `NOTIFY_SOCKET`); `logLevel` overrides
    /// `FERRYD_LOG_LEVEL` (default info).
    static func with<Result>(
        configuration: (Int, String) -> String, environment: [String: String] = [:], logLevel: String? = nil,
        _ body: (ConfiguredFerryd) async throws -> Result
    ) async throws -> Result {
        let port = try FerrydProcess.freePort()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "ferryd-configured-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let file = directory.appendingPathComponent("ferry.toml")
        let text = configuration(port, directory.path)
        try text.write(to: file, atomically: true, encoding: .utf8)
        // ferryd refuses a file that holds a CHAP secret itself when others can read it.
        if text.split(separator: "\n").contains(where: { $0.drop(while: \.isWhitespace).hasPrefix("secret =") }) {
            chmod(file.path, 0o600)
        }
        let logFile = directory.appendingPathComponent("ferryd.log")
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let logHandle = try FileHandle(forWritingTo: logFile)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: try FerrydProcess.locateFerryd())
        let logLevel = logLevel ?? ProcessInfo.processInfo.environment["FERRYD_LOG_LEVEL"] ?? "info"
        process.arguments = ["--config", file.path, "--log-level", logLevel]
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = logHandle
        process.standardError = logHandle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try? logHandle.close()
        let ferryd = ConfiguredFerryd(port: port, directory: directory, process: process, logFile: logFile)

        let result: Result
        do {
            try await ferryd.waitUntilListening(configuration: text)
            result = try await body(ferryd)
        } catch {
            _ = await ferryd.stop()
            let log = ferryd.log
            if let reports = ThreadSanitizer.reports(in: log, of: "ferryd") {
                throw IntegrationFailure("\(error)\n\(reports)")
            }
            throw IntegrationFailure("\(error)\n--- ferryd log (last 8000 characters) ---\n\(log.suffix(8000))")
        }
        let status = await ferryd.stop()
        let log = ferryd.log
        try ThreadSanitizer.check(log, of: "ferryd")
        guard status == 0 else {
            throw IntegrationFailure("ferryd did not stop cleanly on SIGTERM:\n\(log.suffix(8000))")
        }
        return result
    }

    private init(port: Int, directory: URL, process: Process, logFile: URL) {
        self.port = port
        self.directory = directory
        self.process = process
        self.logFile = logFile
    }

    /// Waits until the portal accepts and, when `configuration` has them, the control socket and the metrics
    /// endpoint listen. ferryd runs them as separate services that start concurrently, so the portal can accept
    /// before the others are bound; under ThreadSanitizer's slowdown a test then found no control socket, or the
    /// metrics port refusing. Their "listening" lines are logged once they are bound (at info, the default).
    private func waitUntilListening(configuration: String) async throws {
        let sections = configuration.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let lines = [("[control]", "control socket listening"), ("[metrics]", "metrics endpoint listening")]
            .filter { sections.contains($0.0) }.map(\.1)
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            guard process.isRunning else {
                throw IntegrationFailure("ferryd exited with status \(process.terminationStatus):\n\(log)")
            }
            if FerrydProcess.accepts(port: port) {
                let log = self.log
                if lines.allSatisfy({ log.contains($0) }) { return }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw IntegrationFailure(
            "ferryd did not listen on 127.0.0.1:\(port) (and log \(lines)) within 30 s:\n\(log)")
    }

    /// SIGTERM, then SIGKILL after 15 s; the exit status, nil when it had to be killed.
    private func stop() async -> Int32? {
        await process.terminate(within: .seconds(15))
    }

    /// A `[[target]]` table with a 16 MiB sparse LUN 0 in `directory`; `extra` lines go into the target table.
    static func target(_ name: String, directory: String, extra: String = "") -> String {
        """

        [[target]]
        name = "\(name)"
        \(extra)

        [[target.lun]]
        lun = 0
        path = "\(directory)/\(name.split(separator: ":").last ?? "lun").img"
        size = "16M"
        block_size = 512

        """
    }

    /// The head of a configuration: state directory and one portal on 127.0.0.1:`port`.
    static func portal(port: Int, directory: String, host: String = "127.0.0.1", portalGroupTag: UInt16 = 1) -> String {
        """
        state_directory = "\(directory)/state"

        [[portal]]
        address = "\(host):\(port)"
        portal_group_tag = \(portalGroupTag)

        """
    }
}
