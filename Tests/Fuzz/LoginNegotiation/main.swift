import FuzzSupport
import ISCSIProtocol
import NIOCore

/// libFuzzer target: the login phase and the text negotiation after it, as one connection sees them.
///
/// Input: one byte of settings, then the byte stream from the initiator. Settings bit 0 makes the target ask for
/// CHAP, bit 1 gives it a mutual CHAP account, bit 2 asks discovery sessions for CHAP, bit 3 refuses the session
/// when the login asks to be admitted (as a full `max_sessions` would). The stream is framed as a connection frames
/// it: 8 KiB data segments during login, then the digests and the limit the login negotiated. Login Requests go to
/// ``LoginStateMachine``; once the login completes, Text Requests go to ``TextNegotiationStateMachine``.
///
/// Checked after every event: nothing traps, every Login Response echoes the request's ITT and fits the login's
/// 8 KiB limit, the stage only moves forward, the negotiated parameters lie within RFC 7143's ranges, and every Text
/// Response fits the initiator's MaxRecvDataSegmentLength.
func fuzzLoginNegotiation(_ input: UnsafeBufferPointer<UInt8>) {
    guard let settings = input.first else { return }
    var connection = FuzzedConnection(settings: settings)
    var buffer = ByteBuffer(bytes: input.dropFirst())
    while connection.isOpen {
        let decoded: InboundPDU?
        do throws(ISCSIProtocolError) {
            decoded = try connection.decoder.decode(buffer: &buffer)
        } catch {
            // As the connection does: a PDU it can keep framing after is answered, anything else ends it.
            guard !error.isConnectionFatal else { return }
            connection.undecodable(error)
            continue
        }
        guard let decoded else { return }
        connection.received(decoded.pdu)
    }
}

private let targetName = "iqn.2026-12.dev.ferry:fuzz"

private struct FuzzPolicy: LoginPolicy {
    let target: LoginTarget
    func target(named name: String) -> LoginTarget? { name == target.name ? target : nil }
}

