import NIOCore

/// What the engine does with a Text Request in Full Feature Phase.
public enum TextNegotiationAction: Sendable, Hashable {
    /// Send this Text Response. When `parameters` is set, the negotiation changed them (MaxRecvDataSegmentLength):
    /// apply them to the PDUs sent after this response.
    case sendTextResponse(TextResponse, parameters: NegotiatedParameters?)
    /// Answer the Text Request with a Reject PDU carrying its header.
    case reject(Reject.Reason, reason: String)
}

/// Text negotiation in Full Feature Phase, target side (RFC 7143 §6.2, §11.10-11.11): SendTargets and the
/// renegotiation of MaxRecvDataSegmentLength, with C-bit continuation in both directions.
public struct TextNegotiationStateMachine: Sendable {
    private var negotiator: OperationalNegotiator
    private var accumulator: TextSegmentAccumulator
    /// Our response text still to be fetched, its ITT and TTT.
    private var outgoing: (chunker: TextResponseChunker, initiatorTaskTag: UInt32, targetTransferTag: UInt32)?
    private var nextTargetTransferTag: UInt32 = 1

    /// - Parameter parameters: the parameters the login negotiated for this connection's session.
    public init(parameters: NegotiatedParameters, limits: TargetNegotiationLimits) {
        self.negotiator = OperationalNegotiator(limits: limits, parameters: parameters)
        self.accumulator = TextSegmentAccumulator(limit: limits.maxTextLength)
    }

    /// The parameters in force, including renegotiations.
    public var parameters: NegotiatedParameters { negotiator.parameters }

    /// A Text Request arrived.
    ///
    /// - Parameters:
    ///   - sequence: StatSN, ExpCmdSN and MaxCmdSN for the response, should one be sent.
    ///   - visibleTargets: the targets this initiator may see, for SendTargets.
    public mutating func textRequestReceived(
        _ request: TextRequest, sequence: StatusSequence, visibleTargets: [SendTargetsEntry]
    ) -> TextNegotiationAction {
        // > A Text Request with the C bit set to 1 MUST have the F bit set to 0.
        if request.continue && request.final {
            accumulator.reset()
            return .reject(.protocolError, reason: "Text Request with both C and F set")
        }

        if !accumulator.isAccumulating && request.targetTransferTag != reservedTag {
            // The initiator fetches the rest of our continued response.
            guard var pending = outgoing, pending.targetTransferTag == request.targetTransferTag,
                pending.initiatorTaskTag == request.initiatorTaskTag, request.data.readableBytes == 0
            else {
                outgoing = nil
                return .reject(.protocolError, reason: "Text Request with an unknown Target Transfer Tag")
            }
            outgoing = nil
            return send(&pending.chunker, request: request, sequence: sequence, parameters: nil)
        }
        // > ... a Text Request with the Target Transfer Tag set to 0xffffffff ... resets the negotiation.
        outgoing = nil

        let joined: ByteBuffer?
        do {
            joined = try accumulator.append(request.data, continued: request.continue)
        } catch {
            return .reject(.protocolError, reason: error.description)
        }
        guard let text = joined else {
            // The initiator continues its text: acknowledge with an empty response.
            let response = TextResponse(
                final: false, initiatorTaskTag: request.initiatorTaskTag, targetTransferTag: reservedTag,
                sequence: sequence, data: ByteBuffer())
            return .sendTextResponse(response, parameters: nil)
        }
        let pairs: [TextKeyValue]
        do {
            pairs = try TextKeys.parse(text)
        } catch {
            return .reject(.protocolError, reason: error.description)
        }

        let before = negotiator.parameters
        var answers: [TextKeyValue] = []
        for pair in pairs {
            switch pair.key {
            case "SendTargets":
                if let pairs = SendTargets.response(
                    to: pair.value, sessionTarget: negotiator.parameters.targetName, visibleTargets: visibleTargets)
                {
                    answers += pairs
                } else {
                    answers.append(TextKeyValue(pair.key, TextSpecialValue.reject))
                }
            case _ where OperationalNegotiator.operationalKeys.contains(pair.key):
                negotiator.respond(to: [pair], phase: .fullFeaturePhase, response: &answers)
            case "InitiatorName", "InitiatorAlias", "TargetName", "SessionType", "AuthMethod":
                // Initialize-only keys cannot be renegotiated in Full Feature Phase.
                answers.append(TextKeyValue(pair.key, TextSpecialValue.reject))
            case _ where CHAPAuthenticator.keys.contains(pair.key):
                answers.append(TextKeyValue(pair.key, TextSpecialValue.reject))
            default:
                answers.append(TextKeyValue(pair.key, TextSpecialValue.notUnderstood))
            }
        }
        var data = ByteBuffer()
        data.reserveCapacity(TextKeys.encodedLength(of: answers))
        TextKeys.write(answers, into: &data)
        var chunker = TextResponseChunker(data)
        let changed = negotiator.parameters == before ? nil : negotiator.parameters
        // The response itself is still bound by the MaxRecvDataSegmentLength in force before it.
        negotiator.parameters.initiatorMaxRecvDataSegmentLength = before.initiatorMaxRecvDataSegmentLength
        let action = send(&chunker, request: request, sequence: sequence, parameters: changed)
        if let changed { negotiator.parameters = changed }
        return action
    }

    private mutating func send(
        _ chunker: inout TextResponseChunker, request: TextRequest, sequence: StatusSequence,
        parameters: NegotiatedParameters?
    ) -> TextNegotiationAction {
        let (chunk, more) = chunker.next(maximumLength: negotiator.parameters.initiatorMaxRecvDataSegmentLength)
        let final = request.final && !more
        var targetTransferTag = reservedTag
        if !final {
            // > When the target sets the F bit to 0 (or C to 1) it MUST set the Target Transfer Tag to a value other
            // > than the reserved 0xffffffff.
            targetTransferTag = nextTargetTransferTag
            nextTargetTransferTag = nextTargetTransferTag &+ 1 == reservedTag ? 1 : nextTargetTransferTag &+ 1
        }
        if more {
            outgoing = (chunker, request.initiatorTaskTag, targetTransferTag)
        }
        let response = TextResponse(
            final: final, continue: more, initiatorTaskTag: request.initiatorTaskTag,
            targetTransferTag: targetTransferTag, sequence: sequence, data: chunk)
        return .sendTextResponse(response, parameters: parameters)
    }
}
