import FerryBackends
import FerrySync
import ISCSIProtocol
import Metrics
import NIOCore
import SCSI

/// The metrics of one logical unit (swift-metrics; exported by ferryd when `[metrics]` is set),
/// created once when the LUN opens.
struct LogicalUnitMetrics: Sendable {
    let reads: Counter
    let writes: Counter
    let readBytes: Counter
    let writtenBytes: Counter
    let readLatency: Metrics.Timer
    let writeLatency: Metrics.Timer
    let otherCommands: Counter
    let errors: Counter
    let aborted: Counter

    init(target: String, lun: UInt64) {
        let labels = [("target", target), ("lun", "\(lun)")]
        reads = Counter(label: "ferry_lun_reads_total", dimensions: labels)
        writes = Counter(label: "ferry_lun_writes_total", dimensions: labels)
        readBytes = Counter(label: "ferry_lun_read_bytes_total", dimensions: labels)
        writtenBytes = Counter(label: "ferry_lun_written_bytes_total", dimensions: labels)
        readLatency = Metrics.Timer(label: "ferry_lun_read_duration_seconds", dimensions: labels)
        writeLatency = Metrics.Timer(label: "ferry_lun_write_duration_seconds", dimensions: labels)
        otherCommands = Counter(label: "ferry_lun_other_commands_total", dimensions: labels)
        errors = Counter(label: "ferry_lun_errors_total", dimensions: labels)
        aborted = Counter(label: "ferry_lun_aborted_commands_total", dimensions: labels)
    }
}

/// A backend that counts and times the commands that pass through it, then forwards everything.
final class MeteredBackend: LogicalUnitBackend {
    let base: any LogicalUnitBackend
    private let metrics: LogicalUnitMetrics

    init(_ base: any LogicalUnitBackend, metrics: LogicalUnitMetrics) {
        self.base = base
        self.metrics = metrics
    }

    private enum Direction {
        case read, write, other
    }

    /// READ and WRITE (6, 10, 12, 16) and the write variants (SBC-4 §5); the rest is "other".
    private static func direction(of cdb: ByteBuffer) -> Direction {
        switch cdb.getInteger(at: cdb.readerIndex, as: UInt8.self) {
        case 0x08?, 0x28?, 0xa8?, 0x88?: .read
        case 0x0a?, 0x2a?, 0xaa?, 0x8a?, 0x2e?, 0x8e?: .write
        default: .other
        }
    }

    var kind: String { base.kind }
    var taskAbortedStatus: Bool { base.taskAbortedStatus }

    func dataOutLength(for cdb: ByteBuffer) -> Int? { base.dataOutLength(for: cdb) }

    func submit(
        _ request: SCSIRequest, tag: BackendTaskTag, completion: @escaping @Sendable (BackendCompletion) -> Void
    ) {
        let direction = Self.direction(of: request.cdb)
        let written = request.dataOut.readableBytes
        let start = NIODeadline.now()
        let metrics = self.metrics
        base.submit(request, tag: tag) { outcome in
            switch outcome {
            case .completed(let result):
                let nanoseconds = (NIODeadline.now() - start).nanoseconds
                switch direction {
                case .read:
                    metrics.reads.increment()
                    metrics.readBytes.increment(by: result.dataIn.readableBytes)
                    metrics.readLatency.recordNanoseconds(nanoseconds)
                case .write:
                    metrics.writes.increment()
                    if result.status == .good { metrics.writtenBytes.increment(by: written) }
                    metrics.writeLatency.recordNanoseconds(nanoseconds)
                case .other:
                    metrics.otherCommands.increment()
                }
                if result.status != .good && result.status != .conditionMet { metrics.errors.increment() }
            case .terminated:
                metrics.aborted.increment()
            }
            completion(outcome)
        }
    }

    func terminate(_ tag: BackendTaskTag) { base.terminate(tag) }

    func pendingUnitAttention(for nexus: ITNexus) -> (senseKey: SenseKey, code: AdditionalSenseCode)? {
        base.pendingUnitAttention(for: nexus)
    }

    func apply(_ event: LogicalUnitEvent) { base.apply(event) }

    func shutdown() { base.shutdown() }

    var maximumTransferLength: Int? { base.maximumTransferLength }

    var deviceTarget: String? { base.deviceTarget }

    var unitAttentionConditions: UnitAttentionConditions? { base.unitAttentionConditions }

    var copyEndpoint: CopyEndpoint? { base.copyEndpoint }

    func resetDevice(
        _ reset: DeviceReset, siblings: [any LogicalUnitBackend], completion: @escaping @Sendable () -> Void
    ) {
        base.resetDevice(reset, siblings: siblings.map { ($0 as? MeteredBackend)?.base ?? $0 }, completion: completion)
    }
}

/// Login outcomes: successes per target, failures by reason (the target is not known for
/// every failure: a misspelt name, a failed discovery login).
enum LoginMetrics {
    static func succeeded(target: String) {
        Counter(label: "ferry_login_successes_total", dimensions: [("target", target)]).increment()
    }

    /// Counts a Login Response with a non-zero status (RFC 7143 §11.13.5).
    static func failed(statusClass: UInt8, statusDetail: UInt8) {
        Counter(label: "ferry_login_failures_total", dimensions: [("reason", reason(statusClass, statusDetail))])
            .increment()
    }

    static func reason(_ statusClass: UInt8, _ statusDetail: UInt8) -> String {
        switch (statusClass, statusDetail) {
        case (2, 0x01): "authentication_failure"
        case (2, 0x02): "authorization_failure"
        case (2, 0x03), (2, 0x04): "target_not_found"
        case (2, 0x05): "target_removed"
        case (2, 0x0a): "session_does_not_exist"
        case (2, 0x06): "unsupported_version"
        case (2, 0x07): "too_many_connections"
        case (2, 0x0b), (2, 0x0c): "invalid_request"
        case (2, _): "initiator_error"
        case (3, 0x01): "service_unavailable"
        case (3, 0x02): "out_of_resources"
        default: "target_error"
        }
    }
}

/// Sessions per target, as a gauge kept by the session registry.
enum SessionMetrics {
    static func record(target: String, sessions: Int) {
        Gauge(label: "ferry_target_sessions", dimensions: [("target", target)]).record(sessions)
    }
}

/// Task management functions answered, by target, logical unit, function and response: the
/// counters ferryctl shows, and the Prometheus counter `ferry_task_management_functions_total`.
final class TaskManagementCounters: Sendable {
    struct Key: Hashable, Sendable {
        var target: String
        var lun: UInt64
        var function: String
        var response: String
    }

    private let counts = Locked<[Key: Int]>([:])

    func record(_ key: Key) {
        counts.withLock { $0[key, default: 0] += 1 }
        Counter(
            label: "ferry_task_management_functions_total",
            dimensions: [
                ("target", key.target), ("lun", "\(key.lun)"), ("function", key.function), ("response", key.response),
            ]
        ).increment()
    }

    var snapshot: [Key: Int] { counts.withLock { $0 } }
}
