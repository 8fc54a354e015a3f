/// Where a negotiation takes place, which decides the keys that may appear (RFC 7143 §13, "Use:").
enum NegotiationPhase: Sendable, Hashable {
    /// Login of the first connection of a session (TSIH 0): session-wide (LO) keys may be negotiated.
    case leadingLogin
    /// Login of a connection added to an existing session: LO keys are answered Irrelevant.
    case nonLeadingLogin
    /// Text Request in Full Feature Phase: only keys of Use "ALL" or "FFO" may appear.
    case fullFeaturePhase
}

/// The operational keys of RFC 7143 §13 with their negotiation rules, from the target's side.
///
/// The negotiator answers the initiator's offers as RFC 7143 §6.2 requires and accumulates the outcome in
/// ``parameters``. Security keys (AuthMethod, CHAP_*) and the identity keys (InitiatorName, TargetName, SessionType,
/// InitiatorAlias) belong to the login state machine and are not handled here.
struct OperationalNegotiator: Sendable {
    let limits: TargetNegotiationLimits
    var parameters: NegotiatedParameters

    init(limits: TargetNegotiationLimits, parameters: NegotiatedParameters = NegotiatedParameters()) {
        self.limits = limits
        self.parameters = parameters
        self.parameters.targetMaxRecvDataSegmentLength = limits.maxRecvDataSegmentLength
    }

    /// The keys this negotiator owns; any other key is answered by the caller.
    static let operationalKeys: Set<String> = [
        "HeaderDigest", "DataDigest", "MaxConnections", "InitialR2T", "ImmediateData", "MaxRecvDataSegmentLength",
        "MaxBurstLength", "FirstBurstLength", "DefaultTime2Wait", "DefaultTime2Retain", "MaxOutstandingR2T",
        "DataPDUInOrder", "DataSequenceInOrder", "ErrorRecoveryLevel", "OFMarker", "IFMarker", "OFMarkInt",
        "IFMarkInt", "TargetAlias", "TargetAddress", "TargetPortalGroupTag", "SendTargets",
    ]

    // > RFC 7143 §13.12: MaxRecvDataSegmentLength=<numerical-value-512-to-(2**24 - 1)>
    static let maxRecvDataSegmentLengthRange = 512...16_777_215

    /// Session-wide keys (Scope: SW, "LO": leading only) that are irrelevant in a discovery session.
    // > Irrelevant when: SessionType=Discovery
    private static let irrelevantInDiscovery: Set<String> = [
        "MaxConnections", "InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength", "MaxOutstandingR2T",
        "DataPDUInOrder", "DataSequenceInOrder",
    ]

    /// Keys whose Use is LO (leading only).
    private static let leadingOnly: Set<String> = [
        "MaxConnections", "InitialR2T", "ImmediateData", "MaxBurstLength", "FirstBurstLength", "DefaultTime2Wait",
        "DefaultTime2Retain", "MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder", "ErrorRecoveryLevel",
    ]

    /// Answers the operational keys among `pairs`, in order, and appends the answers to `response`.
    ///
    /// Keys outside ``operationalKeys`` are skipped; the caller answers them.
    mutating func respond(to pairs: [TextKeyValue], phase: NegotiationPhase, response: inout [TextKeyValue]) {
        var firstBurstAnswer: Int?
        for pair in pairs where Self.operationalKeys.contains(pair.key) {
            if pair.key == "FirstBurstLength" {
                // Answered once MaxBurstLength, InitialR2T and ImmediateData of the same request are known.
                let answer = answer(to: pair, phase: phase)
                response.append(TextKeyValue(pair.key, answer ?? ""))
                firstBurstAnswer = answer == nil ? nil : response.count - 1
                continue
            }
            if let answer = answer(to: pair, phase: phase) {
                response.append(TextKeyValue(pair.key, answer))
            }
        }
        // > FirstBurstLength MUST NOT exceed MaxBurstLength.
        parameters.firstBurstLength = min(parameters.firstBurstLength, parameters.maxBurstLength)
        if let index = firstBurstAnswer, response[index].value.isEmpty {
            // > Irrelevant when: ( InitialR2T=Yes and ImmediateData=No )
            response[index].value =
                parameters.initialR2T && !parameters.immediateData
                ? TextSpecialValue.irrelevant : String(parameters.firstBurstLength)
        }
    }

