import NIOCore

/// Everything the engine needs to admit a login into a session (RFC 7143 §6.3, §11.12.5-6).
public struct LoginSummary: Sendable, Hashable {
    public var isid: ISID
    /// The TSIH the initiator sent: 0 asks for a new session (or reinstatement of one with the same ISID and
    /// initiator name), non-zero adds a connection to that session.
    public var tsih: UInt16
    public var cid: UInt16
    /// The CmdSN of the login: the session's first CmdSN for a leading login.
    public var cmdSN: UInt32
    public var initiatorName: String
    public var initiatorAlias: String?
    public var sessionType: SessionType
    /// The target of a normal session; nil for discovery.
    public var target: LoginTarget?
    /// The CHAP user that authenticated, nil for AuthMethod=None.
    public var authenticatedUser: String?
    public var parameters: NegotiatedParameters
}

/// What the engine does after an event.
public enum LoginAction: Sendable, Hashable {
    /// Send this Login Response; the login goes on.
    case sendLoginResponse(LoginResponse)
    /// Decide whether the login may join or create a session, then call
    /// ``LoginStateMachine/sessionAdmitted(tsih:expCmdSN:maxCmdSN:)`` or
    /// ``LoginStateMachine/sessionRefused(_:reason:)``.
    case admitSession(LoginSummary)
    /// Send this final Login Response, then enter Full Feature Phase with these parameters. The connection's next
    /// StatSN is the response's StatSN + 1.
    case completeLogin(LoginResponse, NegotiatedParameters)
    /// Send this Login Response (status class 2 or 3), then close the connection.
    case rejectLogin(LoginResponse, reason: String)
    /// Close the connection without sending anything.
    case closeConnection
}

/// The target side of one connection's login phase (RFC 7143 §6.3, §11.12, §11.13).
///
/// The state machine decides and the connection handler acts: every event returns one ``LoginAction``. It checks the
/// login stages and the T/C bits, authenticates with CHAP, negotiates the operational keys and asks the engine to
/// admit the session before answering the final Login Response.
public struct LoginStateMachine: Sendable {
    /// What the login of this connection has established so far.
    struct Context: Sendable {
        enum Authentication: Sendable {
            /// AuthMethod not negotiated yet.
            case pending
            case chap(CHAPAuthenticator)
            /// Authentication done (AuthMethod=None, or CHAP succeeded) or not asked for.
            case complete
        }

        let isid: ISID
        let tsih: UInt16
        let cid: UInt16
        let cmdSN: UInt32
        var stage: LoginStage
        var statSN: UInt32
        var identified = false
        var initiatorName = ""
        var initiatorAlias: String?
        var target: LoginTarget?
        var requiredCHAP: CHAPAccount?
        var mutualCHAP: CHAPAccount?
        var authentication: Authentication = .pending
        var authenticatedUser: String?
        var negotiator: OperationalNegotiator
        /// Every key the initiator sent, with its value.
        var seenKeys: [String: String] = [:]
        var accumulator: TextSegmentAccumulator
        /// Our own response text still to send, with the transition to apply after its last chunk.
        var outgoing: (chunker: TextResponseChunker, transit: Bool, nextStage: LoginStage)?
        var declaredTargetKeys = false
        var declaredMaxRecvDataSegmentLength = false

        var isLeading: Bool { tsih == 0 }
    }

    private enum State: Sendable {
        case waitingForFirstRequest
        case negotiating(Context)
        /// The final response is ready, the engine decides on the session.
        case admitting(Context, text: ByteBuffer, nextStage: LoginStage)
        case fullFeaturePhase
        case failed
        case modifying
    }

    /// During login, the initiator's MaxRecvDataSegmentLength is not in force yet.
    // > The default MaxRecvDataSegmentLength ... 8192 bytes ... used during Login.
    private static let loginDataSegmentLimit = 8192

    let configuration: LoginConfiguration
    let policy: any LoginPolicy
    private let initialStatSN: UInt32
    var random: any RandomNumberGenerator & Sendable
    private var state: State = .waitingForFirstRequest
    /// The ITT of the request being answered: each Login Request's ITT is echoed in its response.
    private var pendingInitiatorTaskTag: UInt32 = 0

