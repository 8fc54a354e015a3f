import ISCSIProtocol
import NIOCore
import NIOTestUtils
import Testing

/// One PDU of every opcode, with non-trivial field values.
let samplePDUs: [PDU] = {
    let sequence = StatusSequence(statSN: 0xffff_fff0, expCmdSN: 0x1234_5678, maxCmdSN: 0x1234_5687)
    let lun: UInt64 = 0x0001_0000_0000_0000
    let cdb16 = ByteBuffer(bytes: (0..<16).map { UInt8($0 &* 3 &+ 1) })
    let cdb32 = ByteBuffer(bytes: (0..<32).map { UInt8($0 &+ 0x40) })
    let odd = ByteBuffer(bytes: [1, 2, 3, 4, 5])
    let text = ByteBuffer(string: "InitiatorName=iqn.2024-01.org.example:host\0SessionType=Normal\0")
    return [
        .nopOut(
            NOPOut(
                immediate: true, lun: lun, initiatorTaskTag: 7, targetTransferTag: reservedTag, cmdSN: 42,
                expStatSN: 0xffff_ffff, pingData: odd)),
        .scsiCommand(
            SCSICommand(
                immediate: false, final: true, read: true, write: false, attribute: .ordered, lun: lun,
                initiatorTaskTag: 0xdead_beef, expectedDataTransferLength: 1 << 20, cmdSN: 9, expStatSN: 3,
                cdb: cdb16)),
        .scsiCommand(
            SCSICommand(
                immediate: true, final: false, read: true, write: true, attribute: .headOfQueue, lun: 3,
                initiatorTaskTag: 1, expectedDataTransferLength: 8192, cmdSN: 10, expStatSN: 4, cdb: cdb32,
                bidirectionalReadDataLength: 4096, data: ByteBuffer(repeating: 0xa5, count: 1001))),
        .taskManagementFunctionRequest(
            TaskManagementFunctionRequest(
                immediate: true, function: .abortTask, lun: lun, initiatorTaskTag: 77, referencedTaskTag: 0xdead_beef,
                cmdSN: 11, expStatSN: 5, refCmdSN: 9, expDataSN: 2)),
        .taskManagementFunctionRequest(
            TaskManagementFunctionRequest(
                immediate: false, functionCode: 0x7e, lun: 0, initiatorTaskTag: 78, referencedTaskTag: reservedTag,
                cmdSN: 12, expStatSN: 5, refCmdSN: 0, expDataSN: 0)),
        .loginRequest(
            LoginRequest(
                transit: true, continue: false, currentStage: .securityNegotiation,
                nextStage: .loginOperationalNegotiation, versionMax: 0, versionMin: 0,
                isid: ISID(rawValue: 0x8000_1234_5678), tsih: 0, initiatorTaskTag: 0, cid: 1, cmdSN: 1,
                expStatSN: 0, data: text)),
        .loginRequest(
            LoginRequest(
                transit: false, continue: true, currentStage: .loginOperationalNegotiation,
                nextStage: .loginOperationalNegotiation, isid: ISID(rawValue: 0x0023_0000_0001), tsih: 0x1234,
                initiatorTaskTag: 1, cid: 0xfffe, cmdSN: 1, expStatSN: 1, data: ByteBuffer())),
        .textRequest(
            TextRequest(
                immediate: true, final: false, continue: true, lun: 0, initiatorTaskTag: 5, targetTransferTag: 99,
                cmdSN: 20, expStatSN: 21, data: ByteBuffer(string: "SendTargets=All\0"))),
        .scsiDataOut(
            SCSIDataOut(
                final: true, lun: lun, initiatorTaskTag: 0xdead_beef, targetTransferTag: 0x10, expStatSN: 3,
                dataSN: 0xffff_ffff, bufferOffset: 0x10_0000, data: ByteBuffer(repeating: 0x5a, count: 8190))),
        .logoutRequest(
            LogoutRequest(
                immediate: true, reasonCode: .removeConnectionForRecovery, initiatorTaskTag: 6, cid: 2, cmdSN: 30,
                expStatSN: 31)),
        .snackRequest(
            SNACKRequest(
                type: 1, lun: lun, initiatorTaskTag: 8, targetTransferTag: 9, expStatSN: 10, begRun: 11,
                runLength: 12)),
        .nopIn(
            NOPIn(
                lun: lun, initiatorTaskTag: reservedTag, targetTransferTag: 0x55, sequence: sequence,
                pingData: ByteBuffer(bytes: [9]))),
        .scsiResponse(
            SCSIResponse(
                response: 0, status: 0x02, initiatorTaskTag: 0xdead_beef, snackTag: 3, sequence: sequence,
                expDataSN: 4, bidirectionalReadResidual: .overflow(17), residual: .underflow(512),
                data: ByteBuffer(bytes: [0, 18, 0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0]))),
        .scsiResponse(
            SCSIResponse(
                response: 1, status: 0, initiatorTaskTag: 2, sequence: sequence,
                bidirectionalReadResidual: .underflow(3), residual: .overflow(0x1_0000))),
        .taskManagementFunctionResponse(
            TaskManagementFunctionResponse(
                response: .functionSucceeded, initiatorTaskTag: 77, sequence: sequence,
                additionalResponseInformation: 0x06_2900)),
        .loginResponse(
            LoginResponse(
                transit: true, continue: false, currentStage: .loginOperationalNegotiation,
                nextStage: .fullFeaturePhase, versionMax: 0, versionActive: 0, isid: ISID(rawValue: 0x8000_1234_5678),
                tsih: 0x0101, initiatorTaskTag: 0, sequence: sequence, statusClass: 0, statusDetail: 0, data: text)),
        .loginResponse(
            LoginResponse(
                transit: false, currentStage: .securityNegotiation, nextStage: .securityNegotiation,
                isid: ISID(rawValue: 1), tsih: 0, initiatorTaskTag: 3, sequence: sequence, statusClass: 2,
                statusDetail: 1, data: ByteBuffer())),
        .textResponse(
            TextResponse(
                final: true, continue: false, lun: lun, initiatorTaskTag: 5, targetTransferTag: reservedTag,
                sequence: sequence, data: ByteBuffer(string: "TargetName=iqn.2024-01.org.example:t0\0"))),
        .scsiDataIn(
            SCSIDataIn(
                final: false, acknowledge: true, lun: lun, initiatorTaskTag: 0xdead_beef, targetTransferTag: 0x77,
                sequence: sequence, dataSN: 0, bufferOffset: 0, data: ByteBuffer(repeating: 1, count: 4096))),
        .scsiDataIn(
            SCSIDataIn(
                final: true, status: 0, lun: lun, initiatorTaskTag: 0xdead_beef, sequence: sequence, dataSN: 1,
                bufferOffset: 4096, residual: .underflow(1023), data: ByteBuffer(repeating: 2, count: 3))),
        .logoutResponse(
            LogoutResponse(
                response: .cleanupFailed, initiatorTaskTag: 6, sequence: sequence, time2Wait: 2, time2Retain: 20)),
        .readyToTransfer(
            ReadyToTransfer(
                lun: lun, initiatorTaskTag: 0xdead_beef, targetTransferTag: 0x10, sequence: sequence, r2tSN: 5,
                bufferOffset: 0x2_0000, desiredDataTransferLength: 0x4_0000)),
        .asynchronousMessage(
            AsynchronousMessage(
                lun: lun, sequence: sequence, event: .requestLogout, vendorCode: 0x42, parameter1: 1, parameter2: 2,
                parameter3: 3)),
        .reject(
            Reject(
                reason: .dataDigestError, sequence: sequence, dataSN: 0x99,
                data: ByteBuffer(repeating: 0x21, count: 48))),
    ]
}()

