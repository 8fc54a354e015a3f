public import FerryBackends
public import Logging
public import NIOCore
public import SCSI
import Dispatch
import FerrySync
import Foundation
import Synchronization

/// A real SCSI disk behind the backend seam: initiators' CDBs go to the device through the Linux
/// SCSI generic driver, and its status, sense data and Data-In come back intact.
///
/// Ferry answers some commands itself, above the device (docs/passthrough.md says why):
/// - RESERVE/RELEASE(6/10) and PERSISTENT RESERVE IN/OUT, per I_T nexus, with the SCSI module's
///   ``ReservationState``: every initiator shares the backend's sg file descriptors, so the
///   device would see them all as one nexus. Commands that conflict end with RESERVATION CONFLICT
///   before they reach the device.
/// - The unit attentions of Ferry's own events (logical unit reset, nexus loss, reservations
///   preempted). The device's own unit attentions pass through as sense data.
/// - The Block Limits VPD page is clamped to the host's request queue limit (``BlockLimits``).
/// REPORT LUNS never reaches a backend: the transport answers it from its LUN map.
public final class PassthroughBackend: LogicalUnitBackend {
    public struct Configuration: Sendable {
        /// /dev/sgN, /dev/sdX, a stable /dev/disk/by-… name or a WWN.
        public var path: String
        /// sg_io_hdr.timeout: after it the kernel aborts the command, which ends with ABORTED
        /// COMMAND 08/01. Keep it below the initiators' command timeout (Linux: 30 s).
        public var commandTimeoutMilliseconds: UInt32
        /// sg file descriptors per logical unit; each holds up to 16 outstanding requests.
        public var fileDescriptors: Int
        /// Threads running SG_IO for a block device without an sg node.
        public var synchronousThreads: Int
        /// Where sysfs and /dev are found (a directory tree in tests).
        public var topology: SysfsTopology
        /// How long ABORT TASK (and every other function that terminates a task) waits for the
        /// device to return a task before Ferry resets the device (``AbortEscalation``).
        public var abortDeadline: TimeAmount
        /// Whether LOGICAL UNIT RESET and TARGET WARM/COLD RESET reach the device (SG_SCSI_RESET
        /// DEVICE or TARGET, with NO_ESCALATE); otherwise they only terminate Ferry's tasks.
        public var resetsDevice: Bool

        public static let defaultCommandTimeoutMilliseconds: UInt32 = 20_000
        public static let defaultAbortDeadline = TimeAmount.seconds(5)

        public init(
            path: String, commandTimeoutMilliseconds: UInt32 = Self.defaultCommandTimeoutMilliseconds,
            fileDescriptors: Int = 4, synchronousThreads: Int = 4, topology: SysfsTopology = SysfsTopology(),
            abortDeadline: TimeAmount = Self.defaultAbortDeadline, resetsDevice: Bool = true
        ) {
            self.path = path
            self.commandTimeoutMilliseconds = commandTimeoutMilliseconds
            self.fileDescriptors = fileDescriptors
            self.synchronousThreads = synchronousThreads
            self.topology = topology
            self.abortDeadline = abortDeadline
            self.resetsDevice = resetsDevice
        }
    }

    public let kind = "sg"
    public let configuration: Configuration
    public let device: PassthroughDevice
    public let identity: DeviceIdentity
    public let maximumTransferLength: Int?
    /// Unit attentions of Ferry's own events, per I_T nexus.
    public let unitAttentions = UnitAttentionConditions()
    public var unitAttentionConditions: UnitAttentionConditions? { unitAttentions }
    /// SPC-2 and persistent reservations, per I_T nexus.
    public let reservations: ReservationState
    /// The real SCSI target ("host:channel:target") behind the logical unit.
    public let deviceTarget: String?
    let channel: any SGChannel
    let logger: Logger
    /// Device-side task management: deadlines and resets run here, never on an event loop
    /// (SG_SCSI_RESET blocks until the kernel's reset handler returns).
    let taskManagementQueue: DispatchQueue
    let escalation: Locked<AbortEscalation>
    /// Set while the device is being reset: new commands wait in ``parked``.
    let holding = Atomic<Bool>(false)
    let parked = Locked<[ParkedCommand]>([])
    /// Counts the device resets begun; a command that meets the device's unit attention of a
    /// reset begun after it was sent is sent again (the device did not run it).
    let resetGeneration = Atomic<Int>(0)
    /// Tags for Ferry's own TEST UNIT READY after a reset, counted down from the top.
    let ownTags = Atomic<UInt64>(UInt64.max)

