import NIOCore
import SCSI

/// SPC-4 commands of the emulated block device: INQUIRY and VPD pages, REQUEST SENSE, MODE
/// SENSE/SELECT, REPORT SUPPORTED OPERATION CODES and TASK MANAGEMENT FUNCTIONS, power commands.
extension EmulatedBlockDevice {
    func testUnitReady() throws(SenseData) -> SCSIResult {
        try checkMediumAccess()
        return .good
    }

    /// REQUEST SENSE (SPC-4 §6.39): a pending unit attention is reported and cleared; otherwise
    /// NO SENSE.
    func requestSense(_ cdb: CDB, nexus: ITNexus) -> SCSIResult {
        let descriptorFormat = cdb[1] & 0x01 != 0
        let sense: SenseData
        let inProgress = sanitizeInProgressSense()
        let failed = state.withLock { $0.sanitizeFailed }
        if let code = unitAttentions.take(for: nexus) {
            sense = SenseData(.unitAttention, code)
        } else if let inProgress {
            sense = inProgress
        } else if failed {
            sense = SenseData(.mediumError, .sanitizeCommandFailed)
        } else {
            sense = SenseData(.noSense, .noAdditionalSenseInformation)
        }
        return .dataIn(sense.bytes(descriptorFormat: descriptorFormat), allocationLength: Int(cdb[4]))
    }

    /// INQUIRY (SPC-4 §6.6): standard data or a VPD page.
    func inquiry(_ cdb: CDB, nexus: ITNexus) throws(SenseData) -> SCSIResult {
        let allocationLength = Int(cdb.uint16(at: 3))
        guard cdb[1] & 0x01 != 0 else {
            // > If the EVPD bit is set to zero and the PAGE CODE field is not set to zero, the
            // > device server shall terminate the command […] INVALID FIELD IN CDB.
            guard cdb[2] == 0 else { throw .invalidFieldInCDB(byte: 2) }
            let data = Inquiry.standardData(
                vendor: configuration.vendor, product: configuration.product, revision: configuration.revision,
                implicitTargetPortGroups: asymmetricAccess != nil)
            return .dataIn(data, allocationLength: allocationLength)
        }
        return .dataIn(try vitalProductDataPage(cdb[2], nexus: nexus), allocationLength: allocationLength)
    }

    /// The VPD page codes supported, in ascending order.
    var supportedVPDPages: [UInt8] { [0x00, 0x80, 0x83, 0x8f, 0xb0, 0xb1, 0xb2] }

    func vitalProductDataPage(_ code: UInt8, nexus: ITNexus) throws(SenseData) -> [UInt8] {
        switch code {
        case 0x00:
            return Inquiry.vpdPage(code, supportedVPDPages)
        case 0x80:
            return Inquiry.vpdPage(code, Array(serial.utf8))
        case 0x83:
            // A gateway's target port group is its portal group tag, its relative target port identifier too.
            return Inquiry.deviceIdentificationPage(
                naa: naa, vendor: configuration.vendor, serial: serial, nexus: nexus,
                targetPortGroup: asymmetricAccess.map { _ in nexus.relativeTargetPortIdentifier })
        case 0x8f:
            return CopyManager.thirdPartyCopyVPDPage()
        case 0xb0:
            return blockLimitsPage()
        case 0xb1:
            return blockDeviceCharacteristicsPage()
        case 0xb2:
            return logicalBlockProvisioningPage()
        default:
            throw .invalidFieldInCDB(byte: 2)
        }
    }

    /// REPORT TARGET PORT GROUPS (SPC-4 §6.36): every gateway's group and state, in the length-only format or, with
    /// PARAMETER DATA FORMAT 001b, the extended header format.
    func reportTargetPortGroups(_ cdb: CDB, _ access: any AsymmetricAccess) throws(SenseData) -> SCSIResult {
        let format = cdb[1] >> 5
        guard format <= 1 else { throw .invalidFieldInCDB(byte: 1, bit: 7) }
        let data = TargetPortGroup.reportData(
            access.targetPortGroups(), extendedHeader: format == 1,
            implicitTransitionSeconds: access.implicitTransitionSeconds)
        return .dataIn(data, allocationLength: Int(cdb.uint32(at: 6)))
    }

