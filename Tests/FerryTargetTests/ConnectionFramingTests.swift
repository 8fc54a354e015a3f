import FerryConfig
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import FerryTarget
@testable import ISCSIProtocol

/// A connection's pipeline, as ``TargetContext/configure(_:portal:)`` builds it, in an `EmbeddedChannel`: bytes go
/// in as a socket would deliver them, and the PDUs the target writes are decoded back.
private final class TestConnection {
    static let initiatorName = "iqn.2026-12.dev.ferry.test:framing"

    let directory: URL
    let context: TargetContext
    let channel: EmbeddedChannel
    /// Set by ``logIn(headerDigest:dataDigest:pipelined:)`` to what the target declared and negotiated.
    private(set) var encoder = PDUEncoder()
    private var decoder = PDUFrameDecoder(maxRecvDataSegmentLength: 1 << 24)
    private var written = ByteBuffer()
    private var cmdSN: UInt32 = 1
    private var expStatSN: UInt32 = 0
    private var nextTag: UInt32 = 0x100

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("framing-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let portal = Portal(host: "127.0.0.1")
        let configuration = FerryConfiguration(portals: [portal], targets: [], stateDirectory: directory.path)
        context = try TargetContext(configuration: configuration, logger: Logger(label: "framing-test"))
        channel = EmbeddedChannel()
        try context.configure(channel, portal: portal)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 50_000)).wait()
    }

    deinit {
        _ = try? channel.finish(acceptAlreadyClosed: true)
        context.shutdown()
        try? FileManager.default.removeItem(at: directory)
    }

    /// Logs in a discovery session with one final Login Request, asking for the digests given. `pipelined` is sent
    /// in the same read, after the request. Returns the Login Response, if one was written.
    @discardableResult
    func logIn(headerDigest: Bool = false, dataDigest: Bool = false, pipelined: ByteBuffer = ByteBuffer()) throws
        -> LoginResponse?
    {
        let keys = [
            "InitiatorName=\(Self.initiatorName)", "SessionType=Discovery",
            "HeaderDigest=\(headerDigest ? "CRC32C" : "None")", "DataDigest=\(dataDigest ? "CRC32C" : "None")",
        ]
        let request = LoginRequest(
            transit: true, continue: false, currentStage: .loginOperationalNegotiation, nextStage: .fullFeaturePhase,
            isid: ISID(rawValue: 0x8000_0000_0001), tsih: 0, initiatorTaskTag: 0, cid: 0, cmdSN: cmdSN,
            expStatSN: 0, data: ByteBuffer(string: keys.map { $0 + "\0" }.joined()))
        var bytes = encoded(.loginRequest(request))
        bytes.writeImmutableBuffer(pipelined)
        try send(bytes)
        guard case .loginResponse(let response)? = try receive().first else { return nil }
        #expect(response.statusClass == 0 && response.transit && response.nextStage == .fullFeaturePhase)
        expStatSN = response.sequence.statSN &+ 1
        encoder.enableDigests(header: headerDigest, data: dataDigest)
        decoder.enableDigests(header: headerDigest, data: dataDigest)
        return response
    }

    /// A Text Request asking for SendTargets=All, which a discovery session answers.
    func sendTargets() -> TextRequest {
        defer { nextTag += 1 }
        return TextRequest(
            immediate: true, final: true, continue: false, lun: 0, initiatorTaskTag: nextTag,
            targetTransferTag: reservedTag, cmdSN: cmdSN, expStatSN: expStatSN,
            data: ByteBuffer(string: "SendTargets=All\0"))
    }

    func encoded(_ pdu: PDU) -> ByteBuffer {
        var bytes = ByteBuffer()
        encoder.encode(pdu, into: &bytes)
        return bytes
    }

    /// Delivers `bytes` as one read, or in reads of `chunk` bytes.
    func send(_ bytes: ByteBuffer, chunk: Int? = nil) throws {
        var bytes = bytes
        while bytes.readableBytes > 0 {
            let read = bytes.readSlice(length: min(chunk ?? bytes.readableBytes, bytes.readableBytes))!
            try channel.writeInbound(read)
            channel.embeddedEventLoop.run()
        }
    }

    /// The PDUs the target wrote since the last call.
    func receive() throws -> [PDU] {
        channel.embeddedEventLoop.run()
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { written.writeImmutableBuffer(buffer) }
        var pdus: [PDU] = []
        while let inbound = try decoder.decode(buffer: &written) { pdus.append(inbound.pdu) }
        return pdus
    }
}

