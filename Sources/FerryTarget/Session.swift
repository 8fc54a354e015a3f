import FerryBackends
import FerrySync
import ISCSIProtocol
import ISCSISession
import Logging
import NIOCore
import SCSI

/// The shell around ``SessionStateMachine``: it lives on one event loop (its leading
/// connection's), feeds the machine the events of every connection and backend, and carries
/// out the actions. Connections on other loops hop here before calling in.
final class Session: @unchecked Sendable {
    let eventLoop: any EventLoop
    let tsih: UInt16
    /// No other session of the process ever had this number; the others name this session by it.
    let serial: UInt32
    let isid: ISID
    let initiatorName: String
    let nexus: ITNexus
    let node: TargetNode
    let sessionType: SessionType
    private(set) var logger: Logger
    private var machine: SessionStateMachine
    /// The target's LUN map as this session last saw it: refreshed (one atomic load while it is unchanged) for each
    /// command, so that a command takes no lock to find its logical unit.
    private var lunMap: TargetNode.LUNMap
    private var connections: [UInt16: any Channel] = [:]
    /// The transmit end of each connection on this loop: PDUs are handed to it directly, without a
    /// trip through the pipeline (which boxes every PDU in an `NIOAny`).
    private var writers: [UInt16: PDUWriter] = [:]
    /// Connections written to by the event being carried out; flushed once when it is done.
    private var unflushed: [UInt16] = []
    /// How deep the shell is in carrying out actions; flushes happen at depth 0.
    private var runDepth = 0
    /// Backend completions waiting for the loop. Backend threads append; one loop task drains a
    /// whole batch, so that a burst of completions costs one wakeup and one flush.
    private let completions = Locked(CompletionInbox())
    /// The batch being drained, kept to reuse its storage.
    private var drainingCompletions: [CompletedTask] = []
    /// Full Feature Phase text negotiation, per connection (RFC 7143 §6.2).
    private var textNegotiations: [UInt16: TextNegotiationStateMachine] = [:]
    private let context: TargetContext
    private var closed = false
    /// A SNACK was logged: an initiator that keeps asking for retransmission is answered every time, logged once.
    private var snackLogged = false
    /// Requests only a normal session may send that this discovery session sent (each answered with a Reject).
    private var refusedInDiscovery = 0
    /// Lines an initiator can provoke with every PDU (a refused command or Text Request, an unexpected PDU), and
    /// the line of each task management function answered: bounded, so that a flood is not a flood of log lines.
    private var rejectionLines = LogThrottle()
    private var functionLines = LogThrottle()

    /// The refused requests after which a discovery session is closed: RFC 7143 §4.3 has each rejected, and a
    /// discovery session that keeps sending them is not discovering anything, only costing a Reject each.
    static let refusedRequestsBeforeClosingADiscoverySession = 16

    init(
        eventLoop: any EventLoop, tsih: UInt16, isid: ISID, initiatorName: String, node: TargetNode,
        sessionType: SessionType, parameters: SessionParameters, expCmdSN: UInt32, serial: UInt32,
        context: TargetContext, logger: Logger
    ) {
        self.eventLoop = eventLoop
        self.tsih = tsih
        self.lunMap = node.lunMap
        self.serial = serial
        self.isid = isid
        self.initiatorName = initiatorName
        self.node = node
        self.sessionType = sessionType
        self.context = context
        self.nexus = ITNexus(
            initiatorPortName: "\(initiatorName),i,\(isid)",
            targetPortName: "\(node.name),t,0x\(String(node.portalGroupTag, radix: 16))",
            relativeTargetPortIdentifier: node.portalGroupTag)
        self.machine = SessionStateMachine(
            nexus: nexus, parameters: parameters, expCmdSN: expCmdSN, sessionSerial: serial)
        var logger = logger
        logger[metadataKey: "tsih"] = "\(tsih)"
        logger[metadataKey: "isid"] = "\(isid)"
        logger[metadataKey: "initiator"] = "\(initiatorName)"
        logger[metadataKey: "target"] = "\(node.name)"
        self.logger = logger
    }

    var sequenceNumbers: (expCmdSN: UInt32, maxCmdSN: UInt32) {
        eventLoop.preconditionInEventLoop()
        return machine.sequenceNumbers
    }

    // MARK: Connections

