import Foundation
import RawISCSI

/// What a SCSI command came back with.
struct RawSCSIOutcome: CustomStringConvertible {
    var status: UInt8
    var data: [UInt8]
    var sense: [UInt8]

    /// Sense key, ASC and ASCQ of fixed or descriptor format sense data; empty without sense data.
    var senseCode: [UInt8] {
        guard let format = sense.first.map({ $0 & 0x7f }) else { return [] }
        if format >= 0x72, sense.count >= 4 { return [sense[1] & 0x0f, sense[2], sense[3]] }
        guard sense.count >= 14 else { return [] }
        return [sense[2] & 0x0f, sense[12], sense[13]]
    }

    var description: String {
        "status 0x\(String(status, radix: 16)), sense \(senseCode.map { String($0, radix: 16) }), \(data.count) bytes"
    }
}

/// CDBs the tests send.
extension [UInt8] {
    static var testUnitReady: [UInt8] { [0x00, 0, 0, 0, 0, 0] }
    static var inquiry: [UInt8] { [0x12, 0, 0, 0, 96, 0] }
    static var reportLUNs: [UInt8] { [0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0] }
}

extension FerrydProcess {
    /// The ferryctl built next to ferryd.
    static func locateFerryctl() throws -> String {
        URL(fileURLWithPath: try locateFerryd()).deletingLastPathComponent().appendingPathComponent("ferryctl").path
    }
}

extension RawISCSIClient {
    /// Sends a non-immediate SCSI command without Data-Out to `lun` (below 256) and waits for its end: the status,
    /// the Data-In bytes and the sense data.
    func scsi(lun: UInt8, cdb: [UInt8], expectedLength: UInt32 = 4096) throws -> RawSCSIOutcome {
        let tag = nextTaskTag()
        var bytes = header(opcode: RawOpcode.scsiCommand, flags: 0xc0, initiatorTaskTag: tag)
        cmdSN &+= 1
        bytes[9] = lun
        Self.put(expectedLength, into: &bytes, at: 20)
        for (index, byte) in cdb.enumerated() { bytes[32 + index] = byte }
        try send(encode(header: bytes))
        var data: [UInt8] = []
        while true {
            let pdu = try expectPDU()
            guard pdu.initiatorTaskTag == tag else { continue }
            if pdu.opcode == 0x25 {
                data += pdu.data
                if pdu.flags & 0x01 != 0 { return RawSCSIOutcome(status: pdu.header[3], data: data, sense: []) }
            } else if pdu.opcode == 0x21 {
                let length = pdu.data.count >= 2 ? Int(pdu.data[0]) << 8 | Int(pdu.data[1]) : 0
                return RawSCSIOutcome(
                    status: pdu.header[3], data: data, sense: Array(pdu.data.dropFirst(2).prefix(length)))
            } else {
                throw IntegrationFailure("a SCSI command answered with opcode 0x\(String(pdu.opcode, radix: 16))")
            }
        }
    }

    /// Sends a SCSI command to LUN 0 with `write` as immediate data (the whole Data-Out buffer) and waits for its
    /// end: the status, Data-In and sense data.
    func command(_ cdb: [UInt8], write: [UInt8]) throws -> RawSCSIOutcome {
        let sent = try sendCommand(cdb, write: write)
        var data: [UInt8] = []
        while true {
            let pdu = try expectPDU()
            guard pdu.initiatorTaskTag == sent.initiatorTaskTag else { continue }
            switch pdu.opcode {
            case RawOpcode.dataIn:
                data += pdu.data
                if let status = pdu.scsiStatus { return RawSCSIOutcome(status: status, data: data, sense: []) }
            case RawOpcode.scsiResponse:
                return RawSCSIOutcome(status: pdu.header[3], data: data, sense: pdu.senseData)
            default:
                throw IntegrationFailure("a SCSI command answered with opcode 0x\(String(pdu.opcode, radix: 16))")
            }
        }
    }

    /// The NAA designator of LUN 0 (Device Identification VPD page, designator type 3 associated with the logical
    /// unit).
    func logicalUnitDesignator() throws -> [UInt8] {
        let page = try scsi(lun: 0, cdb: [0x12, 0x01, 0x83, 0, 255, 0]).data
        var offset = 4
        while offset + 4 <= page.count {
            let length = Int(page[offset + 3])
            if page[offset + 1] & 0x0f == 0x03, page[offset + 1] & 0x30 == 0, offset + 4 + length <= page.count {
                return Array(page[(offset + 4)..<(offset + 4 + length)])
            }
            offset += 4 + length
        }
        throw IntegrationFailure("no NAA designator of the logical unit in VPD page 83h: \(page)")
    }
}
