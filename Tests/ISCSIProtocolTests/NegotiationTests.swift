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