    /// A login wants to add connection `cid`: refuses when the session is full; a CID in use
    /// is connection reinstatement (RFC 7143 §6.3.4): the old connection is closed.
    func prepareConnection(_ cid: UInt16) throws {
        eventLoop.preconditionInEventLoop()
        if let old = connections[cid] {
            logger.notice("reinstating connection", metadata: ["cid": "\(cid)"])
            removeConnection(cid)
            old.close(mode: .all, promise: nil)
        } else if connections.count >= context.configuration.limits.maxConnectionsPerSession {
            throw AdmissionError(status: .tooManyConnections, reason: "the session has its maximum of connections")
        }
    }

    func addConnection(_ cid: UInt16, channel: any Channel, statSN: UInt32, negotiated: NegotiatedParameters) {
        eventLoop.preconditionInEventLoop()
        connections[cid] = channel
        if channel.eventLoop === eventLoop {
            writers[cid] = try? channel.pipeline.syncOperations.handler(type: PDUWriter.self)
        }
        textNegotiations[cid] = TextNegotiationStateMachine(
            parameters: negotiated, limits: context.negotiationLimits)
        machine.connectionAdded(cid, statSN: statSN)
    }

    func removeConnection(_ cid: UInt16) {
        eventLoop.preconditionInEventLoop()
        guard connections.removeValue(forKey: cid) != nil else { return }
        writers[cid] = nil
        textNegotiations[cid] = nil
        run(machine.connectionRemoved(cid))
        if connections.isEmpty { finish() }
    }

    /// Runs `body` on the session's loop.
    func execute(_ body: @escaping @Sendable (Session) -> Void) {
        if eventLoop.inEventLoop {
            body(self)
        } else {
            eventLoop.execute { body(self) }
        }
    }

    // MARK: Events from connections

    /// A PDU from connection `cid`: handled at once when the connection runs on the session's loop, as the
    /// leading connection does (no closure allocated per PDU), otherwise on the session's loop.
    func receive(_ inbound: InboundPDU, on cid: UInt16) {
        if eventLoop.inEventLoop {
            received(inbound, on: cid)
        } else {
            eventLoop.execute { self.received(inbound, on: cid) }
        }
    }

    private func received(_ inbound: InboundPDU, on cid: UInt16) {
        let pdu = inbound.pdu
        eventLoop.preconditionInEventLoop()
        if sessionType == .discovery, !SessionStateMachine.isAllowedInDiscoverySession(pdu) {
            guard !closed, refusedInDiscovery < Self.refusedRequestsBeforeClosingADiscoverySession else { return }
            refusedInDiscovery += 1
            if refusedInDiscovery == 1 {
                logger.notice(
                    "PDU not allowed in a discovery session; rejecting it (Protocol Error), and any more of this session's without a word",
                    metadata: ["opcode": "\(pdu.opcode)"])
            }
            run(machine.requestRefusedInDiscoverySession(header: inbound.basicHeaderSegment, connection: cid))
            if refusedInDiscovery == Self.refusedRequestsBeforeClosingADiscoverySession {
                logger.notice(
                    "discovery session sent only what a normal session may send; closing it",
                    metadata: ["refused": "\(refusedInDiscovery)"])
                run(.closeSession)
            }
            return
        }
        switch pdu {
        case .scsiCommand(let command):
            let actions = machine.commandReceived(
                command, header: inbound.basicHeaderSegment, connection: cid, disposition: disposition(for: command),
                reservation: reserveDataBuffer(for: command))
            for case .send(.reject(let reject), _) in actions {
                let (log, suppressed) = rejectionLines.admit()
                guard log else { continue }
                logger.notice(
                    "rejecting SCSI Command",
                    metadata: [
                        "reason": "\(reject.reason)", "itt": "\(command.initiatorTaskTag)", "cmdSN": "\(command.cmdSN)",
                        "immediateData": "\(command.data.readableBytes)", "linesLeftOut": "\(suppressed)",
                    ])
            }
            run(actions)
        case .scsiDataOut(let dataOut):
            run(machine.dataOutReceived(dataOut, header: inbound.basicHeaderSegment, connection: cid))
        case .taskManagementFunctionRequest(let request):
            logger.debug(
                "task management function received",
                metadata: [
                    "function": "\(Self.name(of: request))", "itt": "\(request.initiatorTaskTag)",
                    "refITT": "\(request.referencedTaskTag)", "lun": "\(request.lun)",
                ])
            let logicalUnit = node.backend(lun: request.lun).map {
                FunctionLogicalUnit.mapped(taskAbortedStatus: $0.taskAbortedStatus)
            }
            run(machine.taskManagementReceived(
                request, connection: cid, logicalUnit: logicalUnit ?? .notMapped, received: .now()))
        case .textRequest(let request):
            run(machine.textReceived(request, header: inbound.basicHeaderSegment, connection: cid))
        case .logoutRequest(let request):
            run(machine.logoutReceived(request, connection: cid))
        case .nopOut(let nop):
            run(machine.nopOutReceived(nop, connection: cid))
        case .snackRequest(let snack):
            if !snackLogged {
                snackLogged = true
                logger.notice(
                    "rejecting SNACK: ErrorRecoveryLevel is 0 (logged once per session)",
                    metadata: ["type": "\(snack.type)", "itt": "\(snack.initiatorTaskTag)", "begRun": "\(snack.begRun)"])
            }
            run(machine.snackReceived(header: inbound.basicHeaderSegment, connection: cid))
        default:
            let (log, suppressed) = rejectionLines.admit()
            guard log else { return }
            logger.warning(
                "unexpected PDU in full feature phase", metadata: ["pdu": "\(pdu)", "linesLeftOut": "\(suppressed)"])
        }
    }