    /// Block Limits VPD page (SBC-4 §6.6.4).
    func blockLimitsPage() -> [UInt8] {
        var page = [UInt8](repeating: 0, count: 64)
        page[1] = 0xb0
        page[3] = 0x3c
        // WSNZ is zero: WRITE SAME with NUMBER OF LOGICAL BLOCKS zero writes to the end of the medium.
        page[5] = limits.maximumCompareAndWriteLength
        page.setBigEndian(limits.optimalTransferLengthGranularity, at: 6)
        page.setBigEndian(limits.maximumTransferLength, at: 8)
        page.setBigEndian(limits.maximumTransferLength, at: 12)  // OPTIMAL TRANSFER LENGTH
        page.setBigEndian(limits.maximumTransferLength, at: 16)  // MAXIMUM PREFETCH LENGTH
        if provisioning {
            page.setBigEndian(limits.maximumUnmapLBACount, at: 20)
            page.setBigEndian(limits.maximumUnmapBlockDescriptorCount, at: 24)
            page.setBigEndian(limits.optimalUnmapGranularity, at: 28)
            page[32] = 0x80  // UGAVALID, UNMAP GRANULARITY ALIGNMENT 0
        }
        page.setBigEndian(limits.maximumWriteSameLength, at: 36)
        page.setBigEndian(limits.maximumAtomicTransferLength, at: 44)
        // ATOMIC ALIGNMENT, ATOMIC TRANSFER LENGTH GRANULARITY: no constraint. Atomic boundaries
        // are not supported: MAXIMUM ATOMIC TRANSFER LENGTH WITH ATOMIC BOUNDARY and MAXIMUM
        // ATOMIC BOUNDARY SIZE are zero.
        return page
    }

    /// Block Device Characteristics VPD page (SBC-4 §6.6.2).
    func blockDeviceCharacteristicsPage() -> [UInt8] {
        var page = [UInt8](repeating: 0, count: 64)
        page[1] = 0xb1
        page[3] = 0x3c
        page.setBigEndian(UInt16(1), at: 4)  // MEDIUM ROTATION RATE: non-rotating medium
        // > WABEREQ 01b: a read operation after a sanitize block erase completes with GOOD status
        // > (and data that may be indeterminate).
        if provisioning { page[7] = 0x40 }
        page[8] = 0x01  // VBULS: VERIFY with BYTCHK compares unmapped LBAs
        return page
    }

    /// Logical Block Provisioning VPD page (SBC-4 §6.6.5).
    func logicalBlockProvisioningPage() -> [UInt8] {
        var page = [UInt8](repeating: 0, count: 8)
        page[1] = 0xb2
        page[3] = 0x04
        if provisioning {
            // LBPU, LBPWS, LBPWS10; LBPRZ 001b when deallocated blocks read as zero.
            page[5] = 0xe0 | (store.unmappedReadsZero ? 0x04 : 0x00)
            page[6] = 0x02  // PROVISIONING TYPE: thin provisioned
        }
        return page
    }

