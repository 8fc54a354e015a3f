import ISCSIProtocol
import NIOCore
import SCSI
import Testing

@testable import ISCSISession

let nexus = ITNexus(
    initiatorPortName: "iqn.2026-11.test:initiator,i,0x000000000001", targetPortName: "iqn.2026-11.test:target,t,0x1",
    relativeTargetPortIdentifier: 1)

func machine(_ configure: (inout SessionParameters) -> Void = { _ in }) -> SessionStateMachine {
    var parameters = SessionParameters()
    parameters.commandWindow = 16
    configure(&parameters)
    var machine = SessionStateMachine(nexus: nexus, parameters: parameters, expCmdSN: 1, sessionSerial: 7)
    machine.connectionAdded(0, statSN: 100)
    return machine
}

let lun1: UInt64 = 0x0001_0000_0000_0000

func read(itt: UInt32, cmdSN: UInt32, length: UInt32 = 4096, immediate: Bool = false) -> SCSICommand {
    var cdb = ByteBuffer(bytes: [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])
    cdb.writeRepeatingByte(0, count: 6)
    return SCSICommand(
        immediate: immediate, final: true, read: true, write: false, lun: lun1, initiatorTaskTag: itt,
        expectedDataTransferLength: length, cmdSN: cmdSN, expStatSN: 100, cdb: cdb)
}

func write(itt: UInt32, cmdSN: UInt32, length: UInt32, immediateData: Int = 0, final: Bool = true) -> SCSICommand {
    var cdb = ByteBuffer(bytes: [0x2a, 0, 0, 0, 0, 0, 0, 0, UInt8(length / 512), 0])
    cdb.writeRepeatingByte(0, count: 6)
    return SCSICommand(
        final: final, read: false, write: true, lun: lun1, initiatorTaskTag: itt, expectedDataTransferLength: length,
        cmdSN: cmdSN, expStatSN: 100, cdb: cdb, data: ByteBuffer(repeating: 0xab, count: immediateData))
}

func tmf(
    _ function: TaskManagementFunctionRequest.Function, itt: UInt32, ref: UInt32 = reservedTag, cmdSN: UInt32,
    refCmdSN: UInt32 = 0
) -> TaskManagementFunctionRequest {
    TaskManagementFunctionRequest(
        immediate: true, function: function, lun: lun1, initiatorTaskTag: itt, referencedTaskTag: ref, cmdSN: cmdSN,
        expStatSN: 100, refCmdSN: refCmdSN)
}

extension [SessionStateMachine.Action] {
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
extension SessionStateMachine {
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

let otherNexus = ITNexus(
    initiatorPortName: "iqn.2026-11.test:other,i,0x000000000002", targetPortName: "iqn.2026-11.test:target,t,0x1",
    relativeTargetPortIdentifier: 1)

/// The target's data buffer budget as the shell keeps it: reservations as commands arrive, and the bytes the
/// machine gives back.
struct TestBudget {
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

extension SessionStateMachine {
    mutating func commandReceived(_ command: SCSICommand, budget: inout TestBudget) -> [Action] {
        budget.carryOut(
            commandReceived(
                command, header: Self.header(of: .scsiCommand(command)), connection: 0,
                disposition: .mapped(dataOutLength: 0), reservation: budget.reserve(command)))
    }
}

func good(bytes: Int) -> BackendCompletion {
    .completed(SCSIResult(status: .good, dataIn: ByteBuffer(repeating: 0x5a, count: bytes)))
}
