import DequeModule
public import ISCSIProtocol
public import NIOCore
public import SCSI

/// The transmit queue of one connection: what the session has to say on it, in order, and the connection's
/// StatSN (RFC 7143 §4.2.2.2: StatSN is per connection). Each PDU takes its StatSN, ExpCmdSN and MaxCmdSN as it
/// is built, when its turn to leave comes; nothing is built ahead and stamped later.
///
/// Entries for a task name the task only: the task is looked up when its entry leaves, so that an abort in
/// between suppresses its R2T or response.
public struct TransmitQueue {
    /// A PDU that is not about a task's data, built when it leaves.
    public enum Message {
        /// A NOP-In answering a NOP-Out (advances StatSN).
        case nopInAnswer(lun: UInt64, initiatorTaskTag: UInt32, pingData: ByteBuffer)
        /// A NOP-In asking the initiator for a NOP-Out: StatSN is not advanced (RFC 7143 §11.19).
        case ping(targetTransferTag: UInt32)
        case taskManagementResponse(
            TaskManagementFunctionResponse.Response, initiatorTaskTag: UInt32, additionalResponseInformation: UInt32)
        case textResponse(TextResponse)
        case logoutResponse(LogoutResponse.Response, initiatorTaskTag: UInt32)
        /// RFC 7143 §11.17: the data segment is the complete header of the rejected PDU.
        case reject(Reject.Reason, header: ByteBuffer)
        case asynchronousMessage(AsynchronousMessage.Event, parameter3: UInt16)
        /// A SCSI Response for a command that never became a task (TASK SET FULL).
        case status(SCSIStatus, initiatorTaskTag: UInt32)
    }

    public enum Entry {
        /// The response of a completed task: Data-In and status.
        case taskResponse(UInt32)
        /// An R2T of a task, by its Target Transfer Tag.
        case readyToTransfer(itt: UInt32, targetTransferTag: UInt32)
        case message(Message)
    }

    public private(set) var statSN: UInt32
    /// The connection takes writes; while it does not, entries wait here.
    public var writable = true
    private var entries = Deque<Entry>()

    init(statSN: UInt32) {
        self.statSN = statSN
    }

    mutating func append(_ entry: Entry) {
        entries.append(entry)
    }

    /// The next entry to build, if the connection takes writes.
    mutating func next() -> Entry? {
        writable ? entries.popFirst() : nil
    }

    private mutating func takeStatSN() -> UInt32 {
        defer { statSN &+= 1 }
        return statSN
    }

    // MARK: Building

    /// Builds a message; a status-carrying PDU takes the next StatSN.
    mutating func build(_ message: Message, window: CommandWindow) -> PDU {
        switch message {
        case .nopInAnswer(let lun, let itt, let pingData):
            return .nopIn(
                NOPIn(lun: lun, initiatorTaskTag: itt, targetTransferTag: reservedTag, sequence: sequence(window),
                    pingData: pingData))
        case .ping(let ttt):
            return .nopIn(
                NOPIn(
                    initiatorTaskTag: reservedTag, targetTransferTag: ttt,
                    sequence: StatusSequence(statSN: statSN, expCmdSN: window.expCmdSN, maxCmdSN: window.maxCmdSN)))
        case .taskManagementResponse(let response, let itt, let info):
            return .taskManagementFunctionResponse(
                TaskManagementFunctionResponse(
                    response: response, initiatorTaskTag: itt, sequence: sequence(window),
                    additionalResponseInformation: info))
        case .textResponse(let response):
            return .textResponse(
                TextResponse(
                    final: response.final, continue: response.continue, lun: response.lun,
                    initiatorTaskTag: response.initiatorTaskTag, targetTransferTag: response.targetTransferTag,
                    sequence: sequence(window), data: response.data))
        case .logoutResponse(let response, let itt):
            return .logoutResponse(LogoutResponse(response: response, initiatorTaskTag: itt, sequence: sequence(window)))
        case .reject(let reason, let header):
            return .reject(Reject(reason: reason, sequence: sequence(window), data: header))
        case .asynchronousMessage(let event, let parameter3):
            return .asynchronousMessage(AsynchronousMessage(sequence: sequence(window), event: event, parameter3: parameter3))
        case .status(let status, let itt):
            return .scsiResponse(SCSIResponse(status: status.rawValue, initiatorTaskTag: itt, sequence: sequence(window)))
        }
    }

    /// StatSN, ExpCmdSN and MaxCmdSN for a PDU that advances StatSN.
    private mutating func sequence(_ window: CommandWindow) -> StatusSequence {
        StatusSequence(statSN: takeStatSN(), expCmdSN: window.expCmdSN, maxCmdSN: window.maxCmdSN)
    }

    /// The R2T of a task (RFC 7143 §11.8): it carries StatSN without advancing it.
    func readyToTransfer(
        _ r2t: OutstandingR2T, r2tSN: UInt32, lun: UInt64, initiatorTaskTag: UInt32, window: CommandWindow
    ) -> PDU {
        .readyToTransfer(
            ReadyToTransfer(
                lun: lun, initiatorTaskTag: initiatorTaskTag, targetTransferTag: r2t.targetTransferTag,
                sequence: StatusSequence(statSN: statSN, expCmdSN: window.expCmdSN, maxCmdSN: window.maxCmdSN),
                r2tSN: r2tSN, bufferOffset: UInt32(r2t.offset), desiredDataTransferLength: UInt32(r2t.length)))
    }

    /// A task's response (RFC 7143 §11.7, §11.4): Data-In PDUs split by the initiator's MaxRecvDataSegmentLength
    /// into sequences of at most MaxBurstLength, with the status in the last one when there is no sense data
    /// (phase collapse), else the Data-In followed by a SCSI Response. Each PDU goes to `emit`.
    mutating func taskResponse(
        _ outcome: TaskStateMachine.Outcome, lun: UInt64, initiatorTaskTag itt: UInt32, window: CommandWindow,
        parameters: SessionParameters, emit: (PDU) -> Void
    ) {
        let dataIn = outcome.dataIn
        let total = dataIn.readableBytes
        let collapse = total > 0 && outcome.sense.isEmpty
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
            emit(
                .scsiDataIn(
                    SCSIDataIn(
                        final: endOfSequence, status: withStatus ? outcome.status.rawValue : nil, lun: lun,
                        initiatorTaskTag: itt, targetTransferTag: reservedTag,
                        sequence: withStatus
                            ? sequence(window) : StatusSequence(statSN: 0, expCmdSN: window.expCmdSN, maxCmdSN: window.maxCmdSN),
                        dataSN: dataSN, bufferOffset: UInt32(offset), residual: withStatus ? outcome.residual : .none,
                        data: dataIn.getSlice(at: dataIn.readerIndex + offset, length: length)!)))
            dataSN &+= 1
            offset += length
        }
        if collapse { return }
        var data = ByteBuffer()
        if !outcome.sense.isEmpty {
            data = ByteBufferAllocator().buffer(capacity: outcome.sense.count + 2)
            data.writeInteger(UInt16(outcome.sense.count))
            data.writeBytes(outcome.sense)
        }
        emit(
            .scsiResponse(
                SCSIResponse(
                    response: 0, status: outcome.status.rawValue, initiatorTaskTag: itt, sequence: sequence(window),
                    expDataSN: dataSN, residual: outcome.residual, data: data)))
    }
}

/// ExpCmdSN and MaxCmdSN as the session's window stands (RFC 7143 §3.2.2.1), carried by every PDU the target sends.
public struct CommandWindow: Sendable, Hashable {
    public var expCmdSN: UInt32
    public var maxCmdSN: UInt32
}
