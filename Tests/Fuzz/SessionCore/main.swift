import FuzzSupport
import ISCSIProtocol
import ISCSISession
import NIOCore
import SCSI

/// libFuzzer target: ``SessionStateMachine`` fed arbitrary Full Feature Phase PDUs over a fake backend.
///
/// Input: two bytes of settings, then the byte stream from the initiator, framed as a connection frames it (no
/// digests; Login Requests in it are skipped, so that a capture of a whole connection serves as a seed). Settings
/// byte 0: bit 0 ImmediateData, bit 1 InitialR2T, bit 2 lets the connection stop being writable now and then,
/// bit 3 a small shared data buffer budget, bits 4-7 the command window (4 to 64). Byte 1 seeds the fake backend,
/// which completes each command at once or later (with more, less or no Data-In, GOOD or CHECK CONDITION), or
/// holds it until it is terminated; it also answers other sessions, device resets and unit attention queries, and
/// now and then another session's task-set function reaches this one.
/// After the stream, the connection closes and the backend lets go of everything.
///
/// Checked after every event: nothing traps; the session holds no more tasks than its limit; no PDU's data segment
/// exceeds the initiator's MaxRecvDataSegmentLength; Data-In stays within the Expected Data Transfer Length and an
/// R2T within it and MaxBurstLength; no backend task tag is given twice; no command or function is answered more
/// often than it was sent; the budget never gets back more than was taken; another session's function hears once
/// that its tasks are marked and once that they are terminated. At the end every task has ended and the budget is
/// whole again.
func fuzzSessionCore(_ input: UnsafeBufferPointer<UInt8>) {
    guard input.count >= 2 else { return }
    var harness = SessionHarness(flags: input[0], seed: input[1])
    var decoder = PDUFrameDecoder(maxRecvDataSegmentLength: 262_144)
    var buffer = ByteBuffer(bytes: input.dropFirst(2))
    while harness.isOpen {
        let decoded: InboundPDU?
        do throws(ISCSIProtocolError) {
            decoded = try decoder.decode(buffer: &buffer)
        } catch {
            guard !error.isConnectionFatal else { break }
            harness.undecodable(error)
            continue
        }
        guard let decoded else { break }
        harness.received(decoded)
    }
    harness.finish()
}

/// xorshift64*: the fake backend's choices, fixed by the input's seed byte.
private struct Choices {
    var state: UInt64
    init(seed: UInt8) { state = 0x9E37_79B9_7F4A_7C15 ^ UInt64(seed) &* 0x1000_0000_01B3 | 1 }
    mutating func next(_ bound: Int) -> Int {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return Int((state &* 0x2545_F491_4F6C_DD1D) >> 33) % bound
    }
}

private struct SessionHarness {
    static let cid: UInt16 = 1
    static let budgetBytes = 1 << 20

    var machine: SessionStateMachine
    /// Bytes of the shared data buffer budget (nil: unbounded) and how many are taken.
    let budget: Int?
    var budgetInUse = 0
    var choices: Choices
    let togglesWritability: Bool
    /// Whether the stream goes on: false once the session or the connection closes.
    var isOpen = true
    /// The session asked to close the connection; it is removed at the end of the batch.
    var closing = false
    /// Whether the machine still has the connection (until ``SessionStateMachine/connectionRemoved(_:)``).
    var connectionOpen = true
    /// Tasks the fake backend holds, by tag, with the ITT they came with.
    var held: [BackendTaskTag: (itt: UInt32, request: SCSIRequest)] = [:]
    var everSubmitted: Set<BackendTaskTag> = []
    /// Per ITT: requests sent and answers received, and the last command's Expected Data Transfer Length.
    var commandsSent: [UInt32: Int] = [:]
    var commandsAnswered: [UInt32: Int] = [:]
    var functionsSent: [UInt32: Int] = [:]
    var functionsAnswered: [UInt32: Int] = [:]
    var expectedLength: [UInt32: Int] = [:]
    /// Another session's functions that reached this one, and the reports each got.
    var foreignFunctions: UInt32 = 0
    var foreignReports: [ForeignFunction: [ForeignFunctionReport]] = [:]

