import ISCSIProtocol
import NIOCore
public import SCSI

/// Task management functions (SAM-5 §7, RFC 7143 §11.5) as the session carries them out: what each function
/// aborts or asks, here and in the other sessions of the target. ``TaskManagement`` holds every function until
/// all it waits for has happened.
extension SessionStateMachine {
    // MARK: Events

    /// Every other session the function reaches, by serial, as the shell found them for
    /// ``Action/terminateInOtherSessions(_:functionTag:tas:)`` (none: it waits for nobody).
    public mutating func otherSessionsNamed(_ sessions: [UInt32], functionTag: UInt32) -> [Action] {
        carryOut(taskManagement.otherSessionsNamed(sessions, of: functionTag))
        return takeActions()
    }

    /// Another session (`session`, whose I_T nexus is `nexus`) reports on this session's function `functionTag`.
    public mutating func foreignFunctionReported(
        functionTag: UInt32, by session: UInt32, _ report: ForeignFunctionReport, nexus: ITNexus
    ) -> [Action] {
        switch report {
        case .marked:
            carryOut(taskManagement.resolved(.marked(session: session), of: functionTag))
        case .terminated(let affected):
            carryOut(taskManagement.otherSessionTerminated(session, of: functionTag, clearedNexus: affected ? nexus : nil))
        }
        return takeActions()
    }

    /// The devices a reset function reset may be used again.
    public mutating func devicesReset(functionTag: UInt32) -> [Action] {
        carryOut(taskManagement.resolved(.deviceReset, of: functionTag))
        return takeActions()
    }

    /// QUERY ASYNCHRONOUS EVENT answer from the logical unit (RFC 7144 §4.5).
    public mutating func asynchronousEventQueried(
        functionTag: UInt32, pending: (senseKey: SenseKey, code: AdditionalSenseCode)?
    ) -> [Action] {
        carryOut(taskManagement.unitAttentionQueried(functionTag, pending: pending))
        return takeActions()
    }

    /// Another session's task-set function reaches this session: every affected task is aborted. The function's
    /// session hears ``ForeignFunctionReport/marked`` at once, and ``ForeignFunctionReport/terminated(affected:)``
    /// once none of them is at a backend any more.
    public mutating func terminateForForeignFunction(
        _ function: ForeignFunction, scope: TaskSetScope, tas: TASPolicy
    ) -> [Action] {
        var affected = false
        let mark = TaskStateMachine.AbortMark(waiter: .foreign(function), reportTaskAborted: tas == .taskAbortedStatus)
        // Every affected task is marked within this event, before the shell carries out any of its actions: the
        // report goes first, ahead of the terminations (whose completions may come back at once).
        append(.reportToForeignFunction(function, .marked))
        for (itt, task) in tasks where !task.isTerminating && scope.contains(task.lun) {
            affected = true
            if abort(itt, mark) { taskManagement.awaitForeign(itt, for: function) }
        }
        if !taskManagement.awaitsForeign(function) {
            append(.reportToForeignFunction(function, .terminated(affected: affected)))
        }
        return takeActions()
    }

    // MARK: Carrying out

    /// A task aborted on behalf of `waiter` has left the backend.
    mutating func taskLeft(_ itt: UInt32, waiter: TaskStateMachine.AbortMark.Waiter) {
        let (steps, foreignDone) = taskManagement.taskLeft(itt, waiter: waiter)
        if let foreignDone { append(.reportToForeignFunction(foreignDone, .terminated(affected: true))) }
        carryOut(steps)
    }

    private mutating func carryOut(_ steps: [TaskManagement.Step]) {
        for step in steps {
            switch step {
            case .resetDevices(let scope, let tag):
                append(.resetDevices(scope, functionTag: tag))
            case .answer(let function):
                answer(function)
            }
        }
    }

    private mutating func answer(_ function: TaskManagement.Function) {
        if !function.effects.isEmpty { append(.applyToLogicalUnits(function.effects)) }
        queueMessage(
            .taskManagementResponse(
                function.response, initiatorTaskTag: function.request.initiatorTaskTag,
                additionalResponseInformation: function.additionalResponseInformation),
            on: function.connection)
        append(.functionAnswered(function.request, function.response, received: function.received))
        if function.closesSession { append(.closeSession) }
    }

    // MARK: Functions