    struct ParkedCommand {
        var request: SCSIRequest
        var tag: BackendTaskTag
        var completion: @Sendable (BackendCompletion) -> Void
    }

    /// Resolves and probes the device and opens its data path. Blocks (the probes are
    /// synchronous); call it before serving initiators.
    public convenience init(configuration: Configuration, logger: Logger) throws(PassthroughError) {
        var logger = logger
        logger[metadataKey: "device"] = "\(configuration.path)"
        let device = try configuration.topology.resolve(configuration.path)
        let identity = try SGProbe.identify(device.node)
        if identity.peripheralDeviceType != 0x00 {
            logger.warning(
                "the device is not a direct access block device; Ferry sizes its commands as a disk's",
                metadata: ["peripheralDeviceType": "\(identity.peripheralDeviceType)"])
        }
        let channel: any SGChannel
        switch device.access {
        case .generic:
            channel = try AsyncSGChannel(
                node: device.node, count: configuration.fileDescriptors,
                shutdownWait: .milliseconds(Int(configuration.commandTimeoutMilliseconds) + 2_000), logger: logger)
        case .block:
            channel = try SynchronousSGChannel(node: device.node, threads: configuration.synchronousThreads)
        }
        var limit = configuration.topology.maximumTransferBytes(of: device)
        if limit == nil, device.access == .generic, let fd = try? SGSystemCalls.open(device.node, flags: O_RDWR).get() {
            limit = SGProbe.maximumTransferBytes(fd: fd)
            SGSystemCalls.close(fd)
        }
        self.init(
            configuration: configuration, device: device, identity: identity, maximumTransferLength: limit,
            deviceTarget: configuration.topology.scsiTarget(of: device), channel: channel, logger: logger)
        logger.info(
            "passthrough logical unit open",
            metadata: [
                "node": "\(device.node)", "access": "\(device.access)", "identity": "\(identity)",
                "maximumTransferLength": "\(limit.map(String.init) ?? "unknown")",
                "commandTimeoutMilliseconds": "\(configuration.commandTimeoutMilliseconds)",
                "abortDeadline": "\(configuration.abortDeadline)", "resetsDevice": "\(configuration.resetsDevice)",
                "scsiTarget": "\(deviceTarget ?? "unknown")",
            ])
    }

    /// A backend over an open channel (tests drive it with a channel of their own).
    init(
        configuration: Configuration, device: PassthroughDevice, identity: DeviceIdentity, maximumTransferLength: Int?,
        deviceTarget: String? = nil, channel: any SGChannel, logger: Logger
    ) {
        self.configuration = configuration
        self.device = device
        self.identity = identity
        self.maximumTransferLength = maximumTransferLength
        self.reservations = ReservationState(unitAttentions: unitAttentions)
        self.deviceTarget = deviceTarget
        self.channel = channel
        self.logger = logger
        self.taskManagementQueue = DispatchQueue(label: "ferry-task-management-\((device.node as NSString).lastPathComponent)")
        self.escalation = Locked(AbortEscalation(deadline: configuration.abortDeadline))
    }

    /// Says what is missing when the process lacks the capabilities passthrough needs; call once
    /// at start-up when a passthrough logical unit is configured.
    public static func checkCapabilities(logger: Logger) {
        guard let capabilities = PassthroughCapabilities.current() else {
            logger.warning("cannot read this process's capabilities from /proc/self/status")
            return
        }
        if let missing = capabilities.missing { logger.warning("\(missing)") }
    }

    public var taskAbortedStatus: Bool { false }

    public func dataOutLength(for cdb: ByteBuffer) -> Int? {
        CDB(cdb).dataOutLength(blockSize: identity.blockSize)
    }

    public func pendingUnitAttention(for nexus: ITNexus) -> (senseKey: SenseKey, code: AdditionalSenseCode)? {
        unitAttentions.peek(for: nexus).map { (senseKey: .unitAttention, code: $0) }
    }

    /// > SPC-4 §5.14: a logical unit reset or I_T nexus loss releases the SPC-2 reservation;
    /// > persistent reservations survive. Ferry raises the matching unit attentions itself.
    public func apply(_ event: LogicalUnitEvent) {
        unitAttentions.apply(event)
        reservations.apply(event)
    }

    public func shutdown() {
        let waiting = parked.withLock { parked in
            defer { parked.removeAll() }
            return parked
        }
        for command in waiting { command.completion(.terminated) }
        channel.shutdown()
    }

