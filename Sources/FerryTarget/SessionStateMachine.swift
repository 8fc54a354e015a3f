import DequeModule
import FerryBackends
import ISCSIProtocol
import NIOCore
import SCSI

/// The negotiated values the full-feature phase runs on (RFC 7143 §13).
struct SessionParameters: Sendable, Hashable {
    var initialR2T = true
    var immediateData = true
    var firstBurstLength = 65_536
    var maxBurstLength = 262_144
    var maxOutstandingR2T = 1
    /// The initiator's MaxRecvDataSegmentLength: the largest data segment Ferry may send.
    var initiatorMaxRecvDataSegmentLength = 8_192
    var errorRecoveryLevel = 0
    /// How many commands beyond ExpCmdSN the session may have outstanding.
    var commandWindow = 128

    /// Room beyond the CmdSN window for immediate commands, which the window does not count
    /// (RFC 7143 §4.2.2.1), and, apart from that, for task management functions in progress.
    static let immediateAllowance = 16

    /// The tasks a session may hold at once, immediate commands included; a command beyond it ends
    /// with TASK SET FULL.
    var taskLimit: Int { commandWindow + Self.immediateAllowance }
}

/// What the transport knows about the logical unit a command or function addresses.
enum LogicalUnitDisposition: Sendable, Hashable {
    /// The LUN is mapped; `dataOutLength` is what the CDB asks the initiator for (nil: unknown).
    case mapped(dataOutLength: Int?)
    /// The target answers the command itself: REPORT LUNS, and every command to a LUN that is
    /// not mapped (INQUIRY with peripheral qualifier 011b, otherwise LOGICAL UNIT NOT SUPPORTED).
    case answeredByTarget
}

/// A function that reaches beyond this session's own tasks and must be carried to other
/// sessions (SAM-5 §7: CLEAR TASK SET, LOGICAL UNIT RESET, TARGET RESET).
enum TaskSetScope: Sendable, Hashable {
    /// Every task on the logical unit, from every I_T nexus.
    case logicalUnit(UInt64)
    /// Every task on every logical unit of the target.
    case target
}

/// The per-session core of Ferry: the CmdSN window, the lifecycle of every task, task
/// management, and the transmit queue of each connection. It takes events and returns
/// actions; the ``Session`` shell carries them out. It does no I/O and knows no threads.
///
/// A task moves through these states:
///
///     received ──► waitingForCmdSN ──► waitingForDataOut ──► atBackend ──► completed ──► (retired)
///                       │                     │                  │              │
///                       └──── aborted: dropped at once ──────────┘              │
///                                                    aborted: terminate,         │
///                                                    wait for the backend ◄──────┘ aborted: response discarded
///
/// Once a task carries an abort mark, no Data-In, R2T or SCSI Response is ever produced for it.
/// A task management response is queued only when every task it affects has left the backend.
struct SessionStateMachine {
    // MARK: Types

    struct DataOutProgress: Hashable {
        /// Bytes the command will take from the initiator: min(EDTL, CDB length).
        var expected: Int
        /// Bytes received so far (in order: DataPDUInOrder and DataSequenceInOrder are Yes).
        var received: Int
        /// The gathered buffer; starts as the immediate data slice (no copy when that is all).
        var buffer: ByteBuffer
        /// Unsolicited (TTT 0xffffffff) data is still allowed up to this offset.
        var unsolicitedLimit: Int
        /// The unsolicited burst ended (F bit seen, or nothing unsolicited allowed).
        var unsolicitedDone: Bool
        /// Next DataSN expected in the current sequence (unsolicited, or per R2T).
        var expectedDataSN: UInt32
        /// Outstanding R2Ts in offset order.
        var outstanding: Deque<OutstandingR2T>
        /// Offset up to which R2Ts have been issued.
        var requestedUpTo: Int
        var nextR2TSN: UInt32
    }

    struct OutstandingR2T: Hashable {
        var targetTransferTag: UInt32
        var offset: Int
        var length: Int
        var received: Int
        var expectedDataSN: UInt32
    }

    enum TaskState: Hashable {
        case waitingForCmdSN
        case waitingForDataOut(DataOutProgress)
        case atBackend(BackendTaskTag)
        case completed(status: SCSIStatus, sense: [UInt8], dataIn: ByteBuffer, residual: Residual)
    }

    /// Why a task was aborted, and what, if anything, its initiator still hears about it.
    struct AbortMark: Hashable {
        /// The TMF (by its ITT, in the issuing session) waiting for this task, if any.
        var waitingFunction: UInt32?
        /// TAS: end the task with TASK ABORTED status (aborted by another I_T nexus, TAS=1).
        var reportTaskAborted: Bool
    }

    struct Task {
        var initiatorTaskTag: UInt32
        var connection: UInt16
        var lun: UInt64
        var cmdSN: UInt32
        var command: SCSICommand
        /// Bytes the transport takes from the initiator: min(EDTL, what the CDB asks for).
        var dataOutLength: Int
        /// What the CDB asks the initiator for, when the backend can tell.
        var cdbDataOutLength: Int?
        /// Whether the backend runs the command; otherwise the target answers it itself.
        var mapped: Bool
        /// Whether the command has reached its CmdSN turn (or is immediate).
        var ordered: Bool
        var state: TaskState
        var abort: AbortMark?
        /// Bytes of the data buffer budget this task holds (its Expected Data Transfer Length).
        var reservedBytes: Int
        /// The budget had no room: the task ends with TASK SET FULL at its turn, without data.
        var overBudget: Bool
    }

    /// A task management function between its arrival and its response.
    struct PendingFunction {
        var request: TaskManagementFunctionRequest
        var connection: UInt16
        /// Tasks of this session that must leave the backend first.
        var awaitedTasks: Set<UInt32>
        /// Other sessions still terminating their affected tasks.
        var awaitingOtherSessions: Bool
        /// The device reset to carry out once every affected task is marked aborted in every
        /// session (so that the reset covers them all).
        var deviceReset: TaskSetScope?
        /// The device reset is under way; the response waits for it.
        var awaitingDeviceReset: Bool
        var response: TaskManagementFunctionResponse.Response
        var events: [LogicalUnitEvent]
        var eventLUNs: [UInt64]
    }

    /// One entry of a connection's transmit queue. Task entries are resolved when they are
    /// transmitted, so that an abort mark set in between suppresses them.
    enum TransmitEntry {
        case taskResponse(UInt32)
        case readyToTransfer(itt: UInt32, ttt: UInt32)
        case pdu(PDU)
    }

    struct Connection {
        var statSN: UInt32
        var writable = true
        var queue = Deque<TransmitEntry>()
    }

    /// PDUs whose CmdSN is ahead of ExpCmdSN wait here (RFC 7143 §3.2.2.1).
    enum OrderedPDU {
        case scsiCommand(SCSICommand, connection: UInt16, LogicalUnitDisposition)
        case taskManagement(TaskManagementFunctionRequest, connection: UInt16, logicalUnitExists: Bool)
        case text(TextRequest, connection: UInt16)
        case logout(LogoutRequest, connection: UInt16)
        case nopOut(NOPOut, connection: UInt16)
        /// A CmdSN consumed without a command: the command was aborted while it waited, or an
        /// ABORT TASK declared it received (RFC 7143 §11.5.1 b).
        case consumed
    }

