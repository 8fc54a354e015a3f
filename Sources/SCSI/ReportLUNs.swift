public import NIOCore

/// REPORT LUNS (SPC-4 §6.33), answered by the transport, which knows every logical unit of the
/// target the I_T nexus can reach.
public enum ReportLUNs {
    /// The REPORT LUNS parameter data for `luns`, or CHECK CONDITION for an invalid CDB.
    public static func response(luns: [UInt64], cdb: ByteBuffer) -> SCSIResult {
        let cdb = CDB(cdb)
        let allocationLength = Int(cdb.uint32(at: 6))
        // > If the ALLOCATION LENGTH field is less than 16 (i.e., 10h), the device server shall
        // > terminate the command with CHECK CONDITION status with the sense key set to ILLEGAL
        // > REQUEST and the additional sense code set to INVALID FIELD IN CDB.
        guard allocationLength >= 16 else { return .checkCondition(.invalidFieldInCDB(byte: 6)) }
        let reported: [UInt64]
        switch cdb[2] {
        case 0x00, 0x02: reported = luns.sorted()
        case 0x01: reported = []  // No well known logical units.
        default: return .checkCondition(.invalidFieldInCDB(byte: 2))
        }
        var data: [UInt8] = []
        data.reserveCapacity(8 + 8 * reported.count)
        data.appendBigEndian(UInt32(8 * reported.count))
        data.appendBigEndian(UInt32(0))
        for lun in reported { data += encode(lun) }
        return .dataIn(data, allocationLength: allocationLength)
    }

    /// The eight-byte single level LUN structure (SAM-5 §4.7.2): peripheral device addressing for
    /// LUNs below 256, flat space addressing up to 16383.
    public static func encode(_ lun: UInt64) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 8)
        if lun < 256 {
            bytes[1] = UInt8(lun)
        } else {
            bytes[0] = 0x40 | UInt8((lun >> 8) & 0x3f)
            bytes[1] = UInt8(lun & 0xff)
        }
        return bytes
    }
}
