public import NIOCore

/// Serialises PDUs (RFC 7143 §11) in either direction.
///
/// A PDU on the wire is (RFC 7143 §11.1):
///
/// ```
/// BHS (48) | AHS (TotalAHSLength * 4) | HeaderDigest (0 or 4) | DataSegment | pad to 4 | DataDigest (0 or 4)
/// ```
///
/// For the zero-copy transmit path, write the *header segment* with ``writeHeaderSegment(_:into:)`` and the
/// *trailer* with ``writeTrailer(dataSegment:into:)``, then hand header buffer, the PDU's data segment and the trailer
/// buffer to the channel as three writes (or one `writev`): the payload is never copied. ``encode(_:into:)`` writes
/// all of it contiguously, for login, tests and small PDUs.
///
/// Digests are off until the end of login; switch them on with ``enableDigests(header:data:)`` for the first PDU of the
/// Full Feature Phase (RFC 7143 §13.1: "When the initiator and target agree on a digest, this digest MUST be used for
/// every PDU in the Full Feature Phase").
public struct PDUEncoder: Sendable, Hashable {
    /// Whether a CRC32C HeaderDigest follows the header segment.
    public private(set) var headerDigest: Bool
    /// Whether a CRC32C DataDigest follows each non-empty data segment.
    public private(set) var dataDigest: Bool

    public init(headerDigest: Bool = false, dataDigest: Bool = false) {
        self.headerDigest = headerDigest
        self.dataDigest = dataDigest
    }

    /// Switches digests on or off for the PDUs encoded from now on.
    public mutating func enableDigests(header: Bool, data: Bool) {
        self.headerDigest = header
        self.dataDigest = data
    }

    /// Writes the BHS, the AHS and the HeaderDigest of `pdu`. DataSegmentLength is taken from `pdu.dataSegment`.
    public func writeHeaderSegment(_ pdu: PDU, into buffer: inout ByteBuffer) {
        let dataSegmentLength = pdu.dataSegment.readableBytes
        precondition(
            dataSegmentLength <= BasicHeaderSegment.maximumDataSegmentLength,
            "a data segment cannot exceed 2^24 - 1 bytes")
        let start = buffer.writerIndex
        buffer.writeRepeatingByte(0, count: BasicHeaderSegment.length)
        let writer = BHSWriter(base: start)
        writer.write(pdu, into: &buffer)

        var totalAHSLength = 0
        if case .scsiCommand(let command) = pdu {
            totalAHSLength = buffer.writeAdditionalHeaderSegments(for: command)
        }
        precondition(totalAHSLength / 4 <= Int(UInt8.max), "TotalAHSLength cannot exceed 255 words")
        writer.set(UInt8(totalAHSLength / 4), at: BasicHeaderSegment.totalAHSLengthOffset, in: &buffer)
        writer.set(UInt8(truncatingIfNeeded: dataSegmentLength >> 16), at: 5, in: &buffer)
        writer.set(UInt16(truncatingIfNeeded: dataSegmentLength), at: 6, in: &buffer)

        if self.headerDigest {
            let digest = CRC32C.checksum(buffer.getSlice(at: start, length: buffer.writerIndex - start)!)
            buffer.writeDigest(digest)
        }
    }

    /// Writes what follows a data segment on the wire: the pad bytes, then the DataDigest over data and padding.
    /// Writes nothing when `dataSegment` is empty.
    public func writeTrailer(dataSegment: ByteBuffer, into buffer: inout ByteBuffer) {
        let padding = BasicHeaderSegment.padding(for: dataSegment.readableBytes)
        buffer.writeRepeatingByte(0, count: padding)
        // RFC 7143 §13.1: "Padding bytes, when present in a segment covered by a CRC, SHOULD be set to 0 and are
        // included in the CRC." A digest is only present when there is a data segment (§11.1).
        if self.dataDigest && dataSegment.readableBytes > 0 {
            var crc = CRC32C()
            crc.update(dataSegment)
            crc.updateWithZeros(count: padding)
            buffer.writeDigest(crc.value)
        }
    }

    /// The number of bytes ``writeTrailer(dataSegment:into:)`` writes for a data segment of `length` bytes.
    public func trailerLength(dataSegmentLength length: Int) -> Int {
        BasicHeaderSegment.padding(for: length) + (self.dataDigest && length > 0 ? 4 : 0)
    }

    /// Writes the whole PDU contiguously: header segment, data segment, trailer.
    public func encode(_ pdu: PDU, into buffer: inout ByteBuffer) {
        self.writeHeaderSegment(pdu, into: &buffer)
        let data = pdu.dataSegment
        buffer.writeImmutableBuffer(data)
        self.writeTrailer(dataSegment: data, into: &buffer)
    }
}

// MARK: - BHS fields per opcode