    /// MODE SENSE(6) and MODE SENSE(10) (SPC-4 §6.11, §6.12).
    func modeSense(_ cdb: CDB) throws(SenseData) -> SCSIResult {
        let isTen = cdb.operationCode == OperationCode.modeSense10
        let disableBlockDescriptors = cdb[1] & 0x08 != 0
        let longLBA = isTen && cdb[1] & 0x10 != 0
        let control = ModePages.PageControl(rawValue: cdb[2] >> 6)!
        let pages = try state.withLock { state throws(SenseData) in
            try state.modePages.sense(pageCode: cdb[2] & 0x3f, subpageCode: cdb[3], control: control)
        }
        var descriptor: [UInt8] = []
        if !disableBlockDescriptors {
            if longLBA {
                descriptor.appendBigEndian(blockCount)
                descriptor.appendBigEndian(UInt32(0))
                descriptor.appendBigEndian(UInt32(blockSize))
            } else {
                descriptor.appendBigEndian(UInt32(clamping: blockCount))
                descriptor.append(0)
                descriptor.appendBigEndian(UInt32(blockSize), width: 3)
            }
        }
        // > DPOFUA: the device server supports the DPO and FUA bits; WP: write protected.
        let deviceSpecific: UInt8 = (isWriteProtected ? 0x80 : 0) | 0x10
        var data: [UInt8]
        if isTen {
            data = [0, 0, 0, deviceSpecific, longLBA ? 0x01 : 0x00, 0]
            data.appendBigEndian(UInt16(descriptor.count))
            data += descriptor + pages
            data.setBigEndian(UInt16(data.count - 2), at: 0)
            return .dataIn(data, allocationLength: Int(cdb.uint16(at: 7)))
        }
        data = [0, 0, deviceSpecific, UInt8(descriptor.count)] + descriptor + pages
        data[0] = UInt8(data.count - 1)
        return .dataIn(data, allocationLength: Int(cdb[4]))
    }

    /// MODE SELECT(6) and MODE SELECT(10) (SPC-4 §6.9, §6.10).
    func modeSelect(_ cdb: CDB, _ request: SCSIRequest) throws(SenseData) -> SCSIResult {
        let isTen = cdb.operationCode == OperationCode.modeSelect10
        // > A save pages (SP) bit set to one specifies that the device server shall […] save all
        // > savable pages. If the logical unit does not implement saved pages and the SP bit is
        // > set to one, then the command shall be terminated […] INVALID FIELD IN CDB.
        guard cdb[1] & 0x01 == 0 else { throw .invalidFieldInCDB(byte: 1, bit: 0) }
        let listLength = isTen ? Int(cdb.uint16(at: 7)) : Int(cdb[4])
        guard listLength > 0 else { return .good }
        let available = min(listLength, request.dataOut.readableBytes)
        let list = request.dataOut.getBytes(at: request.dataOut.readerIndex, length: available) ?? []
        let headerLength = isTen ? 8 : 4
        guard list.count >= headerLength else { throw .parameterListLengthError }
        let descriptorLength = isTen ? Int(UInt16(list[6]) << 8 | UInt16(list[7])) : Int(list[3])
        guard headerLength + descriptorLength <= list.count else { throw .parameterListLengthError }
        let longLBA = isTen && list[4] & 0x01 != 0
        let descriptorSize = longLBA ? 16 : 8
        guard descriptorLength == 0 || descriptorLength == descriptorSize else {
            throw .invalidFieldInParameterList(byte: isTen ? 6 : 3)
        }
        if descriptorLength > 0 {
            // > The BLOCK LENGTH field specifies the length in bytes of each logical block.
            let lengthOffset = headerLength + (longLBA ? 12 : 5)
            let width = longLBA ? 4 : 3
            var length = 0
            for index in lengthOffset..<(lengthOffset + width) { length = length << 8 | Int(list[index]) }
            guard length == blockSize else { throw .invalidFieldInParameterList(byte: lengthOffset) }
        }
        let pagesOffset = headerLength + descriptorLength
        let changed = try state.withLock { state throws(SenseData) in
            try state.modePages.select(list[pagesOffset...], offset: pagesOffset)
        }
        if changed {
            // > the device server shall establish a unit attention condition […] MODE PARAMETERS
            // > CHANGED for the initiator port associated with every I_T nexus except the I_T
            // > nexus on which the MODE SELECT command was received.
            unitAttentions.establishForAllNexuses(.modeParametersChanged, except: request.nexus)
        }
        return .good
    }

    /// START STOP UNIT (SBC-4 §5.25). The medium is always ready; power conditions are accepted
    /// and have no effect.
    func startStopUnit(_ cdb: CDB) throws(SenseData) -> SCSIResult {
        switch cdb[4] >> 4 {
        case 0x0, 0x1, 0x2, 0x3, 0x7, 0xa, 0xb: return .good
        default: throw .invalidFieldInCDB(byte: 4, bit: 7)
        }
    }