private func rejects(_ pdus: [PDU]) -> [Reject] {
    pdus.compactMap { if case .reject(let reject) = $0 { reject } else { nil } }
}

private func textResponses(_ pdus: [PDU]) -> [TextResponse] {
    pdus.compactMap { if case .textResponse(let response) = $0 { response } else { nil } }
}

/// ``ConnectionHandler`` frames what it reads with a ``PDUFrameDecoder`` of its own: every PDU reaches the login or
/// the session; a PDU it can skip is answered with a Reject carrying the header as it was received, and decoding goes
/// on; anything else ends the connection.
@Suite struct ConnectionFramingTests {
    @Test(arguments: [nil, 1, 7] as [Int?])
    func aDecodedPDUReachesTheSession(chunk: Int?) throws {
        let connection = try TestConnection()
        #expect(try connection.logIn(headerDigest: true, dataDigest: true) != nil)
        let request = connection.sendTargets()
        try connection.send(connection.encoded(.textRequest(request)), chunk: chunk)
        let responses = textResponses(try connection.receive())
        #expect(responses.map(\.initiatorTaskTag) == [request.initiatorTaskTag])
        #expect(connection.channel.isActive)
    }

    /// RFC 7143 §11.17: the data segment of a Reject is the header of the rejected PDU, here byte for byte what the
    /// initiator sent, reserved bits included. The PDUs after it in the same read are decoded and answered.
    @Test func aPDUThatCanBeSkippedIsRejectedWithTheHeaderItCameWith() throws {
        let connection = try TestConnection()
        #expect(try connection.logIn() != nil)
        // A vendor-specific opcode, with reserved bytes set.
        var unknown = connection.encoded(.textRequest(connection.sendTargets()))
        unknown.setInteger(UInt8(0x40 | 0x1c), at: 0)
        unknown.setInteger(UInt16(0xa5a5), at: 2)
        // A SCSI Command with the reserved task attribute 7.
        var attribute = connection.encoded(
            .scsiCommand(
                SCSICommand(
                    final: true, read: true, write: false, lun: 0, initiatorTaskTag: 0x77,
                    expectedDataTransferLength: 512, cmdSN: 1, expStatSN: 1, cdb: ByteBuffer(repeating: 0, count: 16))))
        attribute.setInteger(UInt8(0x80 | 0x40 | 0x07), at: 1)
        let request = connection.sendTargets()
        var bytes = unknown
        bytes.writeImmutableBuffer(attribute)
        bytes.writeImmutableBuffer(connection.encoded(.textRequest(request)))
        try connection.send(bytes)
        let pdus = try connection.receive()
        let answered = rejects(pdus)
        #expect(answered.map(\.reason) == [.commandNotSupported, .invalidPDUField])
        #expect(answered.map(\.data) == [unknown.getSlice(at: 0, length: 48)!, attribute.getSlice(at: 0, length: 48)!])
        #expect(textResponses(pdus).map(\.initiatorTaskTag) == [request.initiatorTaskTag])
        #expect(connection.channel.isActive)
    }

