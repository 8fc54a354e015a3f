import ISCSIProtocol
import NIOCore
import SCSI
import Testing

@testable import ISCSISession

private let nexus = ITNexus(
    initiatorPortName: "iqn.2026-11.test:initiator,i,0x000000000001", targetPortName: "iqn.2026-11.test:target,t,0x1",
    relativeTargetPortIdentifier: 1)

private func machine(_ configure: (inout SessionParameters) -> Void = { _ in }) -> SessionStateMachine {
    var parameters = SessionParameters()
    parameters.commandWindow = 16
    configure(&parameters)
    var machine = SessionStateMachine(nexus: nexus, parameters: parameters, expCmdSN: 1, sessionSerial: 7)
    machine.connectionAdded(0, statSN: 100)
    return machine
}

private let lun1: UInt64 = 0x0001_0000_0000_0000

private func read(itt: UInt32, cmdSN: UInt32, length: UInt32 = 4096, immediate: Bool = false) -> SCSICommand {
    var cdb = ByteBuffer(bytes: [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
    cdb.writeRepeatingByte(0, count: 6)
    return SCSICommand(
        immediate: immediate, final: true, read: true, write: false, lun: lun1, initiatorTaskTag: itt,
        expectedDataTransferLength: length, cmdSN: cmdSN, expStatSN: 100, cdb: cdb)
}

private func write(itt: UInt32, cmdSN: UInt32, length: UInt32, immediateData: Int = 0, final: Bool = true) -> SCSICommand {
    var cdb = ByteBuffer(bytes: [0x2a, 0, 0, 0, 0, 0, 0, 0, UInt8(length / 512), 0])
    cdb.writeRepeatingByte(0, count: 6)
    return SCSICommand(
        final: final, read: false, write: true, lun: lun1, initiatorTaskTag: itt, expectedDataTransferLength: length,
        cmdSN: cmdSN, expStatSN: 100, cdb: cdb, data: ByteBuffer(repeating: 0xab, count: immediateData))
}

private func tmf(
    _ function: TaskManagementFunctionRequest.Function, itt: UInt32, ref: UInt32 = reservedTag, cmdSN: UInt32,
    refCmdSN: UInt32 = 0
) -> TaskManagementFunctionRequest {
    TaskManagementFunctionRequest(
        immediate: true, function: function, lun: lun1, initiatorTaskTag: itt, referencedTaskTag: ref, cmdSN: cmdSN,
        expStatSN: 100, refCmdSN: refCmdSN)
}

private extension [SessionStateMachine.Action] {
    var submitted: [(itt: UInt32, tag: BackendTaskTag, request: SCSIRequest)] {
        compactMap { if case .submit(let r, let itt, let tag) = $0 { (itt, tag, r) } else { nil } }
    }
    var resetDevices: [TaskSetScope] {
        compactMap { if case .resetDevices(let scope, _) = $0 { scope } else { nil } }
    }
    var terminated: [BackendTaskTag] {
        compactMap { if case .terminate(_, let tag) = $0 { tag } else { nil } }
    }
    var releasedBytes: Int {
        reduce(0) { if case .releaseDataBuffer(let bytes) = $1 { $0 + bytes } else { $0 } }
    }
    var reports: [ForeignFunctionReport] {
        compactMap { if case .reportToForeignFunction(_, let report) = $0 { report } else { nil } }
    }
    var sent: [PDU] {
        compactMap { if case .send(let pdu, _) = $0 { pdu } else { nil } }
    }
    var tmfResponses: [TaskManagementFunctionResponse] {
        sent.compactMap { if case .taskManagementFunctionResponse(let r) = $0 { r } else { nil } }
    }
    var scsiResponses: [SCSIResponse] {
        sent.compactMap { if case .scsiResponse(let r) = $0 { r } else { nil } }
    }
    var dataIns: [SCSIDataIn] {
        sent.compactMap { if case .scsiDataIn(let r) = $0 { r } else { nil } }
    }
    var r2ts: [ReadyToTransfer] {
        sent.compactMap { if case .readyToTransfer(let r) = $0 { r } else { nil } }
    }
    /// Every PDU that carries something for task `itt`.
    func forTask(_ itt: UInt32) -> [PDU] {
        sent.filter {
            switch $0 {
            case .scsiResponse(let r): r.initiatorTaskTag == itt
            case .scsiDataIn(let r): r.initiatorTaskTag == itt
            case .readyToTransfer(let r): r.initiatorTaskTag == itt
            default: false
            }
        }
    }
}

/// The events as the shell sends them, with what the tests here do not vary: the header a Reject carries is the
/// PDU's own, every command finds room in the data buffer budget, and functions arrive at one instant.
private extension SessionStateMachine {
    static func header(of pdu: PDU) -> ByteBuffer {
        var buffer = ByteBuffer()
        PDUEncoder().writeHeaderSegment(pdu, into: &buffer)
        return buffer.getSlice(at: buffer.readerIndex, length: 48)!
    }

    mutating func commandReceived(
        _ command: SCSICommand, connection cid: UInt16, disposition: LogicalUnitDisposition
    ) -> [Action] {
        commandReceived(
            command, header: Self.header(of: .scsiCommand(command)), connection: cid, disposition: disposition,
            reservation: .reserved(Int(command.expectedDataTransferLength)))
    }

    mutating func dataOutReceived(_ dataOut: SCSIDataOut, connection cid: UInt16) -> [Action] {
        dataOutReceived(dataOut, header: Self.header(of: .scsiDataOut(dataOut)), connection: cid)
    }

    mutating func taskManagementReceived(
        _ request: TaskManagementFunctionRequest, connection cid: UInt16, logicalUnitExists: Bool = true
    ) -> [Action] {
        taskManagementReceived(
            request, connection: cid, logicalUnit: logicalUnitExists ? .mapped(taskAbortedStatus: false) : .notMapped,
            received: .uptimeNanoseconds(0))
    }

    /// One other session (serial 9) shares the target and marks its affected tasks.
    mutating func otherSessionsMarked(functionTag: UInt32) -> [Action] {
        otherSessionsNamed([9], functionTag: functionTag)
            + foreignFunctionReported(functionTag: functionTag, by: 9, .marked, nexus: otherNexus)
    }

    /// The other session has no affected task left at a backend.
    mutating func otherSessionsTerminated(functionTag: UInt32) -> [Action] {
        foreignFunctionReported(functionTag: functionTag, by: 9, .terminated(affected: false), nexus: otherNexus)
    }
}

private let otherNexus = ITNexus(
    initiatorPortName: "iqn.2026-11.test:other,i,0x000000000002", targetPortName: "iqn.2026-11.test:target,t,0x1",
    relativeTargetPortIdentifier: 1)

/// The target's data buffer budget as the shell keeps it: reservations as commands arrive, and the bytes the
/// machine gives back.
private struct TestBudget {
    let capacity: Int
    private(set) var inUse = 0

    mutating func reserve(_ command: SCSICommand) -> DataBufferReservation {
        let bytes = Int(command.expectedDataTransferLength)
        guard inUse + bytes <= capacity else { return .unavailable }
        inUse += bytes
        return .reserved(bytes)
    }

    @discardableResult
    mutating func carryOut(_ actions: [SessionStateMachine.Action]) -> [SessionStateMachine.Action] {
        for case .releaseDataBuffer(let bytes) in actions { inUse -= bytes }
        return actions
    }
}

private extension SessionStateMachine {
    mutating func commandReceived(_ command: SCSICommand, budget: inout TestBudget) -> [Action] {
        budget.carryOut(
            commandReceived(
                command, header: Self.header(of: .scsiCommand(command)), connection: 0,
                disposition: .mapped(dataOutLength: 0), reservation: budget.reserve(command)))
    }
}

private func good(bytes: Int) -> BackendCompletion {
    .completed(SCSIResult(status: .good, dataIn: ByteBuffer(repeating: 0x5a, count: bytes)))
}

@Suite struct CommandOrderingTests {
    @Test func inOrderCommandIsSubmittedAndAnsweredWithPhaseCollapse() {
        var m = machine()
        let actions = m.commandReceived(read(itt: 1, cmdSN: 1), connection: 0, disposition: .mapped(dataOutLength: 0))
        #expect(actions.submitted.map(\.itt) == [1])
        #expect(m.sequenceNumbers.expCmdSN == 2)
        let done = m.backendCompleted(itt: 1, tag: actions.submitted[0].tag, good(bytes: 4096))
        #expect(done.dataIns.count == 1)
        #expect(done.dataIns[0].status == SCSIStatus.good.rawValue)
        #expect(done.dataIns[0].sequence.statSN == 100)
        #expect(done.scsiResponses.isEmpty)
        #expect(m.tasks.isEmpty)
    }

    @Test func outOfOrderCommandWaitsForItsTurn() {
        var m = machine()
        var actions = m.commandReceived(read(itt: 2, cmdSN: 2), connection: 0, disposition: .mapped(dataOutLength: 0))
        #expect(actions.submitted.isEmpty)
        #expect(m.sequenceNumbers.expCmdSN == 1)
        actions = m.commandReceived(read(itt: 1, cmdSN: 1), connection: 0, disposition: .mapped(dataOutLength: 0))
        #expect(actions.submitted.map(\.itt) == [1, 2])
        #expect(m.sequenceNumbers.expCmdSN == 3)
    }

    @Test func commandOutsideTheWindowIsIgnored() {
        var m = machine()
        // Silently: nothing is sent or submitted, and the command's data buffer reservation goes back.
        let actions = m.commandReceived(read(itt: 9, cmdSN: 1000), connection: 0, disposition: .mapped(dataOutLength: 0))
        #expect(actions.releasedBytes == 4096 && actions.count == 1)
        #expect(m.tasks.isEmpty)
        let old = m.commandReceived(read(itt: 8, cmdSN: 0), connection: 0, disposition: .mapped(dataOutLength: 0))
        #expect(old.releasedBytes == 4096 && old.count == 1)
    }

    @Test func immediateCommandDoesNotAdvanceCmdSN() {
        var m = machine()
        let actions = m.commandReceived(
            read(itt: 1, cmdSN: 1, immediate: true), connection: 0, disposition: .mapped(dataOutLength: 0))
        #expect(actions.submitted.count == 1)
        #expect(m.sequenceNumbers.expCmdSN == 1)
    }

    @Test func readIsSplitByMaxRecvDataSegmentLengthWithResidualOverflow() {
        var m = machine { $0.initiatorMaxRecvDataSegmentLength = 1024 }
        let actions = m.commandReceived(read(itt: 1, cmdSN: 1, length: 3000), connection: 0, disposition: .mapped(dataOutLength: 0))
        let done = m.backendCompleted(itt: 1, tag: actions.submitted[0].tag, good(bytes: 4096))
        #expect(done.dataIns.map { $0.data.readableBytes } == [1024, 1024, 952])
        #expect(done.dataIns.map(\.dataSN) == [0, 1, 2])
        #expect(done.dataIns.last?.residual == .overflow(1096))
    }

    @Test func checkConditionCarriesSenseInAResponse() {
        var m = machine()
        let actions = m.commandReceived(read(itt: 1, cmdSN: 1), connection: 0, disposition: .mapped(dataOutLength: 0))
        let done = m.backendCompleted(
            itt: 1, tag: actions.submitted[0].tag, .completed(.checkCondition(.logicalBlockAddressOutOfRange)))
        #expect(done.dataIns.isEmpty)
        #expect(done.scsiResponses.count == 1)
        #expect(done.scsiResponses[0].status == SCSIStatus.checkCondition.rawValue)
        #expect(done.scsiResponses[0].data.getInteger(at: 0, as: UInt16.self) == 18)
    }
}

@Suite struct DataOutTests {
    @Test func immediateDataAloneIsSubmittedWithoutCopy() {
        var m = machine()
        let actions = m.commandReceived(
            write(itt: 1, cmdSN: 1, length: 1024, immediateData: 1024), connection: 0,
            disposition: .mapped(dataOutLength: 1024))
        #expect(actions.submitted.count == 1)
        #expect(actions.submitted[0].request.dataOut.readableBytes == 1024)
    }

    @Test func remainingDataIsSolicitedWithR2TsAndGathered() {
        var m = machine {
            $0.maxBurstLength = 1024
            $0.maxOutstandingR2T = 1
        }
        var actions = m.commandReceived(
            write(itt: 1, cmdSN: 1, length: 3072, immediateData: 1024), connection: 0,
            disposition: .mapped(dataOutLength: 3072))
        #expect(actions.r2ts.map(\.bufferOffset) == [1024])
        #expect(actions.r2ts.map(\.r2tSN) == [0])
        let first = actions.r2ts[0]
        actions = m.dataOutReceived(
            SCSIDataOut(final: true, lun: lun1, initiatorTaskTag: 1, targetTransferTag: first.targetTransferTag,
                expStatSN: 100, dataSN: 0, bufferOffset: 1024, data: ByteBuffer(repeating: 1, count: 1024)),
            connection: 0)
        #expect(actions.r2ts.map(\.bufferOffset) == [2048])
        #expect(actions.r2ts.map(\.r2tSN) == [1])
        let second = actions.r2ts[0]
        actions = m.dataOutReceived(
            SCSIDataOut(final: true, lun: lun1, initiatorTaskTag: 1, targetTransferTag: second.targetTransferTag,
                expStatSN: 100, dataSN: 0, bufferOffset: 2048, data: ByteBuffer(repeating: 2, count: 1024)),
            connection: 0)
        #expect(actions.submitted.count == 1)
        let data = actions.submitted[0].request.dataOut
        #expect(data.readableBytes == 3072)
        #expect(data.getInteger(at: data.readerIndex + 1024, as: UInt8.self) == 1)
        #expect(data.getInteger(at: data.readerIndex + 2048, as: UInt8.self) == 2)
    }

    @Test func wrongDataSNIsRejected() {
        var m = machine()
        var actions = m.commandReceived(
            write(itt: 1, cmdSN: 1, length: 1024), connection: 0, disposition: .mapped(dataOutLength: 1024))
        let r2t = actions.r2ts[0]
        actions = m.dataOutReceived(
            SCSIDataOut(final: true, lun: lun1, initiatorTaskTag: 1, targetTransferTag: r2t.targetTransferTag,
                expStatSN: 100, dataSN: 5, bufferOffset: 0, data: ByteBuffer(repeating: 1, count: 1024)),
            connection: 0)
        #expect(actions.submitted.isEmpty)
        #expect(actions.sent.contains { if case .reject = $0 { true } else { false } })
    }

    @Test func writeWithShorterCDBReportsUnderflow() {
        var m = machine()
        let actions = m.commandReceived(
            write(itt: 1, cmdSN: 1, length: 2048, immediateData: 2048), connection: 0,
            disposition: .mapped(dataOutLength: 1024))
        #expect(actions.submitted[0].request.dataOut.readableBytes == 1024)
        let done = m.backendCompleted(itt: 1, tag: actions.submitted[0].tag, .completed(.good))
        #expect(done.scsiResponses[0].residual == .underflow(1024))
    }

    /// A WRITE(16) of 0xFFFFFFFF blocks with an Expected Data Transfer Length of 0 asks for 2 TiB: more than the
    /// 32-bit Residual Count holds. Before, the conversion trapped and took ferryd down with every session.
    @Test(arguments: [UInt32.max, 0x0080_0001])
    func overflowBeyondTheResidualCountIsClamped(_ blocks: UInt32) {
        var m = machine()
        var cdb = ByteBuffer(bytes: [0x8a, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        cdb.writeInteger(blocks)
        cdb.writeBytes([0, 0])
        let command = SCSICommand(
            final: true, read: false, write: true, lun: lun1, initiatorTaskTag: 1, expectedDataTransferLength: 0, cmdSN: 1,
            expStatSN: 100, cdb: cdb)
        let asked = Int(blocks) * 512
        let actions = m.commandReceived(command, connection: 0, disposition: .mapped(dataOutLength: asked))
        let done = m.backendCompleted(
            itt: 1, tag: actions.submitted[0].tag, .completed(.checkCondition(.logicalBlockAddressOutOfRange)))
        #expect(done.scsiResponses[0].residual == .overflow(UInt32(clamping: asked)))
    }

    /// A command with only the W bit whose CDB produces Data-In (an INQUIRY the target answers itself, sent with
    /// W=1 and an Expected Data Transfer Length of 0) gets no Data-In: the initiator asked for none. Found by the
    /// SessionCore fuzz target: before, the 36 bytes went out as Data-In beyond the EDTL.
    @Test func dataInForACommandWithoutTheReadBitIsNeverSent() {
        var m = machine()
        let command = SCSICommand(
            final: true, read: false, write: true, lun: lun1, initiatorTaskTag: 1, expectedDataTransferLength: 0,
            cmdSN: 1, expStatSN: 100, cdb: ByteBuffer(bytes: [0x12, 0, 0, 0, 36, 0]))
        let actions = m.commandReceived(command, connection: 0, disposition: .mapped(dataOutLength: 0))
        var inquiry = ByteBuffer()
        inquiry.writeRepeatingByte(0x20, count: 36)
        let done = m.backendCompleted(
            itt: 1, tag: actions.submitted[0].tag, .completed(SCSIResult(status: .good, dataIn: inquiry)))
        #expect(done.dataIns.isEmpty)
        #expect(done.scsiResponses.map(\.data.readableBytes) == [0])
    }
}

/// Every task management function against every state a task can be in.
@Suite struct TaskManagementTests {
    /// The states of a task a function can meet: held for CmdSN order, waiting for Data-Out, in the
    /// device, completed with its response still queued, and responded (gone from the task table).
    enum Held: CaseIterable { case waitingForCmdSN, waitingForDataOut, atBackend, completedNotResponded, responded }

    /// Puts task 1 in the given state; returns its backend tag when it reached the backend.
    private func place(_ state: Held, in m: inout SessionStateMachine) -> BackendTaskTag? {
        switch state {
        case .waitingForCmdSN:
            _ = m.commandReceived(read(itt: 1, cmdSN: 2), connection: 0, disposition: .mapped(dataOutLength: 0))
            return nil
        case .waitingForDataOut:
            _ = m.commandReceived(write(itt: 1, cmdSN: 1, length: 1024), connection: 0, disposition: .mapped(dataOutLength: 1024))
            return nil
        case .atBackend:
            return m.commandReceived(read(itt: 1, cmdSN: 1), connection: 0, disposition: .mapped(dataOutLength: 0)).submitted[0].tag
        case .completedNotResponded:
            let tag = m.commandReceived(read(itt: 1, cmdSN: 1), connection: 0, disposition: .mapped(dataOutLength: 0)).submitted[0].tag
            _ = m.writabilityChanged(0, writable: false)
            let done = m.backendCompleted(itt: 1, tag: tag, good(bytes: 4096))
            #expect(done.sent.isEmpty)
            return nil
        case .responded:
            let tag = m.commandReceived(read(itt: 1, cmdSN: 1), connection: 0, disposition: .mapped(dataOutLength: 0)).submitted[0].tag
            #expect(!m.backendCompleted(itt: 1, tag: tag, good(bytes: 4096)).forTask(1).isEmpty)
            return nil
        }
    }

    @Test(arguments: Held.allCases)
    func abortTaskNeverLetsTheTaskAnswerAndRespondsAfterTheBackend(_ state: Held) {
        var m = machine()
        let tag = place(state, in: &m)
        var actions = m.taskManagementReceived(tmf(.abortTask, itt: 50, ref: 1, cmdSN: 3, refCmdSN: 1), connection: 0)
        if state == .atBackend {
            #expect(actions.terminated == [tag!])
            #expect(actions.tmfResponses.isEmpty, "the response waits for the backend")
            actions = m.backendCompleted(itt: 1, tag: tag!, good(bytes: 4096))
        }
        if state == .completedNotResponded { actions += m.writabilityChanged(0, writable: true) }
        // > RFC 7143 §11.6.1: a task whose response went out does not exist any more.
        #expect(actions.tmfResponses.map(\.response) == [state == .responded ? .taskDoesNotExist : .functionComplete])
        #expect(actions.forTask(1).isEmpty, "no Data-In, R2T or response for an aborted task")
        #expect(m.tasks[1] == nil)
        if state == .waitingForCmdSN {
            // The held command's CmdSN is still consumed when the window reaches it.
            _ = m.commandReceived(read(itt: 3, cmdSN: 1), connection: 0, disposition: .mapped(dataOutLength: 0))
            #expect(m.sequenceNumbers.expCmdSN == 3)
        }
    }

    @Test func abortTaskForAnUnknownTaskOutsideTheWindow() {
        var m = machine()
        let actions = m.taskManagementReceived(tmf(.abortTask, itt: 50, ref: 77, cmdSN: 1, refCmdSN: 500), connection: 0)
        #expect(actions.tmfResponses.map(\.response) == [.taskDoesNotExist])
    }

    @Test func abortTaskForAResponseAlreadySent() {
        var m = machine()
        let tag = m.commandReceived(read(itt: 1, cmdSN: 1), connection: 0, disposition: .mapped(dataOutLength: 0)).submitted[0].tag
        _ = m.backendCompleted(itt: 1, tag: tag, good(bytes: 512))
        let actions = m.taskManagementReceived(tmf(.abortTask, itt: 50, ref: 1, cmdSN: 2, refCmdSN: 1), connection: 0)
        #expect(actions.tmfResponses.map(\.response) == [.taskDoesNotExist])
    }

    @Test(arguments: [
        TaskManagementFunctionRequest.Function.abortTaskSet, .clearTaskSet, .logicalUnitReset, .targetWarmReset,
        .targetColdReset, .itNexusReset,
    ], Held.allCases)
    func taskSetFunctionsWaitForTheBackend(_ function: TaskManagementFunctionRequest.Function, _ state: Held) {
        var m = machine()
        let tag = place(state, in: &m)
        var actions = m.taskManagementReceived(tmf(function, itt: 50, cmdSN: 3), connection: 0)
        let crossesSessions = function != .abortTaskSet && function != .itNexusReset
        let resetsDevices = function == .logicalUnitReset || function == .targetWarmReset || function == .targetColdReset
        if crossesSessions {
            #expect(actions.contains { if case .terminateInOtherSessions = $0 { true } else { false } })
            #expect(actions.resetDevices.isEmpty, "the device reset waits until every session has marked its tasks")
            actions += m.otherSessionsMarked(functionTag: 50)
            #expect(actions.tmfResponses.isEmpty)
            actions += m.otherSessionsTerminated(functionTag: 50)
        }
        if resetsDevices {
            #expect(actions.resetDevices == [function == .logicalUnitReset ? .logicalUnit(lun1) : .target])
            #expect(actions.tmfResponses.isEmpty, "the response waits for the device reset")
            actions += m.devicesReset(functionTag: 50)
        } else {
            #expect(actions.resetDevices.isEmpty)
        }
        if state == .atBackend {
            #expect(actions.terminated == [tag!])
            #expect(actions.tmfResponses.isEmpty)
            actions += m.backendCompleted(itt: 1, tag: tag!, good(bytes: 4096))
        }
        if state == .completedNotResponded { actions += m.writabilityChanged(0, writable: true) }
        #expect(actions.tmfResponses.map(\.response) == [.functionComplete])
        #expect(actions.forTask(1).isEmpty)
        let applies = actions.contains { if case .applyToLogicalUnits = $0 { true } else { false } }
        #expect(applies == (function == .logicalUnitReset || function == .targetWarmReset || function == .targetColdReset || function == .itNexusReset))
        let closes = actions.contains { if case .closeSession = $0 { true } else { false } }
        #expect(closes == (function == .targetColdReset || function == .itNexusReset))
    }

    @Test(arguments: Held.allCases)
    func queryTaskReportsAHeldTask(_ state: Held) {
        var m = machine()
        _ = place(state, in: &m)
        var actions = m.taskManagementReceived(tmf(.queryTask, itt: 50, ref: 1, cmdSN: 3), connection: 0)
        actions += m.taskManagementReceived(tmf(.queryTaskSet, itt: 51, cmdSN: 3), connection: 0)
        // A response waiting for the transmit path keeps its place ahead of the functions' responses.
        if state == .completedNotResponded { actions += m.writabilityChanged(0, writable: true) }
        let held: TaskManagementFunctionResponse.Response = state == .responded ? .functionComplete : .functionSucceeded
        #expect(actions.tmfResponses.map(\.response) == [held, held])
    }

    @Test(arguments: [
        TaskManagementFunctionRequest.Function.clearACA, .taskReassign, .queryAsynchronousEvent,
    ], Held.allCases)
    func functionsThatTouchNoTaskLeaveItAlone(_ function: TaskManagementFunctionRequest.Function, _ state: Held) {
        var m = machine()
        let tag = place(state, in: &m)
        var actions = m.taskManagementReceived(tmf(function, itt: 50, ref: 1, cmdSN: 3), connection: 0)
        if function == .queryAsynchronousEvent { actions += m.asynchronousEventQueried(functionTag: 50, pending: nil) }
        #expect(actions.terminated.isEmpty)
        #expect(actions.resetDevices.isEmpty)
        if state == .atBackend { actions += m.backendCompleted(itt: 1, tag: tag!, good(bytes: 4096)) }
        if state == .completedNotResponded { actions += m.writabilityChanged(0, writable: true) }
        #expect(actions.tmfResponses.count == 1)
        let answered = state == .atBackend || state == .completedNotResponded
        #expect(actions.forTask(1).isEmpty == !answered)
        #expect((m.tasks[1] != nil) == (state == .waitingForCmdSN || state == .waitingForDataOut))
    }

    @Test func logicalUnitResetWaitsForTheDeviceResetAfterEveryTaskLeft() {
        var m = machine()
        let tag = m.commandReceived(read(itt: 1, cmdSN: 1), connection: 0, disposition: .mapped(dataOutLength: 0)).submitted[0].tag
        var actions = m.taskManagementReceived(tmf(.logicalUnitReset, itt: 50, cmdSN: 2), connection: 0)
        actions += m.otherSessionsMarked(functionTag: 50)
        #expect(actions.terminated == [tag])
        #expect(actions.resetDevices == [.logicalUnit(lun1)])
        actions = m.devicesReset(functionTag: 50)
        actions += m.otherSessionsTerminated(functionTag: 50)
        #expect(actions.tmfResponses.isEmpty, "the device still holds the aborted task")
        actions = m.backendCompleted(itt: 1, tag: tag, .terminated)
        #expect(actions.tmfResponses.map(\.response) == [.functionComplete])
        #expect(actions.forTask(1).isEmpty)
    }

    @Test func aCommandBeyondTheDataBufferBudgetEndsWithTaskSetFull() throws {
        var budget = TestBudget(capacity: 8192)
        var m = SessionStateMachine(nexus: nexus, parameters: SessionParameters(), expCmdSN: 1, sessionSerial: 7)
        m.connectionAdded(0, statSN: 100)
        let first = m.commandReceived(read(itt: 1, cmdSN: 1, length: 4096), budget: &budget)
        #expect(budget.inUse == 4096)
        let refused = m.commandReceived(read(itt: 2, cmdSN: 2, length: 8192), budget: &budget)
        #expect(refused.submitted.isEmpty, "no room: the command never reaches the backend")
        #expect(refused.scsiResponses.map(\.status) == [SCSIStatus.taskSetFull.rawValue])
        #expect(m.sequenceNumbers.expCmdSN == 3, "its CmdSN is consumed")
        budget.carryOut(m.backendCompleted(itt: 1, tag: try #require(first.submitted.first).tag, good(bytes: 4096)))
        #expect(budget.inUse == 0, "a task gives its bytes back when its response goes out")
        let aborted = m.commandReceived(read(itt: 3, cmdSN: 3, length: 8192), budget: &budget)
        #expect(aborted.submitted.count == 1 && budget.inUse == 8192)
        budget.carryOut(m.taskManagementReceived(tmf(.abortTask, itt: 50, ref: 3, cmdSN: 4, refCmdSN: 3), connection: 0))
        budget.carryOut(m.backendCompleted(itt: 3, tag: try #require(aborted.submitted.first).tag, .terminated))
        #expect(budget.inUse == 0, "and when it is aborted")
        m.commandReceived(read(itt: 4, cmdSN: 4, length: 2048), budget: &budget)
        #expect(budget.inUse == 2048)
        budget.carryOut(m.releaseDataBuffers())
        #expect(budget.inUse == 0, "a session that ends gives back what its tasks held")
    }

    /// A command that waits for its CmdSN turn holds its reservation; when its connection goes, its CmdSN is
    /// consumed and the bytes go back; a command the session refuses gives its reservation back at once.
    @Test func reservationsOfCommandsThatNeverRunGoBack() {
        var budget = TestBudget(capacity: 1 << 20)
        var m = SessionStateMachine(nexus: nexus, parameters: SessionParameters(), expCmdSN: 1, sessionSerial: 7)
        m.connectionAdded(0, statSN: 100)
        m.commandReceived(read(itt: 2, cmdSN: 2, length: 4096), budget: &budget)
        #expect(budget.inUse == 4096, "held while it waits for CmdSN 1")
        m.commandReceived(read(itt: 3, cmdSN: 2, length: 4096), budget: &budget)
        #expect(budget.inUse == 4096, "a duplicate CmdSN is ignored, and its reservation goes back")
        m.commandReceived(read(itt: 4, cmdSN: 500, length: 4096), budget: &budget)
        #expect(budget.inUse == 4096, "so does a command outside the window")
        m.commandReceived(read(itt: 2, cmdSN: 3, length: 4096), budget: &budget)
        #expect(budget.inUse == 4096, "and one whose Initiator Task Tag is in use")
        budget.carryOut(m.connectionRemoved(0))
        #expect(budget.inUse == 0)
        #expect(m.tasks.isEmpty)
    }

    @Test func aPingIsANOPInThatAsksForAnswerWithoutAdvancingStatSN() {
        var m = machine()
        let ping = m.pingRequested(connection: 0).sent
        guard case .nopIn(let nop)? = ping.first else {
            Issue.record("no NOP-In: \(ping)")
            return
        }
        #expect(nop.initiatorTaskTag == 0xffff_ffff && nop.targetTransferTag != 0xffff_ffff)
        #expect(nop.sequence.statSN == 100, "StatSN is not advanced")
        let answer = NOPOut(
            immediate: true, lun: 0, initiatorTaskTag: 0xffff_ffff, targetTransferTag: nop.targetTransferTag, cmdSN: 1,
            expStatSN: 100)
        #expect(m.nopOutReceived(answer, connection: 0).sent.isEmpty, "the answer needs no answer")
        #expect(m.sequenceNumbers.expCmdSN == 1)
    }

    /// > RFC 7143 §11.18, Ping Data: Ping data is reflected in the NOP-In Response. The length of the reflected data is
    /// > limited to MaxRecvDataSegmentLength.
    /// Found by the SessionCore fuzz target: 9727 bytes of ping data went back whole to an initiator that takes 8192.
    @Test func pingDataIsReflectedNoLongerThanTheInitiatorTakes() {
        var m = machine { $0.initiatorMaxRecvDataSegmentLength = 8192 }
        let echo = NOPOut(
            immediate: false, initiatorTaskTag: 9, cmdSN: 1, expStatSN: 100,
            pingData: ByteBuffer(repeating: 0x5a, count: 9727))
        let sent = m.nopOutReceived(echo, connection: 0).sent
        guard case .nopIn(let nop)? = sent.first else {
            Issue.record("no NOP-In: \(sent)")
            return
        }
        #expect(nop.pingData == ByteBuffer(repeating: 0x5a, count: 8192))
    }

    @Test func queryTaskForAMissingTask() {
        var m = machine()
        let actions = m.taskManagementReceived(tmf(.queryTask, itt: 50, ref: 1, cmdSN: 1), connection: 0)
        #expect(actions.tmfResponses.map(\.response) == [.functionComplete])
    }

    @Test func queryAsynchronousEventAsksTheLogicalUnit() {
        var m = machine()
        let actions = m.taskManagementReceived(tmf(.queryAsynchronousEvent, itt: 50, cmdSN: 1), connection: 0)
        #expect(actions.contains { if case .queryUnitAttention = $0 { true } else { false } })
        let answer = m.asynchronousEventQueried(functionTag: 50, pending: (.unitAttention, .busDeviceResetFunctionOccurred))
        #expect(answer.tmfResponses.map(\.response) == [.functionSucceeded])
        #expect(answer.tmfResponses.first?.additionalResponseInformation == 0x06_2903)
    }

    @Test func clearACAAndTaskReassignAreAnsweredHonestly() {
        var m = machine()
        #expect(m.taskManagementReceived(tmf(.clearACA, itt: 50, cmdSN: 1), connection: 0).tmfResponses.map(\.response) == [.functionNotSupported])
        #expect(
            m.taskManagementReceived(tmf(.taskReassign, itt: 51, ref: 1, cmdSN: 1), connection: 0).tmfResponses.map(\.response)
                == [.taskAllegianceReassignmentNotSupported])
    }

    @Test func taskAbortedByAnotherNexusWithTASGetsTaskAbortedStatus() {
        var m = machine()
        let tag = place(.atBackend, in: &m)!
        let function = ForeignFunction(session: 9, functionTag: 50)
        let actions = m.terminateForForeignFunction(function, scope: .logicalUnit(lun1), tas: .taskAbortedStatus)
        #expect(actions.reports == [ForeignFunctionReport.marked], "marked now, terminated once the backend gives the task back")
        #expect(actions.terminated == [tag])
        let done = m.backendCompleted(itt: 1, tag: tag, good(bytes: 4096))
        #expect(done.reports == [.terminated(affected: true)])
        #expect(done.scsiResponses.map(\.status) == [SCSIStatus.taskAborted.rawValue])
        #expect(done.dataIns.isEmpty)
    }

    @Test func responseFenceOrdersTheFunctionAfterEarlierResponses() {
        var m = machine()
        let t1 = m.commandReceived(read(itt: 1, cmdSN: 1), connection: 0, disposition: .mapped(dataOutLength: 0)).submitted[0].tag
        let t2 = m.commandReceived(read(itt: 2, cmdSN: 2), connection: 0, disposition: .mapped(dataOutLength: 0)).submitted[0].tag
        _ = m.writabilityChanged(0, writable: false)
        _ = m.backendCompleted(itt: 2, tag: t2, good(bytes: 512))
        _ = m.taskManagementReceived(tmf(.abortTask, itt: 50, ref: 1, cmdSN: 3, refCmdSN: 1), connection: 0)
        _ = m.backendCompleted(itt: 1, tag: t1, good(bytes: 512))
        let flushed = m.writabilityChanged(0, writable: true)
        // Task 2's response was queued before the function's; StatSN follows that order.
        #expect(flushed.sent.count == 2)
        if case .scsiDataIn(let d) = flushed.sent[0] { #expect(d.initiatorTaskTag == 2 && d.sequence.statSN == 100) } else { Issue.record("expected Data-In first") }
        #expect(flushed.tmfResponses.first?.sequence.statSN == 101)
    }
}

/// What an initiator that does not play by the rules can make a session hold or answer (issue 10).
@Suite struct HostileInitiatorTests {
    /// Immediate commands do not consume CmdSN, so the window does not bound them. Before, one session held every
    /// one of 5000 immediate READs that its slow backend had not finished, with a window of 128.
    @Test func immediateCommandsBeyondTheTaskLimitEndWithTaskSetFull() {
        var m = machine()  // a window of 16
        var submitted = 0
        var taskSetFull = 0
        for itt in UInt32(1)...1000 {
            let actions = m.commandReceived(
                read(itt: itt, cmdSN: 1, immediate: true), connection: 0, disposition: .mapped(dataOutLength: 0))
            submitted += actions.submitted.count
            taskSetFull += actions.scsiResponses.filter { $0.status == SCSIStatus.taskSetFull.rawValue }.count
        }
        #expect(submitted <= 2 * 16, "the session holds about a window of tasks, not every command")
        #expect(m.tasks.count == submitted)
        #expect(submitted + taskSetFull == 1000, "every other command ends at once with TASK SET FULL")
        #expect(m.sequenceNumbers.expCmdSN == 1)
    }

    /// Non-immediate commands one at a time: the window never closes below one command, so they too could pile up
    /// at a backend that does not finish them.
    @Test func inOrderCommandsBeyondTheTaskLimitEndWithTaskSetFull() {
        var m = machine()
        var submitted = 0
        for itt in UInt32(1)...200 {
            submitted += m.commandReceived(
                read(itt: itt, cmdSN: itt), connection: 0, disposition: .mapped(dataOutLength: 0)
            ).submitted.count
        }
        #expect(submitted <= 2 * 16)
        #expect(m.sequenceNumbers.expCmdSN == 201, "a command answered TASK SET FULL consumes its CmdSN")
    }

    @Test func aFullSessionTakesCommandsAgainOnceATaskEnds() {
        var m = machine()
        var tags: [BackendTaskTag] = []
        var itt: UInt32 = 1
        while true {
            let actions = m.commandReceived(
                read(itt: itt, cmdSN: 1, immediate: true), connection: 0, disposition: .mapped(dataOutLength: 0))
            itt += 1
            guard let submitted = actions.submitted.first else { break }
            tags.append(submitted.tag)
            if tags.count > 1000 { break }
        }
        _ = m.backendCompleted(itt: 1, tag: tags[0], good(bytes: 4096))
        let again = m.commandReceived(
            read(itt: itt, cmdSN: 1, immediate: true), connection: 0, disposition: .mapped(dataOutLength: 0))
        #expect(again.submitted.count == 1)
    }

    /// The backend returns every block a READ asks for; what goes beyond the Expected Data Transfer Length must not
    /// stay alive with the task. Before, forty READ(10) of 16384 blocks with EDTL 0 held 320 MiB while their
    /// responses waited for a socket that was not read.
    @Test(arguments: [(edtl: UInt32(0), status: SCSIStatus.good), (512, .good), (1 << 20, .checkCondition)])
    func theBackendBufferIsNotKeptBeyondWhatIsSent(edtl: UInt32, status: SCSIStatus) {
        var m = machine()
        let tag = m.commandReceived(read(itt: 1, cmdSN: 1, length: edtl), connection: 0, disposition: .mapped(dataOutLength: 0))
            .submitted[0].tag
        _ = m.writabilityChanged(0, writable: false)
        var backendBuffer = ByteBuffer(repeating: 0x5a, count: 1 << 20)
        let storage = backendBuffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        let sense: SenseData? = status == .good ? nil : .logicalBlockAddressOutOfRange
        _ = m.backendCompleted(itt: 1, tag: tag, .completed(SCSIResult(status: status, sense: sense, dataIn: backendBuffer)))
        // Written in place only when nothing else holds the storage; otherwise copied on write.
        backendBuffer.setInteger(UInt8(1), at: 0)
        #expect(backendBuffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } == storage)
        let sent = m.writabilityChanged(0, writable: true)
        let sentBytes = sent.dataIns.map(\.data.readableBytes).reduce(0, +)
        #expect(sentBytes == (status == .good ? Int(edtl) : 0), "Data-In never goes beyond EDTL")
        if status == .good {
            let residual = sent.dataIns.last?.residual ?? sent.scsiResponses.first?.residual
            #expect(residual == .overflow(UInt32((1 << 20) - Int(edtl))))
        }
    }

    /// The emulated device reads only the blocks that cover the EDTL and says how much the CDB asked for: the
    /// overflow residual still counts from what the CDB asked for (RFC 7143 §11.4.5.2), with or without the R bit.
    @Test(arguments: [(edtl: UInt32(0), held: 0, read: true), (4096, 4096, true), (1000, 1024, true), (0, 0, false)])
    func theResidualCountsWhatTheCDBAskedForNotWhatTheDeviceRead(edtl: UInt32, held: Int, read readBit: Bool) {
        var m = machine()
        var command = read(itt: 1, cmdSN: 1, length: edtl)
        command.read = readBit
        let tag = m.commandReceived(command, connection: 0, disposition: .mapped(dataOutLength: 0)).submitted[0].tag
        var result = SCSIResult(status: .good, dataIn: ByteBuffer(repeating: 0x5a, count: held))
        result.requestedDataInLength = 8 << 20
        let done = m.backendCompleted(itt: 1, tag: tag, .completed(result))
        #expect(done.dataIns.map(\.data.readableBytes).reduce(0, +) == (readBit ? Int(edtl) : 0))
        let residual = done.dataIns.last?.residual ?? done.scsiResponses.first?.residual
        #expect(residual == .overflow(UInt32(readBit ? (8 << 20) - Int(edtl) : 8 << 20)))
    }

    /// A completion waiting for the session's loop holds no more than the command's Expected Data Transfer Length
    /// (which the task holds of the budget): the rest of the backend's buffer is let go of on the backend's thread,
    /// and the residual still tells what the device produced. Before, READs of 8 MiB with EDTL 0 queued for a busy
    /// loop took ferryd to gigabytes.
    @Test(arguments: [UInt32(0), 512, 1 << 20, 2 << 20])
    func aCompletionWaitingForTheLoopHoldsAtMostTheExpectedLength(edtl: UInt32) {
        var m = machine()
        let request = m.commandReceived(
            read(itt: 1, cmdSN: 1, length: edtl), connection: 0, disposition: .mapped(dataOutLength: 0)
        ).submitted[0]
        var backendBuffer = ByteBuffer(repeating: 0x5a, count: 1 << 20)
        let storage = backendBuffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        let (bounded, produced) = SessionStateMachine.boundedForTransit(
            .completed(SCSIResult(status: .good, dataIn: backendBuffer)),
            expectedDataTransferLength: request.request.expectedDataTransferLength)
        guard case .completed(let result) = bounded else {
            Issue.record("the completion changed kind")
            return
        }
        #expect(result.dataIn.readableBytes == min(Int(edtl), 1 << 20))
        if Int(edtl) < 1 << 20 {
            #expect(produced == 1 << 20)
            // The backend's buffer is no longer shared: written in place, not copied on write.
            backendBuffer.setInteger(UInt8(1), at: 0)
            #expect(backendBuffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } == storage)
        } else {
            #expect(produced == nil)
        }
        let done = m.backendCompleted(itt: 1, tag: request.tag, bounded, produced: produced)
        #expect(done.dataIns.map(\.data.readableBytes).reduce(0, +) == min(Int(edtl), 1 << 20))
        let residual = done.dataIns.last?.residual ?? done.scsiResponses.first?.residual
        switch Int(edtl) {
        case ..<(1 << 20): #expect(residual == .overflow(UInt32((1 << 20) - Int(edtl))))
        case 1 << 20: #expect(residual == Residual.none)
        default: #expect(residual == .underflow(UInt32(Int(edtl) - (1 << 20))))
        }
    }

    /// A task whose response waits for the transmit path holds its Data-In, not its Expected Data Transfer Length.
    @Test func theBudgetCountsTheDataInHeldNotTheExpectedLength() throws {
        var budget = TestBudget(capacity: 4 << 20)
        var m = SessionStateMachine(nexus: nexus, parameters: SessionParameters(), expCmdSN: 1, sessionSerial: 7)
        m.connectionAdded(0, statSN: 100)
        let tag = try #require(m.commandReceived(read(itt: 1, cmdSN: 1, length: 1 << 20), budget: &budget).submitted.first).tag
        #expect(budget.inUse == 1 << 20)
        budget.carryOut(m.writabilityChanged(0, writable: false))
        budget.carryOut(m.backendCompleted(itt: 1, tag: tag, good(bytes: 4096)))
        #expect(budget.inUse == 4096)
        budget.carryOut(m.writabilityChanged(0, writable: true))
        #expect(budget.inUse == 0)
    }

    @Test(arguments: [(immediateData: false, firstBurst: 65_536), (true, 1024)])
    func unsolicitedImmediateDataIsRejectedAndNeverPlaced(immediateData: Bool, firstBurst: Int) {
        var m = machine {
            $0.immediateData = immediateData
            $0.firstBurstLength = firstBurst
        }
        let actions = m.commandReceived(
            write(itt: 1, cmdSN: 1, length: 4096, immediateData: 2048, final: false), connection: 0,
            disposition: .mapped(dataOutLength: 4096))
        #expect(actions.submitted.isEmpty && actions.r2ts.isEmpty)
        let rejects = actions.sent.compactMap { if case .reject(let r) = $0 { r } else { nil } }
        #expect(rejects.map(\.reason) == [.protocolError])
        #expect(rejects.first?.data.getInteger(at: 16, as: UInt32.self) == 1, "the Reject carries the command's header")
        #expect(m.tasks.isEmpty)
        #expect(m.sequenceNumbers.expCmdSN == 1, "a rejected command does not consume its CmdSN")
    }
}

extension HostileInitiatorTests {
    /// ErrorRecoveryLevel 0 retransmits nothing: before, a SNACK got no answer at all.
    @Test func aSNACKIsRejectedWithProtocolError() {
        var m = machine()
        let snack = SNACKRequest(
            type: 1, lun: 0, initiatorTaskTag: reservedTag, targetTransferTag: reservedTag, expStatSN: 100, begRun: 0,
            runLength: 0)
        let rejects = m.snackReceived(header: SessionStateMachine.header(of: .snackRequest(snack)), connection: 0).sent.compactMap { if case .reject(let r) = $0 { r } else { nil } }
        #expect(rejects.map(\.reason) == [.protocolError])
        #expect(rejects.first?.sequence.statSN == 100)
        #expect(rejects.first?.data.getInteger(at: 0, as: UInt8.self).map { $0 & 0x3f } == 0x10)
    }

    /// Before, LOGICAL UNIT RESET of a LUN that is not mapped answered Function Complete (and reset nothing).
    @Test(arguments: [
        TaskManagementFunctionRequest.Function.abortTask, .abortTaskSet, .clearTaskSet, .logicalUnitReset, .queryTask,
        .queryTaskSet, .queryAsynchronousEvent, .clearACA,
    ])
    func aFunctionForALogicalUnitThatDoesNotExist(_ function: TaskManagementFunctionRequest.Function) {
        var m = machine()
        let actions = m.taskManagementReceived(tmf(function, itt: 50, ref: 1, cmdSN: 1), connection: 0, logicalUnitExists: false)
        #expect(actions.tmfResponses.map(\.response) == [.lunDoesNotExist])
        #expect(actions.resetDevices.isEmpty)
        #expect(!actions.contains { if case .terminateInOtherSessions = $0 { true } else { false } })
    }

    @Test(arguments: [TaskManagementFunctionRequest.Function.targetWarmReset, .itNexusReset])
    func functionsOfTheTargetOrNexusIgnoreTheLUN(_ function: TaskManagementFunctionRequest.Function) {
        var m = machine()
        var actions = m.taskManagementReceived(tmf(function, itt: 50, cmdSN: 1), connection: 0, logicalUnitExists: false)
        actions += m.otherSessionsMarked(functionTag: 50) + m.otherSessionsTerminated(functionTag: 50)
        actions += m.devicesReset(functionTag: 50)
        #expect(actions.tmfResponses.map(\.response) == [.functionComplete])
    }

    /// Functions that wait (here for a device reset that does not end) are bounded like tasks.
    @Test func functionsInProgressBeyondTheAllowanceAreRejected() {
        var m = machine()
        var responses: [TaskManagementFunctionResponse.Response] = []
        for itt in UInt32(50)..<(50 + 40) {
            responses += m.taskManagementReceived(tmf(.logicalUnitReset, itt: itt, cmdSN: 1), connection: 0).tmfResponses
                .map(\.response)
        }
        #expect(responses.count == 40 - SessionParameters.immediateAllowance)
        #expect(responses.allSatisfy { $0 == .functionRejected })
    }
}
