import NIOCore
import Testing

@testable import ISCSIProtocol

@Suite struct NegotiationTests {
    private func negotiate(
        _ pairs: [(String, String)], phase: NegotiationPhase = .leadingLogin,
        limits: TargetNegotiationLimits = TargetNegotiationLimits(), sessionType: SessionType = .normal
    ) -> (answers: [String: String], parameters: NegotiatedParameters) {
        var negotiator = OperationalNegotiator(limits: limits)
        negotiator.parameters.sessionType = sessionType
        var answers: [TextKeyValue] = []
        negotiator.respond(to: pairs.map { TextKeyValue($0.0, $0.1) }, phase: phase, response: &answers)
        return (Dictionary(answers.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 }), negotiator.parameters)
    }

    @Test func defaultsAreRFC7143Defaults() {
        let parameters = NegotiatedParameters()
        #expect(parameters.initiatorMaxRecvDataSegmentLength == 8192)
        #expect(parameters.maxBurstLength == 262_144)
        #expect(parameters.firstBurstLength == 65_536)
        #expect(parameters.initialR2T && parameters.immediateData)
        #expect(parameters.maxOutstandingR2T == 1 && parameters.maxConnections == 1)
        #expect(parameters.defaultTime2Wait == 2 && parameters.defaultTime2Retain == 20)
        #expect(parameters.headerDigest == .none && parameters.errorRecoveryLevel == 0)
    }

    @Test func digestsPickTheInitiatorsFirstSupportedValue() {
        var (answers, parameters) = negotiate([("HeaderDigest", "CRC32C,None"), ("DataDigest", "None,CRC32C")])
        #expect(answers == ["HeaderDigest": "CRC32C", "DataDigest": "None"])
        #expect(parameters.headerDigest == .crc32c && parameters.dataDigest == .none)

        var limits = TargetNegotiationLimits()
        limits.supportedDigests = [.none]
        (answers, parameters) = negotiate([("HeaderDigest", "CRC32C,None"), ("DataDigest", "CRC32C")], limits: limits)
        #expect(answers == ["HeaderDigest": "None", "DataDigest": "Reject"])
        #expect(parameters.headerDigest == .none)
    }

    @Test func minimumKeys() {
        var limits = TargetNegotiationLimits()
        limits.maxBurstLength = 65_536
        limits.maxOutstandingR2T = 4
        limits.maxConnections = 2
        let (answers, parameters) = negotiate(
            [
                ("MaxBurstLength", "1048576"), ("MaxOutstandingR2T", "1"), ("MaxConnections", "8"),
                ("DefaultTime2Retain", "0"), ("ErrorRecoveryLevel", "2"),
            ], limits: limits)
        #expect(
            answers == [
                "MaxBurstLength": "65536", "MaxOutstandingR2T": "1", "MaxConnections": "2",
                "DefaultTime2Retain": "0", "ErrorRecoveryLevel": "0",
            ])
        #expect(parameters.maxBurstLength == 65_536 && parameters.maxOutstandingR2T == 1)
        #expect(parameters.maxConnections == 2 && parameters.defaultTime2Retain == 0)
        #expect(parameters.errorRecoveryLevel == 0)
    }

    @Test func defaultTime2WaitIsMaximum() {
        var limits = TargetNegotiationLimits()
        limits.defaultTime2Wait = 5
        #expect(negotiate([("DefaultTime2Wait", "2")], limits: limits).answers == ["DefaultTime2Wait": "5"])
        #expect(negotiate([("DefaultTime2Wait", "10")], limits: limits).parameters.defaultTime2Wait == 10)
    }

    @Test func booleanKeys() {
        var limits = TargetNegotiationLimits()
        limits.initialR2T = false
        limits.immediateData = true
        var result = negotiate(
            [("InitialR2T", "No"), ("ImmediateData", "Yes"), ("DataPDUInOrder", "No"), ("DataSequenceInOrder", "No")],
            limits: limits)
        #expect(
            result.answers == [
                "InitialR2T": "No", "ImmediateData": "Yes", "DataPDUInOrder": "Yes", "DataSequenceInOrder": "Yes",
            ])
        #expect(!result.parameters.initialR2T && result.parameters.immediateData)
        limits.initialR2T = true
        limits.immediateData = false
        result = negotiate([("InitialR2T", "No"), ("ImmediateData", "Yes")], limits: limits)
        #expect(result.answers == ["InitialR2T": "Yes", "ImmediateData": "No"])
    }

    @Test func firstBurstLengthIsAtMostMaxBurstLength() {
        let (answers, parameters) = negotiate(
            [("FirstBurstLength", "262144"), ("MaxBurstLength", "131072"), ("InitialR2T", "No")])
        #expect(answers["FirstBurstLength"] == "131072")
        #expect(parameters.firstBurstLength == 131_072 && parameters.maxBurstLength == 131_072)
    }

    @Test func firstBurstLengthIsIrrelevantWithInitialR2TAndNoImmediateData() {
        var limits = TargetNegotiationLimits()
        limits.immediateData = false
        let answers = negotiate(
            [("InitialR2T", "Yes"), ("ImmediateData", "Yes"), ("FirstBurstLength", "65536")], limits: limits
        ).answers
        #expect(answers["FirstBurstLength"] == "Irrelevant")
    }

    @Test func maxRecvDataSegmentLengthIsDeclarative() {
        let (answers, parameters) = negotiate([("MaxRecvDataSegmentLength", "0x10000")])
        #expect(answers.isEmpty)
        #expect(parameters.initiatorMaxRecvDataSegmentLength == 65_536)
        #expect(parameters.targetMaxRecvDataSegmentLength == TargetNegotiationLimits().maxRecvDataSegmentLength)
    }

    @Test(arguments: [
        ("MaxRecvDataSegmentLength", "511"), ("MaxRecvDataSegmentLength", "16777216"), ("MaxBurstLength", "abc"),
        ("MaxConnections", "0"), ("DefaultTime2Wait", "3601"), ("ErrorRecoveryLevel", "3"), ("InitialR2T", "yes"),
        ("MaxOutstandingR2T", "-1"), ("FirstBurstLength", ""),
        // RFC 7143 §6.1 numerical values are unsigned: a hex-constant is "0x" or "0X" and hex digits, no sign.
        ("DefaultTime2Wait", "0x-0"), ("MaxBurstLength", "0x+200"), ("DefaultTime2Retain", "0x"),
        ("MaxBurstLength", "+512"),
        // Numbers beyond Int must not trap: 2^63, 2^64, and as many digits as a value may hold.
        ("MaxBurstLength", "9223372036854775808"), ("FirstBurstLength", "18446744073709551616"),
        ("MaxConnections", "0x10000000000000000"), ("MaxOutstandingR2T", String(repeating: "9", count: 255)),
        ("ErrorRecoveryLevel", "0x" + String(repeating: "f", count: 253)),
    ])
    func invalidValuesAreRejected(_ key: String, _ value: String) {
        #expect(negotiate([(key, value)]).answers == [key: "Reject"])
    }

    @Test func discoveryMakesSessionKeysIrrelevant() {
        let answers = negotiate(
            [("MaxConnections", "1"), ("InitialR2T", "Yes"), ("MaxBurstLength", "512"), ("DefaultTime2Wait", "2")],
            sessionType: .discovery
        ).answers
        #expect(
            answers == [
                "MaxConnections": "Irrelevant", "InitialR2T": "Irrelevant", "MaxBurstLength": "Irrelevant",
                "DefaultTime2Wait": "2",
            ])
    }

    @Test func leadingOnlyKeysAreIrrelevantOnAddedConnections() {
        let answers = negotiate([("MaxBurstLength", "512"), ("HeaderDigest", "None")], phase: .nonLeadingLogin).answers
        #expect(answers == ["MaxBurstLength": "Irrelevant", "HeaderDigest": "None"])
    }

    @Test func fullFeaturePhaseOnlyRenegotiatesMaxRecvDataSegmentLength() {
        let (answers, parameters) = negotiate(
            [("MaxRecvDataSegmentLength", "16384"), ("MaxBurstLength", "512")], phase: .fullFeaturePhase)
        #expect(answers == ["MaxRecvDataSegmentLength": "262144", "MaxBurstLength": "Reject"])
        #expect(parameters.initiatorMaxRecvDataSegmentLength == 16_384)
    }

    @Test func markersAndTargetOnlyKeys() {
        let answers = negotiate([("OFMarker", "Yes"), ("IFMarkInt", "1~65535"), ("TargetAlias", "x")]).answers
        #expect(answers == ["OFMarker": "No", "IFMarkInt": "Irrelevant", "TargetAlias": "Irrelevant"])
    }
}

