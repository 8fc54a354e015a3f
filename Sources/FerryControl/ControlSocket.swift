/// Where ferryd listens for ferryctl unless configured otherwise.
public let defaultControlSocketPath = "/run/ferry/control.sock"

/// The control protocol between ferryctl and ferryd over a Unix stream socket: the client sends
/// one ``ControlRequest`` as a line of JSON, and ferryd answers with one ``ControlResponse`` as a
/// line of JSON. A connection may carry several requests, one after the other.
public enum ControlProtocol {
    /// Longest line either side accepts (a session list of a few thousand sessions fits).
    public static let maximumLineLength = 4 * 1024 * 1024
}

/// What ferryctl asks of ferryd.
public enum ControlRequest: Sendable, Hashable {
    /// Every target with its ACL and session count.
    case targets
    /// The LUNs of one target, or of all of them.
    case luns(target: String?)
    /// Every session with its connections, negotiated parameters and CmdSN window.
    case sessions
    /// Task management functions answered since ferryd started, by target, LUN, function and response.
    case taskManagement
    /// Re-read the configuration file, as SIGHUP does.
    case reload
    /// Write the running configuration over the configuration file, atomically (targetcli's saveconfig).
    case saveConfig
    /// Ask the initiator of a session to log out.
    case logout(tsih: UInt16)
    case addLUN(target: String, LUNDefinition)
    case removeLUN(target: String, lun: UInt64)
    case addInitiator(target: String, initiator: String)
    case removeInitiator(target: String, initiator: String)
    /// A SCSI device appeared or went away (sent by Ferry's udev rules): passthrough LUNs go
    /// offline or come back.
    case device(DeviceEvent)
}

/// What udev saw happen to a SCSI device, for ``ControlRequest/device(_:)``.
public struct DeviceEvent: Codable, Sendable, Hashable {
    public enum Action: String, Codable, Sendable, CaseIterable {
        /// The device appeared: offline LUNs whose path now names their disk (the same WWN) come back.
        case added
        /// The device went away: the LUNs it backs go offline.
        case removed
    }

    public var action: Action
    /// The kernel name of the node (`sg3`, `sdc`, udev's `%k`); nil: every passthrough LUN is checked.
    public var name: String?

    public init(action: Action, name: String? = nil) {
        self.action = action
        self.name = name
    }
}

/// A LUN added at runtime (the keys of `[[target.lun]]`).
public struct LUNDefinition: Codable, Sendable, Hashable {
    public var lun: UInt64
    /// Absolute path of the backing file or block device.
    public var path: String
    /// Bytes, to create a missing backing file (sparse).
    public var size: UInt64?
    public var blockSize: Int?
    public var readOnly: Bool?

    public init(lun: UInt64, path: String, size: UInt64? = nil, blockSize: Int? = nil, readOnly: Bool? = nil) {
        self.lun = lun
        self.path = path
        self.size = size
        self.blockSize = blockSize
        self.readOnly = readOnly
    }
}

/// ferryd's answer: exactly one of the payloads, or `error`.
public struct ControlResponse: Codable, Sendable, Hashable {
    public var error: ControlFailure?
    public var targets: [TargetInfo]?
    public var luns: [LUNInfo]?
    public var sessions: [SessionInfo]?
    public var taskManagement: [TaskManagementCount]?
    /// What a reload or runtime change did.
    public var changes: ChangeSummary?

    public init(
        error: ControlFailure? = nil, targets: [TargetInfo]? = nil, luns: [LUNInfo]? = nil,
        sessions: [SessionInfo]? = nil, taskManagement: [TaskManagementCount]? = nil, changes: ChangeSummary? = nil
    ) {
        self.error = error
        self.targets = targets
        self.luns = luns
        self.sessions = sessions
        self.taskManagement = taskManagement
        self.changes = changes
    }

    public static func failure(_ message: String, hint: String? = nil) -> ControlResponse {
        ControlResponse(error: ControlFailure(message: message, hint: hint))
    }
}

/// How many task management functions of one kind a logical unit answered, and how.
public struct TaskManagementCount: Codable, Sendable, Hashable {
    public var target: String
    public var lun: UInt64
    /// "abortTask", "logicalUnitReset", … (RFC 7143 §11.5.1 and RFC 7144 names).
    public var function: String
    /// "functionComplete", "taskDoesNotExist", … (RFC 7143 §11.6.1).
    public var response: String
    public var count: Int

    public init(target: String, lun: UInt64, function: String, response: String, count: Int) {
        self.target = target
        self.lun = lun
        self.function = function
        self.response = response
        self.count = count
    }
}

/// Why a request failed, and what the operator can do about it.
public struct ControlFailure: Codable, Sendable, Hashable, Error, CustomStringConvertible {
    public var message: String
    public var hint: String?

    public init(message: String, hint: String? = nil) {
        self.message = message
        self.hint = hint
    }

    public var description: String { hint.map { "\(message)\n\($0)" } ?? message }
}

public struct TargetInfo: Codable, Sendable, Hashable {
    public var name: String
    public var alias: String?
    public var luns: Int
    /// Empty: every initiator may log in.
    public var allowedInitiators: [String]
    public var chap: Bool
    public var mutualCHAP: Bool
    public var sessions: Int

    public init(
        name: String, alias: String? = nil, luns: Int, allowedInitiators: [String], chap: Bool, mutualCHAP: Bool,
        sessions: Int
    ) {
        self.name = name
        self.alias = alias
        self.luns = luns
        self.allowedInitiators = allowedInitiators
        self.chap = chap
        self.mutualCHAP = mutualCHAP
        self.sessions = sessions
    }
}