    enum Action {
        /// Write this PDU to the connection. The shell flushes once it has carried out every
        /// action of the event, so that the PDUs of one event leave in one system call.
        case send(PDU, connection: UInt16)
        /// Hand the command to the logical unit's backend.
        case submit(SCSIRequest, itt: UInt32, tag: BackendTaskTag)
        /// The target answers the command itself (see ``LogicalUnitDisposition/answeredByTarget``)
        /// and feeds the result back as a completion.
        case answerByTarget(SCSIRequest, itt: UInt32, tag: BackendTaskTag)
        /// Ask the backend to terminate a task it holds.
        case terminate(lun: UInt64, tag: BackendTaskTag)
        /// Carry a task-set function to every other session of the target; call
        /// ``otherSessionsMarked(functionTag:)`` once each has marked its affected tasks aborted,
        /// and ``otherSessionsTerminated(functionTag:)`` once none of them is still at a backend.
        /// `clearsTaskSet`: CLEAR TASK SET, whose victims learn of it per TAS (SAM-5 §7.5).
        case terminateInOtherSessions(TaskSetScope, functionTag: UInt32, clearsTaskSet: Bool)
        /// Reset the devices behind a logical unit (LOGICAL UNIT RESET) or behind every logical unit of
        /// the target (TARGET WARM/COLD RESET); call ``devicesReset(functionTag:)`` when they are done.
        case resetDevices(TaskSetScope, functionTag: UInt32)
        /// Apply logical-unit side effects (unit attentions, reservations) before responding.
        case applyToLogicalUnits([(lun: UInt64, event: LogicalUnitEvent)])
        /// A Text Request reached its turn; answer with ``queueTextResponse(_:connection:)``.
        case handleText(TextRequest, connection: UInt16)
        /// QUERY ASYNCHRONOUS EVENT: look up the pending unit attention and answer with
        /// ``asynchronousEventQueried(functionTag:pending:)``.
        case queryUnitAttention(lun: UInt64, functionTag: UInt32)
        /// A task-set function of another session no longer waits for any task here.
        case externalFunctionDone(UInt32)
        /// Close one connection (after its queued PDUs are written).
        case closeConnection(UInt16)
        /// End the whole session (logout, cold reset, I_T nexus reset, protocol error).
        case closeSession
    }

    /// How tasks aborted in another session by a task-set function end there.
    enum TASPolicy: Hashable {
        /// TAS=0: silently, with 2F/00 to their nexus (the LU applies that).
        case silent
        /// TAS=1: with TASK ABORTED status.
        case taskAbortedStatus
    }

    // MARK: State

    private(set) var parameters: SessionParameters
    private(set) var expCmdSN: UInt32
    private var maxCmdSN: UInt32
    private var pending: [UInt32: OrderedPDU] = [:]
    private(set) var tasks: [UInt32: Task] = [:]
    private var functions: [UInt32: PendingFunction] = [:]
    private var connections: [UInt16: Connection] = [:]
    private let nexus: ITNexus
    /// The target's memory for Data-Out and Data-In buffers, shared by every session; nil: unbounded.
    private let budget: DataBufferBudget?
    private let tagPrefix: UInt64
    private var nextTagSuffix: UInt64 = 0
    private var nextTargetTransferTag: UInt32 = 1
    private var actions: [Action] = []

    /// - Parameters:
    ///   - sessionSerial: a number no other session of this process ever had; it scopes the
    ///     backend task tags.
    init(
        nexus: ITNexus, parameters: SessionParameters, expCmdSN: UInt32, sessionSerial: UInt32,
        budget: DataBufferBudget? = nil
    ) {
        self.nexus = nexus
        self.budget = budget
        self.parameters = parameters
        self.expCmdSN = expCmdSN
        self.maxCmdSN = expCmdSN &+ UInt32(parameters.commandWindow) &- 1
        self.tagPrefix = UInt64(sessionSerial) << 32
    }

    var sequenceNumbers: (expCmdSN: UInt32, maxCmdSN: UInt32) { (expCmdSN, maxCmdSN) }

    // MARK: Connections

    mutating func connectionAdded(_ cid: UInt16, statSN: UInt32) {
        connections[cid] = Connection(statSN: statSN)
    }

    /// Connection closed: its tasks lose their allegiance and, at ERL 0, are aborted.
    mutating func connectionRemoved(_ cid: UInt16) -> [Action] {
        connections.removeValue(forKey: cid)
        for (itt, task) in tasks where task.connection == cid {
            abortTask(itt, mark: AbortMark(waitingFunction: nil, reportTaskAborted: false))
        }
        for (cmdSN, entry) in pending where entry.connection == cid {
            pending[cmdSN] = .consumed
        }
        return takeActions()
    }

    mutating func writabilityChanged(_ cid: UInt16, writable: Bool) -> [Action] {
        connections[cid]?.writable = writable
        if writable { drain(cid) }
        return takeActions()
    }

    /// A Text negotiation changed the initiator's MaxRecvDataSegmentLength.
    mutating func initiatorMaxRecvDataSegmentLengthChanged(_ length: Int) {
        parameters.initiatorMaxRecvDataSegmentLength = length
    }


    // MARK: Receiving

    /// A SCSI Command PDU arrived.
    mutating func commandReceived(
        _ command: SCSICommand, connection cid: UInt16, disposition: LogicalUnitDisposition
    ) -> [Action] {
        if tasks[command.initiatorTaskTag] != nil {
            // > RFC 7143 §11.17.1: the ITT of a new task must not be in use.
            queue(.pdu(.reject(rejectPDU(.taskInProgress, header: command))), on: cid)
            return takeActions()
        }
        let immediateData = command.data.readableBytes
        if immediateData > 0 && (!parameters.immediateData || immediateData > parameters.firstBurstLength) {
            // > RFC 7143 §13.11: If ImmediateData is set to No and InitialR2T is set to Yes (default), then the
            // > initiator MUST NOT send unsolicited data and the target MUST reject unsolicited data with the
            // > corresponding response code.
            // > RFC 7143 §13.14: FirstBurstLength is the maximum amount in bytes of unsolicited data an iSCSI
            // > initiator may send to the target during the execution of a single SCSI command. This covers the
            // > immediate data (if any) [...].
            // The command is rejected whole and never placed; its CmdSN is not consumed.
            queue(.pdu(.reject(rejectPDU(.protocolError, header: command))), on: cid)
            return takeActions()
        }
        order(.scsiCommand(command, connection: cid, disposition), cmdSN: command.cmdSN, immediate: command.immediate)
        return takeActions()
    }

    /// A Task Management Function Request arrived; `logicalUnitExists`: whether its LUN is mapped.
    mutating func taskManagementReceived(
        _ request: TaskManagementFunctionRequest, connection cid: UInt16, logicalUnitExists: Bool = true
    ) -> [Action] {
        order(
            .taskManagement(request, connection: cid, logicalUnitExists: logicalUnitExists), cmdSN: request.cmdSN,
            immediate: request.immediate)
        return takeActions()
    }

    mutating func textReceived(_ request: TextRequest, connection cid: UInt16) -> [Action] {
        order(.text(request, connection: cid), cmdSN: request.cmdSN, immediate: request.immediate)
        return takeActions()
    }

    mutating func logoutReceived(_ request: LogoutRequest, connection cid: UInt16) -> [Action] {
        order(.logout(request, connection: cid), cmdSN: request.cmdSN, immediate: request.immediate)
        return takeActions()
    }