/// Reads one PDU from a contiguous encoding, failing the test if bytes remain or if the BHS that comes with it is not
/// the one sent.
func roundTrip(_ pdu: PDU, headerDigest: Bool, dataDigest: Bool) throws -> PDU? {
    let encoder = PDUEncoder(headerDigest: headerDigest, dataDigest: dataDigest)
    var bytes = ByteBuffer()
    encoder.encode(pdu, into: &bytes)
    let sent = bytes.getSlice(at: bytes.readerIndex, length: 48)
    var decoder = PDUFrameDecoder(maxRecvDataSegmentLength: 1 << 16, headerDigest: headerDigest, dataDigest: dataDigest)
    let decoded = try decoder.decode(buffer: &bytes)
    #expect(try decoder.decode(buffer: &bytes) == nil)
    #expect(bytes.readableBytes == 0)
    #expect(decoded?.basicHeaderSegment == sent)
    return decoded?.pdu
}

/// Feeds `bytes` as one read to a `NIOSingleStepByteToMessageProcessor` holding `decoder`, as the connection
/// handler does. Returns the PDUs decoded and the number of bytes the processor keeps for the next read; a decoding
/// error is thrown.
func process(_ bytes: ByteBuffer, with decoder: PDUFrameDecoder) throws -> (pdus: [PDU], unprocessedBytes: Int) {
    let processor = NIOSingleStepByteToMessageProcessor(decoder)
    var pdus: [PDU] = []
    try processor.process(buffer: bytes) { pdus.append($0.pdu) }
    return (pdus, processor.unprocessedBytes)
}