    /// - Parameters:
    ///   - initialStatSN: the StatSN of the first Login Response (the connection's starting StatSN).
    ///   - random: the source of CHAP identifiers and challenges; inject a seeded generator in tests.
    public init(
        configuration: LoginConfiguration, policy: any LoginPolicy, initialStatSN: UInt32,
        random: any RandomNumberGenerator & Sendable = SystemRandomNumberGenerator()
    ) {
        self.configuration = configuration
        self.policy = policy
        self.initialStatSN = initialStatSN
        self.random = random
    }

    // MARK: - Events

    /// A Login Request arrived.
    public mutating func loginRequestReceived(_ request: LoginRequest) -> LoginAction {
        switch state {
        case .waitingForFirstRequest:
            // > VersionMin ... the lowest version supported. Ferry implements version 0x00 (RFC 7143) only.
            guard request.versionMin == 0 else {
                state = .failed
                return .rejectLogin(
                    rejection(to: request, statSN: initialStatSN, status: .unsupportedVersion),
                    reason: "initiator requires iSCSI version \(request.versionMin) or later")
            }
            guard request.currentStage != .fullFeaturePhase else {
                state = .failed
                return .rejectLogin(
                    rejection(to: request, statSN: initialStatSN, status: .initiatorError),
                    reason: "first Login Request has CSG=FullFeaturePhase")
            }
            let context = Context(
                isid: request.isid, tsih: request.tsih, cid: request.cid, cmdSN: request.cmdSN,
                stage: request.currentStage, statSN: initialStatSN,
                negotiator: OperationalNegotiator(limits: configuration.limits),
                accumulator: TextSegmentAccumulator(limit: configuration.limits.maxTextLength))
            state = .modifying
            return process(request, context: context)
        case .negotiating(let context):
            state = .modifying
            return process(request, context: context)
        case .admitting(let context, _, _):
            state = .failed
            return .rejectLogin(
                rejection(to: request, statSN: context.statSN, status: .initiatorError),
                reason: "Login Request received while the final response was pending")
        case .fullFeaturePhase, .failed:
            state = .failed
            return .closeConnection
        case .modifying:
            preconditionFailure("LoginStateMachine re-entered")
        }
    }

    /// The engine admitted the login: `tsih` identifies the (new or existing) session, `expCmdSN`/`maxCmdSN` are the
    /// session's command window. Returns the final Login Response.
    public mutating func sessionAdmitted(tsih: UInt16, expCmdSN: UInt32, maxCmdSN: UInt32) -> LoginAction {
        guard case .admitting(let context, let text, let nextStage) = state else {
            preconditionFailure("sessionAdmitted without admitSession")
        }
        state = .fullFeaturePhase
        let response = LoginResponse(
            transit: true, currentStage: context.stage, nextStage: nextStage, isid: context.isid, tsih: tsih,
            initiatorTaskTag: pendingInitiatorTaskTag,
            sequence: StatusSequence(statSN: context.statSN, expCmdSN: expCmdSN, maxCmdSN: maxCmdSN),
            statusClass: 0, statusDetail: 0, data: text)
        return .completeLogin(response, context.negotiator.parameters)
    }

    /// The engine refused the login (e.g. 0x020a session does not exist, 0x0206 too many connections,
    /// 0x0302 out of resources). Returns the rejecting Login Response.
    public mutating func sessionRefused(_ status: LoginStatus, reason: String) -> LoginAction {
        guard case .admitting(let context, _, _) = state else {
            preconditionFailure("sessionRefused without admitSession")
        }
        state = .failed
        let response = LoginResponse(
            transit: false, currentStage: context.stage, nextStage: context.stage, isid: context.isid,
            tsih: context.tsih, initiatorTaskTag: pendingInitiatorTaskTag, sequence: sequence(context),
            statusClass: status.statusClass, statusDetail: status.statusDetail, data: ByteBuffer())
        return .rejectLogin(response, reason: reason)
    }

    /// The login did not complete in time: close the connection.
    public mutating func loginTimedOut() -> LoginAction {
        state = .failed
        return .closeConnection
    }