    init(flags: UInt8, seed: UInt8) {
        var parameters = SessionParameters()
        parameters.immediateData = flags & 1 != 0
        parameters.initialR2T = flags & 2 != 0
        parameters.commandWindow = 4 * (Int(flags >> 4) + 1)
        togglesWritability = flags & 4 != 0
        budget = flags & 8 != 0 ? Self.budgetBytes : nil
        choices = Choices(seed: seed)
        machine = SessionStateMachine(
            nexus: ITNexus(
                initiatorPortName: "iqn.2026-12.dev.ferry:fuzz-initiator,i,0x23d000000001",
                targetPortName: "iqn.2026-12.dev.ferry:fuzz,t,0x0001", relativeTargetPortIdentifier: 1),
            parameters: parameters, expCmdSN: 1, sessionSerial: 1)
        machine.connectionAdded(Self.cid, statSN: 1)
    }

    /// A PDU the decoder skipped. As the connection does: a PDU it can keep framing after is rejected, anything else
    /// ends it.
    mutating func undecodable(_ error: ISCSIProtocolError) {
        guard let reason = error.rejectReason, let header = error.rejectedHeader else {
            closing = true
            isOpen = false
            run([])
            return
        }
        run(machine.protocolErrorReceived(reason, header: header, connection: Self.cid))
        betweenPDUs()
    }

    mutating func received(_ inbound: InboundPDU) {
        let cid = Self.cid
        let header = inbound.basicHeaderSegment
        switch inbound.pdu {
        case .scsiCommand(let command):
            // A command whose ITT is in use is rejected and changes nothing of the task that has it.
            if machine.tasks[command.initiatorTaskTag] == nil {
                commandsSent[command.initiatorTaskTag, default: 0] += 1
                expectedLength[command.initiatorTaskTag] = Int(command.expectedDataTransferLength)
            }
            run(
                machine.commandReceived(
                    command, header: header, connection: cid, disposition: disposition(for: command),
                    reservation: reserve(command)))
        case .scsiDataOut(let dataOut):
            run(machine.dataOutReceived(dataOut, header: header, connection: cid))
        case .taskManagementFunctionRequest(let request):
            functionsSent[request.initiatorTaskTag, default: 0] += 1
            let logicalUnit: FunctionLogicalUnit =
                request.lun == 0 ? .mapped(taskAbortedStatus: choices.next(2) == 0) : .notMapped
            run(
                machine.taskManagementReceived(
                    request, connection: cid, logicalUnit: logicalUnit, received: .uptimeNanoseconds(0)))
        case .textRequest(let request):
            run(machine.textReceived(request, header: header, connection: cid))
        case .logoutRequest(let request):
            run(machine.logoutReceived(request, connection: cid))
        case .nopOut(let nop):
            run(machine.nopOutReceived(nop, connection: cid))
        case .snackRequest:
            run(machine.snackReceived(header: header, connection: cid))
        default:
            break
        }
        betweenPDUs()
    }

    private mutating func betweenPDUs() {
        let cid = Self.cid
        // Between PDUs the backend finishes some of what it holds, and the socket drains or fills.
        for tag in held.keys.sorted(by: { $0.rawValue < $1.rawValue }) where choices.next(3) == 0 {
            complete(tag)
        }
        if togglesWritability && connectionOpen && choices.next(4) == 0 {
            run(machine.writabilityChanged(cid, writable: choices.next(2) == 0))
        }
        if connectionOpen && choices.next(16) == 0 { run(machine.pingRequested(connection: cid)) }
        if choices.next(32) == 0 {
            foreignFunctions += 1
            let function = ForeignFunction(session: 2, functionTag: foreignFunctions)
            foreignReports[function] = []
            let scope: TaskSetScope = choices.next(2) == 0 ? .target : .logicalUnit(0)
            run(machine.terminateForForeignFunction(function, scope: scope, tas: choices.next(2) == 0 ? .silent : .taskAbortedStatus))
        }
        checkBounds()
    }

    /// As the shell does: a command takes its Expected Data Transfer Length from the budget if there is room.
    private mutating func reserve(_ command: SCSICommand) -> DataBufferReservation {
        let bytes = Int(command.expectedDataTransferLength)
        guard let budget else { return .reserved(0) }
        guard budgetInUse <= budget - bytes else { return .unavailable }
        budgetInUse += bytes
        return .reserved(bytes)
    }