    /// REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35).
    func reportSupportedOperationCodes(_ cdb: CDB) throws(SenseData) -> SCSIResult {
        let returnTimeouts = cdb[2] & 0x80 != 0
        let requestedOperationCode = cdb[3]
        let requestedServiceAction = UInt8(truncatingIfNeeded: cdb.uint16(at: 4))
        let allocationLength = Int(cdb.uint32(at: 6))
        let timeouts: [UInt8] = {
            var descriptor: [UInt8] = [0x00, 0x0a, 0x00, 0x00, 0, 0, 0, 0]
            descriptor.appendBigEndian(SupportedCommand.recommendedTimeout)
            return descriptor
        }()
        switch cdb[2] & 0x07 {
        case 0x00:
            var data: [UInt8] = [0, 0, 0, 0]
            for command in supportedCommands {
                data += [command.operationCode, 0]
                data.appendBigEndian(UInt16(command.serviceAction ?? 0))
                data.append(0)
                data.append((returnTimeouts ? 0x02 : 0) | (command.serviceAction == nil ? 0 : 0x01))
                data.appendBigEndian(UInt16(command.usageData.count))
                if returnTimeouts { data += timeouts }
            }
            data.setBigEndian(UInt32(data.count - 4), at: 0)
            return .dataIn(data, allocationLength: allocationLength)
        case let option where option <= 0x03:
            let hasServiceActions = supportedCommands.contains {
                $0.operationCode == requestedOperationCode && $0.serviceAction != nil
            }
            // > 001b: […] If the OPERATION CODE field specifies an operation code for which the
            // > device server implements service actions, the command shall be terminated […]
            // > INVALID FIELD IN CDB. 010b: […] if the operation code does not have service
            // > actions, INVALID FIELD IN CDB.
            if option == 0x01 && hasServiceActions { throw .invalidFieldInCDB(byte: 2, bit: 2) }
            if option == 0x02 && !hasServiceActions && isKnownOperationCode(requestedOperationCode) {
                throw .invalidFieldInCDB(byte: 2, bit: 2)
            }
            let command = supportedCommands.first {
                $0.operationCode == requestedOperationCode
                    && (hasServiceActions ? $0.serviceAction == requestedServiceAction : true)
            }
            guard let command else {
                // > SUPPORT 001b: the device server does not support the requested command.
                return .dataIn([0, 0x01, 0, 0], allocationLength: allocationLength)
            }
            var data: [UInt8] = [0, (returnTimeouts ? 0x80 : 0) | 0x03]
            data.appendBigEndian(UInt16(command.usageData.count))
            data += command.usageData
            if returnTimeouts { data += timeouts }
            return .dataIn(data, allocationLength: allocationLength)
        default:
            throw .invalidFieldInCDB(byte: 2, bit: 2)
        }
    }

    private func isKnownOperationCode(_ operationCode: UInt8) -> Bool {
        supportedCommands.contains { $0.operationCode == operationCode }
    }

    /// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS (SPC-4 §6.36): ABORT TASK, ABORT TASK SET,
    /// CLEAR TASK SET, LOGICAL UNIT RESET, QUERY TASK, TARGET RESET, QUERY ASYNCHRONOUS EVENT,
    /// QUERY TASK SET and I_T NEXUS RESET. CLEAR ACA is not supported (NACA is not).
    func reportSupportedTaskManagementFunctions(_ cdb: CDB) -> SCSIResult {
        let repd = cdb[2] & 0x80 != 0
        // ATS ATSS CACAS CTSS LURS QTS TRS WAKES
        let functions: UInt8 = 0x80 | 0x40 | 0x10 | 0x08 | 0x04 | 0x02
        // QAES QTSS ITNRS
        let queries: UInt8 = 0x04 | 0x02 | 0x01
        var data: [UInt8] = [functions, queries, 0, 0]
        if repd {
            data[3] = 0x0c
            data += [UInt8](repeating: 0, count: 12)
        }
        return .dataIn(data, allocationLength: Int(cdb.uint32(at: 6)))
    }
}