func encoded(_ pdu: PDU, encoder: PDUEncoder = PDUEncoder()) -> ByteBuffer {
    var buffer = ByteBuffer()
    encoder.encode(pdu, into: &buffer)
    return buffer
}

@Suite struct PDUCodecTests {
    @Test func everyOpcodeIsCovered() {
        #expect(Set(samplePDUs.map(\.opcode)).count == 18)
    }

    @Test(arguments: [(false, false), (true, false), (false, true), (true, true)])
    func roundTripEveryOpcode(digests: (header: Bool, data: Bool)) throws {
        for pdu in samplePDUs {
            let decoded = try roundTrip(pdu, headerDigest: digests.header, dataDigest: digests.data)
            #expect(decoded == pdu)
        }
    }

    @Test func wireLengthIsPaddedAndDigested() throws {
        let pdu = samplePDUs[0]  // NOP-Out with 5 bytes of ping data.
        #expect(encoded(pdu).readableBytes == 48 + 8)
        #expect(encoded(pdu, encoder: PDUEncoder(headerDigest: true, dataDigest: true)).readableBytes == 48 + 4 + 8 + 4)
        // No DataDigest without a data segment.
        let logout = try #require(samplePDUs.first { $0.opcode == .logoutRequest })
        #expect(encoded(logout, encoder: PDUEncoder(headerDigest: false, dataDigest: true)).readableBytes == 48)
    }

    /// Field offsets checked byte by byte against RFC 7143 §11.
    @Test func scsiResponseLayout() throws {
        let pdu = try #require(samplePDUs.first { if case .scsiResponse = $0 { true } else { false } })
        let bytes = Array(encoded(pdu).readableBytesView)
        try #require(bytes.count >= 48)
        #expect(bytes[0] == 0x21)
        #expect(bytes[1] == 0x80 | 0x10 | 0x02)  // F, o (bidirectional overflow), U (underflow).
        #expect(bytes[2] == 0 && bytes[3] == 0x02)
        #expect(Array(bytes[5..<8]) == [0, 0, 20])
        #expect(Array(bytes[16..<20]) == [0xde, 0xad, 0xbe, 0xef])
        #expect(Array(bytes[24..<28]) == [0xff, 0xff, 0xff, 0xf0])
        #expect(Array(bytes[40..<44]) == [0, 0, 0, 17])
        #expect(Array(bytes[44..<48]) == [0, 0, 2, 0])
    }

