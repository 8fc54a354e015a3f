public import ISCSIProtocol
public import NIOCore
public import SCSI

/// The per-session core of Ferry (RFC 7143 §3.2.2, §4.2.2): the CmdSN window, and the routing of every PDU
/// and event to the one place that handles it: the task (``TaskStateMachine``), task management
/// (``TaskManagement``) or a connection's transmit queue (``TransmitQueue``). It takes events and returns
/// actions; the shell (FerryTarget's `Session`) carries them out. It does no I/O and knows no threads or clocks:
/// the time a function arrived, and whether the data buffer budget had room for a command, come in with their events.
public struct SessionStateMachine {
    /// PDUs whose CmdSN is ahead of ExpCmdSN wait here (RFC 7143 §3.2.2.1).
    enum OrderedPDU {
        case scsiCommand(SCSICommand, connection: UInt16, LogicalUnitDisposition, DataBufferReservation)
        case taskManagement(TaskManagementFunctionRequest, connection: UInt16, FunctionLogicalUnit, received: NIODeadline)
        case text(TextRequest, header: ByteBuffer, connection: UInt16)
        case logout(LogoutRequest, connection: UInt16)
        case nopOut(NOPOut, connection: UInt16)
        /// A CmdSN consumed without a command: the command was aborted while it waited, or an
        /// ABORT TASK declared it received (RFC 7143 §11.5.1 b).
        case consumed

        var connection: UInt16? {
            switch self {
            case .scsiCommand(_, let cid, _, _), .taskManagement(_, let cid, _, _), .text(_, _, let cid),
                .logout(_, let cid), .nopOut(_, let cid):
                cid
            case .consumed:
                nil
            }
        }
    }

    // MARK: State

    public private(set) var parameters: SessionParameters
    private(set) var window: CommandWindow
    private var pending: [UInt32: OrderedPDU] = [:]
    public internal(set) var tasks = SlotTable<UInt32, TaskStateMachine>()
    var taskManagement: TaskManagement
    var connections = SlotTable<UInt16, TransmitQueue>()
    let nexus: ITNexus
    /// This session's serial: no other session of the process ever had it. It scopes the backend task tags
    /// and names the session to the others.
    public let serial: UInt32
    private var nextTagSuffix: UInt64 = 0
    var targetTransferTags = TargetTransferTags()
    var actions: [Action] = []
    /// Bytes of the data buffer budget let go of during the current event, given back in one action.
    var released = 0

    public init(nexus: ITNexus, parameters: SessionParameters, expCmdSN: UInt32, sessionSerial: UInt32) {
        self.nexus = nexus
        self.parameters = parameters
        self.window = CommandWindow(expCmdSN: expCmdSN, maxCmdSN: expCmdSN &+ UInt32(parameters.commandWindow) &- 1)
        self.serial = sessionSerial
        self.taskManagement = TaskManagement(nexus: nexus)
    }

    public var sequenceNumbers: (expCmdSN: UInt32, maxCmdSN: UInt32) { (window.expCmdSN, window.maxCmdSN) }

    // MARK: Connections

    public mutating func connectionAdded(_ cid: UInt16, statSN: UInt32) {
        connections.insert(TransmitQueue(statSN: statSN), for: cid)
    }

    /// Connection closed: its tasks lose their allegiance and, at ERL 0, are aborted.
    public mutating func connectionRemoved(_ cid: UInt16) -> [Action] {
        connections.removeValue(forKey: cid)
        for (itt, task) in tasks where task.connection == cid && !task.isTerminating {
            abort(itt, TaskStateMachine.AbortMark(waiter: .none))
        }
        for (cmdSN, entry) in pending where entry.connection == cid {
            consume(cmdSN)
        }
        return takeActions()
    }

    public mutating func writabilityChanged(_ cid: UInt16, writable: Bool) -> [Action] {
        connections.update(cid) { $0.writable = writable }
        if writable { drain(cid) }
        return takeActions()
    }

    /// A Text negotiation changed the initiator's MaxRecvDataSegmentLength.
    public mutating func initiatorMaxRecvDataSegmentLengthChanged(_ length: Int) {
        parameters.initiatorMaxRecvDataSegmentLength = length
    }