    mutating func nopOutReceived(_ nop: NOPOut, connection cid: UInt16) -> [Action] {
        if nop.initiatorTaskTag == reservedTag {
            // An answer to our ping; nothing to send. It carries no new CmdSN.
            return takeActions()
        }
        order(.nopOut(nop, connection: cid), cmdSN: nop.cmdSN, immediate: nop.immediate)
        return takeActions()
    }

    /// The connection has been silent for `nop_in_interval`: ping the initiator.
    /// > RFC 7143 §11.19: a NOP-In with a valid Target Transfer Tag and the reserved Initiator Task
    /// > Tag asks the initiator for a NOP-Out; StatSN is not advanced.
    mutating func pingRequested(connection cid: UInt16) -> [Action] {
        let ttt = nextTargetTransferTag
        nextTargetTransferTag = nextTargetTransferTag &+ 1 == reservedTag ? 1 : nextTargetTransferTag &+ 1
        let ping = NOPIn(
            initiatorTaskTag: reservedTag, targetTransferTag: ttt, sequence: StatusSequence(statSN: 0, expCmdSN: 0, maxCmdSN: 0))
        queue(.pdu(.nopIn(ping)), on: cid)
        return takeActions()
    }

    /// A SCSI Data-Out PDU arrived (RFC 7143 §11.7).
    mutating func dataOutReceived(_ dataOut: SCSIDataOut, connection cid: UInt16) -> [Action] {
        guard var task = tasks[dataOut.initiatorTaskTag] else {
            // Data for a task that is gone (aborted, or never existed) is dropped without a word: after an
            // abort the initiator may still be sending, and the session cannot tell that data from data
            // for a task that never was.
            return takeActions()
        }
        if task.abort != nil || task.overBudget { return takeActions() }
        var progress: DataOutProgress
        switch task.state {
        case .waitingForDataOut(let p): progress = p
        case .waitingForCmdSN:
            progress = Self.initialProgress(task.command, dataOutLength: task.dataOutLength, parameters: parameters)
        default:
            queue(.pdu(.reject(rejectPDU(.protocolError, header: dataOut))), on: cid)
            return takeActions()
        }
        let offset = Int(dataOut.bufferOffset)
        let length = dataOut.data.readableBytes
        if dataOut.targetTransferTag == reservedTag {
            // Unsolicited data (InitialR2T=No), DataSN from 0 in its own sequence.
            guard !progress.unsolicitedDone, offset == progress.received,
                offset + length <= progress.unsolicitedLimit, dataOut.dataSN == progress.expectedDataSN
            else {
                queue(.pdu(.reject(rejectPDU(.protocolError, header: dataOut))), on: cid)
                return takeActions()
            }
            detachProgress(of: &task)
            progress.expectedDataSN &+= 1
            if dataOut.final { progress.unsolicitedDone = true; progress.expectedDataSN = 0 }
        } else {
            guard let index = progress.outstanding.firstIndex(where: { $0.targetTransferTag == dataOut.targetTransferTag }) else {
                queue(.pdu(.reject(rejectPDU(.invalidPDUField, header: dataOut))), on: cid)
                return takeActions()
            }
            var r2t = progress.outstanding[index]
            guard offset == r2t.offset + r2t.received, r2t.received + length <= r2t.length,
                dataOut.dataSN == r2t.expectedDataSN
            else {
                queue(.pdu(.reject(rejectPDU(.protocolError, header: dataOut))), on: cid)
                return takeActions()
            }
            detachProgress(of: &task)
            r2t.received += length
            r2t.expectedDataSN &+= 1
            if r2t.received == r2t.length || dataOut.final {
                progress.outstanding.remove(at: index)
            } else {
                progress.outstanding[index] = r2t
            }
        }
        Self.append(dataOut.data, to: &progress)
        task.state = .waitingForDataOut(progress)
        tasks[task.initiatorTaskTag] = task
        if task.ordered { advanceDataOut(task.initiatorTaskTag) }
        return takeActions()
    }

    /// Leaves the caller's copy of a task's ``DataOutProgress`` the only holder of its gather buffer
    /// and R2T queue, so that they change in place instead of being copied (copy-on-write): the
    /// task's entry and `task` let go of them until the caller stores the progress back.
    private mutating func detachProgress(of task: inout Task) {
        task.state = .waitingForCmdSN
        tasks[task.initiatorTaskTag]?.state = .waitingForCmdSN
    }

    /// A SNACK Request arrived. Ferry negotiates ErrorRecoveryLevel 0 only, where nothing is ever
    /// retransmitted: the request is outside the protocol of the session, and cannot succeed if resent.
    /// > RFC 7143 §11.17.1: 0x04 Protocol Error (e.g., SNACK Request for a status that was already
    /// > acknowledged) [...] Can the original PDU be resent? no
    mutating func snackReceived(_ snack: SNACKRequest, connection cid: UInt16) -> [Action] {
        queue(.pdu(.reject(Self.reject(.protocolError, header: Self.basicHeaderSegment(of: .snackRequest(snack))))), on: cid)
        return takeActions()
    }

    /// Whether a discovery session may send `pdu`.
    /// > RFC 7143 §4.3: Discovery session: a session only opened for target discovery. The target MUST ONLY accept
    /// > Text Requests with the SendTargets key and a Logout Request with the reason "close the session". All other
    /// > requests MUST be rejected.
    /// A NOP-Out that answers the target's own ping (reserved ITT) is no request; it is taken.
    static func isAllowedInDiscoverySession(_ pdu: PDU) -> Bool {
        switch pdu {
        case .textRequest: true
        case .logoutRequest(let request): request.reasonCode == .closeSession
        case .nopOut(let nop): nop.initiatorTaskTag == reservedTag
        default: false
        }
    }

    /// A request a discovery session may not send (see ``isAllowedInDiscoverySession(_:)``) is answered with a
    /// Reject, reason Protocol Error, and goes no further: no task, no data buffer, no place in the CmdSN order.
    mutating func requestRefusedInDiscoverySession(_ pdu: PDU, connection cid: UInt16) -> [Action] {
        queue(.pdu(.reject(Self.reject(.protocolError, header: Self.basicHeaderSegment(of: pdu)))), on: cid)
        return takeActions()
    }

    /// The connection's parser found a PDU it cannot take but can keep framing after: the
    /// PDU is answered with a Reject (RFC 7143 §11.17) and otherwise ignored.
    mutating func protocolErrorReceived(_ reason: Reject.Reason, header: ByteBuffer, connection cid: UInt16) -> [Action] {
        queue(.pdu(.reject(Self.reject(reason, header: header))), on: cid)
        return takeActions()
    }

    // MARK: Backend and shell events

    /// What of a backend's completion may wait for the session's loop: Data-In beyond the command's Expected
    /// Data Transfer Length is never sent, so it is let go of here, on the backend's thread, as soon as the
    /// device has produced it, in storage of its own (a slice would keep the whole buffer alive). What remains
    /// is within the bytes the task holds of the data buffer budget, however long the loop takes to come to it:
    /// completions waiting for the loop cannot hold more than `max_data_buffer_mib`. `produced` is the length
    /// the device produced, for the residual; hand both to ``backendCompleted(itt:tag:_:produced:)``.
    static func boundedForTransit(
        _ completion: BackendCompletion, expectedDataTransferLength edtl: Int
    ) -> (completion: BackendCompletion, produced: Int?) {
        guard case .completed(var result) = completion, result.dataIn.readableBytes > max(0, edtl) else {
            return (completion, nil)
        }
        let produced = result.dataIn.readableBytes
        result.dataIn = prefix(result.dataIn, length: max(0, edtl))
        return (.completed(result), produced)
    }