    /// Closes the connection, lets the backend finish everything, and checks that nothing is left.
    mutating func finish() {
        if connectionOpen {
            connectionOpen = false
            run(machine.connectionRemoved(Self.cid))
        }
        while let tag = held.keys.min(by: { $0.rawValue < $1.rawValue }) { complete(tag) }
        require(machine.tasks.isEmpty, "\(machine.tasks.count) tasks outlive their connection and backend")
        run(machine.releaseDataBuffers())
        require(budgetInUse == 0, "the data buffer budget leaks \(budgetInUse) bytes")
        for (function, reports) in foreignReports {
            require(
                reports == [.marked, .terminated(affected: true)] || reports == [.marked, .terminated(affected: false)],
                "another session's function \(function.functionTag) heard \(reports)")
        }
    }

    private func disposition(for command: SCSICommand) -> LogicalUnitDisposition {
        guard command.lun == 0 else { return .answeredByTarget }
        let edtl = Int(command.expectedDataTransferLength)
        // What the CDB asks the initiator for: as sent, more, less, or unknown.
        switch command.initiatorTaskTag % 4 {
        case 0: return .mapped(dataOutLength: command.write ? edtl : 0)
        case 1: return .mapped(dataOutLength: command.write ? edtl / 2 : 0)
        case 2: return .mapped(dataOutLength: command.write ? edtl &+ 4096 : edtl % 512)
        default: return .mapped(dataOutLength: nil)
        }
    }

    private mutating func complete(_ tag: BackendTaskTag, terminated: Bool = false) {
        guard let (itt, request) = held.removeValue(forKey: tag) else { return }
        let completion: BackendCompletion
        if terminated {
            completion = .terminated
        } else {
            let edtl = request.expectedDataTransferLength
            let length = [0, edtl, edtl / 2, min(edtl &+ 512, 1 << 20), min(edtl, 1 << 20) &+ 7][choices.next(5)]
            var dataIn = ByteBuffer()
            dataIn.writeRepeatingByte(0xA5, count: min(max(length, 0), 1 << 20))
            let result: SCSIResult
            if choices.next(4) == 0 {
                result = SCSIResult(
                    status: .checkCondition, sense: SenseData(.illegalRequest, .invalidFieldInCDB))
            } else {
                result = SCSIResult(status: .good, dataIn: dataIn)
            }
            completion = .completed(result)
        }
        run(machine.backendCompleted(itt: itt, tag: tag, completion))
    }

    private mutating func run(_ actions: [SessionStateMachine.Action]) {
        var work = actions[...]
        while true {
            while let action = work.popFirst() {
                work.append(contentsOf: perform(action))
            }
            // A connection the session closed goes away once the shell has carried out the whole batch (its
            // channel becomes inactive later): what the batch still sends to it is written to a closing channel.
            guard closing && connectionOpen else { break }
            connectionOpen = false
            work = machine.connectionRemoved(Self.cid)[...]
        }
        checkBounds()
    }