    /// A PDU other than a Login Request arrived during login (RFC 7143 §11.13.5: 0x020b "invalid request type
    /// during login").
    public mutating func unexpectedPDUReceived(initiatorTaskTag: UInt32) -> LoginAction {
        let context: Context
        switch state {
        case .negotiating(let c), .admitting(let c, _, _): context = c
        default:
            state = .failed
            return .closeConnection
        }
        state = .failed
        let response = LoginResponse(
            transit: false, currentStage: context.stage, nextStage: context.stage, isid: context.isid,
            tsih: context.tsih, initiatorTaskTag: initiatorTaskTag, sequence: sequence(context),
            statusClass: LoginStatus.invalidRequestDuringLogin.statusClass,
            statusDetail: LoginStatus.invalidRequestDuringLogin.statusDetail, data: ByteBuffer())
        return .rejectLogin(response, reason: "non-login PDU during login")
    }

    /// A PDU arrived that the decoder could not decode (``ISCSIProtocolError``).
    ///
    /// A Login Request whose header can be read is answered with a Login Response of status 0x0200 before the
    /// connection closes: its ITT, ISID and TSIH are echoed, so that the initiator learns why. Any other opcode is
    /// a non-login PDU during login (0x020b); without a header there is nothing to answer.
    public mutating func undecodablePDUReceived(_ error: ISCSIProtocolError) -> LoginAction {
        // > RFC 7143 §11.12.3: 0 - SecurityNegotiation, 1 - LoginOperationalNegotiation, 3 - FullFeaturePhase.
        // > All other codes are reserved.
        // > RFC 7143 §11.13.5: Initiator error (0x02), 0x00: Miscellaneous iSCSI initiator errors.
        guard let header = error.rejectedHeader, header.readableBytes >= BasicHeaderSegment.length else {
            state = .failed
            return .closeConnection
        }
        let bhs = BHSReader(header)
        guard bhs.opcode == Opcode.loginRequest.rawValue else {
            return unexpectedPDUReceived(initiatorTaskTag: bhs.initiatorTaskTag)
        }
        let statSN: UInt32
        let stage: LoginStage
        switch state {
        case .waitingForFirstRequest:
            statSN = initialStatSN
            stage = LoginStage(rawValue: (bhs.u8(1) >> 2) & 0x03) ?? .securityNegotiation
        case .negotiating(let context), .admitting(let context, _, _):
            statSN = context.statSN
            stage = context.stage
        case .fullFeaturePhase, .failed, .modifying:
            state = .failed
            return .closeConnection
        }
        state = .failed
        let response = rejection(
            isid: bhs.isid, tsih: bhs.u16(14), initiatorTaskTag: bhs.initiatorTaskTag, cmdSN: bhs.u32(24),
            stage: stage, statSN: statSN, status: .initiatorError)
        return .rejectLogin(response, reason: error.diagnostics ?? error.kind.description)
    }

    // MARK: - Processing

    private mutating func process(_ request: LoginRequest, context: Context) -> LoginAction {
        var context = context
        pendingInitiatorTaskTag = request.initiatorTaskTag
        do throws(LoginFailure) {
            let action = try negotiate(request, context: &context)
            if case .modifying = state { state = .negotiating(context) }
            return action
        } catch {
            state = .failed
            return .rejectLogin(
                rejection(to: request, statSN: context.statSN, status: error.status), reason: error.reason)
        }
    }

