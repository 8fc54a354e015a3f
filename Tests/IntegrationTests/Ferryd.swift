import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A `ferryd` subprocess serving one target with a sparse-file LUN 0 (or an RBD image) on 127.0.0.1 and a free port,
/// in a temporary directory of its own (configuration, state, backing file and log).
final class FerrydProcess {
    let port: Int
    let targetName: String
    let directory: URL
    private let process: Process
    private let logFile: URL

    /// `iscsi://127.0.0.1:PORT/IQN/LUN`, the URL libiscsi's tools take.
    func url(lun: Int = 0) -> String { "iscsi://127.0.0.1:\(port)/\(targetName)/\(lun)" }

    /// What ferryd logged when ``stop()`` removed the directory.
    private var finalLog: String?

    /// Everything ferryd has logged so far (all of it, once stopped).
    var log: String { finalLog ?? String(decoding: (try? Data(contentsOf: logFile)) ?? Data(), as: UTF8.self) }

    /// ThreadSanitizer's reports in ferryd's log, as a failure message; nil when there are none.
    var sanitizerReports: String? { ThreadSanitizer.reports(in: log, of: "ferryd") }

    /// An RBD image as LUN 0's store (`backend = "rbd"`), in the cluster that `cephConf` describes.
    struct RBDImage {
        var pool: String
        var image: String
        var cephConf: String
    }

    /// Starts ferryd and returns once its portal accepts connections. `sanitizeRate` is LUN 0's
    /// `sanitize_rate`, unlimited when nil. LUN 0 is a sparse file of `lunSize`, or `rbdImage`.
    static func start(
        targetName: String, lunSize: String, sanitizeRate: String? = nil, rbdImage: RBDImage? = nil
    ) async throws -> FerrydProcess {
        let executable = try locateFerryd()
        let port = try freePort()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "ferryd-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let configurationFile = try writeConfiguration(
            in: directory, port: port, targetName: targetName, lunPath: "\(directory.path)/lun0.img", lunSize: lunSize,
            sanitizeRate: sanitizeRate, rbdImage: rbdImage)
        let logFile = directory.appendingPathComponent("ferryd.log")
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        let logHandle = try FileHandle(forWritingTo: logFile)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        let logLevel = ProcessInfo.processInfo.environment["FERRYD_LOG_LEVEL"] ?? "info"
        process.arguments = ["--config", configurationFile.path, "--log-level", logLevel]
        process.standardOutput = logHandle
        process.standardError = logHandle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        try? logHandle.close()

