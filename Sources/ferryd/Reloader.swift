import Dispatch
import FerryConfig
import FerryTarget
import Foundation
import Logging
import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where the configuration comes from, so that a reload reads it the same way start-up did.
struct ConfigurationSource: Sendable {
    /// The TOML file; nil for the embedded default.
    var file: String?
    var defaultStateDirectory: String
    /// `--state-directory`, which overrides the file.
    var stateDirectoryOverride: String?

    func load() throws(ConfigurationError) -> FerryConfiguration {
        var configuration: FerryConfiguration
        if let file {
            configuration = try FerryConfiguration.load(contentsOf: file, defaultStateDirectory: defaultStateDirectory)
        } else {
            configuration = FerryConfiguration.embeddedDefault(
                stateDirectory: stateDirectoryOverride ?? defaultStateDirectory)
        }
        if let stateDirectoryOverride { configuration.stateDirectory = stateDirectoryOverride }
        return configuration
    }

    var name: String { file ?? "the embedded default" }
}

/// Re-reads and applies the configuration, on SIGHUP and for `ferryctl reload`, one reload at a
/// time, and tells the service manager (`RELOADING=1` ... `READY=1`).
final class Reloader: Sendable {
    let target: ISCSITarget
    let source: ConfigurationSource
    let notifier: SystemdNotifier?
    let logger: Logger
    private let serial = DispatchQueue(label: "ferryd.reload")

    init(target: ISCSITarget, source: ConfigurationSource, notifier: SystemdNotifier?, logger: Logger) {
        self.target = target
        self.source = source
        self.notifier = notifier
        self.logger = logger
    }

    /// Reloads; the error says what is wrong with the file (the running configuration stays).
    func reload() async -> Result<ReloadReport, ReloadFailure> {
        await withCheckedContinuation { continuation in
            serial.async { continuation.resume(returning: self.reloadNow()) }
        }
    }

    /// Applies a change to the running configuration (ferryctl lun/acl add/remove), in turn with
    /// reloads. The file is not rewritten (``save()`` does that): the next reload reads the file again.
    func apply(
        _ change: @escaping @Sendable (FerryConfiguration) throws -> FerryConfiguration
    ) async -> Result<ReloadReport, ReloadFailure> {
        await withCheckedContinuation { continuation in
            serial.async {
                let result: Result<ReloadReport, ReloadFailure>
                do {
                    result = .success(try self.target.reload(try change(self.target.configuration)))
                } catch {
                    result = .failure(ReloadFailure(problems: ["\(error)"]))
                }
                if case .success(let report) = result {
                    self.logger.notice("runtime change", metadata: ["changes": "\(report.changes)"])
                    self.notifier?.notify(["STATUS=\(self.target.status.summary)"])
                }
                continuation.resume(returning: result)
            }
        }
    }

    /// Writes the running configuration over the configuration file (`ferryctl save-config`), in turn with reloads
    /// and runtime changes; the file's path on success. A state directory from `--state-directory` is not written:
    /// the file keeps its own.
    func save() async -> Result<String, ReloadFailure> {
        await withCheckedContinuation { continuation in
            serial.async { continuation.resume(returning: self.saveNow()) }
        }
    }

    private func saveNow() -> Result<String, ReloadFailure> {
        guard let file = source.file else {
            return .failure(ReloadFailure(problems: ["ferryd serves the embedded default: there is no file to save to"]))
        }
        var configuration = target.configuration
        if source.stateDirectoryOverride != nil {
            configuration.stateDirectory =
                (try? FerryConfiguration.load(contentsOf: file, defaultStateDirectory: source.defaultStateDirectory))?
                .stateDirectory ?? source.defaultStateDirectory
        }
        do {
            try configuration.save(to: file, defaultStateDirectory: source.defaultStateDirectory)
        } catch {
            logger.error("cannot save the configuration: \(error)")
            return .failure(ReloadFailure(problems: ["\(error)"]))
        }
        logger.notice("saved the running configuration", metadata: ["config": "\(file)"])
        return .success(file)
    }

    private func reloadNow() -> Result<ReloadReport, ReloadFailure> {
        notifier?.notify([
            "RELOADING=1", "MONOTONIC_USEC=\(SystemdNotifier.monotonicMicroseconds())",
            "STATUS=reloading \(source.name)",
        ])
        logger.info("reloading", metadata: ["config": "\(source.name)"])
        let result: Result<ReloadReport, ReloadFailure>
        do {
            let configuration = try source.load()
            result = .success(try target.reload(configuration))
        } catch let error as ConfigurationError {
            result = .failure(ReloadFailure(problems: error.problems.map(\.description)))
        } catch {
            result = .failure(ReloadFailure(problems: ["\(error)"]))
        }
        switch result {
        case .success(let report):
            for warning in report.warnings { logger.warning("reload: \(warning)") }
            logger.notice(
                "reloaded",
                metadata: [
                    "changes": "\(report.changes.isEmpty ? ["none"] : report.changes)",
                    "sessionsAskedToLogOut": "\(report.sessionsLoggedOut)",
                ])
            notifier?.notify(["READY=1", "STATUS=\(target.status.summary)"])
        case .failure(let failure):
            for problem in failure.problems { logger.error("reload: \(problem)") }
            logger.error("reload refused: \(source.name) is invalid; still serving the previous configuration")
            notifier?.notify([
                "READY=1", "STATUS=reload failed (see the journal); \(target.status.summary) as before",
            ])
        }
        return result
    }
}

/// Why a reload was refused: the problems of the file, or the logical unit that cannot be opened.
struct ReloadFailure: Error {
    var problems: [String]
}

/// Turns SIGHUP into reloads and keeps the service manager's status line current.
struct HangupService: Service {
    let reloader: Reloader
    let notifier: SystemdNotifier?

    func run() async throws {
        let (hangups, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler { continuation.yield() }
        source.resume()
        defer { source.cancel() }
        await withDiscardingTaskGroup { group in
            if let notifier {
                group.addTask { await Self.reportStatus(of: reloader.target, to: notifier) }
            }
            for await _ in hangups.cancelOnGracefulShutdown() { _ = await reloader.reload() }
            group.cancelAll()
        }
    }

    /// Sends `STATUS=` whenever the numbers change (checked every two seconds).
    private static func reportStatus(of target: ISCSITarget, to notifier: SystemdNotifier) async {
        var last = target.status
        while (try? await Task.sleep(for: .seconds(2))) != nil {
            let status = target.status
            if status != last { notifier.notify(["STATUS=\(status.summary)"]) }
            last = status
        }
    }
}