    private mutating func negotiate(_ request: LoginRequest, context: inout Context) throws(LoginFailure) -> LoginAction
    {
        // > ISID, TSIH and CID ... the same for all Login Requests of a login.
        guard request.isid == context.isid, request.tsih == context.tsih, request.cid == context.cid else {
            throw LoginFailure(.initiatorError, "ISID, TSIH or CID changed during login")
        }
        // > A Login Request with the C bit set to 1 MUST have the T bit set to 0.
        if request.continue && request.transit {
            throw LoginFailure(.initiatorError, "Login Request with both C and T set")
        }
        guard request.currentStage == context.stage else {
            throw LoginFailure(
                .initiatorError, "Login Request CSG \(request.currentStage) while in stage \(context.stage)")
        }
        if request.transit && request.nextStage <= request.currentStage {
            throw LoginFailure(.initiatorError, "Login Request transits to NSG \(request.nextStage) not after CSG")
        }

        // Our own text still being fetched by the initiator with empty requests.
        if var outgoing = context.outgoing {
            guard request.data.readableBytes == 0 else {
                throw LoginFailure(.initiatorError, "text sent while the target's response was continued")
            }
            context.outgoing = nil
            return try send(
                &outgoing.chunker, transit: outgoing.transit, nextStage: outgoing.nextStage,
                request: request, context: &context)
        }

        let joined: ByteBuffer?
        do {
            joined = try context.accumulator.append(request.data, continued: request.continue)
        } catch {
            throw LoginFailure(.initiatorError, error.description)
        }
        guard let text = joined else {
            // > ... the target MUST answer with a Login Response with no data while the initiator continues.
            return .sendLoginResponse(response(to: request, context: &context, transit: false, data: ByteBuffer()))
        }
        let pairs: [TextKeyValue]
        do {
            pairs = try TextKeys.parse(text)
        } catch {
            throw LoginFailure(.initiatorError, error.description)
        }
        // > Neither the initiator nor the target should attempt to declare or negotiate a parameter more than once
        // > during login ... If such an attempt is detected by the target, the target MUST respond with Login reject
        // > (initiator error).
        // One leniency: libiscsi declares its identity again, unchanged, in LoginOperationalNegotiation when the
        // target answered AuthMethod=None to its AuthMethod=CHAP,None. The same value again changes nothing, so
        // only a different one is refused.
        for pair in pairs {
            guard let previous = context.seenKeys.updateValue(pair.value, forKey: pair.key) else {
                // Keys never repeat, so each request may bring new ones: bound what the login remembers.
                guard context.seenKeys.count <= TextKeys.maximumKeyCount else {
                    throw LoginFailure(.initiatorError, "more than \(TextKeys.maximumKeyCount) keys during login")
                }
                continue
            }
            guard Self.identityKeys.contains(pair.key), previous == pair.value else {
                throw LoginFailure(.initiatorError, "key \(pair.key) negotiated twice during login")
            }
        }

        if !context.identified {
            try identify(pairs, stage: request.currentStage, context: &context)
        }

        var answers: [TextKeyValue] = []
        if context.stage == .securityNegotiation {
            try authenticate(pairs, answers: &answers, context: &context)
        } else if let key = pairs.first(where: { Self.isSecurityKey($0.key) })?.key {
            throw LoginFailure(.initiatorError, "security key \(key) outside SecurityNegotiation")
        }

        // The initiator's declaration bounds every PDU the target sends it: one it cannot keep ends the login,
        // rather than a Reject answer and the default 8192 in force (RFC 7143 §13.12, §11.13.5 0x0200).
        if let declared = pairs.first(where: { $0.key == "MaxRecvDataSegmentLength" }),
            OperationalNegotiator.number(declared.value, in: OperationalNegotiator.maxRecvDataSegmentLengthRange)
                == nil
        {
            throw LoginFailure(
                .initiatorError, "\(declared) is outside \(OperationalNegotiator.maxRecvDataSegmentLengthRange)")
        }

        let phase: NegotiationPhase = context.isLeading ? .leadingLogin : .nonLeadingLogin
        context.negotiator.respond(to: pairs, phase: phase, response: &answers)
        for pair in pairs where !Self.isHandledKey(pair.key) {
            // > If a responder does not understand any particular key, the responder MUST answer with
            // > key=NotUnderstood.
            answers.append(TextKeyValue(pair.key, TextSpecialValue.notUnderstood))
        }

        // May the target transit? Only when the initiator asked to, and authentication is complete.
        var transit = request.transit
        if transit && context.stage == .securityNegotiation {
            switch context.authentication {
            case .complete:
                break
            case .pending:
                // The initiator leaves security without negotiating AuthMethod: only fine when none is required.
                if context.requiredCHAP != nil {
                    throw LoginFailure(.authenticationFailure, "initiator skipped the required CHAP authentication")
                }
                context.authentication = .complete
            case .chap:
                transit = false
            }
        }

        // Target declarations.
        if context.target != nil && !context.declaredTargetKeys {
            // > TargetPortalGroupTag ... The target MUST return it in the first Login Response PDU.
            context.declaredTargetKeys = true
            answers.append(TextKeyValue("TargetPortalGroupTag", String(configuration.portalGroupTag)))
            if let alias = context.target?.alias {
                answers.append(TextKeyValue("TargetAlias", alias))
            }
        }
        if !context.declaredMaxRecvDataSegmentLength
            && (context.stage == .loginOperationalNegotiation || (transit && request.nextStage == .fullFeaturePhase))
        {
            context.declaredMaxRecvDataSegmentLength = true
            answers.append(
                TextKeyValue("MaxRecvDataSegmentLength", String(configuration.limits.maxRecvDataSegmentLength)))
        }

        var data = ByteBuffer()
        data.reserveCapacity(TextKeys.encodedLength(of: answers))
        TextKeys.write(answers, into: &data)
        var chunker = TextResponseChunker(data)
        return try send(&chunker, transit: transit, nextStage: request.nextStage, request: request, context: &context)
    }