        let ferryd = FerrydProcess(
            port: port, targetName: targetName, directory: directory, process: process, logFile: logFile)
        do {
            try await ferryd.waitUntilListening(timeout: .seconds(30))
        } catch {
            _ = await ferryd.stop()
            throw error
        }
        return ferryd
    }

    /// Writes `ferry.toml` into `directory`: one portal 127.0.0.1:`port`, one target with LUN 0 (`rbdImage`
    /// instead of the file at `lunPath` when given).
    static func writeConfiguration(
        in directory: URL, port: Int, targetName: String, lunPath: String, lunSize: String,
        sanitizeRate: String? = nil, rbdImage: RBDImage? = nil
    ) throws -> URL {
        let store =
            if let rbdImage {
                """
                backend = "rbd"
                pool = "\(rbdImage.pool)"
                image = "\(rbdImage.image)"
                ceph_conf = "\(rbdImage.cephConf)"
                """
            } else {
                """
                path = "\(lunPath)"
                size = "\(lunSize)"
                """
            }
        let configuration = """
            state_directory = "\(directory.path)/state"

            [[portal]]
            address = "127.0.0.1:\(port)"
            portal_group_tag = 1

            [[target]]
            name = "\(targetName)"

            [[target.lun]]
            lun = 0
            \(store)
            block_size = 512
            \(sanitizeRate.map { "sanitize_rate = \"\($0)\"" } ?? "")

            """
        let file = directory.appendingPathComponent("ferry.toml")
        try configuration.write(to: file, atomically: true, encoding: .utf8)
        return file
    }

    private init(port: Int, targetName: String, directory: URL, process: Process, logFile: URL) {
        self.port = port
        self.targetName = targetName
        self.directory = directory
        self.process = process
        self.logFile = logFile
    }

    private func waitUntilListening(timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard process.isRunning else {
                throw IntegrationFailure(
                    "ferryd exited with status \(process.terminationStatus) before listening on port \(port):\n\(log)")
            }
            if Self.accepts(port: port) { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw IntegrationFailure("ferryd did not listen on 127.0.0.1:\(port) within \(timeout):\n\(log)")
    }

    /// Stops ferryd with SIGTERM (SIGKILL after 15 s) and returns its exit status; nil when it had
    /// to be killed. Keeps the log (``log``, ``sanitizerReports``) and removes the temporary directory.
    func stop() async -> Int32? {
        let status = await process.terminate(within: .seconds(15))
        finalLog = log
        try? FileManager.default.removeItem(at: directory)
        return status
    }

    /// Runs `body` against a fresh ferryd, which is always stopped afterwards. Fails when ferryd
    /// does not stop cleanly on SIGTERM.
    static func with<Result>(
        targetName: String, lunSize: String, _ body: (FerrydProcess) async throws -> Result
    ) async throws -> Result {
        let ferryd = try await start(targetName: targetName, lunSize: lunSize)
        let result: Result
        do {
            result = try await body(ferryd)
        } catch {
            _ = await ferryd.stop()
            if let reports = ferryd.sanitizerReports { throw IntegrationFailure("\(error)\n\(reports)") }
            throw IntegrationFailure("\(error)\n--- ferryd log (last 8000 characters) ---\n\(ferryd.log.suffix(8000))")
        }
        let status = await ferryd.stop()
        let log = ferryd.log
        try ThreadSanitizer.check(log, of: "ferryd")
        guard status == 0 else {
            let how = status.map { "exited with status \($0)" } ?? "had to be killed"
            throw IntegrationFailure("ferryd \(how) on SIGTERM instead of stopping cleanly:\n\(log.suffix(8000))")
        }
        return result
    }

    // MARK: - Finding ferryd and a port

    /// The `ferryd` that `swift test` built: `$FERRYD` if set, else the one beside the test bundle
    /// (on Linux `.build/<triple>/debug/<Package>PackageTests.xctest` sits next to `ferryd`), else
    /// the one in `swift build --show-bin-path`. `scripts/tsan` sets `$FERRYD` to the ferryd of its
    /// ThreadSanitizer build, so that ferryd (and ferryctl beside it) are sanitized as well.
    static func locateFerryd() throws -> String {
        if let path = ProcessInfo.processInfo.environment["FERRYD"] { return path }
        var directory = URL(fileURLWithPath: Bundle.main.executablePath ?? CommandLine.arguments[0])
            .resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = directory.appendingPathComponent("ferryd").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory.deleteLastPathComponent()
        }
        let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["swift", "build", "--show-bin-path", "--package-path", packageRoot.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        if (try? process.run()) != nil {
            let output = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            let binPath = String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            let candidate = "\(binPath)/ferryd"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw IntegrationFailure(
            "ferryd was not found beside the test bundle nor in swift build's bin path: run swift build")
    }

    /// A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it).
    static func freePort() throws -> Int {
        let descriptor = socket(AF_INET, socketStreamType, 0)
        guard descriptor >= 0 else { throw IntegrationFailure("socket() failed: errno \(errno)") }
        defer { close(descriptor) }
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                bind(descriptor, address, length) == 0 && getsockname(descriptor, address, &length) == 0
            }
        }
        guard bound else { throw IntegrationFailure("cannot bind a free port on 127.0.0.1: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Whether a TCP connection to 127.0.0.1:`port` succeeds.
    static func accepts(port: Int) -> Bool {
        let descriptor = socket(AF_INET, socketStreamType, 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }

    #if canImport(Glibc)
    private static let socketStreamType = Int32(SOCK_STREAM.rawValue)
    #else
    private static let socketStreamType = SOCK_STREAM
    #endif
}

extension Process {
    /// SIGTERM, then SIGKILL once `grace` has passed; the exit status, nil when it had to be killed.
    func terminate(within grace: Duration) async -> Int32? {
        if isRunning {
            kill(processIdentifier, SIGTERM)
            let deadline = ContinuousClock.now + grace
            while isRunning && ContinuousClock.now < deadline {
                try? await Task.sleep(for: .milliseconds(50))
            }
            if isRunning {
                kill(processIdentifier, SIGKILL)
                waitUntilExit()
                return nil
            }
        }
        waitUntilExit()
        return terminationStatus
    }
}
