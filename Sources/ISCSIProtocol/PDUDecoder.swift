import NIOCore

/// Decodes the fields of one framed PDU.
///
/// Reserved fields and bits are ignored, as RFC 7143 §11.2.1.1 leaves them to be checked by the receiver at its
/// discretion; values that have no meaning (a reserved login stage, task attribute or response code) are rejected
/// with ``ISCSIProtocolError/Kind/invalidPDUField``.
struct PDUDecoder {
    /// The BHS, exactly 48 readable bytes.
    let header: ByteBuffer
    /// The AHSs, TotalAHSLength * 4 readable bytes.
    let ahs: ByteBuffer
    private let bhs: BHSReader

    init(header: ByteBuffer, ahs: ByteBuffer) {
        self.header = header
        self.ahs = ahs
        self.bhs = BHSReader(header)
    }

    func decode(data: ByteBuffer) throws(ISCSIProtocolError) -> PDU {
        let bhs = self.bhs
        guard let opcode = Opcode(rawValue: bhs.opcode) else {
            throw .unknownOpcode(bhs.opcode, header: self.header)
        }
        switch opcode {
        case .nopOut:
            return .nopOut(
                NOPOut(
                    immediate: bhs.immediate, lun: bhs.lun, initiatorTaskTag: bhs.initiatorTaskTag,
                    targetTransferTag: bhs.u32(20), cmdSN: bhs.u32(24), expStatSN: bhs.u32(28), pingData: data))

        case .scsiCommand:
            let flags = bhs.u8(1)
            guard let attribute = TaskAttribute(rawValue: flags & 0x07) else {
                throw self.invalid("reserved task attribute \(flags & 0x07)")
            }
            let (cdb, bidirectionalReadDataLength) = try self.decodeCommandAHS()
            return .scsiCommand(
                SCSICommand(
                    immediate: bhs.immediate, final: flags & 0x80 != 0, read: flags & 0x40 != 0,
                    write: flags & 0x20 != 0, attribute: attribute, lun: bhs.lun,
                    initiatorTaskTag: bhs.initiatorTaskTag, expectedDataTransferLength: bhs.u32(20),
                    cmdSN: bhs.u32(24), expStatSN: bhs.u32(28), cdb: cdb,
                    bidirectionalReadDataLength: bidirectionalReadDataLength, data: data))

        case .taskManagementFunctionRequest:
            return .taskManagementFunctionRequest(
                TaskManagementFunctionRequest(
                    immediate: bhs.immediate, functionCode: bhs.u8(1) & 0x7f, lun: bhs.lun,
                    initiatorTaskTag: bhs.initiatorTaskTag, referencedTaskTag: bhs.u32(20), cmdSN: bhs.u32(24),
                    expStatSN: bhs.u32(28), refCmdSN: bhs.u32(32), expDataSN: bhs.u32(36)))

        case .loginRequest:
            let (transit, `continue`, current, next) = try self.decodeLoginFlags()
            return .loginRequest(
                LoginRequest(
                    transit: transit, continue: `continue`, currentStage: current, nextStage: next,
                    versionMax: bhs.u8(2), versionMin: bhs.u8(3), isid: bhs.isid, tsih: bhs.u16(14),
                    initiatorTaskTag: bhs.initiatorTaskTag, cid: bhs.u16(20), cmdSN: bhs.u32(24),
                    expStatSN: bhs.u32(28), data: data))

        case .textRequest:
            return .textRequest(
                TextRequest(
                    immediate: bhs.immediate, final: bhs.final, continue: bhs.bit(1, 0x40), lun: bhs.lun,
                    initiatorTaskTag: bhs.initiatorTaskTag, targetTransferTag: bhs.u32(20), cmdSN: bhs.u32(24),
                    expStatSN: bhs.u32(28), data: data))

        case .scsiDataOut:
            return .scsiDataOut(
                SCSIDataOut(
                    final: bhs.final, lun: bhs.lun, initiatorTaskTag: bhs.initiatorTaskTag,
                    targetTransferTag: bhs.u32(20), expStatSN: bhs.u32(28), dataSN: bhs.u32(36),
                    bufferOffset: bhs.u32(40), data: data))

        case .logoutRequest:
            var request = LogoutRequest(
                immediate: bhs.immediate, reasonCode: .closeSession, initiatorTaskTag: bhs.initiatorTaskTag,
                cid: bhs.u16(20), cmdSN: bhs.u32(24), expStatSN: bhs.u32(28))
            // Unknown reason codes are kept, so that the engine can answer them.
            request.reasonCodeRaw = bhs.u8(1) & 0x7f
            return .logoutRequest(request)

        case .snackRequest:
            return .snackRequest(
                SNACKRequest(
                    type: bhs.u8(1) & 0x0f, lun: bhs.lun, initiatorTaskTag: bhs.initiatorTaskTag,
                    targetTransferTag: bhs.u32(20), expStatSN: bhs.u32(28), begRun: bhs.u32(40),
                    runLength: bhs.u32(44)))

        case .nopIn:
            return .nopIn(
                NOPIn(
                    lun: bhs.lun, initiatorTaskTag: bhs.initiatorTaskTag, targetTransferTag: bhs.u32(20),
                    sequence: bhs.statusSequence, pingData: data))

        case .scsiResponse:
            let flags = bhs.u8(1)
            guard
                let bidirectional = ResidualBits.residual(
                    flags: flags, overflow: ResidualBits.bidirectionalOverflow,
                    underflow: ResidualBits.bidirectionalUnderflow, count: bhs.u32(40)),
                let residual = ResidualBits.residual(
                    flags: flags, overflow: ResidualBits.overflow, underflow: ResidualBits.underflow,
                    count: bhs.u32(44))
            else {
                throw self.invalid("residual overflow and underflow both set")
            }
            return .scsiResponse(
                SCSIResponse(
                    response: bhs.u8(2), status: bhs.u8(3), initiatorTaskTag: bhs.initiatorTaskTag,
                    snackTag: bhs.u32(20), sequence: bhs.statusSequence, expDataSN: bhs.u32(36),
                    bidirectionalReadResidual: bidirectional, residual: residual, data: data))

        case .taskManagementFunctionResponse:
            guard let response = TaskManagementFunctionResponse.Response(rawValue: bhs.u8(2)) else {
                throw self.invalid("unknown task management response \(bhs.u8(2))")
            }
            return .taskManagementFunctionResponse(
                TaskManagementFunctionResponse(
                    response: response, initiatorTaskTag: bhs.initiatorTaskTag, sequence: bhs.statusSequence,
                    additionalResponseInformation: UInt32(bhs.u8(36)) << 16 | UInt32(bhs.u16(37))))

        case .loginResponse:
            let (transit, `continue`, current, next) = try self.decodeLoginFlags()
            return .loginResponse(
                LoginResponse(
                    transit: transit, continue: `continue`, currentStage: current, nextStage: next,
                    versionMax: bhs.u8(2), versionActive: bhs.u8(3), isid: bhs.isid, tsih: bhs.u16(14),
                    initiatorTaskTag: bhs.initiatorTaskTag, sequence: bhs.statusSequence, statusClass: bhs.u8(36),
                    statusDetail: bhs.u8(37), data: data))

        case .textResponse:
            return .textResponse(
                TextResponse(
                    final: bhs.final, continue: bhs.bit(1, 0x40), lun: bhs.lun,
                    initiatorTaskTag: bhs.initiatorTaskTag, targetTransferTag: bhs.u32(20),
                    sequence: bhs.statusSequence, data: data))

        case .scsiDataIn:
            let flags = bhs.u8(1)
            var status: UInt8?
            var residual = Residual.none
            // Status, the residual bits and Residual Count are only meaningful with the S bit (RFC 7143 §11.7.5).
            if flags & 0x01 != 0 {
                status = bhs.u8(3)
                guard
                    let decoded = ResidualBits.residual(
                        flags: flags, overflow: ResidualBits.overflow, underflow: ResidualBits.underflow,
                        count: bhs.u32(44))
                else {
                    throw self.invalid("residual overflow and underflow both set")
                }
                residual = decoded
            }
            return .scsiDataIn(
                SCSIDataIn(
                    final: flags & 0x80 != 0, acknowledge: flags & 0x40 != 0, status: status, lun: bhs.lun,
                    initiatorTaskTag: bhs.initiatorTaskTag, targetTransferTag: bhs.u32(20),
                    sequence: bhs.statusSequence, dataSN: bhs.u32(36), bufferOffset: bhs.u32(40),
                    residual: residual, data: data))

        case .logoutResponse:
            guard let response = LogoutResponse.Response(rawValue: bhs.u8(2)) else {
                throw self.invalid("unknown logout response \(bhs.u8(2))")
            }
            return .logoutResponse(
                LogoutResponse(
                    response: response, initiatorTaskTag: bhs.initiatorTaskTag, sequence: bhs.statusSequence,
                    time2Wait: bhs.u16(40), time2Retain: bhs.u16(42)))

        case .readyToTransfer:
            return .readyToTransfer(
                ReadyToTransfer(
                    lun: bhs.lun, initiatorTaskTag: bhs.initiatorTaskTag, targetTransferTag: bhs.u32(20),
                    sequence: bhs.statusSequence, r2tSN: bhs.u32(36), bufferOffset: bhs.u32(40),
                    desiredDataTransferLength: bhs.u32(44)))

        case .asynchronousMessage:
            guard let event = AsynchronousMessage.Event(rawValue: bhs.u8(36)) else {
                throw self.invalid("unknown asynchronous event \(bhs.u8(36))")
            }
            return .asynchronousMessage(
                AsynchronousMessage(
                    lun: bhs.lun, sequence: bhs.statusSequence, event: event, vendorCode: bhs.u8(37),
                    parameter1: bhs.u16(38), parameter2: bhs.u16(40), parameter3: bhs.u16(42), data: data))

        case .reject:
            guard let reason = Reject.Reason(rawValue: bhs.u8(2)) else {
                throw self.invalid("unknown reject reason \(bhs.u8(2))")
            }
            return .reject(Reject(reason: reason, sequence: bhs.statusSequence, dataSN: bhs.u32(36), data: data))
        }
    }