    func reject(_ reason: Reject.Reason, header: ByteBuffer, on cid: UInt16) {
        eventLoop.preconditionInEventLoop()
        run(machine.protocolErrorReceived(reason, header: header, connection: cid))
    }

    func closeAllConnections() {
        eventLoop.preconditionInEventLoop()
        for channel in connections.values { channel.close(mode: .all, promise: nil) }
    }

    /// Asks the initiator to log out within `seconds` (Async Message), and closes the
    /// connections that are still open when the time is up.
    func requestLogout(within seconds: UInt16) {
        eventLoop.preconditionInEventLoop()
        guard !closed else { return }
        logger.notice("asking the initiator to log out", metadata: ["seconds": "\(seconds)"])
        run(machine.logoutRequested(within: seconds))
        eventLoop.scheduleTask(in: .seconds(Int64(seconds))) { [self] in
            guard !closed else { return }
            logger.notice("the initiator did not log out in time; closing the session")
            closeAllConnections()
        }
    }

    /// What the control socket shows of this session.
    func snapshot() -> SessionSnapshot {
        eventLoop.preconditionInEventLoop()
        return SessionSnapshot(
            tsih: tsih, isid: "\(isid)", initiatorName: initiatorName, targetName: node.name,
            discovery: sessionType == .discovery,
            connections: connections.sorted { $0.key < $1.key }.map { (cid: $0.key, address: $0.value.remoteAddress) },
            parameters: machine.parameters, expCmdSN: machine.sequenceNumbers.expCmdSN,
            maxCmdSN: machine.sequenceNumbers.maxCmdSN, tasks: machine.tasks.count)
    }

    /// Pings the initiator on connection `cid` (NOP-In), which has been silent.
    func ping(_ cid: UInt16) {
        eventLoop.preconditionInEventLoop()
        guard connections[cid] != nil else { return }
        run(machine.pingRequested(connection: cid))
    }

    func writabilityChanged(_ cid: UInt16, writable: Bool) {
        eventLoop.preconditionInEventLoop()
        run(machine.writabilityChanged(cid, writable: writable))
    }

    /// Takes a command's Expected Data Transfer Length from the target's data buffer budget, if there is room.
    private func reserveDataBuffer(for command: SCSICommand) -> DataBufferReservation {
        let bytes = Int(command.expectedDataTransferLength)
        return context.dataBuffers.reserve(bytes) ? .reserved(bytes) : .unavailable
    }

    private func disposition(for command: SCSICommand) -> LogicalUnitDisposition {
        node.refresh(&lunMap)
        guard let backend = lunMap.backend(lun: command.lun), !TargetNode.answersItself(command.cdb) else {
            return .answeredByTarget
        }
        return .mapped(dataOutLength: command.write ? backend.dataOutLength(for: command.cdb) : 0)
    }

    // MARK: Task management outcomes

    private static func name(of request: TaskManagementFunctionRequest) -> String {
        request.function.map { "\($0)" } ?? "code \(request.functionCode)"
    }

    /// Logs and counts a function's answer: what it was, what it answered, and how long Ferry held it (waiting
    /// for the device, other sessions, a reset).
    private func functionAnswered(
        _ request: TaskManagementFunctionRequest, _ response: TaskManagementFunctionResponse.Response,
        received: NIODeadline
    ) {
        let function = Self.name(of: request)
        let held = NIODeadline.now() - received
        let (log, suppressed) = functionLines.admit()
        if log {
            logger.info(
                "task management function answered",
                metadata: [
                    "function": "\(function)", "itt": "\(request.initiatorTaskTag)",
                    "refITT": "\(request.referencedTaskTag)", "lun": "\(request.lun)",
                    "response": "\(response)", "heldMilliseconds": "\(held.nanoseconds / 1_000_000)",
                    "linesLeftOut": "\(suppressed)",
                ])
        }
        context.taskManagementCounters.record(
            .init(target: node.name, lun: TargetNode.normalize(request.lun), function: function, response: "\(response)"))
    }