    @Test func aDataDigestErrorIsRejectedAndTheConnectionGoesOn() throws {
        let connection = try TestConnection()
        #expect(try connection.logIn(headerDigest: true, dataDigest: true) != nil)
        var corrupt = connection.encoded(.textRequest(connection.sendTargets()))
        corrupt.setInteger(UInt8(ascii: "X"), at: 48 + 4)  // The first data byte, after BHS and HeaderDigest.
        let request = connection.sendTargets()
        var bytes = corrupt
        bytes.writeImmutableBuffer(connection.encoded(.textRequest(request)))
        try connection.send(bytes, chunk: 5)
        let pdus = try connection.receive()
        #expect(rejects(pdus).map(\.reason) == [.dataDigestError])
        #expect(rejects(pdus).map(\.data) == [corrupt.getSlice(at: 0, length: 48)!])
        #expect(textResponses(pdus).map(\.initiatorTaskTag) == [request.initiatorTaskTag])
        #expect(connection.channel.isActive)
    }

    /// A data segment over the MaxRecvDataSegmentLength the target declared: the stream cannot be framed any more.
    /// The Reject says why, with the header, and the connection closes without reading the data.
    @Test func aDataSegmentOverTheLimitClosesTheConnection() throws {
        let connection = try TestConnection()
        #expect(try connection.logIn() != nil)
        let limit = connection.context.configuration.limits.maxRecvDataSegmentLength
        var header = connection.encoded(.textRequest(connection.sendTargets())).getSlice(at: 0, length: 48)!
        header.setBytes([UInt8(truncatingIfNeeded: (limit + 1) >> 16), UInt8(truncatingIfNeeded: (limit + 1) >> 8),
                         UInt8(truncatingIfNeeded: limit + 1)], at: 5)
        try connection.send(header)
        let answered = rejects(try connection.receive())
        #expect(answered.map(\.reason) == [.protocolError])
        #expect(answered.map(\.data) == [header])
        #expect(!connection.channel.isActive)
        #expect(connection.context.registry.count == 0)
    }

    /// RFC 7143 §7.8: at ErrorRecoveryLevel 0 a header digest error ends the connection; nothing of the header can
    /// be trusted, so nothing is answered.
    @Test func aHeaderDigestErrorClosesTheConnection() throws {
        let connection = try TestConnection()
        #expect(try connection.logIn(headerDigest: true) != nil)
        var corrupt = connection.encoded(.textRequest(connection.sendTargets()))
        corrupt.setInteger(UInt8(0x42), at: 20)
        try connection.send(corrupt)
        #expect(try connection.receive().isEmpty)
        #expect(!connection.channel.isActive)
        #expect(connection.context.registry.count == 0)
    }

    /// During login the default 8192 bytes apply: a longer data segment is answered with a Login Response,
    /// Initiator Error, and the connection closes.
    @Test func duringLoginADataSegmentOverTheDefaultLimitClosesTheConnection() throws {
        let connection = try TestConnection()
        let request = LoginRequest(
            transit: false, continue: false, currentStage: .loginOperationalNegotiation,
            nextStage: .loginOperationalNegotiation, isid: ISID(rawValue: 1), tsih: 0, initiatorTaskTag: 9, cid: 0,
            cmdSN: 1, expStatSN: 0, data: ByteBuffer(repeating: UInt8(ascii: "a"), count: 8193))
        try connection.send(connection.encoded(.loginRequest(request)))
        guard case .loginResponse(let response)? = try connection.receive().first else {
            Issue.record("no Login Response")
            return
        }
        #expect(response.statusClass == 2 && response.statusDetail == 0)
        #expect(response.initiatorTaskTag == 9)
        #expect(!connection.channel.isActive)
    }

    /// The initiator sends nothing between its final Login Request and the final Login Response. Bytes that arrive
    /// with the request would be framed with the digests of full feature phase although they were sent before it:
    /// the connection closes, and the session admitted for it is discarded.
    @Test func bytesSentBeforeTheFinalLoginResponseCloseTheConnection() throws {
        let connection = try TestConnection()
        let early = connection.encoded(.textRequest(connection.sendTargets())).getSlice(at: 0, length: 20)!
        #expect(try connection.logIn(headerDigest: true, pipelined: early) == nil)
        #expect(!connection.channel.isActive)
        #expect(connection.context.registry.count == 0)
    }
}
