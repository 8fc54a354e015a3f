// MARK: - Identification and authentication

extension LoginStateMachine {
    /// Reads the identity keys of the first complete request: who logs in, to what, and what authentication the
    /// target requires (RFC 7143 §13.4-13.6, §13.21).
    func identify(_ pairs: [TextKeyValue], stage: LoginStage, context: inout Context) throws(LoginFailure) {
        func value(_ key: String) -> String? { pairs.first { $0.key == key }?.value }
        context.identified = true

        // > InitiatorName ... MUST be sent in the first Login Request of the login phase.
        guard let initiatorName = value("InitiatorName"), !initiatorName.isEmpty else {
            throw LoginFailure(.missingParameter, "InitiatorName missing from the first Login Request")
        }
        context.initiatorName = initiatorName
        context.initiatorAlias = value("InitiatorAlias")
        context.negotiator.parameters.initiatorName = initiatorName
        context.negotiator.parameters.initiatorAlias = context.initiatorAlias

        let sessionType: SessionType
        switch value("SessionType") {
        case nil: sessionType = .normal
        case let text?:
            guard let type = SessionType(rawValue: text) else {
                throw LoginFailure(.sessionTypeNotSupported, "SessionType=\(text) is not supported")
            }
            sessionType = type
        }
        context.negotiator.parameters.sessionType = sessionType

        switch sessionType {
        case .discovery:
            context.requiredCHAP = configuration.discoveryCHAP
            context.mutualCHAP = configuration.discoveryMutualCHAP
        case .normal:
            // > TargetName ... MUST be sent in the first Login Request if the login phase is for a Normal session.
            guard let targetName = value("TargetName"), !targetName.isEmpty else {
                throw LoginFailure(.missingParameter, "TargetName missing from a Normal session's login")
            }
            guard let target = policy.target(named: targetName) else {
                throw LoginFailure(.notFound, "target \(targetName) does not exist here")
            }
            guard target.admits(initiatorName: initiatorName) else {
                throw LoginFailure(.authorizationFailure, "\(initiatorName) is not allowed to log in to \(targetName)")
            }
            context.target = target
            context.requiredCHAP = target.chap
            context.mutualCHAP = target.mutualCHAP
            context.negotiator.parameters.targetName = targetName
            if let maximum = target.maximumTransferLength {
                context.negotiator = OperationalNegotiator(
                    limits: Self.limits(configuration.limits, boundedBy: maximum),
                    parameters: context.negotiator.parameters)
            }
        }

        if stage == .loginOperationalNegotiation {
            // The initiator skipped SecurityNegotiation.
            if context.requiredCHAP != nil {
                throw LoginFailure(.authenticationFailure, "initiator skipped the required CHAP authentication")
            }
            context.authentication = .complete
        }
    }

    /// Handles AuthMethod and the CHAP keys in SecurityNegotiation.
    mutating func authenticate(
        _ pairs: [TextKeyValue], answers: inout [TextKeyValue], context: inout Context
    ) throws(LoginFailure) {
        if let offered = pairs.first(where: { $0.key == "AuthMethod" })?.value {
            guard case .pending = context.authentication else {
                throw LoginFailure(.initiatorError, "AuthMethod negotiated twice")
            }
            let acceptable = context.requiredCHAP == nil ? "None" : "CHAP"
            guard TextKeys.listValues(offered).contains(where: { $0 == acceptable }) else {
                throw LoginFailure(.authenticationFailure, "AuthMethod=\(offered) does not include \(acceptable)")
            }
            answers.append(TextKeyValue("AuthMethod", acceptable))
            if let account = context.requiredCHAP {
                context.authentication = .chap(
                    CHAPAuthenticator(
                        account: account, mutualAccount: context.mutualCHAP,
                        algorithms: configuration.limits.chapAlgorithms))
            } else {
                context.authentication = .complete
            }
        }
        let chapPairs = pairs.filter { CHAPAuthenticator.keys.contains($0.key) }
        guard case .chap(var authenticator) = context.authentication else {
            if let key = chapPairs.first?.key {
                throw LoginFailure(.initiatorError, "\(key) sent without AuthMethod=CHAP")
            }
            return
        }
        answers += try authenticator.process(chapPairs, random: &random)
        if authenticator.isAuthenticated {
            context.authentication = .complete
            context.authenticatedUser = authenticator.account.user
        } else {
            context.authentication = .chap(authenticator)
        }
    }

    static func isSecurityKey(_ key: String) -> Bool {
        key == "AuthMethod" || CHAPAuthenticator.keys.contains(key)
    }

    /// The declarative keys that say who logs in to what (RFC 7143 §13.4-13.6, §13.21).
    static let identityKeys: Set<String> = ["InitiatorName", "InitiatorAlias", "TargetName", "SessionType"]

    /// The negotiation limits for a target whose logical units take at most `maximumTransferLength` bytes per
    /// command: MaxBurstLength and FirstBurstLength no higher (RFC 7143 §13.13-14 allow any value from 512).
    static func limits(_ limits: TargetNegotiationLimits, boundedBy maximumTransferLength: Int)
        -> TargetNegotiationLimits
    {
        var bounded = limits
        let maximum = max(512, maximumTransferLength)
        bounded.maxBurstLength = min(limits.maxBurstLength, maximum)
        bounded.firstBurstLength = min(limits.firstBurstLength, bounded.maxBurstLength)
        return bounded
    }
}