    /// The backend returned a task. `produced`: the Data-In length the device produced, when
    /// ``boundedForTransit(_:expectedDataTransferLength:)`` cut it to the Expected Data Transfer Length.
    mutating func backendCompleted(
        itt: UInt32, tag: BackendTaskTag, _ completion: BackendCompletion, produced: Int? = nil
    ) -> [Action] {
        guard var task = tasks[itt], case .atBackend(let current) = task.state, current == tag else {
            return takeActions()
        }
        if let abort = task.abort {
            removeTask(itt)
            externalTaskLeft(itt)
            if abort.reportTaskAborted {
                task.state = .completed(status: .taskAborted, sense: [], dataIn: ByteBuffer(), residual: .none)
                task.abort = nil
                task.reservedBytes = 0
                tasks[itt] = task
                queue(.taskResponse(itt), on: task.connection)
            }
            if let waiting = abort.waitingFunction { taskLeft(itt, function: waiting) }
            return takeActions()
        }
        switch completion {
        case .terminated:
            task.state = .completed(status: .taskAborted, sense: [], dataIn: ByteBuffer(), residual: .none)
        case .completed(let result):
            task.state = Self.completedState(task, result: result, produced: produced)
        }
        // The task now holds its Data-In and nothing else (the Data-Out went with the backend): the rest of
        // its reservation goes back, so that the budget counts what the task holds until its response is sent.
        if case .completed(_, _, let dataIn, _) = task.state, task.reservedBytes > dataIn.readableBytes {
            budget?.release(task.reservedBytes - dataIn.readableBytes)
            task.reservedBytes = dataIn.readableBytes
        }
        tasks[itt] = task
        queue(.taskResponse(itt), on: task.connection)
        return takeActions()
    }

    /// The shell finished a Text Request.
    mutating func queueTextResponse(_ response: TextResponse, connection cid: UInt16) -> [Action] {
        queue(.pdu(.textResponse(response)), on: cid)
        return takeActions()
    }

    /// Every other session has marked the tasks a function affects there: a device reset the
    /// function asks for can now begin.
    mutating func otherSessionsMarked(functionTag: UInt32) -> [Action] {
        if let scope = functions[functionTag]?.deviceReset {
            functions[functionTag]?.deviceReset = nil
            actions.append(.resetDevices(scope, functionTag: functionTag))
        }
        return takeActions()
    }

    /// The devices a reset function reset may be used again.
    mutating func devicesReset(functionTag: UInt32) -> [Action] {
        functions[functionTag]?.awaitingDeviceReset = false
        completeFunctionIfDone(functionTag)
        return takeActions()
    }

    /// Every other session finished terminating the tasks a function affected there.
    mutating func otherSessionsTerminated(functionTag: UInt32) -> [Action] {
        functions[functionTag]?.awaitingOtherSessions = false
        completeFunctionIfDone(functionTag)
        return takeActions()
    }

    /// QUERY ASYNCHRONOUS EVENT answer from the logical unit (RFC 7144 §4.5).
    mutating func asynchronousEventQueried(
        functionTag: UInt32, pending: (senseKey: SenseKey, code: AdditionalSenseCode)?
    ) -> [Action] {
        guard var function = functions.removeValue(forKey: functionTag) else { return takeActions() }
        var info: UInt32 = 0
        if let pending {
            function.response = .functionSucceeded
            info = UInt32(pending.senseKey.rawValue) << 16 | UInt32(pending.code.asc) << 8 | UInt32(pending.code.ascq)
        } else {
            function.response = .functionComplete
        }
        queueFunctionResponse(function, additionalResponseInformation: info)
        return takeActions()
    }

    /// The target asks the initiator to log out (reconfiguration, shutdown, an operator's
    /// request), on every connection of the session.
    mutating func logoutRequested(within seconds: UInt16) -> [Action] {
        // > RFC 7143 §11.9.1: AsyncEvent 1: the target requests Logout. [...] The initiator MUST
        // > honor this request by issuing a Logout as early as possible but no later than
        // > Parameter3 seconds.
        for cid in connections.keys.sorted() {
            let message = AsynchronousMessage(
                sequence: StatusSequence(statSN: 0, expCmdSN: 0, maxCmdSN: 0), event: .requestLogout,
                parameter3: seconds)
            queue(.pdu(.asynchronousMessage(message)), on: cid)
        }
        return takeActions()
    }

    /// Another session's task-set function reaches this session: abort every affected task.
    /// When `mustWait` is true, the backend still holds some of them, and the action
    /// ``Action/externalFunctionDone(_:)`` with `externalID` follows once all have left it.
    mutating func terminateForOtherSession(
        _ scope: TaskSetScope, externalID: UInt32, tas: TASPolicy
    ) -> (actions: [Action], affected: Bool, mustWait: Bool) {
        var waiting = false
        var affected = false
        for (itt, task) in tasks where task.abort == nil && Self.scope(scope, contains: task.lun) {
            affected = true
            let mark = AbortMark(waitingFunction: nil, reportTaskAborted: tas == .taskAbortedStatus)
            if abortTask(itt, mark: mark, external: externalID) { waiting = true }
        }
        return (takeActions(), affected, waiting)
    }

    /// The tasks still held at the backend for an external function, by their external id.
    private var externalWaits: [UInt32: Set<UInt32>] = [:]

    // MARK: Ordering

    private mutating func order(_ pdu: OrderedPDU, cmdSN: UInt32, immediate: Bool) {
        if immediate {
            process(pdu, cmdSN: cmdSN)
            refreshWindow()
            return
        }
        let sn = SerialNumber(cmdSN)
        guard sn >= SerialNumber(expCmdSN) && sn <= SerialNumber(maxCmdSN) else {
            // > RFC 7143 §3.2.2.1: outside the window the target MUST silently ignore it.
            return
        }
        if cmdSN != expCmdSN {
            guard pending[cmdSN] == nil else { return }  // a duplicate CmdSN is ignored
            pending[cmdSN] = pdu
            if case .scsiCommand(let command, let cid, let disposition) = pdu, tasks.count < parameters.taskLimit {
                // Keep its task (and any immediate data) so that Data-Out and ABORT TASK find it.
                // Without room, it ends with TASK SET FULL at its turn.
                insertTask(command, connection: cid, disposition: disposition)
            }
            return
        }
        expCmdSN &+= 1
        process(pdu, cmdSN: cmdSN)
        while let next = pending.removeValue(forKey: expCmdSN) {
            let sn = expCmdSN
            expCmdSN &+= 1
            process(next, cmdSN: sn)
        }
        refreshWindow()
    }

    private mutating func refreshWindow() {
        let active = tasks.count
        let width = max(1, parameters.commandWindow - active)
        let proposed = expCmdSN &+ UInt32(width) &- 1
        if SerialNumber(proposed) > SerialNumber(maxCmdSN) { maxCmdSN = proposed }
    }