    private mutating func perform(_ action: SessionStateMachine.Action) -> [SessionStateMachine.Action] {
        switch action {
        case .send(let pdu, let cid):
            require(cid == Self.cid && connectionOpen, "\(pdu) for connection \(cid), which is gone")
            check(pdu)
            return []
        case .submit(let request, let itt, let tag), .answerByTarget(let request, let itt, let tag):
            require(everSubmitted.insert(tag).inserted, "backend task tag \(tag) given twice")
            require(request.dataOut.readableBytes <= request.expectedDataTransferLength, "Data-Out beyond EDTL")
            held[tag] = (itt, request)
            if choices.next(2) == 0 { complete(tag) }
            return []
        case .terminate(_, let tag):
            if choices.next(2) == 0 { complete(tag, terminated: true) }
            return []
        case .terminateInOtherSessions(_, let functionTag, _):
            // One other session (serial 2), which marks its tasks and, now or later, terminates them.
            let other = ITNexus(
                initiatorPortName: "iqn.2026-12.dev.ferry:other,i,0x23d000000002",
                targetPortName: "iqn.2026-12.dev.ferry:fuzz,t,0x0001", relativeTargetPortIdentifier: 1)
            return machine.otherSessionsNamed([2], functionTag: functionTag)
                + machine.foreignFunctionReported(functionTag: functionTag, by: 2, .marked, nexus: other)
                + machine.foreignFunctionReported(
                    functionTag: functionTag, by: 2, .terminated(affected: choices.next(2) == 0), nexus: other)
        case .resetDevices(_, let functionTag):
            return machine.devicesReset(functionTag: functionTag)
        case .reportToForeignFunction(let function, let report):
            require(foreignReports[function] != nil, "a report for a function that never reached the session")
            foreignReports[function]?.append(report)
            return []
        case .releaseDataBuffer(let bytes):
            budgetInUse -= bytes
            require(bytes > 0 && budgetInUse >= 0, "the budget got back \(bytes) bytes, more than was taken")
            return []
        case .applyToLogicalUnits, .functionAnswered:
            return []
        case .handleText(let request, _, let cid):
            let response = TextResponse(
                final: true, initiatorTaskTag: request.initiatorTaskTag, targetTransferTag: reservedTag,
                sequence: StatusSequence(statSN: 0, expCmdSN: 0, maxCmdSN: 0), data: ByteBuffer())
            return machine.queueTextResponse(response, connection: cid)
        case .queryUnitAttention(_, let functionTag):
            let pending = choices.next(2) == 0 ? nil : (SenseKey.unitAttention, AdditionalSenseCode.powerOnResetOrBusDeviceResetOccurred)
            return machine.asynchronousEventQueried(functionTag: functionTag, pending: pending)
        case .closeConnection, .closeSession:
            closing = true
            isOpen = false
            return []
        }
    }

    private mutating func check(_ pdu: PDU) {
        let limit = machine.parameters.initiatorMaxRecvDataSegmentLength
        switch pdu {
        case .scsiDataIn(let dataIn):
            require(dataIn.data.readableBytes <= limit, "Data-In beyond MaxRecvDataSegmentLength")
            let end = Int(dataIn.bufferOffset) + dataIn.data.readableBytes
            require(
                end <= expectedLength[dataIn.initiatorTaskTag] ?? 0,
                "Data-In to \(end) beyond EDTL \(expectedLength[dataIn.initiatorTaskTag] ?? 0) for ITT \(dataIn.initiatorTaskTag)")
            if dataIn.status != nil { answered(dataIn.initiatorTaskTag) }
        case .scsiResponse(let response):
            require(response.data.readableBytes <= limit, "sense beyond MaxRecvDataSegmentLength")
            answered(response.initiatorTaskTag)
        case .readyToTransfer(let r2t):
            let end = Int(r2t.bufferOffset) + Int(r2t.desiredDataTransferLength)
            require(r2t.desiredDataTransferLength > 0, "an R2T for nothing")
            require(end <= expectedLength[r2t.initiatorTaskTag] ?? 0, "R2T beyond EDTL")
            require(Int(r2t.desiredDataTransferLength) <= machine.parameters.maxBurstLength, "R2T beyond MaxBurstLength")
        case .taskManagementFunctionResponse(let response):
            functionsAnswered[response.initiatorTaskTag, default: 0] += 1
            require(
                functionsAnswered[response.initiatorTaskTag]! <= functionsSent[response.initiatorTaskTag] ?? 0,
                "a task management function answered more often than it was sent")
        case .textResponse(let response):
            require(response.data.readableBytes <= limit, "Text Response beyond MaxRecvDataSegmentLength")
        case .nopIn(let nop):
            require(nop.pingData.readableBytes <= limit, "NOP-In beyond MaxRecvDataSegmentLength")
        case .reject(let reject):
            require(reject.data.readableBytes == 48, "a Reject carries the rejected PDU's Basic Header Segment")
        default:
            break
        }
    }

    private mutating func answered(_ itt: UInt32) {
        commandsAnswered[itt, default: 0] += 1
        require(commandsAnswered[itt]! <= commandsSent[itt] ?? 0, "command \(itt) answered twice")
    }

    private func checkBounds() {
        require(machine.tasks.count <= machine.parameters.taskLimit, "tasks beyond the session's limit")
    }
}

// Last, after every global of this file has its value: top-level code runs in order.
runFuzzer(fuzzSessionCore)