    /// The answer to one key, or nil when the key needs no answer (a declaration).
    /// FirstBurstLength's accepted value is answered with an empty string, filled in by
    /// ``respond(to:phase:response:)``.
    private mutating func answer(to pair: TextKeyValue, phase: NegotiationPhase) -> String? {
        let key = pair.key
        let value = pair.value
        switch phase {
        case .fullFeaturePhase:
            // Only MaxRecvDataSegmentLength (Use: ALL) of the operational keys may be renegotiated; SendTargets
            // and the declarative keys are handled by the text negotiation.
            if key != "MaxRecvDataSegmentLength" { return TextSpecialValue.reject }
        case .nonLeadingLogin:
            if Self.leadingOnly.contains(key) { return TextSpecialValue.irrelevant }
        case .leadingLogin:
            break
        }
        if parameters.sessionType == .discovery && Self.irrelevantInDiscovery.contains(key) {
            return TextSpecialValue.irrelevant
        }

        switch key {
        case "HeaderDigest", "DataDigest":
            // > The responding party MUST answer with the first value it supports from the offered list.
            let chosen = TextKeys.listValues(value).lazy.compactMap { DigestAlgorithm(rawValue: String($0)) }
                .first { self.limits.supportedDigests.contains($0) }
            guard let chosen else { return TextSpecialValue.reject }
            if key == "HeaderDigest" { parameters.headerDigest = chosen } else { parameters.dataDigest = chosen }
            return chosen.rawValue

        case "MaxRecvDataSegmentLength":
            // Declarative: the initiator tells how much it receives. The target declares its own separately.
            guard let length = Self.number(value, in: Self.maxRecvDataSegmentLengthRange) else {
                return TextSpecialValue.reject
            }
            parameters.initiatorMaxRecvDataSegmentLength = length
            return phase == .fullFeaturePhase ? String(limits.maxRecvDataSegmentLength) : nil

        case "MaxConnections":
            return negotiateMinimum(value, range: 1...65_535, ours: limits.maxConnections, \.maxConnections)
        case "MaxBurstLength":
            return negotiateMinimum(value, range: 512...16_777_215, ours: limits.maxBurstLength, \.maxBurstLength)
        case "FirstBurstLength":
            guard
                negotiateMinimum(value, range: 512...16_777_215, ours: limits.firstBurstLength, \.firstBurstLength)
                    != TextSpecialValue.reject
            else { return TextSpecialValue.reject }
            return ""
        case "DefaultTime2Retain":
            return negotiateMinimum(value, range: 0...3600, ours: limits.defaultTime2Retain, \.defaultTime2Retain)
        case "MaxOutstandingR2T":
            return negotiateMinimum(value, range: 1...65_535, ours: limits.maxOutstandingR2T, \.maxOutstandingR2T)
        case "ErrorRecoveryLevel":
            // Ferry implements ErrorRecoveryLevel 0 only.
            return negotiateMinimum(value, range: 0...2, ours: 0, \.errorRecoveryLevel)
        case "DefaultTime2Wait":
            // > Result function is Maximum.
            guard let offered = Self.number(value, in: 0...3600) else { return TextSpecialValue.reject }
            parameters.defaultTime2Wait = max(offered, limits.defaultTime2Wait)
            return String(parameters.defaultTime2Wait)

        case "InitialR2T":
            // > Result function is OR.
            return negotiateBoolean(value, ours: limits.initialR2T, combine: { $0 || $1 }, \.initialR2T)
        case "ImmediateData":
            // > Result function is AND.
            return negotiateBoolean(value, ours: limits.immediateData, combine: { $0 && $1 }, \.immediateData)
        case "DataPDUInOrder":
            // Ferry's write path expects Data-Out PDUs in order: its value is Yes, so the OR result is Yes.
            return negotiateBoolean(value, ours: true, combine: { $0 || $1 }, \.dataPDUInOrder)
        case "DataSequenceInOrder":
            return negotiateBoolean(value, ours: true, combine: { $0 || $1 }, \.dataSequenceInOrder)

        case "OFMarker", "IFMarker":
            // RFC 7143 removed markers (RFC 3720 §A.3); the AND result with the target's No is No.
            return value == "Yes" || value == "No" ? "No" : TextSpecialValue.reject
        case "OFMarkInt", "IFMarkInt":
            return TextSpecialValue.irrelevant

        default:
            // TargetAlias, TargetAddress, TargetPortalGroupTag are sent by targets only; SendTargets is FFO.
            return TextSpecialValue.irrelevant
        }
    }

    private mutating func negotiateMinimum(
        _ value: String, range: ClosedRange<Int>, ours: Int, _ keyPath: WritableKeyPath<NegotiatedParameters, Int>
    ) -> String {
        // > ... the responding party MUST respond with ... the minimum of the offered value and its own.
        guard let offered = Self.number(value, in: range) else { return TextSpecialValue.reject }
        let result = min(offered, ours)
        parameters[keyPath: keyPath] = result
        return String(result)
    }

    private mutating func negotiateBoolean(
        _ value: String, ours: Bool, combine: (Bool, Bool) -> Bool,
        _ keyPath: WritableKeyPath<NegotiatedParameters, Bool>
    ) -> String {
        let offered: Bool
        switch value {
        case "Yes": offered = true
        case "No": offered = false
        default: return TextSpecialValue.reject
        }
        let result = combine(offered, ours)
        parameters[keyPath: keyPath] = result
        return result ? "Yes" : "No"
    }

    /// Parses a numerical value (RFC 7143 §6.1: an unsigned decimal-constant or hex-constant) and checks its range.
    ///
    /// Digits only: `Int(_:radix:)` alone would also take a sign after the `0x` ("0x-0", "0x+200"). A number beyond
    /// `Int` is nil, as is any number outside `range`.
    static func number(_ value: String, in range: ClosedRange<Int>) -> Int? {
        let isHex = value.hasPrefix("0x") || value.hasPrefix("0X")
        let digits = isHex ? value.utf8.dropFirst(2) : value.utf8[...]
        let isDigit: (UInt8) -> Bool =
            isHex ? { BinaryValue.hexValue($0) != nil } : { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }
        guard !digits.isEmpty, digits.allSatisfy(isDigit),
            let parsed = Int(Substring(digits), radix: isHex ? 16 : 10), range.contains(parsed)
        else { return nil }
        return parsed
    }
}
