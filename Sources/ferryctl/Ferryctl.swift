import ArgumentParser
import FerryConfig
import FerryControl
import Foundation

/// The administration command of a running ferryd, over its control socket.
@main
struct Ferryctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ferryctl",
        abstract: "Administer a running ferryd.",
        discussion: """
            ferryctl talks to ferryd over its control socket (\(defaultControlSocketPath) unless \
            [control] socket says otherwise; root only). Every command prints a table, or JSON with --json. \
            Runtime changes (lun, acl) live in memory until save-config writes them to the configuration file.
            """,
        subcommands: [
            Targets.self, LUNs.self, Sessions.self, TaskManagement.self, Reload.self, Logout.self, CheckConfig.self, LUNCommand.self,
            ACLCommand.self, SaveConfig.self, Device.self,
        ])
}

/// Options every command that talks to ferryd takes.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "ferryd's control socket.")
    var socket: String = defaultControlSocketPath

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    /// Sends `request` and returns the answer; fails, with what to do, when ferryd refuses it.
    func send(_ request: ControlRequest) throws -> ControlResponse {
        let response = try ControlClient(path: socket).exchange(request)
        if let error = response.error {
            if json { print((try? ControlCodec.prettyJSON(response)) ?? error.description) }
            throw CommandFailure(error.description)
        }
        return response
    }

    /// Prints `response` as JSON, or `table()`.
    func show(_ response: ControlResponse, _ table: () -> String) throws {
        print(json ? try ControlCodec.prettyJSON(response) : table(), terminator: json ? "\n" : "")
    }
}

/// A failure ferryctl reports on standard error before exiting 1.
struct CommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension Ferryctl {
    struct Targets: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the targets with their LUN and session counts and access control.")
        @OptionGroup var options: ConnectionOptions

