/// Operation codes of the commands the emulated block device knows (SPC-4 annex D, SBC-4 §5).
public enum OperationCode {
    public static let testUnitReady: UInt8 = 0x00
    public static let requestSense: UInt8 = 0x03
    public static let read6: UInt8 = 0x08
    public static let write6: UInt8 = 0x0a
    public static let inquiry: UInt8 = 0x12
    public static let modeSelect6: UInt8 = 0x15
    public static let reserve6: UInt8 = 0x16
    public static let release6: UInt8 = 0x17
    public static let modeSense6: UInt8 = 0x1a
    public static let startStopUnit: UInt8 = 0x1b
    public static let preventAllowMediumRemoval: UInt8 = 0x1e
    public static let readCapacity10: UInt8 = 0x25
    public static let read10: UInt8 = 0x28
    public static let write10: UInt8 = 0x2a
    public static let writeAndVerify10: UInt8 = 0x2e
    public static let verify10: UInt8 = 0x2f
    public static let preFetch10: UInt8 = 0x34
    public static let synchronizeCache10: UInt8 = 0x35
    public static let readDefectData10: UInt8 = 0x37
    public static let writeSame10: UInt8 = 0x41
    public static let unmap: UInt8 = 0x42
    public static let sanitize: UInt8 = 0x48
    public static let modeSelect10: UInt8 = 0x55
    public static let reserve10: UInt8 = 0x56
    public static let release10: UInt8 = 0x57
    public static let modeSense10: UInt8 = 0x5a
    public static let persistentReserveIn: UInt8 = 0x5e
    public static let persistentReserveOut: UInt8 = 0x5f
    public static let extendedCopy: UInt8 = 0x83
    public static let receiveCopyResults: UInt8 = 0x84
    public static let read16: UInt8 = 0x88
    public static let compareAndWrite: UInt8 = 0x89
    public static let write16: UInt8 = 0x8a
    public static let orWrite16: UInt8 = 0x8b
    public static let writeAndVerify16: UInt8 = 0x8e
    public static let verify16: UInt8 = 0x8f
    public static let preFetch16: UInt8 = 0x90
    public static let synchronizeCache16: UInt8 = 0x91
    public static let writeSame16: UInt8 = 0x93
    public static let writeAtomic16: UInt8 = 0x9c
    public static let serviceActionIn16: UInt8 = 0x9e
    public static let reportLUNs: UInt8 = 0xa0
    public static let maintenanceIn: UInt8 = 0xa3
    public static let read12: UInt8 = 0xa8
    public static let write12: UInt8 = 0xaa
    public static let writeAndVerify12: UInt8 = 0xae
    public static let verify12: UInt8 = 0xaf
    public static let readDefectData12: UInt8 = 0xb7
}

/// Service actions of the SERVICE ACTION IN(16), MAINTENANCE IN and SANITIZE operation codes.
public enum ServiceAction {
    public static let readCapacity16: UInt8 = 0x10
    public static let getLBAStatus: UInt8 = 0x12
    public static let reportSupportedOperationCodes: UInt8 = 0x0c
    public static let reportSupportedTaskManagementFunctions: UInt8 = 0x0d
    /// REPORT TARGET PORT GROUPS (MAINTENANCE IN, SPC-4 §6.36).
    public static let reportTargetPortGroups: UInt8 = 0x0a
    public static let sanitizeOverwrite: UInt8 = 0x01
    public static let sanitizeBlockErase: UInt8 = 0x02
    public static let sanitizeCryptographicErase: UInt8 = 0x03
    public static let sanitizeExitFailureMode: UInt8 = 0x1f
}

