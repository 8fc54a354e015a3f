import FerryBackends
import FerryConfig
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import SCSI
import Testing

@testable import FerryTarget
@testable import ISCSIProtocol

/// A running ``ISCSITarget`` without sockets: its connections are `EmbeddedChannel`s with the pipeline of
/// ``TargetContext/configure(_:portal:)``, one per ``EmbeddedInitiator``, and its emulated logical units are real
/// ``EmulatedBackend``s over files in a temporary directory.
///
/// An `EmbeddedEventLoop` may only be used from the thread that made it, and an emulated backend completes on its
/// thread pool. Every logical unit is therefore served through a ``RelayedBackend``: the backend runs the command on
/// its threads as always, and the completion waits in ``relay`` until the test thread delivers it
/// (``CompletionRelay/deliver(timeout:)``), so that the session's hop onto its loop happens on the loop's thread.
final class EmbeddedTarget {
    static let targetName = "iqn.2026-12.dev.ferry.test:disk"
    static let initiatorName = "iqn.2026-12.dev.ferry.test:initiator"

    let directory: URL
    let portal = Portal(host: "127.0.0.1")
    let target: ISCSITarget
    let relay = CompletionRelay()
    var context: TargetContext { target.context }

    /// A target named ``targetName`` with an emulated LUN for each of `luns`.
    init(luns: [UInt64] = [0], limits: Limits = Limits()) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("embedded-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        self.limits = limits
        let directory = directory
        let configuration = FerryConfiguration(
            portals: [portal],
            targets: [Target(name: Self.targetName, luns: luns.map { Self.logicalUnit($0, in: directory) })],
            stateDirectory: directory.path, limits: limits)
        target = try ISCSITarget(
            configuration: configuration, logger: Logger(label: "embedded-test") { _ in SwiftLogNoOpLogHandler() })
        relayBackends()
    }

    private let limits: Limits

    deinit {
        context.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }

    /// LUN `lun`: a 1 MiB file in ``directory``.
    func logicalUnit(_ lun: UInt64) -> LogicalUnit {
        Self.logicalUnit(lun, in: directory)
    }

    private static func logicalUnit(_ lun: UInt64, in directory: URL) -> LogicalUnit {
        LogicalUnit(lun: lun, path: directory.appendingPathComponent("lun\(lun).img").path, size: 1 << 20)
    }

    /// The configuration this target was made with, serving `targets` instead.
    func configuration(targets: [Target]) -> FerryConfiguration {
        FerryConfiguration(portals: [portal], targets: targets, stateDirectory: directory.path, limits: limits)
    }

    /// Serves every logical unit that is not relayed yet through ``relay`` (after the start, and after a reload
    /// that opened new ones).
    func relayBackends() {
        for node in context.nodes.values {
            let units = node.logicalUnits.mapValues { backend -> any LogicalUnitBackend in
                backend is RelayedBackend ? backend : RelayedBackend(backend, relay: relay)
            }
            node.update(configuration: node.configuration, logicalUnits: units)
        }
    }

    /// A new connection, not logged in.
    func connect(isid: UInt64 = 0x8000_0000_0001, initiatorName: String = EmbeddedTarget.initiatorName) throws
        -> EmbeddedInitiator
    {
        try EmbeddedInitiator(target: self, isid: isid, initiatorName: initiatorName)
    }
}

/// Holds the completions of the backends until the test thread delivers them.
///
/// The backend is given a completion that names the session's by a number only: a worker thread that holds on to
/// it after calling it must not hold the session, whose last release would free its `EmbeddedEventLoop` there.
final class CompletionRelay: @unchecked Sendable {
    private let condition = NSCondition()
    private var nextID = 0
    /// The session's completion of each command submitted and not delivered.
    private var waiting: [Int: @Sendable (BackendCompletion) -> Void] = [:]
    private var arrived: [(id: Int, completion: BackendCompletion)] = []

    /// Keeps `completion` until the backend completes command `id`.
    func submitted(_ completion: @escaping @Sendable (BackendCompletion) -> Void) -> Int {
        condition.withLock {
            nextID += 1
            waiting[nextID] = completion
            return nextID
        }
    }

    /// Called on a backend thread (or the caller's, for a task the backend drops).
    func arrived(_ id: Int, _ completion: BackendCompletion) {
        condition.withLock {
            arrived.append((id, completion))
            condition.broadcast()
        }
    }

    /// The commands submitted and not delivered yet.
    var pending: Int { condition.withLock { waiting.count } }

    /// Waits until every command submitted so far has completed, then hands the completions to their sessions on
    /// this thread. Returns false when `timeout` passed first (the completions that did arrive are delivered).
    @discardableResult
    func deliver(timeout: TimeInterval = 10) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        var complete = true
        let deliveries = condition.withLock {
            while arrived.count < waiting.count {
                if !condition.wait(until: deadline) {
                    complete = false
                    break
                }
            }
            defer { arrived.removeAll() }
            return arrived.compactMap { arrival in
                waiting.removeValue(forKey: arrival.id).map { ($0, arrival.completion) }
            }
        }
        for (session, completion) in deliveries { session(completion) }
        return complete
    }
}

