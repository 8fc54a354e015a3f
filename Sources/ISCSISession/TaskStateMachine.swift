public import ISCSIProtocol
public import NIOCore
public import SCSI

/// One SCSI task of a session, from its SCSI Command PDU to its response (SAM-5 §8; RFC 7143 §3.2.2). Its
/// states carry their own data:
///
///     waitingForCmdSN ──► waitingForDataOut ──► atBackend ──► completed ──► (response sent: gone)
///       │    │                                      │
///       │    └─► withoutDataBuffer ──► completed (TASK SET FULL)
///       │                                           └─► terminating ──► (gone, or completed with TASK ABORTED)
///       └── aborted before the backend has it: gone at once
///
/// A task in ``State/terminating(_:_:)`` never produces Data-In, an R2T or a SCSI Response of its own.
public struct TaskStateMachine {
    /// Why a task was aborted, who waits for it to leave the backend, and what its initiator still hears.
    public struct AbortMark: Hashable, Sendable {
        public enum Waiter: Hashable, Sendable {
            /// Nobody: the connection went away.
            case none
            /// A function of this session, by its Initiator Task Tag.
            case function(UInt32)
            /// A task-set function of another session.
            case foreign(ForeignFunction)
        }

        public var waiter: Waiter
        /// TAS: end the task with TASK ABORTED status (aborted by another I_T nexus, TAS=1).
        public var reportTaskAborted: Bool

        public init(waiter: Waiter, reportTaskAborted: Bool = false) {
            self.waiter = waiter
            self.reportTaskAborted = reportTaskAborted
        }
    }

    /// What a task ends with: its status and what goes with it.
    public struct Outcome: Sendable {
        public var status: SCSIStatus
        public var sense: [UInt8]
        public var dataIn: ByteBuffer
        public var residual: Residual

        static let taskAborted = Outcome(status: .taskAborted, sense: [], dataIn: ByteBuffer(), residual: .none)
        static let taskSetFull = Outcome(status: .taskSetFull, sense: [], dataIn: ByteBuffer(), residual: .none)
    }

    public enum State {
        /// Arrived ahead of its CmdSN turn. Unsolicited Data-Out (InitialR2T=No) may already be gathering.
        case waitingForCmdSN(DataOutProgress?)
        /// Arrived when the data buffer budget had no room: it takes no data, and ends with TASK SET FULL at its
        /// turn (SAM-5 §5.3.1).
        case withoutDataBuffer
        /// Its turn came; Data-Out is still missing.
        case waitingForDataOut(DataOutProgress)
        /// The backend holds it.
        case atBackend(BackendTaskTag)
        /// Aborted while the backend holds it: termination was asked for, and the task leaves when the backend
        /// gives it back.
        case terminating(BackendTaskTag, AbortMark)
        /// Its response waits in the transmit queue.
        case completed(Outcome)
        /// Only while a method changes the state in place (so that a gather buffer is never copied).
        case modifying
    }

    public let initiatorTaskTag: UInt32
    public let connection: UInt16
    public let lun: UInt64
    public let cmdSN: UInt32
    public let command: SCSICommand
    /// Bytes the transport takes from the initiator: min(EDTL, what the CDB asks for).
    public let dataOutLength: Int
    /// What the CDB asks the initiator for, when the backend can tell.
    public let cdbDataOutLength: Int?
    /// Whether a backend runs the command; otherwise the target answers it itself.
    public let runsOnBackend: Bool
    public private(set) var state: State
    /// Bytes of the data buffer budget this task holds: its Expected Data Transfer Length until the backend
    /// gives it back, then the Data-In it holds until the response is sent.
    public private(set) var reservedBytes: Int

    init(command: SCSICommand, connection: UInt16, disposition: LogicalUnitDisposition, reservation: DataBufferReservation) {
        self.initiatorTaskTag = command.initiatorTaskTag
        self.connection = connection
        self.lun = command.lun
        self.cmdSN = command.cmdSN
        self.command = command
        var cdbDataOutLength: Int? = nil
        if case .mapped(let length) = disposition { cdbDataOutLength = length }
        self.runsOnBackend = disposition != .answeredByTarget
        self.cdbDataOutLength = cdbDataOutLength
        let edtl = Int(command.expectedDataTransferLength)
        self.dataOutLength = command.write ? min(edtl, cdbDataOutLength ?? edtl) : 0
        switch reservation {
        case .reserved(let bytes):
            self.reservedBytes = bytes
            self.state = .waitingForCmdSN(nil)
        case .unavailable:
            self.reservedBytes = 0
            self.state = .withoutDataBuffer
        }
    }