/// One command the device server supports, as REPORT SUPPORTED OPERATION CODES describes it
/// (SPC-4 §6.35): the operation code, the service action if the operation code has them, and
/// the CDB usage data.
package struct SupportedCommand: Sendable {
    package var operationCode: UInt8
    package var serviceAction: UInt8?
    /// > The first byte of the CDB USAGE DATA field shall contain the operation code […] If the
    /// > command contains a service action, then that service action code shall be placed in the
    /// > CDB USAGE DATA field in the same location as the SERVICE ACTION field of the command CDB.
    /// > All other bytes of the CDB USAGE DATA field shall contain a usage map for bits in the CDB.
    package var usageData: [UInt8]

    /// The first bit set in `cdb` outside the usage map, as (byte, bit), for the field pointer
    /// of INVALID FIELD IN CDB. The operation code and service action bits are not checked.
    package func firstReservedBitSet(in cdb: CDB) -> (byte: Int, bit: Int)? {
        for (index, usage) in usageData.enumerated() {
            let permitted =
                switch index {
                case 0: UInt8(0xff)
                case 1 where serviceAction != nil: usage | 0x1f
                default: usage
                }
            let stray = cdb[index] & ~permitted
            if stray != 0 { return (index, 7 - stray.leadingZeroBitCount) }
        }
        return nil
    }

    /// The recommended command timeout reported in the command timeouts descriptor, in seconds.
    package static let recommendedTimeout: UInt32 = 30
}

extension SupportedCommand {
    private static func cdb6(_ op: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8, _ b4: UInt8) -> Self {
        SupportedCommand(operationCode: op, serviceAction: nil, usageData: [op, b1, b2, b3, b4, 0x00])
    }

    /// A 10-byte CDB of the common SBC shape: flags in byte 1, LBA in bytes 2-5, GROUP NUMBER in
    /// byte 6, TRANSFER LENGTH in bytes 7-8.
    private static func lba10(_ op: UInt8, flags: UInt8) -> Self {
        SupportedCommand(
            operationCode: op, serviceAction: nil,
            usageData: [op, flags, 0xff, 0xff, 0xff, 0xff, 0x3f, 0xff, 0xff, 0x00])
    }

    /// A 12-byte SBC CDB: LBA in bytes 2-5, TRANSFER LENGTH in bytes 6-9, GROUP NUMBER in byte 10.
    private static func lba12(_ op: UInt8, flags: UInt8) -> Self {
        SupportedCommand(
            operationCode: op, serviceAction: nil,
            usageData: [op, flags, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f, 0x00])
    }

    /// A 16-byte SBC CDB: LBA in bytes 2-9, TRANSFER LENGTH in bytes 10-13, GROUP NUMBER in byte 14.
    private static func lba16(_ op: UInt8, flags: UInt8) -> Self {
        SupportedCommand(
            operationCode: op, serviceAction: nil,
            usageData: [op, flags] + [UInt8](repeating: 0xff, count: 12) + [0x3f, 0x00])
    }

    /// RDPROTECT/WRPROTECT (checked, must be zero), DPO and FUA.
    private static let protectDPOFUA: UInt8 = 0xf8
    /// VRPROTECT, DPO, BYTCHK (2 bits).
    private static let verifyFlags: UInt8 = 0xf6
    /// WRPROTECT, DPO, BYTCHK (1 bit).
    private static let writeAndVerifyFlags: UInt8 = 0xf2