    private mutating func process(_ pdu: OrderedPDU, cmdSN: UInt32) {
        switch pdu {
        case .scsiCommand(let command, let cid, let disposition):
            if tasks[command.initiatorTaskTag]?.cmdSN != command.cmdSN || command.immediate {
                guard tasks.count < parameters.taskLimit else {
                    answerTaskSetFull(command, connection: cid)
                    return
                }
                insertTask(command, connection: cid, disposition: disposition)
            }
            startTask(command.initiatorTaskTag)
        case .consumed:
            break
        case .taskManagement(let request, let cid, let exists):
            taskManagement(request, connection: cid, logicalUnitExists: exists)
        case .text(let request, let cid):
            actions.append(.handleText(request, connection: cid))
        case .logout(let request, let cid):
            logout(request, connection: cid)
        case .nopOut(let nop, let cid):
            // > RFC 7143 §11.18, Ping Data: Ping data is reflected in the NOP-In Response. The length of the
            // > reflected data is limited to MaxRecvDataSegmentLength.
            let reflected = nop.pingData.getSlice(
                at: nop.pingData.readerIndex,
                length: min(nop.pingData.readableBytes, parameters.initiatorMaxRecvDataSegmentLength))!
            queue(
                .pdu(.nopIn(NOPIn(lun: nop.lun, initiatorTaskTag: nop.initiatorTaskTag, targetTransferTag: reservedTag,
                    sequence: StatusSequence(statSN: 0, expCmdSN: 0, maxCmdSN: 0), pingData: reflected))),
                on: cid)
        }
    }

    // MARK: Task lifecycle

    private mutating func insertTask(
        _ command: SCSICommand, connection cid: UInt16, disposition: LogicalUnitDisposition
    ) {
        let edtl = Int(command.expectedDataTransferLength)
        var cdbDataOutLength: Int? = nil
        var mapped = false
        if case .mapped(let length) = disposition {
            mapped = true
            cdbDataOutLength = length
        }
        let dataOutLength = command.write ? min(edtl, cdbDataOutLength ?? edtl) : 0
        let overBudget = budget.map { !$0.reserve(edtl) } ?? false
        tasks[command.initiatorTaskTag] = Task(
            initiatorTaskTag: command.initiatorTaskTag, connection: cid, lun: command.lun, cmdSN: command.cmdSN,
            command: command, dataOutLength: dataOutLength, cdbDataOutLength: cdbDataOutLength, mapped: mapped,
            ordered: false, state: .waitingForCmdSN, abort: nil, reservedBytes: overBudget ? 0 : edtl,
            overBudget: overBudget)
    }

    /// A command for which the session has no room (``SessionParameters/taskLimit``) ends at once,
    /// without becoming a task: an initiator that sends immediate commands without end cannot make
    /// the session hold them all.
    /// > SAM-5 §5.3.1: TASK SET FULL [...] shall be returned if the logical unit receives a command
    /// > and does not have enough resources to enter the task in the task set.
    private mutating func answerTaskSetFull(_ command: SCSICommand, connection cid: UInt16) {
        let response = SCSIResponse(
            status: SCSIStatus.taskSetFull.rawValue, initiatorTaskTag: command.initiatorTaskTag,
            sequence: StatusSequence(statSN: 0, expCmdSN: 0, maxCmdSN: 0))
        queue(.pdu(.scsiResponse(response)), on: cid)
    }

    /// Forgets a task and gives its bytes back to the data buffer budget.
    private mutating func removeTask(_ itt: UInt32) {
        guard let task = tasks.removeValue(forKey: itt) else { return }
        if task.reservedBytes > 0 { budget?.release(task.reservedBytes) }
    }

    /// The session ends: every task still here gives its bytes back.
    mutating func releaseDataBuffers() {
        for itt in Array(tasks.keys) {
            if let bytes = tasks[itt]?.reservedBytes, bytes > 0 {
                budget?.release(bytes)
                tasks[itt]?.reservedBytes = 0
            }
        }
    }

    private static func initialProgress(_ command: SCSICommand, dataOutLength: Int, parameters: SessionParameters) -> DataOutProgress {
        let immediate = min(command.data.readableBytes, dataOutLength)
        let unsolicitedLimit = parameters.initialR2T ? immediate : min(dataOutLength, parameters.firstBurstLength)
        var progress = DataOutProgress(
            expected: dataOutLength, received: 0, buffer: ByteBuffer(), unsolicitedLimit: unsolicitedLimit,
            unsolicitedDone: parameters.initialR2T || command.final, expectedDataSN: 0, outstanding: [],
            requestedUpTo: 0, nextR2TSN: 0)
        if immediate > 0 {
            append(command.data.getSlice(at: command.data.readerIndex, length: immediate)!, to: &progress)
        }
        return progress
    }

    /// Gathers Data-Out: the first segment is kept as a slice; later ones are copied once into
    /// a buffer of the full expected size.
    private static func append(_ data: ByteBuffer, to progress: inout DataOutProgress) {
        var data = data
        let length = min(data.readableBytes, progress.expected - progress.received)
        guard length > 0 else { return }
        if progress.received == 0 && length == progress.expected {
            progress.buffer = data.readSlice(length: length)!
        } else {
            if progress.buffer.capacity < progress.expected {
                var gathered = ByteBufferAllocator().buffer(capacity: progress.expected)
                gathered.writeImmutableBuffer(progress.buffer)
                progress.buffer = gathered
            }
            progress.buffer.writeImmutableBuffer(data.readSlice(length: length)!)
        }
        progress.received += length
    }

    /// The command reached its CmdSN turn (or is immediate).
    private mutating func startTask(_ itt: UInt32) {
        guard var task = tasks[itt] else { return }
        task.ordered = true
        if task.overBudget {
            // > SAM-5 §5.3.1: TASK SET FULL when the logical unit lacks the resources for the task.
            task.state = .completed(status: .taskSetFull, sense: [], dataIn: ByteBuffer(), residual: .none)
            tasks[itt] = task
            queue(.taskResponse(itt), on: task.connection)
            return
        }
        tasks[itt] = task
        if task.command.write && task.dataOutLength > 0 {
            let progress: DataOutProgress
            if case .waitingForDataOut(let p) = task.state {
                progress = p
            } else {
                progress = Self.initialProgress(task.command, dataOutLength: task.dataOutLength, parameters: parameters)
            }
            task.state = .waitingForDataOut(progress)
            tasks[itt] = task
            advanceDataOut(itt)
        } else {
            submit(itt)
        }
    }

    /// Issues R2Ts while data is missing, or submits when it is all in.
    private mutating func advanceDataOut(_ itt: UInt32) {
        guard var task = tasks[itt], case .waitingForDataOut(var progress) = task.state else { return }
        if progress.received >= progress.expected {
            submit(itt)
            return
        }
        // Wait for unsolicited data before soliciting the rest.
        guard progress.unsolicitedDone else { return }
        if progress.requestedUpTo < progress.received { progress.requestedUpTo = progress.received }
        detachProgress(of: &task)
        var issued: [UInt32] = []
        while progress.outstanding.count < parameters.maxOutstandingR2T && progress.requestedUpTo < progress.expected {
            let length = min(parameters.maxBurstLength, progress.expected - progress.requestedUpTo)
            let ttt = nextTargetTransferTag
            nextTargetTransferTag = nextTargetTransferTag &+ 1 == reservedTag ? 1 : nextTargetTransferTag &+ 1
            progress.outstanding.append(
                OutstandingR2T(targetTransferTag: ttt, offset: progress.requestedUpTo, length: length, received: 0,
                    expectedDataSN: 0))
            progress.requestedUpTo += length
            issued.append(ttt)
        }
        task.state = .waitingForDataOut(progress)
        tasks[itt] = task
        for ttt in issued { queue(.readyToTransfer(itt: itt, ttt: ttt), on: task.connection) }
    }

