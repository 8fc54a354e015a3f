import ArgumentParser
import FerryConfig
import FerryControl
import FerryTarget
import Foundation
import Logging
import ServiceLifecycle

/// The Ferry iSCSI target daemon.
@main
struct Ferryd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferryd",
        abstract: "Ferry, an iSCSI target.",
        discussion: """
            Without --config, ferryd serves its embedded default: the target \
            \(FerryConfiguration.defaultTargetName) on 127.0.0.1:3260 with LUN 0, a sparse 1 GiB \
            file default.img in the state directory. See docs/configuration.md for the file format.
            """)

    @Option(name: .long, help: "The TOML configuration file. Without it, ferryd serves the embedded default.")
    var config: String?

    @Option(
        name: .long,
        help: """
            The state directory (default: the file's state_directory, else $STATE_DIRECTORY, \
            else \(Ferryd.fallbackStateDirectory)).
            """)
    var stateDirectory: String?

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel = "info"

    @Flag(name: .long, help: "Validate the configuration, print its problems and exit (0 when it is valid).")
    var checkConfig = false

    /// Where state lives when neither the command line, the file nor systemd names a place.
    static let fallbackStateDirectory = "/var/lib/ferry"

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError(
                "--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() async throws {
        // systemd's StateDirectory= sets STATE_DIRECTORY, a colon-separated list.
        let environmentDirectory = ProcessInfo.processInfo.environment["STATE_DIRECTORY"]?
            .split(separator: ":").first.map(String.init)
        let defaultStateDirectory = environmentDirectory ?? Self.fallbackStateDirectory
        let stateDirectory = self.stateDirectory.map {
            $0.hasPrefix("/") ? $0 : FileManager.default.currentDirectoryPath + "/" + $0
        }

        let source = ConfigurationSource(
            file: config, defaultStateDirectory: defaultStateDirectory, stateDirectoryOverride: stateDirectory)
        let configuration: FerryConfiguration
        do {
            configuration = try source.load()
        } catch {
            printError(error.description)
            printError("ferryd: \(error.problems.count) problem(s) in \(config ?? "the configuration")")
            throw ExitCode.failure
        }

        if checkConfig {
            let luns = configuration.targets.reduce(0) { $0 + $1.luns.count }
            print(
                "\(config ?? "embedded default"): OK (\(configuration.portals.count) portal(s), "
                    + "\(configuration.targets.count) target(s), \(luns) LUN(s))")
            return
        }

        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "ferryd")

        do {
            try createStateDirectory(configuration.stateDirectory)
        } catch {
            logger.critical("cannot create the state directory \(configuration.stateDirectory): \(error)")
            throw ExitCode.failure
        }

        logger.info(
            "starting",
            metadata: [
                "config": "\(config ?? "embedded default")",
                "state-directory": "\(configuration.stateDirectory)",
                "portals": "\(configuration.portals.map { "\($0.address) tpgt \($0.portalGroupTag)" })",
                "targets": "\(configuration.targets.map(Self.summary))",
            ])

        // SIGHUP reloads (HangupService); until it listens, a hangup must not end the process.
        signal(SIGHUP, SIG_IGN)
        let notifier = SystemdNotifier()
        // Metrics are bootstrapped before the target creates any.
        let metricsServer = configuration.metricsAddress.map {
            TargetMetrics.bootstrap(address: $0, limits: configuration.limits, logger: logger)
        }
        let target: ISCSITarget
        do {
            target = try ISCSITarget(
                configuration: configuration, logger: logger, observer: notifier.map(ServiceManagerObserver.init))
        } catch {
            logger.critical("cannot open the logical units: \(error)")
            throw ExitCode.failure
        }
        let reloader = Reloader(target: target, source: source, notifier: notifier, logger: logger)

        // Services stop in reverse order: the local endpoints and SIGHUP handling first, the
        // target (draining its sessions) last.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = [
            .init(service: target), .init(service: HangupService(reloader: reloader, notifier: notifier)),
        ]
        if let path = Self.controlSocketPath(configuration, logger: logger) {
            let responder = ControlResponder(target: target, reloader: reloader, logger: logger)
            services.append(
                .init(
                    service: LineSocketServer(
                        path: path, maximumLineLength: ControlProtocol.maximumLineLength, logger: logger,
                        respond: responder.respond(to:))))
        }
        if let metricsServer { services.append(.init(service: metricsServer)) }
        let group = ServiceGroup(
            configuration: ServiceGroupConfiguration(
                services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
        } catch {
            logger.critical("cannot serve: \(error)\(Self.hint(for: error, portals: configuration.portals))")
            throw ExitCode.failure
        }
    }

    /// The control socket's path: `[control] socket`, else in systemd's `RuntimeDirectory=`, else
    /// /run/ferry/control.sock. Without a configured path, a directory ferryd cannot create or write
    /// means no control socket (a notice says so), not a failure.
    private static func controlSocketPath(_ configuration: FerryConfiguration, logger: Logger) -> String? {
        if let path = configuration.controlSocket { return path }
        let runtimeDirectory = ProcessInfo.processInfo.environment["RUNTIME_DIRECTORY"]?
            .split(separator: ":").first.map(String.init)
        let path = runtimeDirectory.map { "\($0)/control.sock" } ?? defaultControlSocketPath
        let directory = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
        guard access(directory, W_OK) == 0 else {
            logger.notice(
                "no control socket: its directory is not writable (run as root, or set [control] socket)",
                metadata: ["directory": "\(directory)"])
            return nil
        }
        // A socket that answers belongs to a running ferryd: taking it over would cut that one off
        // from ferryctl (and removing it at exit would leave neither reachable).
        if Self.socketAnswers(at: path) {
            logger.warning(
                "no control socket: another ferryd answers on it (set [control] socket to run a second one)",
                metadata: ["path": "\(path)"])
            return nil
        }
        return path
    }

    /// Whether a process accepts connections on the Unix socket at `path`.
    private static func socketAnswers(at path: String) -> Bool {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: pathBytes)
        }
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) == 0
            }
        }
    }

    /// What an operator can do about a failure to serve, from the system error it carries.
    private static func hint(for error: any Error, portals: [Portal]) -> String {
        let text = "\(error)"
        let addresses = portals.map(\.address).joined(separator: ", ")
        if text.contains("Address already in use") {
            return " (another process, such as tgtd or another ferryd, listens on \(addresses):"
                + " stop it or change the [[portal]] address)"
        }
        if text.contains("Cannot assign requested address") {
            return " (one of \(addresses) is not an address of this machine)"
        }
        if text.contains("Permission denied") {
            return " (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        }
        return ""
    }

    /// `iqn... (LUN 0 /var/lib/ferry/default.img 1073741824 bytes 512-byte blocks)` for the startup line.
    private static func summary(of target: Target) -> String {
        let luns = target.luns.map { lun in
            var text = "LUN \(lun.lun) "
            switch lun.backend {
            case .null: text += "null (writes are discarded)"
            case .rbd: text += "RBD image \(lun.path)"
            case .emulated, .sg: text += lun.path
            }
            if let size = lun.size { text += " \(size) bytes" }
            text += " \(lun.blockSize)-byte blocks"
            if lun.readOnly { text += " read-only" }
            return text
        }
        var text = "\(target.name) (\(luns.joined(separator: ", "))"
        if !target.allowedInitiators.isEmpty { text += "; \(target.allowedInitiators.count) allowed initiator(s)" }
        if target.chap != nil { text += "; CHAP" }
        if target.mutualCHAP != nil { text += "; mutual CHAP" }
        return text + ")"
    }

    /// Creates the state directory, mode 0700, when it is missing; an existing one is left as it is.
    private func createStateDirectory(_ path: String) throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw CocoaError(.fileWriteFileExists) }
            return
        }
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }

    private func printError(_ message: String) {
        FileHandle.standardError.write(Data((message + "\n").utf8))
    }
}