    // MARK: Actions

    fileprivate func run(_ actions: consuming [SessionStateMachine.Action]) {
        runDepth += 1
        // Indices, not for-in: iterating would consume the buffer before it goes back.
        for index in actions.indices { run(actions[index]) }
        machine.recycle(actions)
        runDepth -= 1
        if runDepth == 0 { flush() }
    }

    /// Flushes every connection written to since the last flush.
    private func flush() {
        for cid in unflushed { connections[cid]?.flush() }
        unflushed.removeAll(keepingCapacity: true)
    }

    private func run(_ action: SessionStateMachine.Action) {
        switch action {
        case .send(let pdu, let cid):
            if let writer = writers[cid] {
                writer.enqueue(pdu)
            } else if let channel = connections[cid] {
                channel.write(pdu, promise: nil)
            } else {
                return
            }
            if !unflushed.contains(cid) { unflushed.append(cid) }
        case .submit(let request, let itt, let tag):
            // Refreshed again: a write's data may have arrived after a reconfiguration.
            node.refresh(&lunMap)
            guard let backend = lunMap.backend(lun: request.lun) else {
                complete(itt: itt, tag: tag, .completed(.checkCondition(.logicalUnitNotSupported)))
                return
            }
            let edtl = request.expectedDataTransferLength
            backend.submit(request, tag: tag) { [self] completion in
                // Cut to what may be sent before it waits for the loop (see boundedForTransit).
                let (bounded, produced) = SessionStateMachine.boundedForTransit(
                    completion, expectedDataTransferLength: edtl)
                self.backendCompleted(CompletedTask(itt: itt, tag: tag, completion: bounded, produced: produced))
            }
        case .answerByTarget(let request, let itt, let tag):
            let result = node.answer(request)
            eventLoop.execute { self.complete(itt: itt, tag: tag, .completed(result)) }
        case .terminate(let lun, let tag):
            node.backend(lun: lun)?.terminate(tag)
        case .terminateInOtherSessions(let scope, let functionTag, let tas):
            let others = context.registry.otherSessions(of: self)
            run(machine.otherSessionsNamed(others.map(\.serial), functionTag: functionTag))
            let function = ForeignFunction(session: serial, functionTag: functionTag)
            for other in others {
                other.execute { $0.run($0.machine.terminateForForeignFunction(function, scope: scope, tas: tas)) }
            }
        case .reportToForeignFunction(let function, let report):
            let (reporter, nexus) = (serial, nexus)
            context.registry.session(serial: function.session)?.execute {
                $0.run($0.machine.foreignFunctionReported(functionTag: function.functionTag, by: reporter, report, nexus: nexus))
            }
        case .resetDevices(let scope, let functionTag):
            resetDevices(scope) { [self] in
                execute { $0.run($0.machine.devicesReset(functionTag: functionTag)) }
            }
        case .functionAnswered(let request, let response, let received):
            functionAnswered(request, response, received: received)
        case .releaseDataBuffer(let bytes):
            context.dataBuffers.release(bytes)
        case .applyToLogicalUnits(let effects):
            for effect in effects {
                let event = effect.event
                switch event {
                case .targetReset, .itNexusLoss:
                    for backend in node.allBackends { backend.apply(event) }
                case .logicalUnitReset, .tasksClearedByAnotherInitiator:
                    node.backend(lun: effect.lun)?.apply(event)
                }
                logger.info("logical unit event applied", metadata: ["lun": "\(effect.lun)", "event": "\(event)"])
            }
        case .handleText(let request, let header, let cid):
            guard var negotiation = textNegotiations[cid] else { return }
            let visible = context.sendTargetsEntries(
                for: initiatorName, localAddress: connections[cid]?.localAddress?.ipAddress)
            let action = negotiation.textRequestReceived(
                request, sequence: StatusSequence(statSN: 0, expCmdSN: 0, maxCmdSN: 0), visibleTargets: visible)
            textNegotiations[cid] = negotiation
            switch action {
            case .sendTextResponse(let response, let parameters):
                run(machine.queueTextResponse(response, connection: cid))
                if let parameters {
                    machine.initiatorMaxRecvDataSegmentLengthChanged(parameters.initiatorMaxRecvDataSegmentLength)
                }
            case .reject(let reason, let why):
                let (log, suppressed) = rejectionLines.admit()
                if log {
                    logger.notice("rejecting Text Request", metadata: ["reason": "\(why)", "linesLeftOut": "\(suppressed)"])
                }
                run(machine.protocolErrorReceived(reason, header: header, connection: cid))
            }
        case .queryUnitAttention(let lun, let functionTag):
            let pending = node.backend(lun: lun)?.pendingUnitAttention(for: nexus)
            run(machine.asynchronousEventQueried(functionTag: functionTag, pending: pending))
        case .closeConnection(let cid):
            connections[cid]?.close(mode: .all, promise: nil)
        case .closeSession:
            for channel in connections.values { channel.close(mode: .all, promise: nil) }
        }
    }