    private mutating func submit(_ itt: UInt32) {
        guard var task = tasks[itt] else { return }
        var dataOut = ByteBuffer()
        if case .waitingForDataOut(let progress) = task.state { dataOut = progress.buffer }
        let tag = BackendTaskTag(tagPrefix | nextTagSuffix)
        nextTagSuffix = (nextTagSuffix + 1) & 0xffff_ffff
        task.state = .atBackend(tag)
        tasks[itt] = task
        let request = SCSIRequest(
            cdb: task.command.cdb, lun: task.lun, nexus: nexus, attribute: Self.attribute(task.command.attribute),
            expectedDataTransferLength: Int(task.command.expectedDataTransferLength), dataOut: dataOut)
        if task.mapped {
            actions.append(.submit(request, itt: itt, tag: tag))
        } else {
            actions.append(.answerByTarget(request, itt: itt, tag: tag))
        }
    }

    private static func attribute(_ attribute: TaskAttribute) -> SCSITaskAttribute {
        switch attribute {
        case .untagged, .simple: .simple
        case .ordered: .ordered
        case .headOfQueue: .headOfQueue
        case .aca: .aca
        }
    }

    private static func completedState(_ task: Task, result: SCSIResult, produced: Int? = nil) -> TaskState {
        let command = task.command
        let edtl = Int(command.expectedDataTransferLength)
        var dataIn = result.dataIn
        var residual = Residual.none
        // A device server may read only what the EDTL covers and give the length the CDB asked for, and a
        // completion may have been cut to the EDTL before it reached the loop (`produced`): the residual counts
        // from what the device would have produced (RFC 7143 §11.4.5.2).
        let produced = max(produced ?? dataIn.readableBytes, result.requestedDataInLength ?? 0)
        if command.read {
            if produced > edtl {
                residual = .overflow(UInt32(clamping: produced - edtl))
                if dataIn.readableBytes > edtl { dataIn = Self.prefix(dataIn, length: edtl) }
            } else if produced < edtl {
                residual = .underflow(UInt32(clamping: edtl - produced))
            }
        } else {
            // Data-In the initiator did not ask for (no R bit) is never sent, whatever the CDB produced.
            let unasked = produced
            dataIn = ByteBuffer()
            if command.write {
                // A CDB may ask for more than 2^32 - 1 bytes (WRITE(16) of 0xFFFFFFFF blocks): the Residual Count
                // is 32 bits, so it saturates (RFC 7143 §11.4.5 leaves no other way to say it).
                let asked = task.cdbDataOutLength ?? edtl
                if asked > edtl {
                    residual = .overflow(UInt32(clamping: asked - edtl))
                } else if asked < edtl {
                    residual = .underflow(UInt32(clamping: edtl - asked))
                }
            } else if unasked > 0 {
                residual = .overflow(UInt32(clamping: unasked))
            } else if edtl > 0 {
                residual = .underflow(UInt32(clamping: edtl))
            }
        }
        let sense = result.sense.map { $0.bytes(descriptorFormat: result.descriptorFormatSense) } ?? []
        if result.status != .good && result.status != .conditionMet { dataIn = ByteBuffer() }
        return .completed(status: result.status, sense: sense, dataIn: dataIn, residual: residual)
    }

    /// The first `length` bytes of `buffer` in storage of their own. A slice would keep the whole of the
    /// backend's buffer alive until the response is sent: a READ of 8 MiB with an Expected Data Transfer
    /// Length of 0 would hold 8 MiB for a response without data.
    private static func prefix(_ buffer: ByteBuffer, length: Int) -> ByteBuffer {
        guard length > 0 else { return ByteBuffer() }
        var copy = ByteBufferAllocator().buffer(capacity: length)
        copy.writeImmutableBuffer(buffer.getSlice(at: buffer.readerIndex, length: length)!)
        return copy
    }

    // MARK: Task management

    private mutating func taskManagement(
        _ request: TaskManagementFunctionRequest, connection cid: UInt16, logicalUnitExists: Bool
    ) {
        var function = PendingFunction(
            request: request, connection: cid, awaitedTasks: [], awaitingOtherSessions: false, deviceReset: nil,
            awaitingDeviceReset: false, response: .functionComplete, events: [], eventLUNs: [])
        guard let code = request.function else {
            function.response = .functionNotSupported
            queueFunctionResponse(function)
            return
        }
        if !logicalUnitExists && Self.addressesALogicalUnit(code) {
            // > RFC 7143 §11.6.1: 2 = Logical unit does not exist.
            function.response = .lunDoesNotExist
            queueFunctionResponse(function)
            return
        }
        if functions.count >= SessionParameters.immediateAllowance {
            // Functions still waiting for tasks, other sessions or a device reset: one more would
            // let an initiator grow them without end.
            // > RFC 7143 §11.6.1: 255 = Function rejected.
            function.response = .functionRejected
            queueFunctionResponse(function)
            return
        }
        let tag = request.initiatorTaskTag
        switch code {
        case .abortTask:
            if let task = tasks[request.referencedTaskTag], task.abort == nil, task.lun == request.lun {
                functions[tag] = function
                if abortTask(task.initiatorTaskTag, mark: AbortMark(waitingFunction: tag, reportTaskAborted: false)) {
                    functions[tag]?.awaitedTasks.insert(task.initiatorTaskTag)
                }
                completeFunctionIfDone(tag)
                return
            }
            // > RFC 7143 §11.5.1: a task that does not exist but whose RefCmdSN is in the
            // > window and below the function's CmdSN is considered received: function complete.
            let ref = SerialNumber(request.refCmdSN)
            if ref >= SerialNumber(expCmdSN) && ref <= SerialNumber(maxCmdSN) && ref < SerialNumber(request.cmdSN) {
                if pending[request.refCmdSN] == nil { pending[request.refCmdSN] = .consumed }
                function.response = .functionComplete
            } else {
                function.response = .taskDoesNotExist
            }
            queueFunctionResponse(function)
        case .abortTaskSet, .clearTaskSet, .logicalUnitReset:
            functions[tag] = function
            for (itt, task) in tasks where task.lun == request.lun && task.abort == nil {
                if abortTask(itt, mark: AbortMark(waitingFunction: tag, reportTaskAborted: false)) {
                    functions[tag]?.awaitedTasks.insert(itt)
                }
            }
            if code != .abortTaskSet {
                functions[tag]?.awaitingOtherSessions = true
                actions.append(
                    .terminateInOtherSessions(.logicalUnit(request.lun), functionTag: tag, clearsTaskSet: code == .clearTaskSet))
            }
            if code == .logicalUnitReset {
                functions[tag]?.events = [.logicalUnitReset]
                functions[tag]?.eventLUNs = [request.lun]
                functions[tag]?.deviceReset = .logicalUnit(request.lun)
                functions[tag]?.awaitingDeviceReset = true
            }
            completeFunctionIfDone(tag)
        case .targetWarmReset, .targetColdReset:
            functions[tag] = function
            for (itt, task) in tasks where task.abort == nil {
                if abortTask(itt, mark: AbortMark(waitingFunction: tag, reportTaskAborted: false)) {
                    functions[tag]?.awaitedTasks.insert(itt)
                }
            }
            functions[tag]?.awaitingOtherSessions = true
            functions[tag]?.deviceReset = .target
            functions[tag]?.awaitingDeviceReset = true
            functions[tag]?.events = [.targetReset(cold: code == .targetColdReset)]
            actions.append(.terminateInOtherSessions(.target, functionTag: tag, clearsTaskSet: false))
            completeFunctionIfDone(tag)
        case .itNexusReset:
            functions[tag] = function
            for (itt, task) in tasks where task.abort == nil {
                if abortTask(itt, mark: AbortMark(waitingFunction: tag, reportTaskAborted: false)) {
                    functions[tag]?.awaitedTasks.insert(itt)
                }
            }
            functions[tag]?.events = [.itNexusLoss(nexus)]
            completeFunctionIfDone(tag)
        case .queryTask:
            if let task = tasks[request.referencedTaskTag], task.abort == nil, task.lun == request.lun {
                function.response = .functionSucceeded
            } else {
                function.response = .functionComplete
            }
            queueFunctionResponse(function)
        case .queryTaskSet:
            let any = tasks.values.contains { $0.lun == request.lun && $0.abort == nil && $0.initiatorTaskTag != tag }
            function.response = any ? .functionSucceeded : .functionComplete
            queueFunctionResponse(function)
        case .queryAsynchronousEvent:
            functions[tag] = function
            actions.append(.queryUnitAttention(lun: request.lun, functionTag: tag))
        case .clearACA:
            // NACA is not supported (standard INQUIRY NormACA=0), so no ACA can exist.
            function.response = .functionNotSupported
            queueFunctionResponse(function)
        case .taskReassign:
            // > RFC 7143 §11.5.1: at ErrorRecoveryLevel 0 the target MUST respond with
            // > "Task allegiance reassignment not supported".
            function.response = parameters.errorRecoveryLevel == 0 ? .taskAllegianceReassignmentNotSupported : .functionNotSupported
            queueFunctionResponse(function)
        }
    }