    @Test func dataInLayout() throws {
        let pdu = try #require(samplePDUs.last { if case .scsiDataIn = $0 { true } else { false } })
        let bytes = Array(encoded(pdu).readableBytesView)
        try #require(bytes.count >= 48)
        #expect(bytes[0] == 0x25)
        #expect(bytes[1] == 0x80 | 0x02 | 0x01)  // F, U, S.
        #expect(bytes[3] == 0)
        #expect(Array(bytes[8..<16]) == [0, 1, 0, 0, 0, 0, 0, 0])
        #expect(Array(bytes[36..<40]) == [0, 0, 0, 1])
        #expect(Array(bytes[40..<44]) == [0, 0, 0x10, 0])
        #expect(Array(bytes[44..<48]) == [0, 0, 0x03, 0xff])
    }

    @Test func loginAndTaskManagementLayout() throws {
        let login = try #require(samplePDUs.first { $0.opcode == .loginRequest })
        var bytes = Array(encoded(login).readableBytesView)
        try #require(bytes.count >= 48)
        #expect(bytes[0] == 0x43)  // I bit and opcode 0x03.
        #expect(bytes[1] == 0x81)  // T, CSG 0, NSG 1.
        #expect(Array(bytes[8..<14]) == [0x80, 0x00, 0x12, 0x34, 0x56, 0x78])
        #expect(Array(bytes[20..<22]) == [0, 1])

        let response = try #require(samplePDUs.first { $0.opcode == .loginResponse })
        bytes = Array(encoded(response).readableBytesView)
        try #require(bytes.count >= 48)
        #expect(bytes[1] == 0x87)  // T, CSG 1, NSG 3.

        let tmf = try #require(samplePDUs.first { $0.opcode == .taskManagementFunctionRequest })
        bytes = Array(encoded(tmf).readableBytesView)
        try #require(bytes.count >= 48)
        #expect(bytes[0] == 0x42 && bytes[1] == 0x81)

        let reject = try #require(samplePDUs.first { $0.opcode == .reject })
        bytes = Array(encoded(reject).readableBytesView)
        try #require(bytes.count >= 48)
        #expect(bytes[1] == 0x80 && bytes[2] == 0x02)
        #expect(Array(bytes[16..<20]) == [0xff, 0xff, 0xff, 0xff])
        #expect(Array(bytes[36..<40]) == [0, 0, 0, 0x99])

        let logout = try #require(samplePDUs.first { $0.opcode == .logoutResponse })
        bytes = Array(encoded(logout).readableBytesView)
        try #require(bytes.count >= 48)
        #expect(Array(bytes[40..<44]) == [0, 2, 0, 20])

        let async = try #require(samplePDUs.first { $0.opcode == .asynchronousMessage })
        bytes = Array(encoded(async).readableBytesView)
        try #require(bytes.count >= 48)
        #expect(Array(bytes[36..<44]) == [1, 0x42, 0, 1, 0, 2, 0, 3])
    }

    @Test func extendedCDBAndBidirectionalAHS() throws {
        let pdu = samplePDUs[2]
        let bytes = Array(encoded(pdu).readableBytesView)
        try #require(bytes.count >= 76)
        #expect(bytes[0] == 0x41)
        #expect(bytes[1] == 0x60 | 0x03)  // R, W, head of queue; F clear.
        #expect(bytes[4] == 7)  // Extended CDB AHS (20 bytes) + bidirectional AHS (8 bytes).
        #expect(Array(bytes[48..<52]) == [0, 17, 1, 0])
        #expect(Array(bytes[68..<76]) == [0, 5, 2, 0, 0, 0, 0x10, 0])
        guard case .scsiCommand(let command) = try roundTrip(pdu, headerDigest: true, dataDigest: true) else {
            Issue.record("not a SCSI Command")
            return
        }
        #expect(command.cdb.readableBytes == 32)
        #expect(command.bidirectionalReadDataLength == 4096)
    }

