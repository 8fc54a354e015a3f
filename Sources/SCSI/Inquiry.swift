public import NIOCore

/// INQUIRY data (SPC-4 §6.6) and the vital product data pages (SPC-4 §7.8, SBC-4 §6.6) of the
/// emulated block device.
public enum Inquiry {
    /// The answer to INQUIRY for a LUN with no logical unit behind it:
    /// > PERIPHERAL QUALIFIER 011b: The device server is not capable of supporting a peripheral
    /// > device on this logical unit. For this peripheral qualifier the peripheral device type shall
    /// > be set to 1Fh.
    public static func logicalUnitNotPresent(cdb: ByteBuffer) -> SCSIResult {
        let cdb = CDB(cdb)
        let allocationLength = Int(cdb.uint16(at: 3))
        guard cdb[1] & 0x02 == 0 else { return .checkCondition(.invalidFieldInCDB(byte: 1, bit: 1)) }
        if cdb[1] & 0x01 != 0 {
            return .dataIn([0x7f, cdb[2], 0, 0], allocationLength: allocationLength)
        }
        guard cdb[2] == 0 else { return .checkCondition(.invalidFieldInCDB(byte: 2)) }
        var data = [UInt8](repeating: 0, count: 36)
        data[0] = 0x7f
        data[2] = 0x06
        data[3] = 0x02
        data[4] = UInt8(data.count - 5)
        return .dataIn(data, allocationLength: allocationLength)
    }

    /// Version descriptors (SPC-4 table 146): SAM-5, iSCSI, SPC-4, SBC-3.
    static let versionDescriptors: [UInt16] = [0x00a0, 0x0960, 0x0460, 0x04c0]

    /// The standard INQUIRY data of a direct access block device; with `implicitTargetPortGroups`, TPGS 01b
    /// (implicit asymmetric logical unit access, SPC-4 §5.15).
    package static func standardData(
        vendor: String, product: String, revision: String, implicitTargetPortGroups: Bool = false
    ) -> [UInt8] {
        var data: [UInt8] = [
            0x00,  // PERIPHERAL QUALIFIER 000b, PERIPHERAL DEVICE TYPE 00h (direct access block device)
            0x00,  // RMB 0: not removable
            0x06,  // VERSION: SPC-4
            0x12,  // HISUP 1, RESPONSE DATA FORMAT 2
            0x00,  // ADDITIONAL LENGTH, set below
            implicitTargetPortGroups ? 0x18 : 0x08,  // TPGS; 3PC: third-party copy (EXTENDED COPY) supported
            0x00,
            0x02,  // CMDQUE
        ]
        data.appendASCII(vendor, width: 8)
        data.appendASCII(product, width: 16)
        data.appendASCII(revision, width: 4)
        data += [UInt8](repeating: 0, count: 58 - data.count)
        for descriptor in versionDescriptors { data.appendBigEndian(descriptor) }
        data += [UInt8](repeating: 0, count: 96 - data.count)
        data[4] = UInt8(data.count - 5)
        return data
    }

    /// A VPD page: the four-byte header for page `code` followed by `payload`.
    package static func vpdPage(_ code: UInt8, _ payload: [UInt8]) -> [UInt8] {
        var page: [UInt8] = [0x00, code]
        page.appendBigEndian(UInt16(payload.count))
        return page + payload
    }

    /// One designation descriptor of the Device Identification VPD page (SPC-4 §7.8.6.1).
    static func designator(
        codeSet: UInt8, association: UInt8, type: UInt8, protocolIdentifier: UInt8? = nil, _ value: [UInt8]
    ) -> [UInt8] {
        var descriptor: [UInt8] = [
            (protocolIdentifier ?? 0) << 4 | codeSet,
            (protocolIdentifier == nil ? 0 : 0x80) | association << 4 | type,
            0x00,
            UInt8(value.count),
        ]
        descriptor += value
        return descriptor
    }

    /// The iSCSI protocol identifier (SPC-4 table 362).
    static let iSCSIProtocolIdentifier: UInt8 = 0x5

    /// A SCSI name string designator value: UTF-8, null terminated and padded to a multiple of four.
    static func scsiNameString(_ name: String) -> [UInt8] {
        var value = Array(name.utf8.prefix(251)) + [0]
        while value.count % 4 != 0 { value.append(0) }
        return value
    }

    /// Device Identification VPD page (83h) designators: the NAA and T10 vendor ID designators of
    /// the logical unit, the relative target port, the target port group (`targetPortGroup`, when the logical unit
    /// reports target port groups) and the SCSI name strings of the target port and of the target device.
    package static func deviceIdentificationPage(
        naa: [UInt8], vendor: String, serial: String, nexus: ITNexus, targetPortGroup: UInt16? = nil
    ) -> [UInt8] {
        var payload = designator(codeSet: 1, association: 0, type: 3, naa)
        var t10: [UInt8] = []
        t10.appendASCII(vendor, width: 8)
        t10 += Array(serial.utf8)
        payload += designator(codeSet: 2, association: 0, type: 1, t10)
        var relativePort: [UInt8] = [0, 0]
        relativePort.appendBigEndian(nexus.relativeTargetPortIdentifier)
        payload += designator(
            codeSet: 1, association: 1, type: 4, protocolIdentifier: iSCSIProtocolIdentifier, relativePort)
        if let targetPortGroup {
            var group: [UInt8] = [0, 0]
            group.appendBigEndian(targetPortGroup)
            payload += designator(codeSet: 1, association: 1, type: 5, group)
        }
        payload += designator(
            codeSet: 3, association: 1, type: 8, protocolIdentifier: iSCSIProtocolIdentifier,
            scsiNameString(nexus.targetPortName))
        // RFC 7143 §4.4.1: the target port name is "<target name>,t,0x<TPGT>".
        if let range = nexus.targetPortName.firstRange(of: ",t,0x") {
            payload += designator(
                codeSet: 3, association: 2, type: 8, protocolIdentifier: iSCSIProtocolIdentifier,
                scsiNameString(String(nexus.targetPortName[..<range.lowerBound])))
        }
        return vpdPage(0x83, payload)
    }
}