    /// Whether a function acts on the logical unit its LUN field names (SAM-5 §7), rather than on
    /// the whole target or the I_T nexus.
    private static func addressesALogicalUnit(_ function: TaskManagementFunctionRequest.Function) -> Bool {
        switch function {
        case .abortTask, .abortTaskSet, .clearTaskSet, .logicalUnitReset, .queryTask, .queryTaskSet,
            .queryAsynchronousEvent, .clearACA:
            true
        case .targetWarmReset, .targetColdReset, .itNexusReset, .taskReassign:
            false
        }
    }

    /// Marks a task aborted and takes it out of the way. Returns true when the backend still
    /// holds it, so that whoever aborted it must wait for its completion.
    @discardableResult
    private mutating func abortTask(_ itt: UInt32, mark: AbortMark, external: UInt32? = nil) -> Bool {
        guard var task = tasks[itt] else { return false }
        switch task.state {
        case .waitingForCmdSN:
            // Held for CmdSN order: dropped now; its CmdSN still advances the window when reached.
            removeTask(itt)
            pending[task.cmdSN] = .consumed
            if mark.reportTaskAborted { emitTaskAborted(task) }
            return false
        case .waitingForDataOut:
            removeTask(itt)
            if mark.reportTaskAborted { emitTaskAborted(task) }
            return false
        case .atBackend(let tag):
            task.abort = mark
            tasks[itt] = task
            if let external { externalWaits[external, default: []].insert(itt) }
            actions.append(.terminate(lun: task.lun, tag: tag))
            return true
        case .completed:
            // Completed but not yet transmitted: the response is discarded.
            removeTask(itt)
            if mark.reportTaskAborted { emitTaskAborted(task) }
            return false
        }
    }

    private mutating func emitTaskAborted(_ task: Task) {
        var task = task
        task.abort = nil
        task.reservedBytes = 0
        task.state = .completed(status: .taskAborted, sense: [], dataIn: ByteBuffer(), residual: .none)
        tasks[task.initiatorTaskTag] = task
        queue(.taskResponse(task.initiatorTaskTag), on: task.connection)
    }

    private static func scope(_ scope: TaskSetScope, contains lun: UInt64) -> Bool {
        switch scope {
        case .logicalUnit(let l): l == lun
        case .target: true
        }
    }

    private mutating func taskLeft(_ itt: UInt32, function tag: UInt32) {
        functions[tag]?.awaitedTasks.remove(itt)
        completeFunctionIfDone(tag)
    }

    /// Called for a task aborted on behalf of another session once it has left the backend.
    private mutating func externalTaskLeft(_ itt: UInt32) {
        for (id, var waiting) in externalWaits where waiting.remove(itt) != nil {
            if waiting.isEmpty {
                externalWaits[id] = nil
                actions.append(.externalFunctionDone(id))
            } else {
                externalWaits[id] = waiting
            }
        }
    }

    private mutating func completeFunctionIfDone(_ tag: UInt32) {
        guard let function = functions[tag], function.awaitedTasks.isEmpty, !function.awaitingOtherSessions,
            !function.awaitingDeviceReset
        else {
            return
        }
        functions[tag] = nil
        if !function.events.isEmpty {
            let luns = function.eventLUNs
            var effects: [(lun: UInt64, event: LogicalUnitEvent)] = []
            for event in function.events {
                if luns.isEmpty {
                    effects.append((lun: UInt64.max, event: event))  // every LU of the target
                } else {
                    for lun in luns { effects.append((lun: lun, event: event)) }
                }
            }
            actions.append(.applyToLogicalUnits(effects))
        }
        queueFunctionResponse(function)
        let code = function.request.function
        if code == .targetColdReset || code == .itNexusReset {
            actions.append(.closeSession)
        }
    }

    private mutating func queueFunctionResponse(_ function: PendingFunction, additionalResponseInformation: UInt32 = 0) {
        queue(
            .pdu(.taskManagementFunctionResponse(
                TaskManagementFunctionResponse(
                    response: function.response, initiatorTaskTag: function.request.initiatorTaskTag,
                    sequence: StatusSequence(statSN: 0, expCmdSN: 0, maxCmdSN: 0),
                    additionalResponseInformation: additionalResponseInformation))),
            on: function.connection)
    }

    // MARK: Logout

    private mutating func logout(_ request: LogoutRequest, connection cid: UInt16) {
        let response: LogoutResponse.Response
        switch request.reasonCode {
        case .closeSession?, .closeConnection?:
            response = (request.reasonCode == .closeConnection && connections[request.cid] == nil) ? .cidNotFound : .closedSuccessfully
        case .removeConnectionForRecovery?, nil:
            response = .connectionRecoveryNotSupported
        }
        queue(
            .pdu(.logoutResponse(LogoutResponse(
                response: response, initiatorTaskTag: request.initiatorTaskTag,
                sequence: StatusSequence(statSN: 0, expCmdSN: 0, maxCmdSN: 0), time2Wait: 0, time2Retain: 0))),
            on: cid)
        guard response == .closedSuccessfully else { return }
        if request.reasonCode == .closeSession {
            actions.append(.closeSession)
        } else {
            actions.append(.closeConnection(request.cid))
        }
    }

    // MARK: Transmit

    private mutating func queue(_ entry: TransmitEntry, on cid: UInt16) {
        guard connections[cid] != nil else { return }
        connections[cid]!.queue.append(entry)
        drain(cid)
    }