    @Test func shortCDBIsPaddedToSixteen() throws {
        let command = SCSICommand(
            final: true, read: false, write: false, lun: 0, initiatorTaskTag: 1, expectedDataTransferLength: 0,
            cmdSN: 1, expStatSN: 1, cdb: ByteBuffer(bytes: [0, 0, 0, 0, 0, 0]))
        let pdu = try roundTrip(.scsiCommand(command), headerDigest: false, dataDigest: false)
        guard case .scsiCommand(let decoded) = pdu else {
            Issue.record("not a SCSI Command")
            return
        }
        #expect(decoded.cdb == ByteBuffer(repeating: 0, count: 16))
    }

    @Test func zeroCopyHeaderAndTrailerMatchContiguousEncoding() {
        let encoder = PDUEncoder(headerDigest: true, dataDigest: true)
        for pdu in samplePDUs {
            var header = ByteBuffer()
            var trailer = ByteBuffer()
            encoder.writeHeaderSegment(pdu, into: &header)
            encoder.writeTrailer(dataSegment: pdu.dataSegment, into: &trailer)
            #expect(trailer.readableBytes == encoder.trailerLength(dataSegmentLength: pdu.dataSegment.readableBytes))
            var gathered = header
            gathered.writeImmutableBuffer(pdu.dataSegment)
            gathered.writeImmutableBuffer(trailer)
            #expect(gathered == encoded(pdu, encoder: encoder))
        }
    }

    @Test func dataSegmentIsASliceOfTheReceivedBytes() throws {
        let pdu = try #require(samplePDUs.first { $0.opcode == .scsiDataOut })
        let bytes = encoded(pdu)
        let storage = bytes.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        let (pdus, _) = try process(bytes, with: PDUFrameDecoder(maxRecvDataSegmentLength: 1 << 16))
        let data = try #require(pdus.first).dataSegment
        let dataAddress = data.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        #expect(dataAddress == storage + 48)
    }

    @Test func truncatedInputWaits() throws {
        let encoder = PDUEncoder(headerDigest: true, dataDigest: true)
        let whole = encoded(samplePDUs[2], encoder: encoder)
        var decoder = PDUFrameDecoder(maxRecvDataSegmentLength: 1 << 16, headerDigest: true, dataDigest: true)
        for cut in [0, 1, 47, 48, 75, 80, 81, whole.readableBytes - 1] {
            var prefix = try #require(whole.getSlice(at: 0, length: cut))
            var fresh = decoder
            #expect(try fresh.decode(buffer: &prefix) == nil)
            #expect(prefix.readableBytes == cut)
        }
        var all = whole
        #expect(try decoder.decode(buffer: &all)?.pdu == samplePDUs[2])
    }

    @Test func byteByByteWithSeveralPDUs() throws {
        let encoder = PDUEncoder(headerDigest: true, dataDigest: true)
        var stream = ByteBuffer()
        for pdu in samplePDUs { encoder.encode(pdu, into: &stream) }
        let processor = NIOSingleStepByteToMessageProcessor(
            PDUFrameDecoder(maxRecvDataSegmentLength: 1 << 16, headerDigest: true, dataDigest: true))
        var decoded: [PDU] = []
        while let byte = stream.readSlice(length: 1) {
            try processor.process(buffer: byte) { decoded.append($0.pdu) }
        }
        #expect(decoded == samplePDUs)
        #expect(processor.unprocessedBytes == 0)
    }