    /// Carries a reset function to the devices: LOGICAL UNIT RESET to the logical unit's device,
    /// TARGET RESET once to each real SCSI target behind the target's logical units (with the other
    /// logical units on it as siblings). `done` runs, on any thread, when every device is usable again.
    private func resetDevices(_ scope: TaskSetScope, done: @escaping @Sendable () -> Void) {
        var resets: [(backend: any LogicalUnitBackend, reset: DeviceReset, siblings: [any LogicalUnitBackend])] = []
        switch scope {
        case .logicalUnit(let lun):
            if let backend = node.backend(lun: lun) { resets.append((backend, .logicalUnit, [])) }
        case .target:
            var byDeviceTarget: [String: [any LogicalUnitBackend]] = [:]
            for backend in node.allBackends {
                if let target = backend.deviceTarget {
                    byDeviceTarget[target, default: []].append(backend)
                } else {
                    resets.append((backend, .target, []))
                }
            }
            for group in byDeviceTarget.values { resets.append((group[0], .target, Array(group.dropFirst()))) }
        }
        let remaining = Locked(resets.count)
        guard !resets.isEmpty else { return done() }
        for reset in resets {
            reset.backend.resetDevice(reset.reset, siblings: reset.siblings) {
                if remaining.withLock({ $0 -= 1; return $0 == 0 }) { done() }
            }
        }
    }

    private func complete(itt: UInt32, tag: BackendTaskTag, _ completion: BackendCompletion, produced: Int? = nil) {
        run(machine.backendCompleted(itt: itt, tag: tag, completion, produced: produced))
    }

    // MARK: Backend completions

    struct CompletedTask: Sendable {
        var itt: UInt32
        var tag: BackendTaskTag
        var completion: BackendCompletion
        /// The Data-In length the device produced, when it was cut to the Expected Data Transfer Length.
        var produced: Int?
    }

    struct CompletionInbox: Sendable {
        var tasks: [CompletedTask] = []
        /// A loop task is on its way to drain ``tasks``.
        var drainScheduled = false
    }

    /// Called on a backend thread: queues the completion and wakes the loop unless a wakeup is
    /// already pending.
    private func backendCompleted(_ task: CompletedTask) {
        let wake = completions.withLock { inbox in
            inbox.tasks.append(task)
            defer { inbox.drainScheduled = true }
            return !inbox.drainScheduled
        }
        if wake { eventLoop.execute { self.drainCompletions() } }
    }

    /// Feeds every queued completion to the machine, then flushes each connection once.
    private func drainCompletions() {
        completions.withLock { inbox in
            swap(&inbox.tasks, &drainingCompletions)
            inbox.drainScheduled = false
        }
        runDepth += 1
        for task in drainingCompletions { complete(itt: task.itt, tag: task.tag, task.completion, produced: task.produced) }
        drainingCompletions.removeAll(keepingCapacity: true)
        runDepth -= 1
        flush()
    }

    /// The session ends with its last connection; tasks still at a backend complete into the
    /// void (their connection is gone).
    private func finish() {
        guard !closed else { return }
        closed = true
        run(machine.releaseDataBuffers())
        // A session replaced by reinstatement lost its nexus when its successor was admitted.
        if context.registry.remove(self) { nexusLost() }
        logger.info("session closed")
    }

    /// Applies the loss of this session's I_T nexus to every logical unit of the target. SAM-5 §6.3.4:
    /// the loss of an I_T nexus releases its SPC-2 reservation and establishes I_T NEXUS LOSS OCCURRED
    /// for it; a logout ends the nexus as surely as a dropped connection. Thread safe.
    func nexusLost() {
        for backend in node.allBackends { backend.apply(.itNexusLoss(nexus)) }
    }
}
