/// SCSI commands and task management requests with tags the caller chooses, several in flight at once: the
/// PDUs of RFC 7143 §11.3 and §11.5 built byte by byte, and what their answers say.

/// Task management function codes (RFC 7143 §11.5.1, RFC 7144 §4.1).
public enum RawTaskManagementFunction: UInt8, Sendable {
    case abortTask = 1
    case abortTaskSet = 2
    case clearACA = 3
    case clearTaskSet = 4
    case logicalUnitReset = 5
    case targetWarmReset = 6
    case targetColdReset = 7
    case taskReassign = 8
    case queryTask = 9
    case queryTaskSet = 10
    case iTNexusReset = 11
    case queryAsynchronousEvent = 12
}

/// A SCSI command on its way: what a task management request needs to refer to it.
public struct RawSentCommand: Sendable {
    public var initiatorTaskTag: UInt32
    public var cmdSN: UInt32
}

extension RawOpcode {
    public static let taskManagementRequest: UInt8 = 0x02
    public static let taskManagementResponse: UInt8 = 0x22
    public static let dataIn: UInt8 = 0x25
    public static let readyToTransfer: UInt8 = 0x31
    public static let asyncMessage: UInt8 = 0x32
}

extension RawPDU {
    /// SCSI Response and Data-In with the S bit: the SCSI status (RFC 7143 §11.4.2, §11.7.3).
    public var scsiStatus: UInt8? {
        switch opcode {
        case RawOpcode.scsiResponse: header[3]
        case RawOpcode.dataIn where flags & 0x01 != 0: header[3]
        default: nil
        }
    }

    /// SCSI Response: the iSCSI response code (0 = Command Completed at Target). Task Management Function
    /// Response: the function's response (0 = Function Complete, RFC 7143 §11.6.1).
    public var response: UInt8 { header[2] }

    /// SCSI Response: the sense data without its two-byte SenseLength (RFC 7143 §11.4.7).
    public var senseData: [UInt8] {
        guard opcode == RawOpcode.scsiResponse, data.count >= 2 else { return [] }
        let length = Int(data[0]) << 8 | Int(data[1])
        return Array(data.dropFirst(2).prefix(length))
    }

    /// Sense key, ASC and ASCQ of the sense data, fixed (70h/71h) or descriptor (72h/73h) format (SPC-4 §4.5).
    public var sense: (key: UInt8, asc: UInt8, ascq: UInt8)? {
        let sense = senseData
        guard let code = sense.first.map({ $0 & 0x7f }) else { return nil }
        if code == 0x70 || code == 0x71, sense.count >= 14 { return (sense[2] & 0x0f, sense[12], sense[13]) }
        if code == 0x72 || code == 0x73, sense.count >= 4 { return (sense[1] & 0x0f, sense[2], sense[3]) }
        return nil
    }
}

extension RawISCSIClient {
    /// The eight-byte LUN field for LUN `lun` below 256 (SAM-5 peripheral device addressing).
    public static func lunField(_ lun: Int) -> [UInt8] {
        [0, UInt8(lun)] + [UInt8](repeating: 0, count: 6)
    }

    /// Sends a SCSI Command (RFC 7143 §11.3), SIMPLE, with CmdSN and the next ITT (or `initiatorTaskTag`).
    /// `write` goes out as immediate data and must be the whole transfer (no R2T is answered); `readLength` is
    /// the expected Data-In length.
    @discardableResult
    public func sendCommand(
        _ cdb: [UInt8], lun: Int = 0, readLength: Int = 0, write: [UInt8] = [], initiatorTaskTag: UInt32? = nil
    ) throws -> RawSentCommand {
        precondition(cdb.count <= 16, "a CDB longer than 16 bytes needs an AHS")
        let tag = initiatorTaskTag ?? nextTaskTag()
        let flags: UInt8 = 0x80 | (readLength > 0 ? 0x40 : 0) | (write.isEmpty ? 0 : 0x20) | 0x01
        var bytes = header(opcode: RawOpcode.scsiCommand, flags: flags, initiatorTaskTag: tag)
        bytes.replaceSubrange(8..<16, with: Self.lunField(lun))
        Self.put(UInt32(max(readLength, write.count)), into: &bytes, at: 20)
        bytes.replaceSubrange(32..<32 + cdb.count, with: cdb)
        let sent = RawSentCommand(initiatorTaskTag: tag, cmdSN: cmdSN)
        cmdSN &+= 1
        try send(encode(header: bytes, data: write))
        return sent
    }

    /// Sends an immediate Task Management Function Request (RFC 7143 §11.5) and returns its ITT.
    /// `referenced` names the task for ABORT TASK and QUERY TASK (its ITT and CmdSN).
    @discardableResult
    public func sendTaskManagement(
        _ function: RawTaskManagementFunction, lun: Int = 0, referenced: RawSentCommand? = nil
    ) throws -> UInt32 {
        let tag = nextTaskTag()
        var bytes = header(
            opcode: RawOpcode.taskManagementRequest, immediate: true, flags: 0x80 | function.rawValue,
            initiatorTaskTag: tag)
        bytes.replaceSubrange(8..<16, with: Self.lunField(lun))
        Self.put(referenced?.initiatorTaskTag ?? 0xffff_ffff, into: &bytes, at: 20)
        Self.put(referenced?.cmdSN ?? cmdSN, into: &bytes, at: 32)
        try send(encode(header: bytes))
        return tag
    }

    /// READ(10) (SBC-4 §5.16).
    public static func read10(lba: UInt32, blocks: UInt16) -> [UInt8] {
        var cdb = [UInt8](repeating: 0, count: 10)
        cdb[0] = 0x28
        put(lba, into: &cdb, at: 2)
        cdb[7] = UInt8(blocks >> 8)
        cdb[8] = UInt8(blocks & 0xff)
        return cdb
    }

    /// WRITE(10) (SBC-4 §5.39).
    public static func write10(lba: UInt32, blocks: UInt16) -> [UInt8] {
        var cdb = read10(lba: lba, blocks: blocks)
        cdb[0] = 0x2a
        return cdb
    }
}