    @Test func oversizedDataSegmentIsFatal() throws {
        let pdu = try #require(samplePDUs.first { $0.opcode == .scsiDataOut })
        var bytes = encoded(pdu)
        var decoder = PDUFrameDecoder(maxRecvDataSegmentLength: 8189)
        // Only the BHS is needed to detect it: the data is never buffered.
        let headerSlice = bytes.readSlice(length: 48)
        var header = try #require(headerSlice)
        #expect {
            _ = try decoder.decode(buffer: &header)
        } throws: { error in
            guard let error = error as? ISCSIProtocolError else { return false }
            return error.kind == .dataSegmentTooLong && error.isConnectionFatal && error.rejectReason == .protocolError
                && error.rejectedHeader?.readableBytes == 48
        }
    }

    @Test func raisingTheLimitAfterLogin() throws {
        let pdu = try #require(samplePDUs.first { $0.opcode == .scsiDataOut })
        var bytes = encoded(pdu)
        var decoder = PDUFrameDecoder()
        #expect(decoder.maxRecvDataSegmentLength == 8192)
        decoder.maxRecvDataSegmentLength = 262_144
        #expect(try decoder.decode(buffer: &bytes)?.pdu == pdu)
    }

    @Test func badHeaderDigestIsFatal() {
        var bytes = encoded(samplePDUs[1], encoder: PDUEncoder(headerDigest: true))
        bytes.setInteger(UInt8(0x42), at: 20)  // Corrupt EDTL.
        var decoder = PDUFrameDecoder(headerDigest: true)
        #expect {
            _ = try decoder.decode(buffer: &bytes)
        } throws: { error in
            guard let error = error as? ISCSIProtocolError else { return false }
            return error.kind == .headerDigestError && error.isConnectionFatal && error.rejectReason == nil
        }
    }

    @Test func badDataDigestConsumesThePDUAndParsingGoesOn() throws {
        let encoder = PDUEncoder(headerDigest: true, dataDigest: true)
        let dataOut = try #require(samplePDUs.first { $0.opcode == .scsiDataOut })
        var bytes = encoded(dataOut, encoder: encoder)
        bytes.setInteger(UInt8(0), at: 48 + 4 + 100)  // Corrupt the payload.
        encoder.encode(samplePDUs[0], into: &bytes)
        var decoder = PDUFrameDecoder(maxRecvDataSegmentLength: 1 << 16, headerDigest: true, dataDigest: true)
        #expect {
            _ = try decoder.decode(buffer: &bytes)
        } throws: { error in
            guard let error = error as? ISCSIProtocolError else { return false }
            let header = encoded(dataOut).getSlice(at: 0, length: 48)
            return error.kind == .dataDigestError && !error.isConnectionFatal && error.rejectReason == .dataDigestError
                && error.rejectedHeader == header && error.opcode == Opcode.scsiDataOut.rawValue
        }
        #expect(try decoder.decode(buffer: &bytes)?.pdu == samplePDUs[0])
    }

    @Test func paddingIsCoveredByTheDataDigest() {
        var bytes = encoded(samplePDUs[0], encoder: PDUEncoder(dataDigest: true))  // 5 data bytes, 3 pad bytes.
        bytes.setInteger(UInt8(1), at: 48 + 6)
        var decoder = PDUFrameDecoder(dataDigest: true)
        #expect(throws: ISCSIProtocolError.self) { _ = try decoder.decode(buffer: &bytes) }
    }

    @Test func unknownOpcodeIsRejectedAndSkipped() throws {
        var bytes = encoded(samplePDUs[0])
        bytes.setInteger(UInt8(0x1c), at: 0)  // A vendor-specific initiator opcode.
        bytes.writeImmutableBuffer(encoded(samplePDUs[1]))
        var decoder = PDUFrameDecoder()
        #expect {
            _ = try decoder.decode(buffer: &bytes)
        } throws: { error in
            guard let error = error as? ISCSIProtocolError else { return false }
            return error.kind == .unknownOpcode && !error.isConnectionFatal
                && error.rejectReason == .commandNotSupported && error.opcode == 0x1c
                && error.rejectedHeader?.getInteger(at: error.rejectedHeader!.readerIndex) == UInt8(0x1c)
        }
        #expect(try decoder.decode(buffer: &bytes)?.pdu == samplePDUs[1])
    }

    @Test func invalidFieldsAreRejected() throws {
        var residuals = encoded(try #require(samplePDUs.first { $0.opcode == .scsiResponse }))
        residuals.setInteger(UInt8(0x80 | 0x04 | 0x02), at: 1)
        var attribute = encoded(samplePDUs[1])
        attribute.setInteger(UInt8(0x80 | 0x07), at: 1)
        var stage = encoded(try #require(samplePDUs.first { $0.opcode == .loginRequest }))
        stage.setInteger(UInt8(0x80 | 0x08 | 0x03), at: 1)  // CSG 2 is reserved.
        for var bytes in [residuals, attribute, stage] {
            var decoder = PDUFrameDecoder()
            #expect {
                _ = try decoder.decode(buffer: &bytes)
            } throws: { error in
                (error as? ISCSIProtocolError)?.kind == .invalidPDUField
                    && (error as? ISCSIProtocolError)?.rejectReason == .invalidPDUField
            }
            #expect(bytes.readableBytes == 0)
        }
    }

    @Test func reservedBitsAreIgnored() throws {
        var bytes = encoded(samplePDUs[0])
        bytes.setInteger(UInt8(0x80 | 0x40), at: 0)  // Reserved bit 7 of byte 0, plus I.
        bytes.setInteger(UInt8(0xff), at: 2)
        bytes.setInteger(UInt32(0xffff_ffff), at: 40)
        var decoder = PDUFrameDecoder()
        #expect(try decoder.decode(buffer: &bytes)?.pdu == samplePDUs[0])
    }

    @Test func digestsSwitchOnBetweenPDUs() throws {
        var bytes = encoded(samplePDUs[5])
        var encoder = PDUEncoder()
        encoder.enableDigests(header: true, data: true)
        encoder.encode(samplePDUs[1], into: &bytes)
        var decoder = PDUFrameDecoder()
        #expect(try decoder.decode(buffer: &bytes)?.pdu == samplePDUs[5])
        decoder.enableDigests(header: true, data: true)
        #expect(try decoder.decode(buffer: &bytes)?.pdu == samplePDUs[1])
    }
}