    /// A function reached its CmdSN turn (or is immediate).
    mutating func taskManagement(
        _ request: TaskManagementFunctionRequest, connection cid: UInt16, logicalUnit: FunctionLogicalUnit,
        received: NIODeadline
    ) {
        var function = TaskManagement.Function(request: request, connection: cid, received: received)
        let tag = request.initiatorTaskTag
        guard let code = request.function else {
            function.response = .functionNotSupported
            return carryOut(taskManagement.begin(function))
        }
        if logicalUnit == .notMapped && Self.addressesALogicalUnit(code) {
            // > RFC 7143 §11.6.1: 2 = Logical unit does not exist.
            function.response = .lunDoesNotExist
            return carryOut(taskManagement.begin(function))
        }
        if taskManagement.isFull {
            // Functions still waiting for tasks, other sessions or a device reset: one more would
            // let an initiator grow them without end.
            // > RFC 7143 §11.6.1: 255 = Function rejected.
            function.response = .functionRejected
            return carryOut(taskManagement.begin(function))
        }
        let ownMark = TaskStateMachine.AbortMark(waiter: .function(tag))
        switch code {
        case .abortTask:
            if let task = tasks[request.referencedTaskTag], !task.isTerminating, task.lun == request.lun {
                if abort(task.initiatorTaskTag, ownMark) { function.awaiting.insert(.task(task.initiatorTaskTag)) }
            } else {
                // > RFC 7143 §11.5.1: a task that does not exist but whose RefCmdSN is in the
                // > window and below the function's CmdSN is considered received: function complete.
                let ref = SerialNumber(request.refCmdSN)
                let (expCmdSN, maxCmdSN) = sequenceNumbers
                if ref >= SerialNumber(expCmdSN) && ref <= SerialNumber(maxCmdSN) && ref < SerialNumber(request.cmdSN) {
                    consumeIfFree(request.refCmdSN)
                } else {
                    function.response = .taskDoesNotExist
                }
            }
        case .abortTaskSet, .clearTaskSet, .logicalUnitReset:
            abortTasks(where: { $0.lun == request.lun }, ownMark, into: &function)
            if code != .abortTaskSet {
                var tas = TASPolicy.silent
                if code == .clearTaskSet, case .mapped(taskAbortedStatus: true) = logicalUnit { tas = .taskAbortedStatus }
                function.clearsTaskSetSilently = code == .clearTaskSet && tas == .silent
                function.awaiting.insert(.otherSessionsNamed)
                append(.terminateInOtherSessions(.logicalUnit(request.lun), functionTag: tag, tas: tas))
            }
            if code == .logicalUnitReset {
                function.effects = [(lun: request.lun, event: .logicalUnitReset)]
                function.deviceReset = .logicalUnit(request.lun)
            }
        case .targetWarmReset, .targetColdReset:
            abortTasks(where: { _ in true }, ownMark, into: &function)
            function.awaiting.insert(.otherSessionsNamed)
            function.deviceReset = .target
            function.effects = [(lun: UInt64.max, event: .targetReset(cold: code == .targetColdReset))]
            append(.terminateInOtherSessions(.target, functionTag: tag, tas: .silent))
        case .itNexusReset:
            abortTasks(where: { _ in true }, ownMark, into: &function)
            function.effects = [(lun: UInt64.max, event: .itNexusLoss(nexus))]
        case .queryTask:
            if let task = tasks[request.referencedTaskTag], !task.isTerminating, task.lun == request.lun {
                function.response = .functionSucceeded
            }
        case .queryTaskSet:
            let any = tasks.contains { $0.value.lun == request.lun && !$0.value.isTerminating && $0.value.initiatorTaskTag != tag }
            function.response = any ? .functionSucceeded : .functionComplete
        case .queryAsynchronousEvent:
            function.awaiting.insert(.unitAttention)
            append(.queryUnitAttention(lun: request.lun, functionTag: tag))
        case .clearACA:
            // NACA is not supported (standard INQUIRY NormACA=0), so no ACA can exist.
            function.response = .functionNotSupported
        case .taskReassign:
            // > RFC 7143 §11.5.1: at ErrorRecoveryLevel 0 the target MUST respond with
            // > "Task allegiance reassignment not supported".
            function.response =
                parameters.errorRecoveryLevel == 0 ? .taskAllegianceReassignmentNotSupported : .functionNotSupported
        }
        carryOut(taskManagement.begin(function))
    }

    /// Aborts every task of this session that `affected` selects and is not already aborted; the function waits
    /// for those the backend still holds.
    private mutating func abortTasks(
        where affected: (TaskStateMachine) -> Bool, _ mark: TaskStateMachine.AbortMark,
        into function: inout TaskManagement.Function
    ) {
        for (itt, task) in tasks where !task.isTerminating && affected(task) {
            if abort(itt, mark) { function.awaiting.insert(.task(itt)) }
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
}