    /// Still waiting for its CmdSN turn (so that its CmdSN is consumed without it if it is aborted now).
    public var awaitsTurn: Bool {
        switch state {
        case .waitingForCmdSN, .withoutDataBuffer: true
        default: false
        }
    }

    /// Aborted, and waiting for the backend to give it back.
    public var isTerminating: Bool {
        if case .terminating = state { return true }
        return false
    }

    // MARK: Data-Out

    public enum DataOutVerdict: Equatable {
        case taken
        /// Data for a task that takes none any more (aborted, or without a data buffer): dropped without a word.
        case ignored
        case rejected(Reject.Reason)
    }

    /// A Data-Out PDU for this task (RFC 7143 §11.7).
    mutating func dataOutReceived(_ dataOut: SCSIDataOut, parameters: SessionParameters) -> DataOutVerdict {
        var progress: DataOutProgress
        var beforeTurn = false
        switch state {
        case .waitingForCmdSN(let p):
            progress = p ?? DataOutProgress(command: command, expected: dataOutLength, parameters: parameters)
            beforeTurn = true
        case .waitingForDataOut(let p):
            progress = p
        case .withoutDataBuffer, .terminating:
            return .ignored
        case .atBackend, .completed:
            return .rejected(.protocolError)
        case .modifying:
            preconditionFailure("task state left modifying")
        }
        state = .modifying
        let refused = progress.take(dataOut)
        state = beforeTurn ? .waitingForCmdSN(progress) : .waitingForDataOut(progress)
        return refused.map { .rejected($0) } ?? .taken
    }

    public enum Next: Equatable {
        /// Hand it to the backend (or the target) now.
        case submit
        /// R2Ts to send for the missing data, by Target Transfer Tag (possibly none while data is in flight).
        case solicit([UInt32])
        /// Its response is ready.
        case respond
        case nothing
    }

    /// The task reached its CmdSN turn (or is immediate).
    mutating func reachedTurn(parameters: SessionParameters, tags: inout TargetTransferTags) -> Next {
        switch state {
        case .withoutDataBuffer:
            state = .completed(.taskSetFull)
            return .respond
        case .waitingForCmdSN(let progress):
            guard command.write && dataOutLength > 0 else { return .submit }
            state = .waitingForDataOut(
                progress ?? DataOutProgress(command: command, expected: dataOutLength, parameters: parameters))
            return advanceDataOut(parameters: parameters, tags: &tags)
        default:
            return .nothing
        }
    }

    /// After Data-Out arrived: submit when all of it is in, otherwise solicit what is missing.
    mutating func advanceDataOut(parameters: SessionParameters, tags: inout TargetTransferTags) -> Next {
        guard case .waitingForDataOut(var progress) = state else { return .nothing }
        if progress.isComplete { return .submit }
        state = .modifying
        let issued = progress.solicit(parameters: parameters, tags: &tags)
        state = .waitingForDataOut(progress)
        return .solicit(issued)
    }

    /// The R2T for `ttt`, with its R2TSN, when the transmit queue comes to it; nil when it is no longer wanted.
    mutating func readyToTransfer(_ ttt: UInt32) -> (r2t: OutstandingR2T, r2tSN: UInt32)? {
        guard case .waitingForDataOut(var progress) = state else { return nil }
        state = .modifying
        let r2t = progress.readyToTransfer(ttt)
        state = .waitingForDataOut(progress)
        return r2t
    }

    // MARK: Backend

    /// The task goes to the backend as `tag`; returns its Data-Out buffer.
    mutating func submit(tag: BackendTaskTag) -> ByteBuffer {
        var dataOut = ByteBuffer()
        if case .waitingForDataOut(let progress) = state { dataOut = progress.buffer }
        state = .atBackend(tag)
        return dataOut
    }

    public enum CompletionVerdict: Equatable {
        /// Not this task's tag (a stale completion): nothing changes.
        case stale
        /// The response is ready; `released` bytes of the data buffer budget go back.
        case respond(released: Int)
        /// The task was aborted: it is gone, and `released` bytes go back.
        case left(AbortMark, released: Int)
    }