/// A logical unit as the target serves it, with its completions handed to the test thread by a ``CompletionRelay``.
final class RelayedBackend: LogicalUnitBackend {
    let base: any LogicalUnitBackend
    let relay: CompletionRelay

    init(_ base: any LogicalUnitBackend, relay: CompletionRelay) {
        self.base = base
        self.relay = relay
    }

    var kind: String { base.kind }
    var taskAbortedStatus: Bool { base.taskAbortedStatus }
    var unitAttentionConditions: UnitAttentionConditions? { base.unitAttentionConditions }
    var copyEndpoint: CopyEndpoint? { base.copyEndpoint }
    var maximumTransferLength: Int? { base.maximumTransferLength }
    var deviceTarget: String? { base.deviceTarget }

    func dataOutLength(for cdb: ByteBuffer) -> Int? { base.dataOutLength(for: cdb) }

    func submit(
        _ request: SCSIRequest, tag: BackendTaskTag, completion: @escaping @Sendable (BackendCompletion) -> Void
    ) {
        let id = relay.submitted(completion)
        base.submit(request, tag: tag) { [relay] result in relay.arrived(id, result) }
    }

    func terminate(_ tag: BackendTaskTag) { base.terminate(tag) }

    func pendingUnitAttention(for nexus: ITNexus) -> (senseKey: SenseKey, code: AdditionalSenseCode)? {
        base.pendingUnitAttention(for: nexus)
    }

    func apply(_ event: LogicalUnitEvent) { base.apply(event) }

    func shutdown() { base.shutdown() }

    func resetDevice(
        _ reset: DeviceReset, siblings: [any LogicalUnitBackend], completion: @escaping @Sendable () -> Void
    ) {
        base.resetDevice(reset, siblings: siblings, completion: completion)
    }
}

/// One initiator connection to an ``EmbeddedTarget``: PDUs are encoded and delivered as a socket would deliver
/// them, and the PDUs the target writes are decoded back.
final class EmbeddedInitiator {
    let target: EmbeddedTarget
    let channel: EmbeddedChannel
    let isid: UInt64
    let initiatorName: String
    private var encoder = PDUEncoder()
    private var decoder = PDUFrameDecoder(maxRecvDataSegmentLength: 1 << 24)
    private var written = ByteBuffer()
    /// The CmdSN of the next non-immediate command.
    private(set) var cmdSN: UInt32 = 1
    private(set) var expStatSN: UInt32 = 0
    private var nextTag: UInt32 = 0x100

    init(target: EmbeddedTarget, isid: UInt64, initiatorName: String) throws {
        self.target = target
        self.isid = isid
        self.initiatorName = initiatorName
        channel = EmbeddedChannel()
        try target.context.configure(channel, portal: target.portal)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 50_000)).wait()
    }

    deinit {
        _ = try? channel.finish(acceptAlreadyClosed: true)
    }

    /// Logs in with one final Login Request, to ``EmbeddedTarget/targetName`` or as a discovery session, without
    /// digests. Returns the Login Response, whatever its status.
    func logIn(discovery: Bool = false) throws -> LoginResponse? {
        var keys = ["InitiatorName=\(initiatorName)", "HeaderDigest=None", "DataDigest=None"]
        keys +=
            discovery ? ["SessionType=Discovery"] : ["SessionType=Normal", "TargetName=\(EmbeddedTarget.targetName)"]
        let request = LoginRequest(
            transit: true, continue: false, currentStage: .loginOperationalNegotiation, nextStage: .fullFeaturePhase,
            isid: ISID(rawValue: isid), tsih: 0, initiatorTaskTag: 0, cid: 0, cmdSN: cmdSN, expStatSN: 0,
            data: ByteBuffer(string: keys.map { $0 + "\0" }.joined()))
        try send(.loginRequest(request))
        guard case .loginResponse(let response)? = try receive().first else { return nil }
        expStatSN = response.sequence.statSN &+ 1
        return response
    }

    /// A tag no other task of this initiator has.
    func tag() -> UInt32 {
        defer { nextTag += 1 }
        return nextTag
    }

    /// A non-immediate SCSI Command with the next CmdSN, reading up to `length` bytes.
    func command(_ cdb: [UInt8], lun: UInt64 = 0, length: UInt32 = 0) -> SCSICommand {
        defer { cmdSN &+= 1 }
        var bytes = ByteBuffer(bytes: cdb)
        bytes.writeRepeatingByte(0, count: max(0, 16 - cdb.count))
        return SCSICommand(
            final: true, read: length > 0, write: false, lun: Self.lunField(lun), initiatorTaskTag: tag(),
            expectedDataTransferLength: length, cmdSN: cmdSN, expStatSN: expStatSN, cdb: bytes)
    }

    /// An immediate task management function request for LUN `lun`.
    func function(_ function: TaskManagementFunctionRequest.Function, lun: UInt64 = 0)
        -> TaskManagementFunctionRequest
    {
        TaskManagementFunctionRequest(
            immediate: true, function: function, lun: Self.lunField(lun), initiatorTaskTag: tag(), cmdSN: cmdSN,
            expStatSN: expStatSN)
    }

    /// SAM-5 single level LUN addressing (peripheral device method).
    static func lunField(_ lun: UInt64) -> UInt64 { lun << 48 }

    func encoded(_ pdu: PDU) -> ByteBuffer {
        var bytes = ByteBuffer()
        encoder.encode(pdu, into: &bytes)
        return bytes
    }

    func send(_ pdu: PDU) throws {
        try channel.writeInbound(encoded(pdu))
        channel.embeddedEventLoop.run()
    }

    /// The PDUs the target wrote since the last call. With `deliveringCompletions`, the completions of every
    /// command submitted to a backend are waited for and delivered first.
    func receive(deliveringCompletions: Bool = true) throws -> [PDU] {
        if deliveringCompletions {
            #expect(target.relay.deliver(), "a backend did not complete within 10 s")
        }
        channel.embeddedEventLoop.run()
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { written.writeImmutableBuffer(buffer) }
        var pdus: [PDU] = []
        while let inbound = try decoder.decode(buffer: &written) { pdus.append(inbound.pdu) }
        if let statSN = pdus.compactMap(\.statSN).last { expStatSN = statSN &+ 1 }
        return pdus
    }

    /// Sends `command` and returns the status PDU it is answered with: a SCSI Response, or the last Data-In, which
    /// carries the status.
    func run(_ command: SCSICommand) throws -> SCSIStatusPDU? {
        try send(.scsiCommand(command))
        return try receive().compactMap { SCSIStatusPDU($0, itt: command.initiatorTaskTag) }.last
    }
}