extension BHSWriter {
    /// Sets the opcode-specific fields of `pdu` (everything but TotalAHSLength and DataSegmentLength).
    func write(_ pdu: PDU, into buffer: inout ByteBuffer) {
        let final = BasicHeaderSegment.finalBit
        switch pdu {
        case .nopOut(let p):
            // RFC 7143 §11.18.
            self.setOpcode(.nopOut, immediate: p.immediate, in: &buffer)
            self.set(final, at: 1, in: &buffer)
            self.set(p.lun, at: 8, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.set(p.targetTransferTag, at: 20, in: &buffer)
            self.set(p.cmdSN, at: 24, in: &buffer)
            self.set(p.expStatSN, at: 28, in: &buffer)

        case .scsiCommand(let p):
            // RFC 7143 §11.3: byte 1 is |F|R|W|. .|ATTR |.
            self.setOpcode(.scsiCommand, immediate: p.immediate, in: &buffer)
            var flags = p.attribute.rawValue & 0x07
            if p.final { flags |= final }
            if p.read { flags |= 0x40 }
            if p.write { flags |= 0x20 }
            self.set(flags, at: 1, in: &buffer)
            self.set(p.lun, at: 8, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.set(p.expectedDataTransferLength, at: 20, in: &buffer)
            self.set(p.cmdSN, at: 24, in: &buffer)
            self.set(p.expStatSN, at: 28, in: &buffer)
            // The first 16 CDB bytes live in bytes 32-47; the rest goes to the Extended CDB AHS.
            let inline = p.cdb.getSlice(at: p.cdb.readerIndex, length: min(16, p.cdb.readableBytes))!
            buffer.setBuffer(inline, at: self.base + 32)

        case .taskManagementFunctionRequest(let p):
            // RFC 7143 §11.5: byte 1 is |1| Function |.
            self.setOpcode(.taskManagementFunctionRequest, immediate: p.immediate, in: &buffer)
            self.set(final | (p.functionCode & 0x7f), at: 1, in: &buffer)
            self.set(p.lun, at: 8, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.set(p.referencedTaskTag, at: 20, in: &buffer)
            self.set(p.cmdSN, at: 24, in: &buffer)
            self.set(p.expStatSN, at: 28, in: &buffer)
            self.set(p.refCmdSN, at: 32, in: &buffer)
            self.set(p.expDataSN, at: 36, in: &buffer)

        case .loginRequest(let p):
            // RFC 7143 §11.12: the I bit is always 1 in a Login Request.
            self.setOpcode(.loginRequest, immediate: true, in: &buffer)
            self.set(
                Self.loginFlags(
                    transit: p.transit, continue: p.continue, current: p.currentStage, next: p.nextStage),
                at: 1, in: &buffer)
            self.set(p.versionMax, at: 2, in: &buffer)
            self.set(p.versionMin, at: 3, in: &buffer)
            self.setISID(p.isid, in: &buffer)
            self.set(p.tsih, at: 14, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.set(p.cid, at: 20, in: &buffer)
            self.set(p.cmdSN, at: 24, in: &buffer)
            self.set(p.expStatSN, at: 28, in: &buffer)

        case .textRequest(let p):
            // RFC 7143 §11.10: byte 1 is |F|C|.
            self.setOpcode(.textRequest, immediate: p.immediate, in: &buffer)
            self.set(Self.finalContinue(final: p.final, continue: p.continue), at: 1, in: &buffer)
            self.set(p.lun, at: 8, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.set(p.targetTransferTag, at: 20, in: &buffer)
            self.set(p.cmdSN, at: 24, in: &buffer)
            self.set(p.expStatSN, at: 28, in: &buffer)

        case .scsiDataOut(let p):
            // RFC 7143 §11.7.
            self.setOpcode(.scsiDataOut, immediate: false, in: &buffer)
            self.set(p.final ? final : 0, at: 1, in: &buffer)
            self.set(p.lun, at: 8, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.set(p.targetTransferTag, at: 20, in: &buffer)
            self.set(p.expStatSN, at: 28, in: &buffer)
            self.set(p.dataSN, at: 36, in: &buffer)
            self.set(p.bufferOffset, at: 40, in: &buffer)

        case .logoutRequest(let p):
            // RFC 7143 §11.14: byte 1 is |1| Reason Code |.
            self.setOpcode(.logoutRequest, immediate: p.immediate, in: &buffer)
            self.set(final | (p.reasonCodeRaw & 0x7f), at: 1, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.set(p.cid, at: 20, in: &buffer)
            self.set(p.cmdSN, at: 24, in: &buffer)
            self.set(p.expStatSN, at: 28, in: &buffer)

        case .snackRequest(let p):
            // RFC 7143 §11.16: byte 1 is |1|.|.|.| Type |.
            self.setOpcode(.snackRequest, immediate: false, in: &buffer)
            self.set(final | (p.type & 0x0f), at: 1, in: &buffer)
            self.set(p.lun, at: 8, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.set(p.targetTransferTag, at: 20, in: &buffer)
            self.set(p.expStatSN, at: 28, in: &buffer)
            self.set(p.begRun, at: 40, in: &buffer)
            self.set(p.runLength, at: 44, in: &buffer)

        case .nopIn(let p):
            // RFC 7143 §11.19.
            self.setOpcode(.nopIn, immediate: false, in: &buffer)
            self.set(final, at: 1, in: &buffer)
            self.set(p.lun, at: 8, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.set(p.targetTransferTag, at: 20, in: &buffer)
            self.setStatusSequence(p.sequence, in: &buffer)

        case .scsiResponse(let p):
            // RFC 7143 §11.4: byte 1 is |1|. .|o|u|O|U|.|, Response in byte 2, Status in byte 3.
            self.setOpcode(.scsiResponse, immediate: false, in: &buffer)
            let flags =
                final
                | ResidualBits.flags(
                    for: p.bidirectionalReadResidual, overflow: ResidualBits.bidirectionalOverflow,
                    underflow: ResidualBits.bidirectionalUnderflow)
                | ResidualBits.flags(
                    for: p.residual, overflow: ResidualBits.overflow, underflow: ResidualBits.underflow)
            self.set(flags, at: 1, in: &buffer)
            self.set(p.response, at: 2, in: &buffer)
            self.set(p.status, at: 3, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.set(p.snackTag, at: 20, in: &buffer)
            self.setStatusSequence(p.sequence, in: &buffer)
            self.set(p.expDataSN, at: 36, in: &buffer)
            self.set(p.bidirectionalReadResidual.count, at: 40, in: &buffer)
            self.set(p.residual.count, at: 44, in: &buffer)

        case .taskManagementFunctionResponse(let p):
            // RFC 7143 §11.6, with RFC 7144's 3-byte Additional Response Information in bytes 36-38.
            self.setOpcode(.taskManagementFunctionResponse, immediate: false, in: &buffer)
            self.set(final, at: 1, in: &buffer)
            self.set(p.response.rawValue, at: 2, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.setStatusSequence(p.sequence, in: &buffer)
            self.set(UInt8(truncatingIfNeeded: p.additionalResponseInformation >> 16), at: 36, in: &buffer)
            self.set(UInt16(truncatingIfNeeded: p.additionalResponseInformation), at: 37, in: &buffer)

        case .loginResponse(let p):
            // RFC 7143 §11.13.
            self.setOpcode(.loginResponse, immediate: false, in: &buffer)
            self.set(
                Self.loginFlags(
                    transit: p.transit, continue: p.continue, current: p.currentStage, next: p.nextStage),
                at: 1, in: &buffer)
            self.set(p.versionMax, at: 2, in: &buffer)
            self.set(p.versionActive, at: 3, in: &buffer)
            self.setISID(p.isid, in: &buffer)
            self.set(p.tsih, at: 14, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.setStatusSequence(p.sequence, in: &buffer)
            self.set(p.statusClass, at: 36, in: &buffer)
            self.set(p.statusDetail, at: 37, in: &buffer)

        case .textResponse(let p):
            // RFC 7143 §11.11.
            self.setOpcode(.textResponse, immediate: false, in: &buffer)
            self.set(Self.finalContinue(final: p.final, continue: p.continue), at: 1, in: &buffer)
            self.set(p.lun, at: 8, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.set(p.targetTransferTag, at: 20, in: &buffer)
            self.setStatusSequence(p.sequence, in: &buffer)

        case .scsiDataIn(let p):
            // RFC 7143 §11.7: byte 1 is |F|A|. . .|O|U|S|, Status in byte 3 when S is set.
            self.setOpcode(.scsiDataIn, immediate: false, in: &buffer)
            var flags: UInt8 = 0
            if p.final { flags |= final }
            if p.acknowledge { flags |= 0x40 }
            if let status = p.status {
                flags |= 0x01
                flags |= ResidualBits.flags(
                    for: p.residual, overflow: ResidualBits.overflow, underflow: ResidualBits.underflow)
                self.set(status, at: 3, in: &buffer)
                self.set(p.residual.count, at: 44, in: &buffer)
            }
            self.set(flags, at: 1, in: &buffer)
            self.set(p.lun, at: 8, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.set(p.targetTransferTag, at: 20, in: &buffer)
            self.setStatusSequence(p.sequence, in: &buffer)
            self.set(p.dataSN, at: 36, in: &buffer)
            self.set(p.bufferOffset, at: 40, in: &buffer)

        case .logoutResponse(let p):
            // RFC 7143 §11.15.
            self.setOpcode(.logoutResponse, immediate: false, in: &buffer)
            self.set(final, at: 1, in: &buffer)
            self.set(p.response.rawValue, at: 2, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.setStatusSequence(p.sequence, in: &buffer)
            self.set(p.time2Wait, at: 40, in: &buffer)
            self.set(p.time2Retain, at: 42, in: &buffer)

        case .readyToTransfer(let p):
            // RFC 7143 §11.8.
            self.setOpcode(.readyToTransfer, immediate: false, in: &buffer)
            self.set(final, at: 1, in: &buffer)
            self.set(p.lun, at: 8, in: &buffer)
            self.set(p.initiatorTaskTag, at: 16, in: &buffer)
            self.set(p.targetTransferTag, at: 20, in: &buffer)
            self.setStatusSequence(p.sequence, in: &buffer)
            self.set(p.r2tSN, at: 36, in: &buffer)
            self.set(p.bufferOffset, at: 40, in: &buffer)
            self.set(p.desiredDataTransferLength, at: 44, in: &buffer)

        case .asynchronousMessage(let p):
            // RFC 7143 §11.9: ITT is reserved (0xffffffff).
            self.setOpcode(.asynchronousMessage, immediate: false, in: &buffer)
            self.set(final, at: 1, in: &buffer)
            self.set(p.lun, at: 8, in: &buffer)
            self.set(reservedTag, at: 16, in: &buffer)
            self.setStatusSequence(p.sequence, in: &buffer)
            self.set(p.event.rawValue, at: 36, in: &buffer)
            self.set(p.vendorCode, at: 37, in: &buffer)
            self.set(p.parameter1, at: 38, in: &buffer)
            self.set(p.parameter2, at: 40, in: &buffer)
            self.set(p.parameter3, at: 42, in: &buffer)

        case .reject(let p):
            // RFC 7143 §11.17: Reason in byte 2, ITT reserved, DataSN/R2TSN in bytes 36-39.
            self.setOpcode(.reject, immediate: false, in: &buffer)
            self.set(final, at: 1, in: &buffer)
            self.set(p.reason.rawValue, at: 2, in: &buffer)
            self.set(reservedTag, at: 16, in: &buffer)
            self.setStatusSequence(p.sequence, in: &buffer)
            self.set(p.dataSN, at: 36, in: &buffer)
        }
    }

    private func setOpcode(_ opcode: Opcode, immediate: Bool, in buffer: inout ByteBuffer) {
        self.set(opcode.rawValue | (immediate ? BasicHeaderSegment.immediateBit : 0), at: 0, in: &buffer)
    }

    /// Byte 1 of Login Request and Response: |T|C|.|.|CSG|NSG| (RFC 7143 §11.12).
    static func loginFlags(transit: Bool, continue: Bool, current: LoginStage, next: LoginStage) -> UInt8 {
        (transit ? 0x80 : 0) | (`continue` ? 0x40 : 0) | (current.rawValue & 0x03) << 2 | (next.rawValue & 0x03)
    }

    /// Byte 1 of Text Request and Response: |F|C|.
    static func finalContinue(final: Bool, continue: Bool) -> UInt8 {
        (final ? 0x80 : 0) | (`continue` ? 0x40 : 0)
    }
}

// MARK: - AHS

extension ByteBuffer {
    /// Writes the AHSs of a SCSI Command (RFC 7143 §11.3.1.3-4) and returns their total length in bytes.
    ///
    /// ```
    ///  0| AHSLength                     | AHSType       | AHS-Specific  |
    ///  4/ AHS-Specific                                                  /
    /// ```
    ///
    /// AHSLength counts the bytes after AHSType, without padding.
    fileprivate mutating func writeAdditionalHeaderSegments(for command: SCSICommand) -> Int {
        let start = self.writerIndex
        if command.cdb.readableBytes > 16 {
            let extended = command.cdb.getSlice(
                at: command.cdb.readerIndex + 16, length: command.cdb.readableBytes - 16)!
            // Extended CDB AHS: 1 reserved byte, then CDB bytes 16 and up, padded to 4.
            self.writeInteger(UInt16(extended.readableBytes + 1))
            self.writeInteger(BasicHeaderSegment.AHSType.extendedCDB.rawValue)
            self.writeInteger(UInt8(0))
            self.writeImmutableBuffer(extended)
            self.writeRepeatingByte(0, count: BasicHeaderSegment.padding(for: extended.readableBytes))
        }
        if let length = command.bidirectionalReadDataLength {
            // Bidirectional Read Expected Data Transfer Length AHS: AHSLength is 0x0005.
            self.writeInteger(UInt16(5))
            self.writeInteger(BasicHeaderSegment.AHSType.bidirectionalReadDataLength.rawValue)
            self.writeInteger(UInt8(0))
            self.writeInteger(length)
        }
        return self.writerIndex - start
    }
}