public struct LUNInfo: Codable, Sendable, Hashable {
    public var target: String
    public var lun: UInt64
    /// The configured backend ("emulated", ...).
    public var backend: String
    /// What backs it: "file", "block", "sg", "null".
    public var device: String
    /// The file, device or WWN behind it; empty for a null LUN, which has none.
    public var path: String
    public var sizeBytes: UInt64?
    public var blockSize: Int
    public var readOnly: Bool
    /// "online" while the LUN serves commands.
    public var state: String

    public init(
        target: String, lun: UInt64, backend: String, device: String, path: String, sizeBytes: UInt64?,
        blockSize: Int, readOnly: Bool, state: String
    ) {
        self.target = target
        self.lun = lun
        self.backend = backend
        self.device = device
        self.path = path
        self.sizeBytes = sizeBytes
        self.blockSize = blockSize
        self.readOnly = readOnly
        self.state = state
    }
}

public struct SessionInfo: Codable, Sendable, Hashable {
    public struct Connection: Codable, Sendable, Hashable {
        public var cid: UInt16
        public var address: String

        public init(cid: UInt16, address: String) {
            self.cid = cid
            self.address = address
        }
    }

    public var tsih: UInt16
    public var isid: String
    public var initiator: String
    /// The target name; empty for a discovery session.
    public var target: String
    /// "Normal" or "Discovery" (RFC 7143 SessionType).
    public var type: String
    public var connections: [Connection]
    /// Negotiated operational parameters by key (RFC 7143 §13).
    public var parameters: [String: String]
    public var expCmdSN: UInt32
    public var maxCmdSN: UInt32
    /// Commands received and not yet answered.
    public var tasks: Int

    public init(
        tsih: UInt16, isid: String, initiator: String, target: String, type: String, connections: [Connection],
        parameters: [String: String], expCmdSN: UInt32, maxCmdSN: UInt32, tasks: Int
    ) {
        self.tsih = tsih
        self.isid = isid
        self.initiator = initiator
        self.target = target
        self.type = type
        self.connections = connections
        self.parameters = parameters
        self.expCmdSN = expCmdSN
        self.maxCmdSN = maxCmdSN
        self.tasks = tasks
    }
}

/// What a reload or a runtime change did.
public struct ChangeSummary: Codable, Sendable, Hashable {
    public var changes: [String]
    public var warnings: [String]
    public var sessionsLoggedOut: Int

    public init(changes: [String], warnings: [String] = [], sessionsLoggedOut: Int = 0) {
        self.changes = changes
        self.warnings = warnings
        self.sessionsLoggedOut = sessionsLoggedOut
    }
}

// MARK: - Wire form of requests

/// `{"command": "luns", "target": "iqn..."}`: a flat object, readable in `socat` sessions.
extension ControlRequest: Codable {
    private enum CodingKeys: String, CodingKey {
        case command, target, tsih, lun, initiator, action, name
    }

    /// The `command` values.
    public enum Command: String, Codable, Sendable, CaseIterable {
        case targets, luns, sessions, reload, logout
        case taskManagement = "task-management"
        case saveConfig = "save-config"
        case addLUN = "lun-add"
        case removeLUN = "lun-remove"
        case addInitiator = "acl-add"
        case removeInitiator = "acl-remove"
        case device
    }

    public var command: Command {
        switch self {
        case .targets: .targets
        case .luns: .luns
        case .sessions: .sessions
        case .taskManagement: .taskManagement
        case .reload: .reload
        case .saveConfig: .saveConfig
        case .logout: .logout
        case .addLUN: .addLUN
        case .removeLUN: .removeLUN
        case .addInitiator: .addInitiator
        case .removeInitiator: .removeInitiator
        case .device: .device
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        switch try container.decode(Command.self, forKey: .command) {
        case .targets: self = .targets
        case .luns: self = .luns(target: try container.decodeIfPresent(String.self, forKey: .target))
        case .sessions: self = .sessions
        case .taskManagement: self = .taskManagement
        case .reload: self = .reload
        case .saveConfig: self = .saveConfig
        case .logout: self = .logout(tsih: try container.decode(UInt16.self, forKey: .tsih))
        case .addLUN:
            self = .addLUN(
                target: try container.decode(String.self, forKey: .target),
                try container.decode(LUNDefinition.self, forKey: .lun))
        case .removeLUN:
            self = .removeLUN(
                target: try container.decode(String.self, forKey: .target),
                lun: try container.decode(UInt64.self, forKey: .lun))
        case .addInitiator:
            self = .addInitiator(
                target: try container.decode(String.self, forKey: .target),
                initiator: try container.decode(String.self, forKey: .initiator))
        case .removeInitiator:
            self = .removeInitiator(
                target: try container.decode(String.self, forKey: .target),
                initiator: try container.decode(String.self, forKey: .initiator))
        case .device:
            self = .device(
                DeviceEvent(
                    action: try container.decode(DeviceEvent.Action.self, forKey: .action),
                    name: try container.decodeIfPresent(String.self, forKey: .name)))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(command, forKey: .command)
        switch self {
        case .targets, .sessions, .taskManagement, .reload, .saveConfig:
            break
        case .luns(let target):
            try container.encodeIfPresent(target, forKey: .target)
        case .logout(let tsih):
            try container.encode(tsih, forKey: .tsih)
        case .addLUN(let target, let definition):
            try container.encode(target, forKey: .target)
            try container.encode(definition, forKey: .lun)
        case .removeLUN(let target, let lun):
            try container.encode(target, forKey: .target)
            try container.encode(lun, forKey: .lun)
        case .addInitiator(let target, let initiator), .removeInitiator(let target, let initiator):
            try container.encode(target, forKey: .target)
            try container.encode(initiator, forKey: .initiator)
        case .device(let event):
            try container.encode(event.action, forKey: .action)
            try container.encodeIfPresent(event.name, forKey: .name)
        }
    }
}