    /// Builds and emits the PDUs of every transmittable entry, assigning StatSN in order.
    private mutating func drain(_ cid: UInt16) {
        guard var connection = connections[cid], connection.writable, !connection.queue.isEmpty else { return }
        while let entry = connection.queue.popFirst() {
            switch entry {
            case .pdu(var pdu):
                stamp(&pdu, connection: &connection)
                actions.append(.send(pdu, connection: cid))
            case .readyToTransfer(let itt, let ttt):
                guard let task = tasks[itt], task.abort == nil, case .waitingForDataOut(var progress) = task.state,
                    let index = progress.outstanding.firstIndex(where: { $0.targetTransferTag == ttt })
                else { continue }
                let r2t = progress.outstanding[index]
                let r2tSN = progress.nextR2TSN
                progress.nextR2TSN &+= 1
                tasks[itt]!.state = .waitingForDataOut(progress)
                let r2tPDU = PDU.readyToTransfer(
                    ReadyToTransfer(
                        lun: task.lun, initiatorTaskTag: itt, targetTransferTag: ttt,
                        sequence: StatusSequence(statSN: connection.statSN, expCmdSN: expCmdSN, maxCmdSN: maxCmdSN),
                        r2tSN: r2tSN, bufferOffset: UInt32(r2t.offset), desiredDataTransferLength: UInt32(r2t.length)))
                actions.append(.send(r2tPDU, connection: cid))
            case .taskResponse(let itt):
                guard let task = tasks[itt], task.abort == nil,
                    case .completed(let status, let sense, let dataIn, let residual) = task.state
                else { continue }
                removeTask(itt)
                refreshWindow()
                appendResponse(
                    task, status: status, sense: sense, dataIn: dataIn, residual: residual, to: cid,
                    connection: &connection)
            }
        }
        connections[cid] = connection
    }

    private func stamp(_ pdu: inout PDU, connection: inout Connection) {
        let sequence = { (advance: Bool, c: inout Connection) -> StatusSequence in
            let s = StatusSequence(statSN: c.statSN, expCmdSN: expCmdSN, maxCmdSN: maxCmdSN)
            if advance { c.statSN &+= 1 }
            return s
        }
        switch pdu {
        case .nopIn(var p):
            // A NOP-In answering a ping advances StatSN; an unsolicited ping (ITT reserved) does not.
            p.sequence = sequence(p.initiatorTaskTag != reservedTag, &connection)
            pdu = .nopIn(p)
        case .taskManagementFunctionResponse(var p):
            p.sequence = sequence(true, &connection)
            pdu = .taskManagementFunctionResponse(p)
        case .textResponse(var p):
            p.sequence = sequence(true, &connection)
            pdu = .textResponse(p)
        case .logoutResponse(var p):
            p.sequence = sequence(true, &connection)
            pdu = .logoutResponse(p)
        case .reject(var p):
            p.sequence = sequence(true, &connection)
            pdu = .reject(p)
        case .asynchronousMessage(var p):
            p.sequence = sequence(true, &connection)
            pdu = .asynchronousMessage(p)
        case .scsiResponse(var p):
            p.sequence = sequence(true, &connection)
            pdu = .scsiResponse(p)
        default:
            break
        }
    }

    /// Data-In PDUs (split by the initiator's MaxRecvDataSegmentLength, sequences by
    /// MaxBurstLength) with the status collapsed into the last one when there is no sense data,
    /// else Data-In followed by a SCSI Response. Each goes out as a ``Action/send(_:connection:)`` on `cid`.
    private mutating func appendResponse(
        _ task: Task, status: SCSIStatus, sense: [UInt8], dataIn: ByteBuffer, residual: Residual,
        to cid: UInt16, connection: inout Connection
    ) {
        let total = dataIn.readableBytes
        let collapse = total > 0 && sense.isEmpty
        var offset = 0
        var dataSN: UInt32 = 0
        var inBurst = 0
        let segment = max(512, parameters.initiatorMaxRecvDataSegmentLength)
        while offset < total {
            let length = min(segment, total - offset, parameters.maxBurstLength - inBurst)
            inBurst += length
            let last = offset + length == total
            let endOfSequence = last || inBurst == parameters.maxBurstLength
            if endOfSequence { inBurst = 0 }
            let withStatus = last && collapse
            let statSN = connection.statSN
            if withStatus { connection.statSN &+= 1 }
            let dataInPDU = PDU.scsiDataIn(
                SCSIDataIn(
                    final: endOfSequence, status: withStatus ? status.rawValue : nil, lun: task.lun,
                    initiatorTaskTag: task.initiatorTaskTag, targetTransferTag: reservedTag,
                    sequence: StatusSequence(statSN: withStatus ? statSN : 0, expCmdSN: expCmdSN, maxCmdSN: maxCmdSN),
                    dataSN: dataSN, bufferOffset: UInt32(offset), residual: withStatus ? residual : .none,
                    data: dataIn.getSlice(at: dataIn.readerIndex + offset, length: length)!))
            actions.append(.send(dataInPDU, connection: cid))
            dataSN &+= 1
            offset += length
        }
        if collapse { return }
        var data = ByteBuffer()
        if !sense.isEmpty {
            data = ByteBufferAllocator().buffer(capacity: sense.count + 2)
            data.writeInteger(UInt16(sense.count))
            data.writeBytes(sense)
        }
        let response = SCSIResponse(
            response: 0, status: status.rawValue, initiatorTaskTag: task.initiatorTaskTag,
            sequence: StatusSequence(statSN: connection.statSN, expCmdSN: expCmdSN, maxCmdSN: maxCmdSN),
            expDataSN: dataSN, residual: residual, data: data)
        connection.statSN &+= 1
        actions.append(.send(.scsiResponse(response), connection: cid))
    }

    private func rejectPDU(_ reason: Reject.Reason, header command: SCSICommand) -> Reject {
        Self.reject(reason, header: Self.basicHeaderSegment(of: .scsiCommand(command)))
    }

    private func rejectPDU(_ reason: Reject.Reason, header dataOut: SCSIDataOut) -> Reject {
        Self.reject(reason, header: Self.basicHeaderSegment(of: .scsiDataOut(dataOut)))
    }

    private static func reject(_ reason: Reject.Reason, header: ByteBuffer) -> Reject {
        Reject(reason: reason, sequence: StatusSequence(statSN: 0, expCmdSN: 0, maxCmdSN: 0), data: header)
    }

    /// The 48-byte BHS of a PDU, for the data segment of a Reject (RFC 7143 §11.17).
    private static func basicHeaderSegment(of pdu: PDU) -> ByteBuffer {
        var buffer = ByteBuffer()
        PDUEncoder().writeHeaderSegment(pdu, into: &buffer)
        return buffer.getSlice(at: buffer.readerIndex, length: 48)!
    }

    /// Hands the actions of an event to the shell. The buffer moves out whole (no copy), and
    /// ``recycle(_:)`` brings its storage back, so that steady traffic allocates no action arrays.
    private mutating func takeActions() -> [Action] {
        var taken: [Action] = []
        swap(&taken, &actions)
        return taken
    }

    /// Takes back an action buffer the shell has carried out, to reuse its storage for the next event.
    mutating func recycle(_ buffer: consuming [Action]) {
        guard actions.isEmpty, buffer.capacity > actions.capacity else { return }
        var buffer = buffer
        buffer.removeAll(keepingCapacity: true)
        actions = buffer
    }
}

extension SessionStateMachine.OrderedPDU {
    var connection: UInt16? {
        switch self {
        case .scsiCommand(_, let cid, _), .taskManagement(_, let cid, _), .text(_, let cid), .logout(_, let cid),
            .nopOut(_, let cid):
            cid
        case .consumed:
            nil
        }
    }
}