    // MARK: Receiving

    /// A SCSI Command PDU arrived. `header`: its Basic Header Segment as received, for a Reject; `reservation`:
    /// whether the data buffer budget had room for its Expected Data Transfer Length.
    public mutating func commandReceived(
        _ command: SCSICommand, header: ByteBuffer, connection cid: UInt16, disposition: LogicalUnitDisposition,
        reservation: DataBufferReservation
    ) -> [Action] {
        if tasks[command.initiatorTaskTag] != nil {
            // > RFC 7143 §11.17.1: the ITT of a new task must not be in use.
            release(reservation)
            queue(.message(.reject(.taskInProgress, header: header)), on: cid)
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
            release(reservation)
            queue(.message(.reject(.protocolError, header: header)), on: cid)
            return takeActions()
        }
        order(.scsiCommand(command, connection: cid, disposition, reservation), cmdSN: command.cmdSN, immediate: command.immediate)
        return takeActions()
    }

    /// A Task Management Function Request arrived at `received`.
    public mutating func taskManagementReceived(
        _ request: TaskManagementFunctionRequest, connection cid: UInt16, logicalUnit: FunctionLogicalUnit,
        received: NIODeadline
    ) -> [Action] {
        order(
            .taskManagement(request, connection: cid, logicalUnit, received: received), cmdSN: request.cmdSN,
            immediate: request.immediate)
        return takeActions()
    }

    /// A Text Request arrived; `header`: its Basic Header Segment as received, for a Reject.
    public mutating func textReceived(_ request: TextRequest, header: ByteBuffer, connection cid: UInt16) -> [Action] {
        order(.text(request, header: header, connection: cid), cmdSN: request.cmdSN, immediate: request.immediate)
        return takeActions()
    }

    public mutating func logoutReceived(_ request: LogoutRequest, connection cid: UInt16) -> [Action] {
        order(.logout(request, connection: cid), cmdSN: request.cmdSN, immediate: request.immediate)
        return takeActions()
    }