/// A fixed generator, so that every run of an input takes the same CHAP challenges.
private struct SplitMix64: RandomNumberGenerator, Sendable {
    var state: UInt64 = 0x5EED
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private struct FuzzedConnection {
    var decoder = PDUFrameDecoder(maxRecvDataSegmentLength: 8192)
    var login: LoginStateMachine
    var text: TextNegotiationStateMachine?
    var isOpen = true
    let refusesSession: Bool
    var stage = LoginStage.securityNegotiation
    let limits = TargetNegotiationLimits()

    init(settings: UInt8) {
        let account = CHAPAccount(user: "fuzz", secret: "fuzz-secret-0123")
        let target = LoginTarget(
            name: targetName, chap: settings & 1 != 0 ? account : nil,
            mutualCHAP: settings & 2 != 0 ? CHAPAccount(user: "target", secret: "target-secret-01") : nil)
        let configuration = LoginConfiguration(
            limits: limits, discoveryCHAP: settings & 4 != 0 ? account : nil)
        login = LoginStateMachine(
            configuration: configuration, policy: FuzzPolicy(target: target), initialStatSN: 1, random: SplitMix64())
        refusesSession = settings & 8 != 0
    }

    mutating func received(_ pdu: PDU) {
        if var negotiation = text {
            guard case .textRequest(let request) = pdu else { return }
            let action = negotiation.textRequestReceived(
                request, sequence: StatusSequence(statSN: 2, expCmdSN: 1, maxCmdSN: 128),
                visibleTargets: [SendTargetsEntry(name: targetName, addresses: ["127.0.0.1:3260,1"])])
            if case .sendTextResponse(let response, _) = action {
                require(
                    response.data.readableBytes <= negotiation.parameters.initiatorMaxRecvDataSegmentLength,
                    "a Text Response of \(response.data.readableBytes) bytes exceeds the initiator's limit")
                require(response.initiatorTaskTag == request.initiatorTaskTag, "Text Response ITT")
            }
            text = negotiation
            return
        }
        if case .loginRequest(let request) = pdu {
            handle(login.loginRequestReceived(request), initiatorTaskTag: request.initiatorTaskTag)
        } else {
            handle(login.unexpectedPDUReceived(initiatorTaskTag: pdu.initiatorTaskTagForFuzzing), initiatorTaskTag: nil)
        }
    }

    /// A PDU the decoder skipped: the login answers it; after login it is not this target's business.
    mutating func undecodable(_ error: ISCSIProtocolError) {
        guard text == nil else { return }
        handle(login.undecodablePDUReceived(error), initiatorTaskTag: nil)
    }

    private mutating func handle(_ action: LoginAction, initiatorTaskTag: UInt32?) {
        switch action {
        case .sendLoginResponse(let response):
            check(response, initiatorTaskTag: initiatorTaskTag)
            require(response.statusClass == 0, "a login that goes on answers status 0")
        case .admitSession(let summary):
            require(
                summary.parameters.sessionType == .discovery || summary.target?.name == targetName,
                "admission asked for \(String(describing: summary.target?.name))")
            if refusesSession {
                handle(login.sessionRefused(.outOfResources, reason: "fuzz"), initiatorTaskTag: initiatorTaskTag)
            } else {
                handle(login.sessionAdmitted(tsih: 1, expCmdSN: summary.cmdSN, maxCmdSN: summary.cmdSN &+ 127),
                       initiatorTaskTag: initiatorTaskTag)
            }
        case .completeLogin(let response, let parameters):
            check(response, initiatorTaskTag: initiatorTaskTag)
            require(response.transit && response.nextStage == .fullFeaturePhase, "final response")
            check(parameters)
            decoder.enableDigests(header: parameters.headerDigest == .crc32c, data: parameters.dataDigest == .crc32c)
            decoder.maxRecvDataSegmentLength = parameters.targetMaxRecvDataSegmentLength
            text = TextNegotiationStateMachine(parameters: parameters, limits: limits)
        case .rejectLogin(let response, _):
            check(response, initiatorTaskTag: initiatorTaskTag, goesOn: false)
            require(
                response.statusClass == 2 || response.statusClass == 3,
                "a refusal is class 2 or 3, not \(response.statusClass)/\(response.statusDetail)")
            isOpen = false
        case .closeConnection:
            isOpen = false
        }
    }

    /// A refusal echoes whatever stage the refused request named, so only responses that go on keep the stage
    /// moving forward.
    private mutating func check(_ response: LoginResponse, initiatorTaskTag: UInt32?, goesOn: Bool = true) {
        require(response.data.readableBytes <= 8192, "a Login Response exceeds 8 KiB")
        if let initiatorTaskTag {
            require(response.initiatorTaskTag == initiatorTaskTag, "a Login Response must echo the ITT")
        }
        guard goesOn else { return }
        require(response.currentStage >= stage, "the login stage went back")
        stage = response.currentStage
    }

    private func check(_ parameters: NegotiatedParameters) {
        let dataSegmentRange = 512...16_777_215
        require(dataSegmentRange.contains(parameters.initiatorMaxRecvDataSegmentLength), "\(parameters)")
        require(dataSegmentRange.contains(parameters.targetMaxRecvDataSegmentLength), "\(parameters)")
        require(dataSegmentRange.contains(parameters.maxBurstLength), "\(parameters)")
        require((512...parameters.maxBurstLength).contains(parameters.firstBurstLength), "\(parameters)")
        require((1...65_535).contains(parameters.maxConnections), "\(parameters)")
        require((1...65_535).contains(parameters.maxOutstandingR2T), "\(parameters)")
        require((0...3600).contains(parameters.defaultTime2Wait), "\(parameters)")
        require((0...3600).contains(parameters.defaultTime2Retain), "\(parameters)")
        require(parameters.errorRecoveryLevel == 0, "Ferry offers ErrorRecoveryLevel 0 only")
    }
}

extension PDU {
    /// The ITT at bytes 16-19 of the PDU's header, which every initiator PDU carries.
    fileprivate var initiatorTaskTagForFuzzing: UInt32 {
        var header = ByteBuffer()
        PDUEncoder().writeHeaderSegment(self, into: &header)
        return header.getInteger(at: 16) ?? 0
    }
}

// Last, after every global of this file has its value: top-level code runs in order.
runFuzzer(fuzzLoginNegotiation)