@Suite struct TextNegotiationTests {
    private let targets = [
        SendTargetsEntry(name: "iqn.2024-01.dev.ferry:a", addresses: ["192.0.2.1:3260,1", "[2001:db8::1]:3260,1"]),
        SendTargetsEntry(name: "iqn.2024-01.dev.ferry:b", addresses: ["192.0.2.1:3260,1"]),
    ]
    private let sequence = StatusSequence(statSN: 5, expCmdSN: 2, maxCmdSN: 9)

    private func machine(sessionTarget: String?, initiatorMaxRecv: Int = 8192) -> TextNegotiationStateMachine {
        var parameters = NegotiatedParameters()
        parameters.sessionType = sessionTarget == nil ? .discovery : .normal
        parameters.targetName = sessionTarget
        parameters.initiatorMaxRecvDataSegmentLength = initiatorMaxRecv
        return TextNegotiationStateMachine(parameters: parameters, limits: TargetNegotiationLimits())
    }

    private func text(_ pairs: [(String, String)], ttt: UInt32 = reservedTag) -> TextRequest {
        TextRequest(initiatorTaskTag: 3, targetTransferTag: ttt, cmdSN: 2, expStatSN: 5, data: textBuffer(pairs))
    }

    @Test func sendTargetsAllInDiscovery() throws {
        var machine = machine(sessionTarget: nil)
        let action = machine.textRequestReceived(
            text([("SendTargets", "All")]), sequence: sequence, visibleTargets: targets)
        guard case .sendTextResponse(let response, let parameters) = action else {
            Issue.record("expected a Text Response, got \(action)")
            return
        }
        #expect(parameters == nil)
        #expect(response.final && !response.continue && response.targetTransferTag == reservedTag)
        #expect(response.initiatorTaskTag == 3 && response.sequence == sequence)
        #expect(
            TextKeys.parseAllowingRepeats(response.data) == [
                TextKeyValue("TargetName", "iqn.2024-01.dev.ferry:a"),
                TextKeyValue("TargetAddress", "192.0.2.1:3260,1"),
                TextKeyValue("TargetAddress", "[2001:db8::1]:3260,1"),
                TextKeyValue("TargetName", "iqn.2024-01.dev.ferry:b"),
                TextKeyValue("TargetAddress", "192.0.2.1:3260,1"),
            ])
    }

    @Test func sendTargetsValues() {
        #expect(SendTargets.response(to: "", sessionTarget: nil, visibleTargets: targets) == nil)
        #expect(
            SendTargets.response(to: "iqn.2024-01.dev.ferry:b", sessionTarget: nil, visibleTargets: targets)
                == [
                    TextKeyValue("TargetName", "iqn.2024-01.dev.ferry:b"),
                    TextKeyValue("TargetAddress", "192.0.2.1:3260,1"),
                ])
        // A Normal session only learns about its own target.
        for value in ["", "All", "iqn.2024-01.dev.ferry:b"] {
            let pairs = SendTargets.response(
                to: value, sessionTarget: "iqn.2024-01.dev.ferry:b", visibleTargets: targets)
            #expect(pairs?.first == TextKeyValue("TargetName", "iqn.2024-01.dev.ferry:b"))
            #expect(pairs?.count == 2)
        }
        #expect(
            SendTargets.response(
                to: "iqn.2024-01.dev.ferry:a", sessionTarget: "iqn.2024-01.dev.ferry:b",
                visibleTargets: targets) == [])
    }

    @Test func longResponseIsContinued() throws {
        let many = (0..<40).map {
            SendTargetsEntry(name: "iqn.2024-01.dev.ferry:target-\($0)", addresses: ["192.0.2.1:3260,1"])
        }
        var machine = machine(sessionTarget: nil, initiatorMaxRecv: 512)
        var collected = ByteBuffer()
        var action = machine.textRequestReceived(
            text([("SendTargets", "All")]), sequence: sequence, visibleTargets: many)
        var rounds = 0
        while case .sendTextResponse(var response, _) = action {
            rounds += 1
            #expect(response.data.readableBytes <= 512)
            collected.writeBuffer(&response.data)
            if !response.continue {
                #expect(response.final && response.targetTransferTag == reservedTag)
                break
            }
            #expect(!response.final && response.targetTransferTag != reservedTag)
            action = machine.textRequestReceived(
                text([], ttt: response.targetTransferTag), sequence: sequence, visibleTargets: many)
        }
        #expect(rounds > 1)
        #expect(TextKeys.parseAllowingRepeats(collected).filter { $0.key == "TargetName" }.count == 40)
    }

    // > RFC 7143 §6.1: Every key=value pair, including the last or only pair in a LTDS, MUST be followed by one
    // > null (0x00) delimiter. In Full Feature Phase the malformed Text Request is rejected (protocol error).
    @Test func lastPairWithoutNULIsRejected() {
        var machine = machine(sessionTarget: nil)
        var request = text([])
        request.data.writeString("SendTargets=All")
        let action = machine.textRequestReceived(request, sequence: sequence, visibleTargets: targets)
        guard case .reject(.protocolError, _) = action else {
            Issue.record("expected a Reject, got \(action)")
            return
        }
    }

    @Test func unknownTargetTransferTagIsRejected() {
        var machine = machine(sessionTarget: nil)
        let action = machine.textRequestReceived(text([], ttt: 99), sequence: sequence, visibleTargets: targets)
        guard case .reject(.protocolError, _) = action else {
            Issue.record("expected a Reject, got \(action)")
            return
        }
    }

    @Test func maxRecvDataSegmentLengthRenegotiation() {
        var machine = machine(sessionTarget: "iqn.2024-01.dev.ferry:a")
        let action = machine.textRequestReceived(
            text([("MaxRecvDataSegmentLength", "65536"), ("InitialR2T", "No"), ("TargetName", "x"), ("Foo", "1")]),
            sequence: sequence, visibleTargets: targets)
        guard case .sendTextResponse(let response, let parameters) = action else {
            Issue.record("expected a Text Response, got \(action)")
            return
        }
        #expect(parameters?.initiatorMaxRecvDataSegmentLength == 65_536)
        #expect(machine.parameters.initiatorMaxRecvDataSegmentLength == 65_536)
        #expect(
            keys(response.data) == [
                "MaxRecvDataSegmentLength": "262144", "InitialR2T": "Reject", "TargetName": "Reject",
                "Foo": "NotUnderstood",
            ])
    }
}
