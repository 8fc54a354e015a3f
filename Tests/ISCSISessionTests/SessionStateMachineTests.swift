import ISCSIProtocol
import NIOCore
import SCSI
import Testing

@testable import ISCSISession

@Suite struct CommandOrderingTests {
    @Test func inOrderCommandIsSubmittedAndAnsweredWithPhaseCollapse() throws {
        var m = machine()
        let actions = m.commandReceived(read(itt: 1, cmdSN: 1), connection: 0, disposition: .mapped(dataOutLength: 0))
        #expect(actions.submitted.map(\.itt) == [1])
        #expect(m.sequenceNumbers.expCmdSN == 2)
        let done = m.backendCompleted(itt: 1, tag: try #require(actions.submitted.first).tag, good(bytes: 4096))
        #expect(done.dataIns.count == 1)
        let dataIn = try #require(done.dataIns.first)
        #expect(dataIn.status == SCSIStatus.good.rawValue)
        #expect(dataIn.sequence.statSN == 100)
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

    @Test func readIsSplitByMaxRecvDataSegmentLengthWithResidualOverflow() throws {
        var m = machine { $0.initiatorMaxRecvDataSegmentLength = 1024 }
        let actions = m.commandReceived(read(itt: 1, cmdSN: 1, length: 3000), connection: 0, disposition: .mapped(dataOutLength: 0))
        let done = m.backendCompleted(itt: 1, tag: try #require(actions.submitted.first).tag, good(bytes: 4096))
        #expect(done.dataIns.map { $0.data.readableBytes } == [1024, 1024, 952])
        #expect(done.dataIns.map(\.dataSN) == [0, 1, 2])
        #expect(done.dataIns.last?.residual == .overflow(1096))
    }

    @Test func checkConditionCarriesSenseInAResponse() throws {
        var m = machine()
        let actions = m.commandReceived(read(itt: 1, cmdSN: 1), connection: 0, disposition: .mapped(dataOutLength: 0))
        let done = m.backendCompleted(
            itt: 1, tag: try #require(actions.submitted.first).tag, .completed(.checkCondition(.logicalBlockAddressOutOfRange)))
        #expect(done.dataIns.isEmpty)
        #expect(done.scsiResponses.count == 1)
        let response = try #require(done.scsiResponses.first)
        #expect(response.status == SCSIStatus.checkCondition.rawValue)
        #expect(response.data.getInteger(at: 0, as: UInt16.self) == 18)
    }
}

@Suite struct DataOutTests {
    @Test func immediateDataAloneIsSubmittedWithoutCopy() throws {
        var m = machine()
        let actions = m.commandReceived(
            write(itt: 1, cmdSN: 1, length: 1024, immediateData: 1024), connection: 0,
            disposition: .mapped(dataOutLength: 1024))
        #expect(actions.submitted.count == 1)
        let submitted = try #require(actions.submitted.first)
        #expect(submitted.request.dataOut.readableBytes == 1024)
    }

    @Test func remainingDataIsSolicitedWithR2TsAndGathered() throws {
        var m = machine {
            $0.maxBurstLength = 1024
            $0.maxOutstandingR2T = 1
        }
        var actions = m.commandReceived(
            write(itt: 1, cmdSN: 1, length: 3072, immediateData: 1024), connection: 0,
            disposition: .mapped(dataOutLength: 3072))
        #expect(actions.r2ts.map(\.bufferOffset) == [1024])
        #expect(actions.r2ts.map(\.r2tSN) == [0])
        let first = try #require(actions.r2ts.first)
        actions = m.dataOutReceived(
            SCSIDataOut(final: true, lun: lun1, initiatorTaskTag: 1, targetTransferTag: first.targetTransferTag,
                expStatSN: 100, dataSN: 0, bufferOffset: 1024, data: ByteBuffer(repeating: 1, count: 1024)),
            connection: 0)
        #expect(actions.r2ts.map(\.bufferOffset) == [2048])
        #expect(actions.r2ts.map(\.r2tSN) == [1])
        let second = try #require(actions.r2ts.first)
        actions = m.dataOutReceived(
            SCSIDataOut(final: true, lun: lun1, initiatorTaskTag: 1, targetTransferTag: second.targetTransferTag,
                expStatSN: 100, dataSN: 0, bufferOffset: 2048, data: ByteBuffer(repeating: 2, count: 1024)),
            connection: 0)
        #expect(actions.submitted.count == 1)
        let data = try #require(actions.submitted.first).request.dataOut
        #expect(data.readableBytes == 3072)
        #expect(data.getInteger(at: data.readerIndex + 1024, as: UInt8.self) == 1)
        #expect(data.getInteger(at: data.readerIndex + 2048, as: UInt8.self) == 2)
    }

    @Test func wrongDataSNIsRejected() throws {
        var m = machine()
        var actions = m.commandReceived(
            write(itt: 1, cmdSN: 1, length: 1024), connection: 0, disposition: .mapped(dataOutLength: 1024))
        let r2t = try #require(actions.r2ts.first)
        actions = m.dataOutReceived(
            SCSIDataOut(final: true, lun: lun1, initiatorTaskTag: 1, targetTransferTag: r2t.targetTransferTag,
                expStatSN: 100, dataSN: 5, bufferOffset: 0, data: ByteBuffer(repeating: 1, count: 1024)),
            connection: 0)
        #expect(actions.submitted.isEmpty)
        #expect(actions.sent.contains { if case .reject = $0 { true } else { false } })
    }

    @Test func writeWithShorterCDBReportsUnderflow() throws {
        var m = machine()
        let actions = m.commandReceived(
            write(itt: 1, cmdSN: 1, length: 2048, immediateData: 2048), connection: 0,
            disposition: .mapped(dataOutLength: 1024))
        let submitted = try #require(actions.submitted.first)
        #expect(submitted.request.dataOut.readableBytes == 1024)
        let done = m.backendCompleted(itt: 1, tag: submitted.tag, .completed(.good))
        let response = try #require(done.scsiResponses.first)
        #expect(response.residual == .underflow(1024))
    }

    /// A WRITE(16) of 0xFFFFFFFF blocks with an Expected Data Transfer Length of 0 asks for 2 TiB: more than the
    /// 32-bit Residual Count holds. Before, the conversion trapped and took ferryd down with every session.
    @Test(arguments: [UInt32.max, 0x0080_0001])
    func overflowBeyondTheResidualCountIsClamped(_ blocks: UInt32) throws {
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
            itt: 1, tag: try #require(actions.submitted.first).tag, .completed(.checkCondition(.logicalBlockAddressOutOfRange)))
        let response = try #require(done.scsiResponses.first)
        #expect(response.residual == .overflow(UInt32(clamping: asked)))
    }

    /// A command with only the W bit whose CDB produces Data-In (an INQUIRY the target answers itself, sent with
    /// W=1 and an Expected Data Transfer Length of 0) gets no Data-In: the initiator asked for none. Found by the
    /// SessionCore fuzz target: before, the 36 bytes went out as Data-In beyond the EDTL.
    @Test func dataInForACommandWithoutTheReadBitIsNeverSent() throws {
        var m = machine()
        let command = SCSICommand(
            final: true, read: false, write: true, lun: lun1, initiatorTaskTag: 1, expectedDataTransferLength: 0,
            cmdSN: 1, expStatSN: 100, cdb: ByteBuffer(bytes: [0x12, 0, 0, 0, 36, 0]))
        let actions = m.commandReceived(command, connection: 0, disposition: .mapped(dataOutLength: 0))
        var inquiry = ByteBuffer()
        inquiry.writeRepeatingByte(0x20, count: 36)
        let done = m.backendCompleted(
            itt: 1, tag: try #require(actions.submitted.first).tag, .completed(SCSIResult(status: .good, dataIn: inquiry)))
        #expect(done.dataIns.isEmpty)
        #expect(done.scsiResponses.map(\.data.readableBytes) == [0])
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

    @Test func aFullSessionTakesCommandsAgainOnceATaskEnds() throws {
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
        _ = m.backendCompleted(itt: 1, tag: try #require(tags.first, "the session took no command"), good(bytes: 4096))
        let again = m.commandReceived(
            read(itt: itt, cmdSN: 1, immediate: true), connection: 0, disposition: .mapped(dataOutLength: 0))
        #expect(again.submitted.count == 1)
    }

    /// The backend returns every block a READ asks for; what goes beyond the Expected Data Transfer Length must not
    /// stay alive with the task. Before, forty READ(10) of 16384 blocks with EDTL 0 held 320 MiB while their
    /// responses waited for a socket that was not read.
    @Test(arguments: [(edtl: UInt32(0), status: SCSIStatus.good), (512, .good), (1 << 20, .checkCondition)])
    func theBackendBufferIsNotKeptBeyondWhatIsSent(edtl: UInt32, status: SCSIStatus) throws {
        var m = machine()
        let tag = try #require(
            m.commandReceived(read(itt: 1, cmdSN: 1, length: edtl), connection: 0, disposition: .mapped(dataOutLength: 0))
                .submitted.first
        ).tag
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
    func theResidualCountsWhatTheCDBAskedForNotWhatTheDeviceRead(edtl: UInt32, held: Int, read readBit: Bool) throws {
        var m = machine()
        var command = read(itt: 1, cmdSN: 1, length: edtl)
        command.read = readBit
        let tag = try #require(m.commandReceived(command, connection: 0, disposition: .mapped(dataOutLength: 0)).submitted.first).tag
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
    func aCompletionWaitingForTheLoopHoldsAtMostTheExpectedLength(edtl: UInt32) throws {
        var m = machine()
        let request = try #require(
            m.commandReceived(
                read(itt: 1, cmdSN: 1, length: edtl), connection: 0, disposition: .mapped(dataOutLength: 0)
            ).submitted.first)
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