/// The ``InboundPDU`` that the encoding of `pdu` decodes to.
func inbound(_ pdu: PDU, encoder: PDUEncoder = PDUEncoder()) -> InboundPDU {
    InboundPDU(pdu: pdu, basicHeaderSegment: encoded(pdu, encoder: encoder).getSlice(at: 0, length: 48)!)
}

@Suite struct PDUFrameDecoderTests {
    /// The verifier feeds byte by byte and is quadratic: keep the data segments small.
    static let verifierPDUs: [PDU] =
        samplePDUs.filter { $0.dataSegment.readableBytes <= 1024 } + [
            .scsiDataOut(
                SCSIDataOut(
                    final: false, lun: 1, initiatorTaskTag: 2, targetTransferTag: 3, expStatSN: 4, dataSN: 5,
                    bufferOffset: 6, data: ByteBuffer(repeating: 7, count: 13)))
        ]

    @Test func verifierWithoutDigests() throws {
        let pairs = Self.verifierPDUs.map { (encoded($0), [inbound($0)]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: pairs, decoderFactory: { PDUFrameDecoder(maxRecvDataSegmentLength: 1 << 16) })
    }

    @Test func verifierWithDigests() throws {
        let encoder = PDUEncoder(headerDigest: true, dataDigest: true)
        let pairs = Self.verifierPDUs.map { (encoded($0, encoder: encoder), [inbound($0, encoder: encoder)]) }
        try ByteToMessageDecoderVerifier.verifyDecoder(
            inputOutputPairs: pairs,
            decoderFactory: { PDUFrameDecoder(maxRecvDataSegmentLength: 1 << 16, headerDigest: true, dataDigest: true) })
    }

    @Test func recoverableErrorsAreThrownAndDecodingGoesOn() throws {
        var decoder = PDUFrameDecoder()
        var bytes = encoded(samplePDUs[0])
        bytes.setInteger(UInt8(0x1d), at: 0)
        bytes.writeImmutableBuffer(encoded(samplePDUs[1]))
        let error = try #require(throws: ISCSIProtocolError.self) { try decoder.decode(buffer: &bytes) }
        #expect(error.kind == .unknownOpcode)
        #expect(try decoder.decode(buffer: &bytes) == inbound(samplePDUs[1]))
    }

    /// The connection handler's way: the processor throws the error, keeps the bytes after the skipped PDU, and
    /// decodes them when it is called again with nothing new.
    @Test func aProcessorGoesOnAfterARecoverableError() throws {
        let processor = NIOSingleStepByteToMessageProcessor(PDUFrameDecoder())
        var bytes = encoded(samplePDUs[1])
        var bad = encoded(samplePDUs[0])
        bad.setInteger(UInt8(0x1d), at: 0)
        bytes.writeImmutableBuffer(bad)
        bytes.writeImmutableBuffer(encoded(samplePDUs[5]))
        var decoded: [InboundPDU] = []
        let error = try #require(throws: ISCSIProtocolError.self) {
            try processor.process(buffer: bytes) { decoded.append($0) }
        }
        #expect(error.kind == .unknownOpcode && error.rejectedHeader == bad.getSlice(at: 0, length: 48))
        #expect(decoded == [inbound(samplePDUs[1])])
        #expect(processor.unprocessedBytes == encoded(samplePDUs[5]).readableBytes)
        try processor.process(buffer: ByteBuffer()) { decoded.append($0) }
        #expect(decoded == [inbound(samplePDUs[1]), inbound(samplePDUs[5])])
        #expect(processor.unprocessedBytes == 0)
    }

