public import SCSI

/// The negotiated values the full-feature phase runs on (RFC 7143 §13).
public struct SessionParameters: Sendable, Hashable {
    public var initialR2T = true
    public var immediateData = true
    public var firstBurstLength = 65_536
    public var maxBurstLength = 262_144
    public var maxOutstandingR2T = 1
    /// The initiator's MaxRecvDataSegmentLength: the largest data segment Ferry may send.
    public var initiatorMaxRecvDataSegmentLength = 8_192
    public var errorRecoveryLevel = 0
    /// How many commands beyond ExpCmdSN the session may have outstanding.
    public var commandWindow = 128

    public init() {}

    /// Room beyond the CmdSN window for immediate commands, which the window does not count
    /// (RFC 7143 §4.2.2.1), and, apart from that, for task management functions in progress.
    public static let immediateAllowance = 16

    /// The tasks a session may hold at once, immediate commands included; a command beyond it ends
    /// with TASK SET FULL.
    public var taskLimit: Int { commandWindow + Self.immediateAllowance }
}

/// What the transport knows about the logical unit a command addresses.
public enum LogicalUnitDisposition: Sendable, Hashable {
    /// The LUN is mapped; `dataOutLength` is what the CDB asks the initiator for (nil: unknown).
    case mapped(dataOutLength: Int?)
    /// The target answers the command itself: REPORT LUNS, and every command to a LUN that is
    /// not mapped (INQUIRY with peripheral qualifier 011b, otherwise LOGICAL UNIT NOT SUPPORTED).
    case answeredByTarget
}

/// What the target knows about the logical unit a task management function names.
public enum FunctionLogicalUnit: Sendable, Hashable {
    /// The LUN is mapped. `taskAbortedStatus`: the TAS bit of its control mode page, which decides how
    /// tasks that CLEAR TASK SET takes from other I_T nexuses end for their initiators (SAM-5 §7.5).
    case mapped(taskAbortedStatus: Bool)
    case notMapped
}

/// Whether the target's data buffer budget (`[limits] max_data_buffer_mib`) had room for a command's
/// Expected Data Transfer Length. The shell reserves the bytes as the command arrives and tells the
/// session which; the session gives them back through ``SessionStateMachine/Action/releaseDataBuffer(_:)``.
public enum DataBufferReservation: Sendable, Hashable {
    /// The bytes are the command's until it ends.
    case reserved(Int)
    /// No room: the command ends with TASK SET FULL at its turn (SAM-5 §5.3.1).
    case unavailable
}

/// A function that reaches beyond this session's own tasks and must be carried to other
/// sessions (SAM-5 §7: CLEAR TASK SET, LOGICAL UNIT RESET, TARGET RESET).
public enum TaskSetScope: Sendable, Hashable {
    /// Every task on the logical unit, from every I_T nexus.
    case logicalUnit(UInt64)
    /// Every task on every logical unit of the target.
    case target

    func contains(_ lun: UInt64) -> Bool {
        switch self {
        case .logicalUnit(let l): l == lun
        case .target: true
        }
    }
}

/// How tasks aborted in another session by a task-set function end there.
public enum TASPolicy: Sendable, Hashable {
    /// TAS=0: silently, with 2F/00 to their nexus (the LU applies that).
    case silent
    /// TAS=1: with TASK ABORTED status.
    case taskAbortedStatus
}

/// A task-set function of one session, as the other sessions of the target see it: which session issued
/// it (its serial) and its Initiator Task Tag there.
public struct ForeignFunction: Sendable, Hashable {
    public var session: UInt32
    public var functionTag: UInt32

    public init(session: UInt32, functionTag: UInt32) {
        self.session = session
        self.functionTag = functionTag
    }
}