    /// Every command of the emulated block device, in operation code order. UNMAP and SANITIZE
    /// BLOCK ERASE are included only when the store can deallocate.
    /// - Parameter targetPortGroups: REPORT TARGET PORT GROUPS is supported (the logical unit reports TPGS 01b).
    package static func all(unmap: Bool, targetPortGroups: Bool = false) -> [SupportedCommand] {
        var commands: [SupportedCommand] = [
            cdb6(OperationCode.testUnitReady, 0, 0, 0, 0),
            cdb6(OperationCode.requestSense, 0x01, 0, 0, 0xff),
            cdb6(OperationCode.read6, 0x1f, 0xff, 0xff, 0xff),
            cdb6(OperationCode.write6, 0x1f, 0xff, 0xff, 0xff),
            cdb6(OperationCode.inquiry, 0x01, 0xff, 0xff, 0xff),
            cdb6(OperationCode.modeSelect6, 0x11, 0, 0, 0xff),
            cdb6(OperationCode.reserve6, 0, 0, 0, 0),
            cdb6(OperationCode.release6, 0, 0, 0, 0),
            cdb6(OperationCode.modeSense6, 0x08, 0xff, 0xff, 0xff),
            cdb6(OperationCode.startStopUnit, 0x01, 0, 0x0f, 0xf7),
            cdb6(OperationCode.preventAllowMediumRemoval, 0, 0, 0, 0x03),
            SupportedCommand(
                operationCode: OperationCode.readCapacity10, serviceAction: nil,
                usageData: [OperationCode.readCapacity10, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0]),
            lba10(OperationCode.read10, flags: protectDPOFUA),
            lba10(OperationCode.write10, flags: protectDPOFUA),
            lba10(OperationCode.writeAndVerify10, flags: writeAndVerifyFlags),
            lba10(OperationCode.verify10, flags: verifyFlags),
            lba10(OperationCode.preFetch10, flags: 0x02),
            lba10(OperationCode.synchronizeCache10, flags: 0x02),
            SupportedCommand(
                operationCode: OperationCode.readDefectData10, serviceAction: nil,
                usageData: [OperationCode.readDefectData10, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0]),
            lba10(OperationCode.writeSame10, flags: 0xe8),
        ]
        if unmap {
            commands.append(
                SupportedCommand(
                    operationCode: OperationCode.unmap, serviceAction: nil,
                    usageData: [OperationCode.unmap, 0, 0, 0, 0, 0, 0x3f, 0xff, 0xff, 0]))
        }
        var sanitizeActions = [ServiceAction.sanitizeOverwrite, ServiceAction.sanitizeExitFailureMode]
        if unmap { sanitizeActions.insert(ServiceAction.sanitizeBlockErase, at: 1) }
        for action in sanitizeActions {
            commands.append(
                SupportedCommand(
                    operationCode: OperationCode.sanitize, serviceAction: action,
                    usageData: [OperationCode.sanitize, 0xa0 | action, 0, 0, 0, 0, 0, 0xff, 0xff, 0]))
        }
        commands += [
            SupportedCommand(
                operationCode: OperationCode.modeSelect10, serviceAction: nil,
                usageData: [OperationCode.modeSelect10, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0]),
            SupportedCommand(
                operationCode: OperationCode.reserve10, serviceAction: nil,
                usageData: [OperationCode.reserve10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            SupportedCommand(
                operationCode: OperationCode.release10, serviceAction: nil,
                usageData: [OperationCode.release10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            SupportedCommand(
                operationCode: OperationCode.modeSense10, serviceAction: nil,
                usageData: [OperationCode.modeSense10, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0]),
        ]
        // PERSISTENT RESERVE IN: READ KEYS, READ RESERVATION, REPORT CAPABILITIES, READ FULL STATUS.
        for action: UInt8 in 0...3 {
            commands.append(
                SupportedCommand(
                    operationCode: OperationCode.persistentReserveIn, serviceAction: action,
                    usageData: [OperationCode.persistentReserveIn, action, 0, 0, 0, 0, 0, 0xff, 0xff, 0]))
        }
        // PERSISTENT RESERVE OUT: REGISTER through REGISTER AND IGNORE EXISTING KEY.
        for action: UInt8 in 0...6 {
            commands.append(
                SupportedCommand(
                    operationCode: OperationCode.persistentReserveOut, serviceAction: action,
                    usageData: [OperationCode.persistentReserveOut, action, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0]))
        }
        commands.append(
            SupportedCommand(
                operationCode: OperationCode.extendedCopy, serviceAction: 0x00,
                usageData: [OperationCode.extendedCopy, 0x00] + [UInt8](repeating: 0, count: 8)
                    + [0xff, 0xff, 0xff, 0xff, 0, 0]))
        // RECEIVE COPY RESULTS: COPY STATUS, OPERATING PARAMETERS, FAILED SEGMENT DETAILS (LID1).
        for action: UInt8 in [0x00, 0x03, 0x04] {
            commands.append(
                SupportedCommand(
                    operationCode: OperationCode.receiveCopyResults, serviceAction: action,
                    usageData: [OperationCode.receiveCopyResults, action, 0xff] + [UInt8](repeating: 0, count: 7)
                        + [0xff, 0xff, 0xff, 0xff, 0, 0]))
        }
        commands += [
            lba16(OperationCode.read16, flags: protectDPOFUA),
            SupportedCommand(
                operationCode: OperationCode.compareAndWrite, serviceAction: nil,
                usageData: [OperationCode.compareAndWrite, protectDPOFUA] + [UInt8](repeating: 0xff, count: 8)
                    + [0, 0, 0, 0xff, 0x3f, 0]),
            lba16(OperationCode.write16, flags: protectDPOFUA),
            lba16(OperationCode.orWrite16, flags: protectDPOFUA),
            lba16(OperationCode.writeAndVerify16, flags: writeAndVerifyFlags),
            lba16(OperationCode.verify16, flags: verifyFlags),
            lba16(OperationCode.preFetch16, flags: 0x02),
            lba16(OperationCode.synchronizeCache16, flags: 0x02),
            lba16(OperationCode.writeSame16, flags: 0xe9),
            lba16(OperationCode.writeAtomic16, flags: protectDPOFUA),
            SupportedCommand(
                operationCode: OperationCode.serviceActionIn16, serviceAction: ServiceAction.readCapacity16,
                usageData: [OperationCode.serviceActionIn16, ServiceAction.readCapacity16]
                    + [UInt8](repeating: 0, count: 8) + [0xff, 0xff, 0xff, 0xff, 0, 0]),
            SupportedCommand(
                operationCode: OperationCode.serviceActionIn16, serviceAction: ServiceAction.getLBAStatus,
                usageData: [OperationCode.serviceActionIn16, ServiceAction.getLBAStatus]
                    + [UInt8](repeating: 0xff, count: 12) + [0, 0]),
            SupportedCommand(
                operationCode: OperationCode.reportLUNs, serviceAction: nil,
                usageData: [OperationCode.reportLUNs, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0]),
            SupportedCommand(
                operationCode: OperationCode.maintenanceIn, serviceAction: ServiceAction.reportSupportedOperationCodes,
                usageData: [
                    OperationCode.maintenanceIn, ServiceAction.reportSupportedOperationCodes, 0x87, 0xff, 0xff, 0xff,
                    0xff, 0xff, 0xff, 0xff, 0, 0,
                ]),
            SupportedCommand(
                operationCode: OperationCode.maintenanceIn,
                serviceAction: ServiceAction.reportSupportedTaskManagementFunctions,
                usageData: [
                    OperationCode.maintenanceIn, ServiceAction.reportSupportedTaskManagementFunctions, 0x80, 0, 0, 0,
                    0xff, 0xff, 0xff, 0xff, 0, 0,
                ]),
            lba12(OperationCode.read12, flags: protectDPOFUA),
            lba12(OperationCode.write12, flags: protectDPOFUA),
            lba12(OperationCode.writeAndVerify12, flags: writeAndVerifyFlags),
            lba12(OperationCode.verify12, flags: verifyFlags),
            SupportedCommand(
                operationCode: OperationCode.readDefectData12, serviceAction: nil,
                usageData: [OperationCode.readDefectData12, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0]),
        ]
        if targetPortGroups {
            commands.append(
                SupportedCommand(
                    operationCode: OperationCode.maintenanceIn, serviceAction: ServiceAction.reportTargetPortGroups,
                    usageData: [
                        OperationCode.maintenanceIn, 0xe0 | ServiceAction.reportTargetPortGroups, 0, 0, 0, 0,
                        0xff, 0xff, 0xff, 0xff, 0, 0,
                    ]))
        }
        return commands
    }
}