    /// The backend gave the task back. `produced`: the Data-In length the device produced, when the completion
    /// was cut to the Expected Data Transfer Length on its way (``SessionStateMachine/boundedForTransit(_:expectedDataTransferLength:)``).
    mutating func backendCompleted(tag: BackendTaskTag, _ completion: BackendCompletion, produced: Int?) -> CompletionVerdict {
        switch state {
        case .atBackend(let current) where current == tag:
            let outcome: Outcome
            switch completion {
            case .terminated: outcome = .taskAborted
            case .completed(let result): outcome = Self.outcome(of: command, cdbDataOutLength: cdbDataOutLength, result, produced: produced)
            }
            state = .completed(outcome)
            // The task now holds its Data-In and nothing else (the Data-Out went with the backend): the rest of its
            // reservation goes back, so that the budget counts what the task holds until its response is sent.
            let released = max(0, reservedBytes - outcome.dataIn.readableBytes)
            reservedBytes -= released
            return .respond(released: released)
        case .terminating(let current, let mark) where current == tag:
            let released = reservedBytes
            reservedBytes = 0
            if mark.reportTaskAborted { state = .completed(.taskAborted) }
            return .left(mark, released: released)
        default:
            return .stale
        }
    }

    // MARK: Abort

    public enum AbortVerdict: Equatable {
        /// The backend holds it: terminate `tag` there; the task leaves when the backend gives it back.
        case terminate(BackendTaskTag)
        /// Nothing holds it: it is gone now; `released` bytes go back.
        case gone(released: Int)
        /// Nothing holds it, and TAS has it end with TASK ABORTED status (its response is ready); `released`
        /// bytes go back.
        case endsWithTaskAborted(released: Int)
    }

    /// Aborts the task (SAM-5 §7.2). No Data-In, R2T or response of its own is ever produced after this.
    mutating func abort(_ mark: AbortMark) -> AbortVerdict {
        switch state {
        case .atBackend(let tag):
            state = .terminating(tag, mark)
            return .terminate(tag)
        case .terminating(let tag, _):
            return .terminate(tag)
        default:
            let released = reservedBytes
            reservedBytes = 0
            guard mark.reportTaskAborted else { return .gone(released: released) }
            state = .completed(.taskAborted)
            return .endsWithTaskAborted(released: released)
        }
    }

    /// The bytes this task still holds, given back as the session ends.
    mutating func releaseReservation() -> Int {
        defer { reservedBytes = 0 }
        return reservedBytes
    }

    // MARK: Outcome

    /// The status, sense, Data-In and residual the initiator gets for a completed command (RFC 7143 §11.4).
    static func outcome(of command: SCSICommand, cdbDataOutLength: Int?, _ result: SCSIResult, produced: Int?) -> Outcome {
        let edtl = Int(command.expectedDataTransferLength)
        var dataIn = result.dataIn
        var residual = Residual.none
        // A device server may read only what the EDTL covers and give the length the CDB asked for, and a
        // completion may have been cut to the EDTL before it reached the loop (`produced`): the residual counts
        // from what the device would have produced (RFC 7143 §11.4.5.2).
        let produced = max(produced ?? dataIn.readableBytes, result.requestedDataInLength ?? 0)
        if command.read {
            if produced > edtl {
                residual = .overflow(UInt32(clamping: produced - edtl))
                if dataIn.readableBytes > edtl { dataIn = prefix(dataIn, length: edtl) }
            } else if produced < edtl {
                residual = .underflow(UInt32(clamping: edtl - produced))
            }
        } else {
            // Data-In the initiator did not ask for (no R bit) is never sent, whatever the CDB produced.
            dataIn = ByteBuffer()
            if command.write {
                // A CDB may ask for more than 2^32 - 1 bytes (WRITE(16) of 0xFFFFFFFF blocks): the Residual Count
                // is 32 bits, so it saturates (RFC 7143 §11.4.5 leaves no other way to say it).
                let asked = cdbDataOutLength ?? edtl
                if asked > edtl {
                    residual = .overflow(UInt32(clamping: asked - edtl))
                } else if asked < edtl {
                    residual = .underflow(UInt32(clamping: edtl - asked))
                }
            } else if produced > 0 {
                residual = .overflow(UInt32(clamping: produced))
            } else if edtl > 0 {
                residual = .underflow(UInt32(clamping: edtl))
            }
        }
        let sense = result.sense.map { $0.bytes(descriptorFormat: result.descriptorFormatSense) } ?? []
        if result.status != .good && result.status != .conditionMet { dataIn = ByteBuffer() }
        return Outcome(status: result.status, sense: sense, dataIn: dataIn, residual: residual)
    }

    /// The first `length` bytes of `buffer` in storage of their own. A slice would keep the whole of the
    /// backend's buffer alive until the response is sent: a READ of 8 MiB with an Expected Data Transfer
    /// Length of 0 would hold 8 MiB for a response without data.
    static func prefix(_ buffer: ByteBuffer, length: Int) -> ByteBuffer {
        guard length > 0 else { return ByteBuffer() }
        var copy = ByteBufferAllocator().buffer(capacity: length)
        copy.writeImmutableBuffer(buffer.getSlice(at: buffer.readerIndex, length: length)!)
        return copy
    }
}