/// The PDU that ends a SCSI task: a SCSI Response or a Data-In with the S bit, and the data it returned.
struct SCSIStatusPDU {
    var status: UInt8
    var sequence: StatusSequence
    /// The sense data of a SCSI Response (without its length field).
    var sense: ByteBuffer
    var dataIn: ByteBuffer

    init?(_ pdu: PDU, itt: UInt32) {
        switch pdu {
        case .scsiResponse(let response) where response.initiatorTaskTag == itt:
            status = response.status
            sequence = response.sequence
            var data = response.data
            let length = data.readInteger(as: UInt16.self).map(Int.init) ?? 0
            sense = data.readSlice(length: min(length, data.readableBytes)) ?? ByteBuffer()
            dataIn = ByteBuffer()
        case .scsiDataIn(let dataIn) where dataIn.initiatorTaskTag == itt:
            guard let status = dataIn.status else { return nil }
            self.status = status
            sequence = dataIn.sequence
            sense = ByteBuffer()
            self.dataIn = dataIn.data
        default:
            return nil
        }
    }

    /// Sense key, additional sense code and qualifier, from fixed or descriptor format sense data.
    var senseCode: [UInt8]? {
        let bytes = Array(sense.readableBytesView)
        guard let code = bytes.first.map({ $0 & 0x7f }) else { return nil }
        switch code {
        case 0x70, 0x71 where bytes.count >= 14: return [bytes[2] & 0x0f, bytes[12], bytes[13]]
        case 0x72, 0x73 where bytes.count >= 4: return [bytes[1] & 0x0f, bytes[2], bytes[3]]
        default: return nil
        }
    }
}

extension PDU {
    /// The StatSN of a PDU that carries one in its status sequence.
    var statSN: UInt32? {
        switch self {
        case .scsiResponse(let response): response.sequence.statSN
        case .scsiDataIn(let dataIn) where dataIn.status != nil: dataIn.sequence.statSN
        case .nopIn(let nop): nop.sequence.statSN
        case .taskManagementFunctionResponse(let response): response.sequence.statSN
        case .logoutResponse(let response): response.sequence.statSN
        case .textResponse(let response): response.sequence.statSN
        case .asynchronousMessage(let message): message.sequence.statSN
        case .reject(let reject): reject.sequence.statSN
        default: nil
        }
    }
}

/// TEST UNIT READY.
let testUnitReady: [UInt8] = [0x00, 0, 0, 0, 0, 0]

/// REPORT LUNS with an allocation length of 256 bytes.
let reportLUNs: [UInt8] = [0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]

/// SAM-5 status codes.
let good: UInt8 = 0x00
let checkCondition: UInt8 = 0x02

/// The LUN numbers in REPORT LUNS parameter data (single level, peripheral device addressing).
func reportedLUNs(_ data: ByteBuffer) -> [UInt64] {
    var data = data
    guard let length = data.readInteger(as: UInt32.self), data.readInteger(as: UInt32.self) != nil else { return [] }
    var luns: [UInt64] = []
    for _ in 0..<(Int(length) / 8) {
        guard let entry = data.readInteger(as: UInt64.self) else { break }
        luns.append((entry >> 48) & 0x3fff)
    }
    return luns
}