    // MARK: Commands

    public func submit(
        _ request: SCSIRequest, tag: BackendTaskTag, completion: @escaping @Sendable (BackendCompletion) -> Void
    ) {
        submit(request, tag: tag, mayResend: true, completion: completion)
    }

    /// - Parameter mayResend: whether a command that meets the device's unit attention of a reset
    ///   begun after it was sent goes to the device once more.
    func submit(
        _ request: SCSIRequest, tag: BackendTaskTag, mayResend: Bool,
        completion: @escaping @Sendable (BackendCompletion) -> Void
    ) {
        if holding.load(ordering: .acquiring), park(ParkedCommand(request: request, tag: tag, completion: completion)) {
            return
        }
        let cdb = CDB(request.cdb)
        if let result = answerInFerry(request, cdb) {
            completion(.completed(result))
            return
        }
        switch command(for: request, cdb, tag: tag, mayResend: mayResend, completion: completion) {
        case .send(let command): channel.start(command)
        case .answer(let result): completion(.completed(result))
        }
    }

    /// The commands Ferry answers above the device: its own unit attentions, reservation
    /// conflicts and the reservation commands.
    private func answerInFerry(_ request: SCSIRequest, _ cdb: CDB) -> SCSIResult? {
        let nexus = request.nexus
        unitAttentions.noteNexus(nexus)
        switch cdb.operationCode {
        case OperationCode.inquiry, OperationCode.reportLUNs:
            break
        case OperationCode.requestSense:
            // > SPC-4 §6.39: REQUEST SENSE returns a pending unit attention condition and clears it.
            if let code = unitAttentions.take(for: nexus) {
                let sense = SenseData(.unitAttention, code).bytes(descriptorFormat: cdb[1] & 0x01 != 0)
                var data = ByteBufferAllocator().buffer(capacity: sense.count)
                data.writeBytes(sense.prefix(Int(cdb[4])))
                return SCSIResult(status: .good, dataIn: data)
            }
        default:
            if let code = unitAttentions.take(for: nexus) {
                return .checkCondition(SenseData(.unitAttention, code))
            }
        }
        if let conflict = reservations.check(request.cdb, from: nexus) {
            return conflict
        }
        switch cdb.operationCode {
        case OperationCode.reserve6, OperationCode.reserve10: return reservations.reserve(request)
        case OperationCode.release6, OperationCode.release10: return reservations.release(request)
        case OperationCode.persistentReserveIn: return reservations.persistentReserveIn(request)
        case OperationCode.persistentReserveOut: return reservations.persistentReserveOut(request)
        default: return nil
        }
    }

    private enum Preparation {
        case send(SGCommand)
        /// The command ends without the device.
        case answer(SCSIResult)
    }