    @Test func settingsChangeAtRuntime() throws {
        var decoder = PDUFrameDecoder()
        var bytes = encoded(samplePDUs[5])
        let encoder = PDUEncoder(headerDigest: true, dataDigest: true)
        bytes.writeImmutableBuffer(encoded(samplePDUs[8], encoder: encoder))
        #expect(try decoder.decode(buffer: &bytes) == inbound(samplePDUs[5]))
        decoder.enableDigests(header: true, data: true)
        decoder.maxRecvDataSegmentLength = 262_144
        #expect(try decoder.decode(buffer: &bytes) == inbound(samplePDUs[8], encoder: encoder))
    }

    @Test func fatalErrorsAreThrown() {
        var decoder = PDUFrameDecoder(maxRecvDataSegmentLength: 16)
        var bytes = encoded(samplePDUs[5])  // A Login Request with more than 16 bytes of text.
        #expect(throws: ISCSIProtocolError.self) { _ = try decoder.decode(buffer: &bytes) }
    }

    /// The BHS of a decoded PDU is the received one, reserved bits and all (a Reject echoes it), and a slice of the
    /// received bytes.
    @Test func theBasicHeaderSegmentIsTheReceivedOne() throws {
        var bytes = encoded(samplePDUs[0])
        bytes.setInteger(UInt8(0x80 | 0x40), at: 0)  // Reserved bit 7 of byte 0, plus I.
        bytes.setInteger(UInt8(0xff), at: 2)
        let received = try #require(bytes.getSlice(at: 0, length: 48))
        let storage = bytes.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        var decoder = PDUFrameDecoder()
        let decoded = try #require(try decoder.decode(buffer: &bytes))
        #expect(decoded.pdu == samplePDUs[0])
        #expect(decoded.basicHeaderSegment == received)
        #expect(decoded.basicHeaderSegment != inbound(samplePDUs[0]).basicHeaderSegment)
        #expect(decoded.basicHeaderSegment.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } == storage)
    }
}