    public mutating func nopOutReceived(_ nop: NOPOut, connection cid: UInt16) -> [Action] {
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
    public mutating func pingRequested(connection cid: UInt16) -> [Action] {
        queue(.message(.ping(targetTransferTag: targetTransferTags.next())), on: cid)
        return takeActions()
    }

    /// A SCSI Data-Out PDU arrived (RFC 7143 §11.7); `header`: its Basic Header Segment as received.
    public mutating func dataOutReceived(_ dataOut: SCSIDataOut, header: ByteBuffer, connection cid: UInt16) -> [Action] {
        let itt = dataOut.initiatorTaskTag
        // Data for a task that is gone (aborted, or never existed) is dropped without a word: after an abort the
        // initiator may still be sending, and the session cannot tell that data from data for a task that never was.
        let parameters = parameters
        guard let verdict = tasks.update(itt, { $0.dataOutReceived(dataOut, parameters: parameters) }) else {
            return takeActions()
        }
        switch verdict {
        case .taken:
            if case .waitingForDataOut = tasks[itt]?.state { advanceDataOut(itt) }
        case .ignored:
            break
        case .rejected(let reason):
            queue(.message(.reject(reason, header: header)), on: cid)
        }
        return takeActions()
    }

    /// A SNACK Request arrived. Ferry negotiates ErrorRecoveryLevel 0 only, where nothing is ever
    /// retransmitted: the request is outside the protocol of the session, and cannot succeed if resent.
    /// > RFC 7143 §11.17.1: 0x04 Protocol Error (e.g., SNACK Request for a status that was already
    /// > acknowledged) [...] Can the original PDU be resent? no
    public mutating func snackReceived(header: ByteBuffer, connection cid: UInt16) -> [Action] {
        protocolErrorReceived(.protocolError, header: header, connection: cid)
    }

    /// Whether a discovery session may send `pdu`.
    /// > RFC 7143 §4.3: Discovery session: a session only opened for target discovery. The target MUST ONLY accept
    /// > Text Requests with the SendTargets key and a Logout Request with the reason "close the session". All other
    /// > requests MUST be rejected.
    /// A NOP-Out that answers the target's own ping (reserved ITT) is no request; it is taken.
    public static func isAllowedInDiscoverySession(_ pdu: PDU) -> Bool {
        switch pdu {
        case .textRequest: true
        case .logoutRequest(let request): request.reasonCode == .closeSession
        case .nopOut(let nop): nop.initiatorTaskTag == reservedTag
        default: false
        }
    }

    /// A request a discovery session may not send (see ``isAllowedInDiscoverySession(_:)``) is answered with a
    /// Reject, reason Protocol Error, and goes no further: no task, no data buffer, no place in the CmdSN order.
    public mutating func requestRefusedInDiscoverySession(header: ByteBuffer, connection cid: UInt16) -> [Action] {
        protocolErrorReceived(.protocolError, header: header, connection: cid)
    }

    /// A PDU the session cannot take but the connection can keep framing after: it is answered with a Reject
    /// (RFC 7143 §11.17) whose data segment is its header, and otherwise ignored.
    public mutating func protocolErrorReceived(_ reason: Reject.Reason, header: ByteBuffer, connection cid: UInt16) -> [Action] {
        queue(.message(.reject(reason, header: header)), on: cid)
        return takeActions()
    }

    // MARK: Backend and shell events

    /// What of a backend's completion may wait for the session's loop: Data-In beyond the command's Expected
    /// Data Transfer Length is never sent, so it is let go of here, on the backend's thread, as soon as the
    /// device has produced it, in storage of its own (a slice would keep the whole buffer alive). What remains
    /// is within the bytes the task holds of the data buffer budget, however long the loop takes to come to it:
    /// completions waiting for the loop cannot hold more than `max_data_buffer_mib`. `produced` is the length
    /// the device produced, for the residual; hand both to ``backendCompleted(itt:tag:_:produced:)``.
    public static func boundedForTransit(
        _ completion: BackendCompletion, expectedDataTransferLength edtl: Int
    ) -> (completion: BackendCompletion, produced: Int?) {
        guard case .completed(var result) = completion, result.dataIn.readableBytes > max(0, edtl) else {
            return (completion, nil)
        }
        let produced = result.dataIn.readableBytes
        result.dataIn = TaskStateMachine.prefix(result.dataIn, length: max(0, edtl))
        return (.completed(result), produced)
    }

    /// The backend returned a task. `produced`: the Data-In length the device produced, when
    /// ``boundedForTransit(_:expectedDataTransferLength:)`` cut it to the Expected Data Transfer Length.
    public mutating func backendCompleted(
        itt: UInt32, tag: BackendTaskTag, _ completion: BackendCompletion, produced: Int? = nil
    ) -> [Action] {
        guard let verdict = tasks.update(itt, { $0.backendCompleted(tag: tag, completion, produced: produced) }) else {
            return takeActions()
        }
        switch verdict {
        case .stale:
            break
        case .respond(let bytes):
            released += bytes
            respond(itt)
        case .left(let mark, let bytes):
            released += bytes
            if mark.reportTaskAborted {
                respond(itt)
            } else {
                tasks.removeValue(forKey: itt)
            }
            taskLeft(itt, waiter: mark.waiter)
        }
        return takeActions()
    }

    /// The shell finished a Text Request.
    public mutating func queueTextResponse(_ response: TextResponse, connection cid: UInt16) -> [Action] {
        queue(.message(.textResponse(response)), on: cid)
        return takeActions()
    }

    /// The target asks the initiator to log out (reconfiguration, shutdown, an operator's
    /// request), on every connection of the session.
    public mutating func logoutRequested(within seconds: UInt16) -> [Action] {
        // > RFC 7143 §11.9.1: AsyncEvent 1: the target requests Logout. [...] The initiator MUST
        // > honor this request by issuing a Logout as early as possible but no later than
        // > Parameter3 seconds.
        for cid in connections.keys.sorted() {
            queue(.message(.asynchronousMessage(.requestLogout, parameter3: seconds)), on: cid)
        }
        return takeActions()
    }

    /// The session ends: every task and every waiting command gives its bytes back.
    public mutating func releaseDataBuffers() -> [Action] {
        for itt in Array(tasks.keys) {
            released += tasks.update(itt) { $0.releaseReservation() } ?? 0
        }
        for cmdSN in Array(pending.keys) {
            if case .scsiCommand(_, _, _, let reservation) = pending[cmdSN] {
                release(reservation)
                pending[cmdSN] = .consumed
            }
        }
        return takeActions()
    }

    // MARK: Ordering

    private mutating func order(_ pdu: OrderedPDU, cmdSN: UInt32, immediate: Bool) {
        if immediate {
            process(pdu)
            refreshWindow()
            return
        }
        let sn = SerialNumber(cmdSN)
        guard sn >= SerialNumber(window.expCmdSN) && sn <= SerialNumber(window.maxCmdSN) else {
            // > RFC 7143 §3.2.2.1: outside the window the target MUST silently ignore it.
            if case .scsiCommand(_, _, _, let reservation) = pdu { release(reservation) }
            return
        }
        if cmdSN != window.expCmdSN {
            guard pending[cmdSN] == nil else {
                // A duplicate CmdSN is ignored.
                if case .scsiCommand(_, _, _, let reservation) = pdu { release(reservation) }
                return
            }
            if case .scsiCommand(let command, let cid, let disposition, let reservation) = pdu,
                tasks.count < parameters.taskLimit
            {
                // Keep its task (and any immediate data) so that Data-Out and ABORT TASK find it; the task holds
                // the reservation from now on. Without room, it ends with TASK SET FULL at its turn.
                tasks.insert(
                    TaskStateMachine(command: command, connection: cid, disposition: disposition, reservation: reservation),
                    for: command.initiatorTaskTag)
                pending[cmdSN] = .scsiCommand(command, connection: cid, disposition, .reserved(0))
            } else {
                pending[cmdSN] = pdu
            }
            return
        }
        window.expCmdSN &+= 1
        process(pdu)
        while let next = pending.removeValue(forKey: window.expCmdSN) {
            window.expCmdSN &+= 1
            process(next)
        }
        refreshWindow()
    }

    /// A CmdSN is consumed without its PDU: what the PDU held of the data buffer budget goes back.
    private mutating func consume(_ cmdSN: UInt32) {
        if case .scsiCommand(_, _, _, let reservation) = pending[cmdSN] { release(reservation) }
        pending[cmdSN] = .consumed
    }

    /// Consumes a CmdSN that has not arrived yet, if it is free (ABORT TASK for a task not received).
    mutating func consumeIfFree(_ cmdSN: UInt32) {
        if pending[cmdSN] == nil { pending[cmdSN] = .consumed }
    }

    mutating func refreshWindow() {
        let width = max(1, parameters.commandWindow - tasks.count)
        let proposed = window.expCmdSN &+ UInt32(width) &- 1
        if SerialNumber(proposed) > SerialNumber(window.maxCmdSN) { window.maxCmdSN = proposed }
    }

    private mutating func process(_ pdu: OrderedPDU) {
        switch pdu {
        case .scsiCommand(let command, let cid, let disposition, let reservation):
            let itt = command.initiatorTaskTag
            if tasks[itt]?.cmdSN != command.cmdSN || command.immediate {
                guard tasks.count < parameters.taskLimit else {
                    // > SAM-5 §5.3.1: TASK SET FULL [...] shall be returned if the logical unit receives a command
                    // > and does not have enough resources to enter the task in the task set.
                    // The command ends at once, without becoming a task: an initiator that sends immediate
                    // commands without end cannot make the session hold them all.
                    release(reservation)
                    queue(.message(.status(.taskSetFull, initiatorTaskTag: itt)), on: cid)
                    return
                }
                tasks.insert(
                    TaskStateMachine(command: command, connection: cid, disposition: disposition, reservation: reservation),
                    for: itt)
            }
            reachedTurn(itt)
        case .consumed:
            break
        case .taskManagement(let request, let cid, let logicalUnit, let received):
            taskManagement(request, connection: cid, logicalUnit: logicalUnit, received: received)
        case .text(let request, let header, let cid):
            actions.append(.handleText(request, header: header, connection: cid))
        case .logout(let request, let cid):
            logout(request, connection: cid)
        case .nopOut(let nop, let cid):
            // > RFC 7143 §11.18, Ping Data: Ping data is reflected in the NOP-In Response. The length of the
            // > reflected data is limited to MaxRecvDataSegmentLength.
            let reflected = nop.pingData.getSlice(
                at: nop.pingData.readerIndex,
                length: min(nop.pingData.readableBytes, parameters.initiatorMaxRecvDataSegmentLength))!
            queue(.message(.nopInAnswer(lun: nop.lun, initiatorTaskTag: nop.initiatorTaskTag, pingData: reflected)), on: cid)
        }
    }

    private mutating func logout(_ request: LogoutRequest, connection cid: UInt16) {
        let response: LogoutResponse.Response
        switch request.reasonCode {
        case .closeSession?, .closeConnection?:
            response =
                (request.reasonCode == .closeConnection && connections[request.cid] == nil) ? .cidNotFound : .closedSuccessfully
        case .removeConnectionForRecovery?, nil:
            response = .connectionRecoveryNotSupported
        }
        queue(.message(.logoutResponse(response, initiatorTaskTag: request.initiatorTaskTag)), on: cid)
        guard response == .closedSuccessfully else { return }
        if request.reasonCode == .closeSession {
            actions.append(.closeSession)
        } else {
            actions.append(.closeConnection(request.cid))
        }
    }

    // MARK: Tasks

    /// The task reached its CmdSN turn (or is immediate).
    private mutating func reachedTurn(_ itt: UInt32) {
        let parameters = parameters
        var tags = targetTransferTags
        defer { targetTransferTags = tags }
        guard let next = tasks.update(itt, { $0.reachedTurn(parameters: parameters, tags: &tags) }) else { return }
        carryOut(next, itt)
    }

    private mutating func advanceDataOut(_ itt: UInt32) {
        let parameters = parameters
        var tags = targetTransferTags
        defer { targetTransferTags = tags }
        guard let next = tasks.update(itt, { $0.advanceDataOut(parameters: parameters, tags: &tags) }) else { return }
        carryOut(next, itt)
    }

    private mutating func carryOut(_ next: TaskStateMachine.Next, _ itt: UInt32) {
        guard let cid = tasks[itt]?.connection else { return }
        switch next {
        case .submit:
            submit(itt)
        case .solicit(let tags):
            for ttt in tags { queue(.readyToTransfer(itt: itt, targetTransferTag: ttt), on: cid) }
        case .respond:
            respond(itt)
        case .nothing:
            break
        }
    }

    private mutating func submit(_ itt: UInt32) {
        let tag = BackendTaskTag(UInt64(serial) << 32 | nextTagSuffix)
        nextTagSuffix = (nextTagSuffix + 1) & 0xffff_ffff
        guard let dataOut = tasks.update(itt, { $0.submit(tag: tag) }), let task = tasks[itt] else { return }
        let request = SCSIRequest(
            cdb: task.command.cdb, lun: task.lun, nexus: nexus, attribute: Self.attribute(task.command.attribute),
            expectedDataTransferLength: Int(task.command.expectedDataTransferLength), dataOut: dataOut)
        if task.runsOnBackend {
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

    /// Aborts a task (SAM-5 §7.2). Returns true when the backend still holds it, so that whoever aborted it must
    /// wait for it to leave.
    @discardableResult
    mutating func abort(_ itt: UInt32, _ mark: TaskStateMachine.AbortMark) -> Bool {
        guard let awaitedTurn = tasks[itt]?.awaitsTurn, let verdict = tasks.update(itt, { $0.abort(mark) }) else { return false }
        switch verdict {
        case .terminate(let tag):
            actions.append(.terminate(lun: tasks[itt]!.lun, tag: tag))
            return true
        case .gone(let bytes), .endsWithTaskAborted(let bytes):
            released += bytes
            let task = tasks[itt]!
            // A task held for CmdSN order is dropped now; its CmdSN still advances the window when reached.
            if awaitedTurn { pending[task.cmdSN] = .consumed }
            if case .endsWithTaskAborted = verdict {
                respond(itt)
            } else {
                tasks.removeValue(forKey: itt)
            }
            return false
        }
    }
}
