public import ISCSIProtocol
public import NIOCore
public import SCSI

extension SessionStateMachine {
    /// What the shell carries out for the session machine.
    public enum Action {
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
        /// Carry a task-set function to every other session of the target: name them with
        /// ``SessionStateMachine/otherSessionsNamed(_:functionTag:)``, hand each of them
        /// ``SessionStateMachine/terminateForForeignFunction(_:scope:tas:)``, and bring their reports back with
        /// ``SessionStateMachine/foreignFunctionReported(functionTag:by:_:)``.
        case terminateInOtherSessions(TaskSetScope, functionTag: UInt32, tas: TASPolicy)
        /// Reset the devices behind a logical unit (LOGICAL UNIT RESET) or behind every logical unit of
        /// the target (TARGET WARM/COLD RESET); call ``SessionStateMachine/devicesReset(functionTag:)`` when they are done.
        case resetDevices(TaskSetScope, functionTag: UInt32)
        /// Apply logical-unit side effects (unit attentions, reservations) before responding. A LUN of
        /// `UInt64.max` means every logical unit of the target.
        case applyToLogicalUnits([(lun: UInt64, event: LogicalUnitEvent)])
        /// A Text Request reached its turn; answer with ``SessionStateMachine/queueTextResponse(_:connection:)``, or
        /// refuse it with ``SessionStateMachine/protocolErrorReceived(_:header:connection:)`` and its `header`.
        case handleText(TextRequest, header: ByteBuffer, connection: UInt16)
        /// QUERY ASYNCHRONOUS EVENT: look up the pending unit attention and answer with
        /// ``SessionStateMachine/asynchronousEventQueried(functionTag:pending:)``.
        case queryUnitAttention(lun: UInt64, functionTag: UInt32)
        /// Tell the session that issued a task-set function how it stands here.
        case reportToForeignFunction(ForeignFunction, ForeignFunctionReport)
        /// A task management function was answered: for the log and the metrics.
        case functionAnswered(
            TaskManagementFunctionRequest, TaskManagementFunctionResponse.Response, received: NIODeadline)
        /// Give bytes back to the target's data buffer budget.
        case releaseDataBuffer(Int)
        /// Close one connection (after its queued PDUs are written).
        case closeConnection(UInt16)
        /// End the whole session (logout, cold reset, I_T nexus reset, protocol error).
        case closeSession
    }
}

/// How a session stands toward another session's task-set function.
public enum ForeignFunctionReport: Sendable, Hashable {
    /// Every affected task here is marked aborted: none will answer, so a device reset may begin.
    case marked
    /// No affected task is at a backend any more; `affected`: whether the function took any task here.
    case terminated(affected: Bool)
}