    /// Sends the next chunk of our response; on the last chunk applies the stage transition.
    private mutating func send(
        _ chunker: inout TextResponseChunker, transit: Bool, nextStage: LoginStage, request: LoginRequest,
        context: inout Context
    ) throws(LoginFailure) -> LoginAction {
        let (chunk, more) = chunker.next(maximumLength: Self.loginDataSegmentLimit)
        if more {
            context.outgoing = (chunker, transit, nextStage)
            var response = response(to: request, context: &context, transit: false, data: chunk)
            response.continue = true
            return .sendLoginResponse(response)
        }
        guard transit else {
            return .sendLoginResponse(response(to: request, context: &context, transit: false, data: chunk))
        }
        if nextStage == .fullFeaturePhase {
            let summary = LoginSummary(
                isid: context.isid, tsih: context.tsih, cid: context.cid, cmdSN: context.cmdSN,
                initiatorName: context.initiatorName, initiatorAlias: context.initiatorAlias,
                sessionType: context.negotiator.parameters.sessionType, target: context.target,
                authenticatedUser: context.authenticatedUser, parameters: context.negotiator.parameters)
            state = .admitting(context, text: chunk, nextStage: nextStage)
            return .admitSession(summary)
        }
        let response = response(to: request, context: &context, transit: true, data: chunk)
        context.stage = nextStage
        return .sendLoginResponse(response)
    }

    /// Keys answered by identification, authentication or the operational negotiator.
    private static func isHandledKey(_ key: String) -> Bool {
        identityKeys.contains(key) || isSecurityKey(key) || OperationalNegotiator.operationalKeys.contains(key)
    }

    // MARK: - Responses

    private func sequence(_ context: Context) -> StatusSequence {
        // Login Requests are not queued: ExpCmdSN stays at the login's CmdSN.
        StatusSequence(
            statSN: context.statSN, expCmdSN: context.cmdSN,
            maxCmdSN: context.cmdSN &+ max(1, configuration.commandWindow) &- 1)
    }

    private func response(
        to request: LoginRequest, context: inout Context, transit: Bool, data: ByteBuffer
    ) -> LoginResponse {
        let response = LoginResponse(
            transit: transit, currentStage: request.currentStage,
            nextStage: transit ? request.nextStage : request.currentStage, isid: context.isid, tsih: context.tsih,
            initiatorTaskTag: request.initiatorTaskTag, sequence: sequence(context), statusClass: 0, statusDetail: 0,
            data: data)
        // > The next response of any kind ... will carry this number + 1.
        context.statSN &+= 1
        return response
    }

    private func rejection(to request: LoginRequest, statSN: UInt32, status: LoginStatus) -> LoginResponse {
        rejection(
            isid: request.isid, tsih: request.tsih, initiatorTaskTag: request.initiatorTaskTag, cmdSN: request.cmdSN,
            stage: request.currentStage, statSN: statSN, status: status)
    }

    private func rejection(
        isid: ISID, tsih: UInt16, initiatorTaskTag: UInt32, cmdSN: UInt32, stage: LoginStage, statSN: UInt32,
        status: LoginStatus
    ) -> LoginResponse {
        LoginResponse(
            transit: false, currentStage: stage, nextStage: stage, isid: isid, tsih: tsih,
            initiatorTaskTag: initiatorTaskTag,
            sequence: StatusSequence(
                statSN: statSN, expCmdSN: cmdSN, maxCmdSN: cmdSN &+ max(1, configuration.commandWindow) &- 1),
            statusClass: status.statusClass, statusDetail: status.statusDetail, data: ByteBuffer())
    }
}