        func run() throws {
            let response = try options.send(.targets)
            try options.show(response) { ControlTable(targets: response.targets ?? []).render() }
        }
    }

    struct LUNs: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "luns", abstract: "List LUNs: backend, device, state, size, block size, path.")
        @OptionGroup var options: ConnectionOptions
        @Argument(help: "Only this target's LUNs.") var target: String?

        func run() throws {
            let response = try options.send(.luns(target: target))
            try options.show(response) { ControlTable(luns: response.luns ?? []).render() }
        }
    }

    struct Sessions: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List sessions: initiator, connections, CmdSN window, negotiated parameters (all with --json).")
        @OptionGroup var options: ConnectionOptions

        func run() throws {
            let response = try options.send(.sessions)
            try options.show(response) { ControlTable(sessions: response.sessions ?? []).render() }
        }
    }

    struct TaskManagement: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "task-management",
            abstract: "Count the task management functions answered, by target, LUN, function and response.")
        @OptionGroup var options: ConnectionOptions

        func run() throws {
            let response = try options.send(.taskManagement)
            try options.show(response) { ControlTable(taskManagement: response.taskManagement ?? []).render() }
        }
    }

    struct Reload: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-read the configuration file (as systemctl reload ferryd does) and say what changed.")
        @OptionGroup var options: ConnectionOptions

        func run() throws {
            let response = try options.send(.reload)
            try options.show(response) { response.changes?.text ?? "" }
        }
    }

    struct SaveConfig: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "save-config",
            abstract: "Write the running configuration (with lun and acl changes) over ferryd's configuration file.",
            discussion: """
                The file is replaced atomically and keeps its mode and owner. Comments and layout are not kept; \
                a secret_file stays a secret_file.
                """)
        @OptionGroup var options: ConnectionOptions

        func run() throws {
            let response = try options.send(.saveConfig)
            try options.show(response) { response.changes?.text ?? "" }
        }
    }

    struct Logout: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Ask a session's initiator to log out (Async Message); closed after 5 s if it does not.")
        @OptionGroup var options: ConnectionOptions
        @Argument(help: "The session's TSIH (ferryctl sessions).") var tsih: UInt16

        func run() throws {
            let response = try options.send(.logout(tsih: tsih))
            try options.show(response) { response.changes?.text ?? "" }
        }
    }

    struct CheckConfig: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a configuration file without applying it (needs no running ferryd).")
        @Flag(help: "Print JSON instead of text.") var json = false
        @Argument(help: "The TOML file.") var file: String

        func run() throws {
            let problems: [String]
            var summary = ""
            do {
                let configuration = try FerryConfiguration.load(
                    contentsOf: file, defaultStateDirectory: "/var/lib/ferry")
                problems = []
                let luns = configuration.targets.reduce(0) { $0 + $1.luns.count }
                summary =
                    "\(configuration.portals.count) portal(s), \(configuration.targets.count) target(s), \(luns) LUN(s)"
            } catch {
                problems = error.problems.map(\.description)
            }
            if json {
                struct Result: Encodable {
                    var file: String
                    var valid: Bool
                    var problems: [String]
                }
                print(try ControlCodec.prettyJSON(Result(file: file, valid: problems.isEmpty, problems: problems)))
            } else if problems.isEmpty {
                print("\(file): OK (\(summary))")
            } else {
                for problem in problems { print(problem) }
            }
            if !problems.isEmpty {
                throw CommandFailure("\(problems.count) problem(s) in \(file); fix them and check again")
            }
        }
    }

    struct LUNCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "lun", abstract: "Add or remove a LUN at runtime.", subcommands: [Add.self, Remove.self])

        struct Add: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Add a LUN backed by a file or block device; initiators see it in REPORT LUNS.")
            @OptionGroup var options: ConnectionOptions
            @Argument(help: "The target's name.") var target: String
            @Argument(help: "The LUN number (0-16383).") var lun: UInt64
            @Argument(help: "Absolute path of the backing file or block device.") var path: String
            @Option(help: "Size (e.g. 10G) to create a missing file, sparse.") var size: String?
            @Option(help: "512 or 4096.") var blockSize: Int = 512
            @Flag(help: "Export the LUN read-only.") var readOnly = false

            func validate() throws {
                if let size, ByteCount.parse(size) == nil {
                    throw ValidationError(
                        "--size \(size) is not a size: use bytes or a K, M, G or T suffix (1024-based)")
                }
            }

            func run() throws {
                let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
                let definition = LUNDefinition(
                    lun: lun, path: absolute, size: size.flatMap(ByteCount.parse), blockSize: blockSize,
                    readOnly: readOnly)
                let response = try options.send(.addLUN(target: target, definition))
                try options.show(response) { response.changes?.text ?? "" }
            }
        }

        struct Remove: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Remove a LUN; the target's sessions are asked to log out, and the LUN is flushed.")
            @OptionGroup var options: ConnectionOptions
            @Argument(help: "The target's name.") var target: String
            @Argument(help: "The LUN number.") var lun: UInt64

            func run() throws {
                let response = try options.send(.removeLUN(target: target, lun: lun))
                try options.show(response) { response.changes?.text ?? "" }
            }
        }
    }

    struct ACLCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "acl", abstract: "Allow or disallow an initiator on a target at runtime.",
            subcommands: [Add.self, Remove.self])

        struct Add: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Allow an initiator. The first entry restricts a target that admitted everyone.")
            @OptionGroup var options: ConnectionOptions
            @Argument(help: "The target's name.") var target: String
            @Argument(help: "The initiator's name (iqn..., eui... or naa...).") var initiator: String

            func run() throws {
                let response = try options.send(.addInitiator(target: target, initiator: initiator))
                try options.show(response) { response.changes?.text ?? "" }
            }
        }

        struct Remove: ParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Disallow an initiator; its sessions with the target are asked to log out.")
            @OptionGroup var options: ConnectionOptions
            @Argument(help: "The target's name.") var target: String
            @Argument(help: "The initiator's name.") var initiator: String

            func run() throws {
                let response = try options.send(.removeInitiator(target: target, initiator: initiator))
                try options.show(response) { response.changes?.text ?? "" }
            }
        }
    }
}

/// `10G`, `512M`, `4096`: bytes with an optional 1024-based suffix.
enum ByteCount {
    static func parse(_ text: String) -> UInt64? {
        let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
        var digits = Substring(text.uppercased())
        if digits.hasSuffix("IB") {
            digits = digits.dropLast(2)
        } else if digits.hasSuffix("B") {
            digits = digits.dropLast()
        }
        var multiplier: UInt64 = 1
        if let last = digits.last, let unit = units[last] {
            multiplier = unit
            digits = digits.dropLast()
        }
        guard let value = UInt64(digits) else { return nil }
        let (product, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : product
    }
}