    /// The sg command for `request`, or the result that ends it without the device.
    private func command(
        for request: SCSIRequest, _ cdb: CDB, tag: BackendTaskTag, mayResend: Bool,
        completion: @escaping @Sendable (BackendCompletion) -> Void
    ) -> Preparation {
        let blockSize = identity.blockSize
        guard let length = Self.cdbLength(cdb), length <= request.cdb.readableBytes else {
            return .answer(.checkCondition(.invalidCommandOperationCode))
        }
        var bytes = request.cdb.getSlice(at: request.cdb.readerIndex, length: length)!
        let direction: SGCommand.Direction
        var transfer = 0
        let asked = cdb.dataOutLength(blockSize: blockSize)
        if request.dataOut.readableBytes > 0 || (asked ?? 0) > 0 {
            var dataOut = request.dataOut
            if let shortened = CommandTransfer.shortenedWrite(
                bytes, received: dataOut.readableBytes, blockSize: blockSize)
            {
                // The initiator sent fewer bytes than the CDB asks for: write the whole blocks
                // received, as the emulated device does.
                guard shortened.blocks > 0 else { return .answer(.good) }
                bytes = shortened.cdb
                dataOut = dataOut.getSlice(at: dataOut.readerIndex, length: shortened.blocks * blockSize)!
            } else if let asked, dataOut.readableBytes > asked {
                dataOut = dataOut.getSlice(at: dataOut.readerIndex, length: asked)!
            }
            transfer = dataOut.readableBytes
            direction = transfer > 0 ? .toDevice(dataOut) : .none
        } else if asked == 0 {
            direction = .none
        } else {
            transfer = CommandTransfer.dataInLength(of: cdb, blockSize: blockSize) ?? request.expectedDataTransferLength
            if let limit = maximumTransferLength, transfer > limit, !Self.movesLogicalBlocks(cdb) {
                // An allocation length beyond the limit: the device returns what fits.
                transfer = limit
            }
            direction = transfer > 0 ? .fromDevice(transfer) : .none
        }
        // > SBC-4 §4.5: a TRANSFER LENGTH above MAXIMUM TRANSFER LENGTH is an invalid field in the CDB.
        // Without a known limit, sg's is the 32-bit DXFER_LEN: a READ(12) or READ(16) of 2^32-1 blocks asks
        // for more, and must not reach the channel, which could neither allocate its buffer nor describe it.
        if transfer > maximumTransferLength ?? Self.largestSGTransfer {
            return .answer(.checkCondition(.invalidFieldInCDB(byte: Self.transferLengthByte(cdb))))
        }
        let clampBlockLimits = BlockLimits.isBlockLimitsInquiry(cdb)
        let maximumBlocks = maximumTransferLength.map { UInt32(clamping: $0 / blockSize) }
        let logger = logger
        let generation = resetGeneration.load(ordering: .acquiring)
        return .send(
            SGCommand(
                tag: tag, cdb: bytes, direction: direction,
                timeoutMilliseconds: configuration.commandTimeoutMilliseconds,
                atTail: request.attribute != .headOfQueue
            ) { [self] outcome in
                switch outcome {
                case .terminated:
                    escalation.withLock { $0.taskReturned(tag) }
                    completion(.terminated)
                case .refused(let errno):
                    completion(.completed(SGOutcome.result(forSubmissionError: errno)))
                case .finished(let outcome, var dataIn):
                    if mayResend, Self.isResetUnitAttention(outcome),
                        resetGeneration.load(ordering: .acquiring) != generation
                    {
                        // > SAM-5 §5.14: the device reported the unit attention of Ferry's own reset
                        // > instead of running the command; it goes to the device again.
                        logger.debug("resending a command that met the device's reset unit attention", metadata: ["tag": "\(tag)"])
                        submit(request, tag: tag, mayResend: false, completion: completion)
                        return
                    }
                    var result = outcome.result
                    if clampBlockLimits, let maximumBlocks, result.status == .good {
                        BlockLimits.clamp(&dataIn, maximumBlocks: maximumBlocks)
                    }
                    result.dataIn = dataIn
                    if outcome.hostStatus != 0 || outcome.driverStatus & 0x07 != 0 {
                        logger.notice(
                            "the device did not complete a command",
                            metadata: [
                                "tag": "\(tag)", "hostStatus": "\(outcome.hostStatus)",
                                "driverStatus": "\(outcome.driverStatus)",
                                "durationMilliseconds": "\(outcome.duration)",
                                "answer": "\(result.sense.map { "\($0)" } ?? "\(result.status)")",
                            ])
                    } else if result.status == .checkCondition, logger.logLevel <= .debug {
                        logger.debug(
                            "CHECK CONDITION from the device",
                            metadata: ["tag": "\(tag)", "sense": "\(describeSense(outcome.sense))"])
                    }
                    completion(.completed(result))
                }
            })
    }

    /// The most bytes one sg request moves: sg_io_hdr's DXFER_LEN is 32 bits.
    static let largestSGTransfer = Int(UInt32.max)

    /// The CDB length: from the GROUP CODE, from byte 7 of a variable-length CDB (7Fh), or all
    /// received bytes for the vendor-specific groups; nil outside sg's 6 to 252 bytes.
    static func cdbLength(_ cdb: CDB) -> Int? {
        let length: Int
        if let group = CDB.length(ofGroupOf: cdb.operationCode) {
            length = group
        } else if cdb.operationCode == 0x7f {
            length = 8 + Int(cdb[7])
        } else {
            length = cdb.count
        }
        return (6...SGCommand.maximumCDBLength).contains(length) ? length : nil
    }

    /// READ and WRITE commands, whose TRANSFER LENGTH the device must honour whole.
    static func movesLogicalBlocks(_ cdb: CDB) -> Bool {
        switch cdb.operationCode {
        case OperationCode.read6, OperationCode.read10, OperationCode.read12, OperationCode.read16: true
        default: false
        }
    }

    /// The first byte of the TRANSFER LENGTH (or ALLOCATION/PARAMETER LIST LENGTH) field.
    static func transferLengthByte(_ cdb: CDB) -> Int {
        switch cdb.operationCode >> 5 {
        case 0: 4
        case 1, 2: 7
        case 5: 6
        default: 10
        }
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif
