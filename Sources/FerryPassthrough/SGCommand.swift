internal import CSGUtils
import SCSI
import NIOCore

/// One command on its way to the device, as the sg channels carry it out.
struct SGCommand: Sendable {
    enum Direction: Sendable {
        case none
        /// The Data-Out buffer, sent as it is (no copy in Ferry).
        case toDevice(ByteBuffer)
        /// Room for this many bytes of Data-In.
        case fromDevice(Int)
    }

    /// How the channel hands a command back. Exactly one per command.
    enum Completion: Sendable {
        /// The sg driver returned the request; `dataIn` holds the bytes transferred.
        case finished(SGOutcome, dataIn: ByteBuffer)
        /// The sg driver refused the request (`write()` or SG_IO failed with this errno).
        case refused(errno: Int32)
        /// Terminated: dropped before it reached the device, or returned by the device after
        /// ``LogicalUnitBackend/terminate(_:)`` marked it.
        case terminated
    }

    var tag: BackendTaskTag
    /// The CDB, exactly `cdb.readableBytes` long (6 to 252 bytes).
    var cdb: ByteBuffer
    var direction: Direction
    /// sg_io_hdr.timeout in milliseconds.
    var timeoutMilliseconds: UInt32
    /// Queue at the tail of the device queue (every task attribute but HEAD OF QUEUE).
    var atTail: Bool
    var completion: @Sendable (Completion) -> Void

    /// The largest CDB the sg driver takes (SG_MAX_CDB_SIZE).
    static let maximumCDBLength = 252
    /// The most sense data asked for (SPC-4 allows up to 252; sg copies up to SCSI_SENSE_BUFFERSIZE, 96).
    static let senseBufferLength = 96

    /// An sg_io_hdr for this command, pointing at `cdbBuffer`, `senseBuffer` and `data`.
    func header(
        cdbBuffer: UnsafeMutableRawPointer, senseBuffer: UnsafeMutableRawPointer, data: UnsafeMutableRawPointer?,
        dataLength: Int, packID: Int32
    ) -> sg_io_hdr_t {
        cdb.withUnsafeReadableBytes { cdbBuffer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        var header = sg_io_hdr_t()
        header.interface_id = Int32(UInt8(ascii: "S"))
        switch direction {
        case .none: header.dxfer_direction = SG_DXFER_NONE
        case .toDevice: header.dxfer_direction = SG_DXFER_TO_DEV
        case .fromDevice: header.dxfer_direction = SG_DXFER_FROM_DEV
        }
        header.cmd_len = UInt8(cdb.readableBytes)
        header.mx_sb_len = UInt8(Self.senseBufferLength)
        header.dxfer_len = UInt32(dataLength)
        header.dxferp = data
        header.cmdp = cdbBuffer.assumingMemoryBound(to: UInt8.self)
        header.sbp = senseBuffer.assumingMemoryBound(to: UInt8.self)
        header.timeout = timeoutMilliseconds
        header.flags = atTail ? UInt32(SG_FLAG_Q_AT_TAIL) : 0
        header.pack_id = packID
        return header
    }

    /// The outcome fields of a returned header, with `sb_len_wr` bytes of sense.
    static func outcome(of header: sg_io_hdr_t, senseBuffer: UnsafeRawPointer) -> SGOutcome {
        let senseLength = min(Int(header.sb_len_wr), senseBufferLength)
        return SGOutcome(
            status: header.status, hostStatus: header.host_status, driverStatus: header.driver_status,
            sense: Array(UnsafeRawBufferPointer(start: senseBuffer, count: senseLength)), residual: header.resid,
            duration: header.duration)
    }

    /// The Data-In bytes actually transferred: `dxfer_len - resid`, within bounds.
    static func transferred(dataLength: Int, residual: Int32) -> Int {
        max(0, min(dataLength, dataLength - Int(residual)))
    }
}

/// How an sg channel resets the device (SG_SCSI_RESET, always with NO_ESCALATE so that a failure
/// never spreads to a bus or host reset).
public enum DeviceResetScope: Sendable, Hashable {
    /// SG_SCSI_RESET_DEVICE: the logical unit (LOGICAL UNIT RESET).
    case logicalUnit
    /// SG_SCSI_RESET_TARGET: every logical unit of the device's SCSI target (TARGET WARM RESET).
    case target

    var ioctlValue: Int32 {
        switch self {
        case .logicalUnit: SG_SCSI_RESET_DEVICE | SG_SCSI_RESET_NO_ESCALATE
        case .target: SG_SCSI_RESET_TARGET | SG_SCSI_RESET_NO_ESCALATE
        }
    }
}

/// Carries commands to a device: asynchronously over sg file descriptors, or synchronously
/// through SG_IO on a thread pool.
protocol SGChannel: Sendable {
    func start(_ command: SGCommand)
    /// Terminates the command: a waiting one completes with ``SGCommand/Completion/terminated``
    /// at once, one in the device is marked and completes so when it comes back.
    func terminate(_ tag: BackendTaskTag)
    /// Whether the device holds the command (it was written to sg and has not come back).
    func holds(_ tag: BackendTaskTag) -> Bool
    /// SG_SCSI_RESET; blocks until the kernel's reset handler returns.
    func reset(_ scope: DeviceResetScope) -> Result<Void, SGSystemCallError>
    /// Terminates waiting commands, waits (bounded) for those in the device, and closes the device.
    func shutdown()
}
