import NIOCore
import Testing

@testable import ISCSIProtocol

/// No BHS field, AHS or length on the wire may trap the decoder or the login state machine: every input decodes
/// to a PDU or to an ``ISCSIProtocolError`` that the target answers. A trap would end the test process.
@Suite struct WireArithmeticTests {
    /// A PDU of `opcode` whose BHS is `fill` everywhere but byte 0, byte 1, TotalAHSLength and DataSegmentLength,
    /// followed by `ahsWords` words of AHS (filled with `fill`) and its data segment and padding.
    private func pdu(opcode: UInt8, byte1: UInt8, fill: UInt8, ahsWords: UInt8, dataSegmentLength: Int) -> ByteBuffer {
        var bytes = [UInt8](repeating: fill, count: BasicHeaderSegment.length)
        bytes[0] = opcode
        bytes[1] = byte1
        bytes[4] = ahsWords
        bytes[5] = UInt8(truncatingIfNeeded: dataSegmentLength >> 16)
        bytes[6] = UInt8(truncatingIfNeeded: dataSegmentLength >> 8)
        bytes[7] = UInt8(truncatingIfNeeded: dataSegmentLength)
        bytes += [UInt8](repeating: fill, count: Int(ahsWords) * 4)
        bytes += [UInt8](
            repeating: 0, count: dataSegmentLength + BasicHeaderSegment.padding(for: dataSegmentLength))
        return ByteBuffer(bytes: bytes)
    }

    /// Every opcode (those RFC 7143 defines and the others), every value of byte 1, all other fields 0x00 or 0xff,
    /// no AHS or the largest, a data segment of 0, 3 or 8192 bytes: each PDU is consumed whole or ends the stream
    /// with a connection-fatal error.
    @Test(arguments: [0x00 as UInt8, 0xff])
    func everyHeaderDecodesOrThrows(_ fill: UInt8) {
        var outcomes = 0
        for opcode in UInt8(0)...0x3f {
            for byte1 in UInt8.min...UInt8.max {
                for (ahsWords, dataSegmentLength) in [(UInt8(0), 0), (1, 3), (255, 8192)] {
                    var bytes = pdu(
                        opcode: opcode | 0x40, byte1: byte1, fill: fill, ahsWords: ahsWords,
                        dataSegmentLength: dataSegmentLength)
                    var decoder = PDUFrameDecoder()
                    do {
                        let decoded = try decoder.decode(buffer: &bytes)
                        #expect(decoded != nil)
                    } catch {
                        #expect(error.isConnectionFatal || error.rejectedHeader?.readableBytes == 48, "\(error)")
                    }
                    #expect(bytes.readableBytes == 0)
                    outcomes += 1
                }
            }
        }
        #expect(outcomes == 64 * 256 * 3)
    }

    /// The largest DataSegmentLength the field holds, under a limit that admits it: the decoder waits for the body.
    @Test func largestDataSegmentLengthWaitsForItsBody() throws {
        var header = ByteBuffer(
            bytes: pdu(opcode: 0x00, byte1: 0x80, fill: 0, ahsWords: 255, dataSegmentLength: 0).readableBytesView)
        header.setBytes([0xff, 0xff, 0xff], at: 5)
        var decoder = PDUFrameDecoder(maxRecvDataSegmentLength: BasicHeaderSegment.maximumDataSegmentLength)
        #expect(try decoder.decode(buffer: &header) == nil)
    }

    /// AHS lengths that claim more than the AHS holds, none at all, or a bidirectional AHS of the wrong size.
    @Test(arguments: [
        [0xff, 0xff, 0x01, 0x00], [0x00, 0x00, 0x01, 0x00], [0x00, 0x01, 0x01, 0x00], [0x00, 0x05, 0x02, 0x00],
        [0x00, 0x04, 0x02, 0x00, 0, 0, 0, 0], [0x00, 0x01, 0x3f, 0x00],
    ] as [[UInt8]])
    func malformedAHSOfACommand(_ ahs: [UInt8]) {
        var bytes = pdu(opcode: 0x01, byte1: 0x81, fill: 0, ahsWords: UInt8(ahs.count / 4), dataSegmentLength: 0)
        bytes.setBytes(ahs, at: BasicHeaderSegment.length)
        var decoder = PDUFrameDecoder()
        do {
            _ = try decoder.decode(buffer: &bytes)
        } catch {
            #expect(error.kind == .invalidPDUField, "\(error)")
        }
        #expect(bytes.readableBytes == 0)
    }

    /// Every Login Request the decoder refuses, whatever its byte 1, is answered 0x0200 with its ITT: the 64 with
    /// CSG = 2 and the 24 others with T = 1 and NSG = 2.
    @Test func everyUndecodableLoginRequestIsAnInitiatorError() throws {
        var refused = 0
        for byte1 in UInt8.min...UInt8.max {
            var bytes = pdu(opcode: 0x43, byte1: byte1, fill: 0, ahsWords: 0, dataSegmentLength: 0)
            bytes.setInteger(UInt32(0x5150), at: BasicHeaderSegment.initiatorTaskTagOffset)
            var decoder = PDUFrameDecoder()
            let error: ISCSIProtocolError
            do {
                _ = try decoder.decode(buffer: &bytes)
                continue
            } catch let caught {
                error = caught
                refused += 1
            }
            var machine = LoginStateMachine(
                configuration: LoginConfiguration(), policy: NoTargets(), initialStatSN: 1)
            guard case .rejectLogin(let response, _) = machine.undecodablePDUReceived(error) else {
                Issue.record("byte 1 = 0x\(String(byte1, radix: 16)): \(error) was not answered")
                continue
            }
            #expect(response.statusClass == 2 && response.statusDetail == 0)
            #expect(response.initiatorTaskTag == 0x5150 && !response.transit)
        }
        #expect(refused == 88)
    }

    /// An error without a header (a header digest error) during login: nothing to answer, the connection closes.
    @Test func anErrorWithoutAHeaderClosesTheLogin() {
        var machine = LoginStateMachine(configuration: LoginConfiguration(), policy: NoTargets(), initialStatSN: 1)
        let error = ISCSIProtocolError.headerDigestError(expected: 1, received: 2, opcode: 0x03)
        #expect(machine.undecodablePDUReceived(error) == .closeConnection)
    }
}

private struct NoTargets: LoginPolicy {
    func target(named name: String) -> LoginTarget? { nil }
}
