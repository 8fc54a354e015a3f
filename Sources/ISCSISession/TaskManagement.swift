import ISCSIProtocol
import NIOCore
import SCSI

/// The task management of one session (SAM-5 §7; RFC 7143 §11.5, §11.6): every function between its request
/// and its response, and every task this session aborted for another session's function. It owns all the
/// waiting a function does (for this session's tasks to leave the backend, for the other sessions, for a device
/// reset, for a logical unit's answer) and when the function arrived; the session machine asks it what to do
/// next whenever one of those ends.
struct TaskManagement {
    /// What a function still waits for before it is answered.
    enum Wait: Hashable {
        /// A task of this session, by its Initiator Task Tag, to leave the backend.
        case task(UInt32)
        /// The shell to say which other sessions the function reaches.
        case otherSessionsNamed
        /// Another session (by its serial) to mark its affected tasks aborted.
        case marked(session: UInt32)
        /// Another session (by its serial) to see its affected tasks leave their backends.
        case terminated(session: UInt32)
        /// The devices to come back from a reset.
        case deviceReset
        /// The logical unit to tell its pending unit attention (QUERY ASYNCHRONOUS EVENT).
        case unitAttention
    }

    /// A function between its request and its response.
    struct Function {
        let request: TaskManagementFunctionRequest
        let connection: UInt16
        /// When the request arrived, for the log line and the metrics of its answer.
        let received: NIODeadline
        var response: TaskManagementFunctionResponse.Response = .functionComplete
        var additionalResponseInformation: UInt32 = 0
        var awaiting: Set<Wait> = []
        /// The device reset to carry out once every other session has marked its affected tasks, so that the
        /// reset covers them all.
        var deviceReset: TaskSetScope?
        /// Logical-unit effects applied before the response (unit attentions, reservations).
        var effects: [(lun: UInt64, event: LogicalUnitEvent)] = []
        /// CLEAR TASK SET with TAS=0: the nexuses whose tasks it took hear of it as 2F/00 (SAM-5 §7.5).
        var clearsTaskSetSilently = false
        var clearedNexuses: Set<ITNexus> = []
        /// TARGET COLD RESET and I_T NEXUS RESET end the session once answered.
        var closesSession: Bool {
            request.function == .targetColdReset || request.function == .itNexusReset
        }

        init(request: TaskManagementFunctionRequest, connection: UInt16, received: NIODeadline) {
            self.request = request
            self.connection = connection
            self.received = received
        }

        /// Whether the device reset may begin: every other session has marked its tasks.
        var deviceResetIsDue: Bool {
            deviceReset != nil
                && !awaiting.contains { wait in
                    switch wait {
                    case .otherSessionsNamed, .marked: true
                    default: false
                    }
                }
        }
    }

    /// What the session machine does next for a function.
    enum Step {
        case resetDevices(TaskSetScope, functionTag: UInt32)
        case answer(Function)
    }

    /// This session's I_T nexus.
    let nexus: ITNexus
    private(set) var functions: [UInt32: Function] = [:]
    /// Tasks of this session aborted for another session's function, still at the backend.
    private var foreign: [ForeignFunction: Set<UInt32>] = [:]

    init(nexus: ITNexus) {
        self.nexus = nexus
    }

    /// Functions still waiting: one more would let an initiator grow them without end.
    var isFull: Bool { functions.count >= SessionParameters.immediateAllowance }

    /// Starts waiting for `function`, or answers it at once when it awaits nothing.
    mutating func begin(_ function: Function) -> [Step] {
        if function.awaiting.isEmpty && !function.deviceResetIsDue { return [.answer(function)] }
        let tag = function.request.initiatorTaskTag
        functions[tag] = function
        return steps(for: tag)
    }

    /// One thing `tag` waited for has happened.
    mutating func resolved(_ wait: Wait, of tag: UInt32) -> [Step] {
        guard functions[tag]?.awaiting.remove(wait) != nil else { return [] }
        return steps(for: tag)
    }

    /// The shell named the other sessions a task-set function reaches.
    mutating func otherSessionsNamed(_ sessions: [UInt32], of tag: UInt32) -> [Step] {
        guard functions[tag] != nil else { return [] }
        for session in sessions {
            functions[tag]?.awaiting.insert(.marked(session: session))
            functions[tag]?.awaiting.insert(.terminated(session: session))
        }
        return resolved(.otherSessionsNamed, of: tag)
    }

    /// Another session finished terminating its tasks; `clearedNexus`: its nexus, when the function took tasks there.
    mutating func otherSessionTerminated(_ session: UInt32, of tag: UInt32, clearedNexus: ITNexus?) -> [Step] {
        if let clearedNexus { functions[tag]?.clearedNexuses.insert(clearedNexus) }
        return resolved(.terminated(session: session), of: tag)
    }

    /// QUERY ASYNCHRONOUS EVENT: the logical unit's pending unit attention, if any (RFC 7144 §4.5).
    mutating func unitAttentionQueried(
        _ tag: UInt32, pending: (senseKey: SenseKey, code: AdditionalSenseCode)?
    ) -> [Step] {
        if let pending {
            functions[tag]?.response = .functionSucceeded
            functions[tag]?.additionalResponseInformation =
                UInt32(pending.senseKey.rawValue) << 16 | UInt32(pending.code.asc) << 8 | UInt32(pending.code.ascq)
        } else {
            functions[tag]?.response = .functionComplete
        }
        return resolved(.unitAttention, of: tag)
    }

    /// A task aborted for `foreignFunction` is at the backend; it reports when the last such task has left.
    mutating func awaitForeign(_ task: UInt32, for foreignFunction: ForeignFunction) {
        foreign[foreignFunction, default: []].insert(task)
    }

    /// Whether tasks aborted for `foreignFunction` are still at the backend.
    func awaitsForeign(_ foreignFunction: ForeignFunction) -> Bool {
        foreign[foreignFunction] != nil
    }

    /// A task aborted on behalf of `waiter` left the backend. Returns the steps of a function of this session that
    /// may now proceed, or the foreign function that no longer waits for any task here.
    mutating func taskLeft(_ itt: UInt32, waiter: TaskStateMachine.AbortMark.Waiter) -> (steps: [Step], foreignDone: ForeignFunction?) {
        switch waiter {
        case .none:
            return ([], nil)
        case .function(let tag):
            return (resolved(.task(itt), of: tag), nil)
        case .foreign(let foreignFunction):
            guard var entry = foreign[foreignFunction], entry.remove(itt) != nil else { return ([], nil) }
            if entry.isEmpty {
                foreign[foreignFunction] = nil
                return ([], foreignFunction)
            }
            foreign[foreignFunction] = entry
            return ([], nil)
        }
    }

    private mutating func steps(for tag: UInt32) -> [Step] {
        guard var function = functions[tag] else { return [] }
        var steps: [Step] = []
        if function.deviceResetIsDue, let scope = function.deviceReset {
            function.deviceReset = nil
            function.awaiting.insert(.deviceReset)
            functions[tag] = function
            steps.append(.resetDevices(scope, functionTag: tag))
        }
        if function.awaiting.isEmpty {
            functions[tag] = nil
            if function.clearsTaskSetSilently, !function.clearedNexuses.isEmpty {
                function.effects.append(
                    (function.request.lun, .tasksClearedByAnotherInitiator(by: nexus, otherNexuses: function.clearedNexuses)))
            }
            steps.append(.answer(function))
        }
        return steps
    }
}