    private func invalid(_ what: String) -> ISCSIProtocolError {
        .invalidPDUField(what, header: self.header, opcode: self.bhs.opcode)
    }

    /// Byte 1 of Login Request and Response: |T|C|.|.|CSG|NSG| (RFC 7143 §11.12).
    private func decodeLoginFlags() throws(ISCSIProtocolError) -> (Bool, Bool, LoginStage, LoginStage) {
        let flags = self.bhs.u8(1)
        let transit = flags & 0x80 != 0
        guard let current = LoginStage(rawValue: (flags >> 2) & 0x03) else {
            throw self.invalid("reserved login stage in CSG")
        }
        // RFC 7143 §11.12.3: NSG is only meaningful when T is set; otherwise it is reserved.
        let nextRaw = LoginStage(rawValue: flags & 0x03)
        guard let next = nextRaw ?? (transit ? nil : current) else {
            throw self.invalid("reserved login stage in NSG")
        }
        return (transit, flags & 0x40 != 0, current, next)
    }

    /// Walks the AHSs of a SCSI Command (RFC 7143 §11.2.2) and returns the full CDB and the bidirectional read
    /// length. Unknown AHS types are skipped.
    private func decodeCommandAHS() throws(ISCSIProtocolError) -> (ByteBuffer, UInt32?) {
        let inlineCDB = self.header.getSlice(at: self.header.readerIndex + 32, length: 16)!
        var ahs = self.ahs
        var extendedCDB: ByteBuffer?
        var bidirectionalReadDataLength: UInt32?
        while ahs.readableBytes > 0 {
            guard let length = ahs.readInteger(as: UInt16.self), let type = ahs.readInteger(as: UInt8.self),
                Int(length) >= 1, let specific = ahs.readSlice(length: Int(length))
            else {
                throw self.invalid("malformed AHS")
            }
            ahs.moveReaderIndex(forwardBy: min(ahs.readableBytes, BasicHeaderSegment.padding(for: 3 + Int(length))))
            switch BasicHeaderSegment.AHSType(rawValue: type & 0x3f) {
            case .extendedCDB:
                // One reserved byte, then CDB bytes 16 and up.
                extendedCDB = specific.getSlice(at: specific.readerIndex + 1, length: specific.readableBytes - 1)
            case .bidirectionalReadDataLength:
                guard length == 5 else { throw self.invalid("bidirectional read AHS of length \(length)") }
                bidirectionalReadDataLength = specific.getInteger(at: specific.readerIndex + 1)
            case nil:
                break
            }
        }
        guard let extendedCDB else { return (inlineCDB, bidirectionalReadDataLength) }
        // The CDB is split around the AHS header: this rare case is the only one that copies.
        var cdb = ByteBuffer()
        cdb.reserveCapacity(inlineCDB.readableBytes + extendedCDB.readableBytes)
        cdb.writeImmutableBuffer(inlineCDB)
        cdb.writeImmutableBuffer(extendedCDB)
        return (cdb, bidirectionalReadDataLength)
    }
}
