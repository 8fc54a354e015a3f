import NIOCore
import Testing

@testable import ISCSIProtocol

private struct TestPolicy: LoginPolicy {
    var targets: [LoginTarget]
    func target(named name: String) -> LoginTarget? { targets.first { $0.name == name } }
}

private let initiator = "iqn.2024-01.org.example:host"
private let targetName = "iqn.2024-01.dev.ferry:disk"
private let isid = ISID(rawValue: 0x8000_1234_5678)

private func makeMachine(
    target: LoginTarget = LoginTarget(name: targetName, alias: "disk"),
    configuration: LoginConfiguration =
        LoginConfiguration()
) -> LoginStateMachine {
    LoginStateMachine(
        configuration: configuration, policy: TestPolicy(targets: [target]), initialStatSN: 100,
        random: SeededRandom(state: 42))
}

private func request(
    _ csg: LoginStage, _ nsg: LoginStage, transit: Bool = true, continue: Bool = false, tsih: UInt16 = 0,
    versionMin: UInt8 = 0, _ pairs: [(String, String)]
) -> LoginRequest {
    LoginRequest(
        transit: transit, continue: `continue`, currentStage: csg, nextStage: nsg, versionMin: versionMin, isid: isid,
        tsih: tsih, initiatorTaskTag: 7, cid: 1, cmdSN: 10, expStatSN: 0, data: textBuffer(pairs))
}

private let identity = [("InitiatorName", initiator), ("TargetName", targetName), ("SessionType", "Normal")]

extension LoginAction {
    var response: LoginResponse? {
        switch self {
        case .sendLoginResponse(let r), .rejectLogin(let r, _), .completeLogin(let r, _): r
        case .admitSession, .closeConnection: nil
        }
    }

    var status: LoginStatus? {
        response.map { LoginStatus(statusClass: $0.statusClass, statusDetail: $0.statusDetail) }
    }

    var isRejection: Bool {
        if case .rejectLogin = self { return true }
        return false
    }
}

@Suite struct LoginStateMachineTests {
    // MARK: Security

    /// Runs AuthMethod=CHAP and CHAP_A, returns the challenge.
    private func startCHAP(
        _ machine: inout LoginStateMachine, algorithm: CHAPAlgorithm
    ) throws -> (identifier: UInt8, challenge: [UInt8]) {
        let first = machine.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, identity + [("AuthMethod", "CHAP,None")]))
        let firstResponse = try #require(first.response)
        #expect(!first.isRejection)
        #expect(!firstResponse.transit)
        #expect(firstResponse.sequence.statSN == 100)
        let firstAnswers = keys(firstResponse.data)
        #expect(firstAnswers["AuthMethod"] == "CHAP" && firstAnswers["TargetPortalGroupTag"] == "1")

        let second = machine.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, [("CHAP_A", "\(algorithm.rawValue)")]))
        let answers = keys(try #require(second.response).data)
        #expect(second.response?.sequence.statSN == 101)
        #expect(answers["CHAP_A"] == String(algorithm.rawValue))
        return (try #require(UInt8(answers["CHAP_I"] ?? "")), try #require(BinaryValue.decode(answers["CHAP_C"] ?? "")))
    }

    private func operationalToFullFeature(_ machine: inout LoginStateMachine) throws -> LoginSummary {
        let action = machine.loginRequestReceived(
            request(
                .loginOperationalNegotiation, .fullFeaturePhase,
                [("HeaderDigest", "CRC32C,None"), ("MaxRecvDataSegmentLength", "65536"), ("MaxBurstLength", "524288")]
            ))
        guard case .admitSession(let summary) = action else {
            Issue.record("expected admitSession, got \(action)")
            throw CancellationError()
        }
        return summary
    }

    @Test(arguments: CHAPAlgorithm.allCases)
    func oneWayCHAPLogin(_ algorithm: CHAPAlgorithm) throws {
        let account = CHAPAccount(user: "alice", secret: "alice-secret-12")
        var machine = makeMachine(target: LoginTarget(name: targetName, alias: "disk", chap: account))
        let (identifier, challenge) = try startCHAP(&machine, algorithm: algorithm)
        let proof = algorithm.response(identifier: identifier, secret: account.secret, challenge: challenge)
        let third = machine.loginRequestReceived(
            request(
                .securityNegotiation, .loginOperationalNegotiation,
                [("CHAP_N", "alice"), ("CHAP_R", BinaryValue.encodeHex(proof))]))
        let response = try #require(third.response)
        #expect(!third.isRejection)
        #expect(response.transit && response.currentStage == .securityNegotiation)
        #expect(response.nextStage == .loginOperationalNegotiation)
        #expect(response.data.readableBytes == 0)

        let summary = try operationalToFullFeature(&machine)
        #expect(summary.authenticatedUser == "alice")
        #expect(summary.initiatorName == initiator && summary.target?.name == targetName && summary.tsih == 0)
        #expect(summary.parameters.headerDigest == .crc32c)
        #expect(summary.parameters.initiatorMaxRecvDataSegmentLength == 65_536)

        let final = machine.sessionAdmitted(tsih: 5, expCmdSN: 10, maxCmdSN: 137)
        guard case .completeLogin(let finalResponse, let parameters) = final else {
            Issue.record("expected completeLogin, got \(final)")
            return
        }
        #expect(finalResponse.transit && finalResponse.nextStage == .fullFeaturePhase)
        #expect(finalResponse.tsih == 5 && finalResponse.statusClass == 0)
        #expect(finalResponse.sequence == StatusSequence(statSN: 103, expCmdSN: 10, maxCmdSN: 137))
        #expect(
            keys(finalResponse.data) == [
                "HeaderDigest": "CRC32C", "MaxBurstLength": "524288", "MaxRecvDataSegmentLength": "262144",
            ])
        #expect(parameters.maxBurstLength == 524_288 && parameters.targetName == targetName)
    }

    @Test(arguments: CHAPAlgorithm.allCases)
    func mutualCHAPLogin(_ algorithm: CHAPAlgorithm) throws {
        let account = CHAPAccount(user: "alice", secret: "alice-secret-12")
        let mutual = CHAPAccount(user: "ferry", secret: "ferry-secret-34")
        var machine = makeMachine(target: LoginTarget(name: targetName, chap: account, mutualCHAP: mutual))
        _ = machine.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, identity + [("AuthMethod", "CHAP")]))
        let second = machine.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, [("CHAP_A", "\(algorithm.rawValue)")]))
        let answers = keys(try #require(second.response).data)
        let identifier = try #require(UInt8(answers["CHAP_I"] ?? ""))
        let challenge = try #require(BinaryValue.decode(answers["CHAP_C"] ?? ""))
        let proof = algorithm.response(identifier: identifier, secret: account.secret, challenge: challenge)
        let ourChallenge: [UInt8] = Array(repeating: 0x5a, count: 16)
        let third = machine.loginRequestReceived(
            request(
                .securityNegotiation, .fullFeaturePhase,
                [
                    ("CHAP_N", "alice"), ("CHAP_R", BinaryValue.encodeHex(proof)), ("CHAP_I", "200"),
                    // Base64 challenge from the initiator: 16 bytes of 0x5a.
                    ("CHAP_C", "0bWlpaWlpaWlpaWlpaWlpaWg=="),
                ]))
        guard case .admitSession = third else {
            Issue.record("expected admitSession, got \(third)")
            return
        }
        guard case .completeLogin(let response, _) = machine.sessionAdmitted(tsih: 9, expCmdSN: 10, maxCmdSN: 20)
        else {
            Issue.record("expected completeLogin")
            return
        }
        let final = keys(response.data)
        #expect(final["CHAP_N"] == "ferry")
        let expected = algorithm.response(identifier: 200, secret: mutual.secret, challenge: ourChallenge)
        #expect(final["CHAP_R"] == BinaryValue.encodeHex(expected))
        // Going straight from security to Full Feature Phase: the target declares its MaxRecvDataSegmentLength.
        #expect(final["MaxRecvDataSegmentLength"] == "262144")
    }

    @Test func wrongSecretIsAnAuthenticationFailure() throws {
        let account = CHAPAccount(user: "alice", secret: "alice-secret-12")
        var machine = makeMachine(target: LoginTarget(name: targetName, chap: account))
        let (identifier, challenge) = try startCHAP(&machine, algorithm: .sha256)
        let proof = CHAPAlgorithm.sha256.response(identifier: identifier, secret: "wrong", challenge: challenge)
        let action = machine.loginRequestReceived(
            request(
                .securityNegotiation, .loginOperationalNegotiation,
                [("CHAP_N", "alice"), ("CHAP_R", BinaryValue.encodeHex(proof))]))
        #expect(action.isRejection)
        #expect(action.status == .authenticationFailure)
        #expect(
            machine.loginRequestReceived(request(.securityNegotiation, .loginOperationalNegotiation, []))
                == .closeConnection)
    }

    @Test func wrongUserIsAnAuthenticationFailure() throws {
        let account = CHAPAccount(user: "alice", secret: "alice-secret-12")
        var machine = makeMachine(target: LoginTarget(name: targetName, chap: account))
        let (identifier, challenge) = try startCHAP(&machine, algorithm: .md5)
        let proof = CHAPAlgorithm.md5.response(identifier: identifier, secret: account.secret, challenge: challenge)
        let action = machine.loginRequestReceived(
            request(
                .securityNegotiation, .loginOperationalNegotiation,
                [("CHAP_N", "mallory"), ("CHAP_R", BinaryValue.encodeHex(proof))]))
        #expect(action.status == .authenticationFailure)
    }

    @Test func missingCHAPResponseIsAnAuthenticationFailure() throws {
        var machine = makeMachine(
            target: LoginTarget(name: targetName, chap: CHAPAccount(user: "alice", secret: "alice-secret-12")))
        _ = try startCHAP(&machine, algorithm: .sha1)
        let action = machine.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, [("CHAP_N", "alice")]))
        #expect(action.status == .authenticationFailure)
    }

    @Test func reflectedChallengeIsRefused() throws {
        let account = CHAPAccount(user: "alice", secret: "alice-secret-12")
        var machine = makeMachine(
            target: LoginTarget(
                name: targetName, chap: account, mutualCHAP: CHAPAccount(user: "ferry", secret: "ferry-secret-34")))
        let (identifier, challenge) = try startCHAP(&machine, algorithm: .md5)
        let proof = CHAPAlgorithm.md5.response(identifier: identifier, secret: account.secret, challenge: challenge)
        let action = machine.loginRequestReceived(
            request(
                .securityNegotiation, .loginOperationalNegotiation,
                [
                    ("CHAP_N", "alice"), ("CHAP_R", BinaryValue.encodeHex(proof)), ("CHAP_I", String(identifier)),
                    ("CHAP_C", BinaryValue.encodeHex(challenge)),
                ]))
        #expect(action.status == .authenticationFailure)
    }

    @Test func mutualCHAPWithoutTargetCredentialsFails() throws {
        let account = CHAPAccount(user: "alice", secret: "alice-secret-12")
        var machine = makeMachine(target: LoginTarget(name: targetName, chap: account))
        let (identifier, challenge) = try startCHAP(&machine, algorithm: .md5)
        let proof = CHAPAlgorithm.md5.response(identifier: identifier, secret: account.secret, challenge: challenge)
        let action = machine.loginRequestReceived(
            request(
                .securityNegotiation, .loginOperationalNegotiation,
                [("CHAP_N", "alice"), ("CHAP_R", BinaryValue.encodeHex(proof)), ("CHAP_I", "1"), ("CHAP_C", "0x0102")]
            ))
        #expect(action.status == .authenticationFailure)
    }

    @Test func authMethodNoneIsRefusedWhenCHAPIsRequired() {
        var machine = makeMachine(
            target: LoginTarget(name: targetName, chap: CHAPAccount(user: "alice", secret: "alice-secret-12")))
        let action = machine.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, identity + [("AuthMethod", "None")]))
        #expect(action.status == .authenticationFailure)
    }

    @Test func skippingSecurityIsRefusedWhenCHAPIsRequired() {
        var machine = makeMachine(
            target: LoginTarget(name: targetName, chap: CHAPAccount(user: "alice", secret: "alice-secret-12")))
        let action = machine.loginRequestReceived(request(.loginOperationalNegotiation, .fullFeaturePhase, identity))
        #expect(action.status == .authenticationFailure)
    }

    @Test func authMethodNoneWhenAllowed() throws {
        var machine = makeMachine()
        let action = machine.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, identity + [("AuthMethod", "CHAP,None")]))
        let response = try #require(action.response)
        #expect(!action.isRejection)
        #expect(response.transit && response.nextStage == .loginOperationalNegotiation)
        #expect(keys(response.data)["AuthMethod"] == "None")
        #expect(try operationalToFullFeature(&machine).authenticatedUser == nil)
    }

    // MARK: Operational and discovery

    @Test func operationalOnlyLoginWithoutAuthentication() throws {
        var machine = makeMachine()
        let first = machine.loginRequestReceived(
            request(
                .loginOperationalNegotiation, .fullFeaturePhase, transit: false,
                identity + [("ImmediateData", "Yes"), ("X-vendor.key", "1")]))
        let response = try #require(first.response)
        #expect(!response.transit)
        #expect(
            keys(response.data) == [
                "ImmediateData": "Yes", "X-vendor.key": "NotUnderstood", "TargetPortalGroupTag": "1",
                "TargetAlias": "disk", "MaxRecvDataSegmentLength": "262144",
            ])
        let summary = try operationalToFullFeature(&machine)
        #expect(summary.parameters.immediateData)
        guard case .completeLogin(let final, _) = machine.sessionAdmitted(tsih: 1, expCmdSN: 10, maxCmdSN: 20) else {
            Issue.record("expected completeLogin")
            return
        }
        // Declared once per login only.
        #expect(keys(final.data)["MaxRecvDataSegmentLength"] == nil)
    }

    @Test func discoveryLogin() throws {
        var machine = makeMachine()
        let action = machine.loginRequestReceived(
            request(
                .loginOperationalNegotiation, .fullFeaturePhase,
                [("InitiatorName", initiator), ("SessionType", "Discovery"), ("MaxBurstLength", "512")]))
        guard case .admitSession(let summary) = action else {
            Issue.record("expected admitSession, got \(action)")
            return
        }
        #expect(summary.sessionType == .discovery && summary.target == nil)
        guard case .completeLogin(let response, _) = machine.sessionAdmitted(tsih: 3, expCmdSN: 10, maxCmdSN: 10) else {
            Issue.record("expected completeLogin")
            return
        }
        #expect(keys(response.data) == ["MaxBurstLength": "Irrelevant", "MaxRecvDataSegmentLength": "262144"])
    }

    @Test func discoveryCHAPIsRequiredWhenConfigured() {
        var machine = makeMachine(
            configuration: LoginConfiguration(discoveryCHAP: CHAPAccount(user: "d", secret: "discovery-secret")))
        let action = machine.loginRequestReceived(
            request(
                .loginOperationalNegotiation, .fullFeaturePhase,
                [("InitiatorName", initiator), ("SessionType", "Discovery")]))
        #expect(action.status == .authenticationFailure)
    }

    // MARK: Errors

    @Test func unsupportedVersion() {
        var machine = makeMachine()
        let action = machine.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, versionMin: 1, identity))
        #expect(action.status == .unsupportedVersion)
        #expect(action.response?.sequence.statSN == 100)
    }

    @Test func missingInitiatorName() {
        var machine = makeMachine()
        let action = machine.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, [("TargetName", targetName)]))
        #expect(action.status == .missingParameter)
    }

    @Test func missingTargetNameInNormalSession() {
        var machine = makeMachine()
        let action = machine.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, [("InitiatorName", initiator)]))
        #expect(action.status == .missingParameter)
    }

    @Test func unknownTarget() {
        var machine = makeMachine()
        let action = machine.loginRequestReceived(
            request(
                .securityNegotiation, .loginOperationalNegotiation,
                [("InitiatorName", initiator), ("TargetName", "iqn.2024-01.dev.ferry:nope")]))
        #expect(action.status == .notFound)
    }

    @Test func initiatorNotInAccessList() {
        var machine = makeMachine(target: LoginTarget(name: targetName, allowedInitiators: ["iqn.2024-01.org:other"]))
        let action = machine.loginRequestReceived(request(.securityNegotiation, .loginOperationalNegotiation, identity))
        #expect(action.status == .authorizationFailure)
    }

    @Test func accessListMatchesInitiatorNamesRegardlessOfCase() {
        // The engine's SendTargets uses the same rule, so that discovery never shows a target login refuses.
        let target = LoginTarget(name: targetName, allowedInitiators: [initiator.uppercased()])
        #expect(target.admits(initiatorName: initiator))
        var machine = makeMachine(target: target)
        let action = machine.loginRequestReceived(request(.securityNegotiation, .loginOperationalNegotiation, identity))
        #expect(!action.isRejection)
    }

    // MARK: Keys declared twice

    @Test func identityRepeatedUnchangedAfterAuthMethodNoneIsAccepted() throws {
        // libiscsi with CHAP credentials against a target without CHAP: it offers AuthMethod=CHAP,None, is answered
        // None, and declares InitiatorName, TargetName and SessionType again in LoginOperationalNegotiation.
        var machine = makeMachine()
        let security = machine.loginRequestReceived(
            request(
                .securityNegotiation, .loginOperationalNegotiation,
                identity + [("AuthMethod", "CHAP,None")]))
        #expect(keys(try #require(security.response).data)["AuthMethod"] == "None")
        let operational = machine.loginRequestReceived(
            request(
                .loginOperationalNegotiation, .fullFeaturePhase,
                identity + [("HeaderDigest", "None")]))
        guard case .admitSession(let summary) = operational else {
            Issue.record("expected admitSession, got \(operational)")
            return
        }
        #expect(summary.initiatorName == initiator && summary.target?.name == targetName)
    }

    @Test func identityRedeclaredWithAnotherValueIsAnInitiatorError() {
        var machine = makeMachine()
        _ = machine.loginRequestReceived(
            request(
                .securityNegotiation, .loginOperationalNegotiation, transit: false, identity + [("AuthMethod", "None")])
        )
        let action = machine.loginRequestReceived(
            request(
                .securityNegotiation, .loginOperationalNegotiation, transit: false,
                [("InitiatorName", "iqn.2024-01.dev.ferry:someone-else")]))
        #expect(action.status == .initiatorError)
    }

    @Test func anOperationalKeyNegotiatedTwiceWithTheSameValueIsAnInitiatorError() {
        var machine = makeMachine()
        _ = machine.loginRequestReceived(
            request(
                .loginOperationalNegotiation, .fullFeaturePhase, transit: false,
                identity + [("MaxBurstLength", "65536")]))
        let action = machine.loginRequestReceived(
            request(.loginOperationalNegotiation, .fullFeaturePhase, transit: false, [("MaxBurstLength", "65536")]))
        #expect(action.status == .initiatorError)
    }

    /// A target whose logical units take at most 128 KiB per command (a passthrough disk) negotiates no larger
    /// bursts, whatever the portal allows; a target without such a bound keeps the portal's limits.
    @Test(arguments: [(131_072 as Int?, "131072", "131072"), (nil, "1048576", "262144")])
    func burstLengthsStayWithinTheTargetsTransferLimit(
        maximumTransferLength: Int?, maxBurstLength: String, firstBurstLength: String
    ) throws {
        var machine = makeMachine(target: LoginTarget(name: targetName, maximumTransferLength: maximumTransferLength))
        let action = machine.loginRequestReceived(
            request(
                .loginOperationalNegotiation, .fullFeaturePhase, transit: false,
                identity + [("MaxBurstLength", "16776192"), ("FirstBurstLength", "16776192")]))
        let answers = keys(try #require(action.response).data)
        #expect(answers["MaxBurstLength"] == maxBurstLength)
        #expect(answers["FirstBurstLength"] == firstBurstLength)
    }

    @Test func unknownSessionType() {
        var machine = makeMachine()
        let action = machine.loginRequestReceived(
            request(
                .securityNegotiation, .loginOperationalNegotiation,
                [("InitiatorName", initiator), ("SessionType", "Boot")]))
        #expect(action.status == .sessionTypeNotSupported)
    }

    @Test func keyNegotiatedTwiceDuringLogin() {
        var machine = makeMachine()
        _ = machine.loginRequestReceived(
            request(
                .loginOperationalNegotiation, .fullFeaturePhase, transit: false, identity + [("MaxBurstLength", "512")])
        )
        let action = machine.loginRequestReceived(
            request(.loginOperationalNegotiation, .fullFeaturePhase, [("MaxBurstLength", "1024")]))
        #expect(action.status == .initiatorError)
    }

    @Test func malformedTextIsAnInitiatorError() {
        var machine = makeMachine()
        var login = request(.securityNegotiation, .loginOperationalNegotiation, identity)
        login.data.writeString("garbage\0")
        #expect(machine.loginRequestReceived(login).status == .initiatorError)
    }

    @Test func stageMismatchAndBadTransitions() {
        var machine = makeMachine()
        _ = machine.loginRequestReceived(
            request(
                .securityNegotiation, .loginOperationalNegotiation, transit: false, identity + [("AuthMethod", "None")])
        )
        // CSG must stay SecurityNegotiation until the target agreed to transit.
        #expect(
            machine.loginRequestReceived(request(.loginOperationalNegotiation, .fullFeaturePhase, [])).status
                == .initiatorError)

        var other = makeMachine()
        let backwards = other.loginRequestReceived(
            request(.loginOperationalNegotiation, .securityNegotiation, identity))
        #expect(backwards.status == .initiatorError)

        var third = makeMachine()
        let both = third.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, continue: true, identity))
        #expect(both.status == .initiatorError)
    }

    @Test func securityKeysOutsideSecurityStage() {
        var machine = makeMachine()
        let action = machine.loginRequestReceived(
            request(.loginOperationalNegotiation, .fullFeaturePhase, identity + [("AuthMethod", "None")]))
        #expect(action.status == .initiatorError)
    }

    @Test func continuedLoginText() throws {
        var machine = makeMachine()
        var whole = textBuffer(identity + [("AuthMethod", "None")])
        let headSlice = whole.readSlice(length: 20)
        let head = try #require(headSlice)
        var first = request(.securityNegotiation, .loginOperationalNegotiation, transit: false, continue: true, [])
        first.data = head
        let ack = machine.loginRequestReceived(first)
        #expect(try #require(ack.response).data.readableBytes == 0)
        #expect(!ack.isRejection)
        var second = request(.securityNegotiation, .loginOperationalNegotiation, [])
        second.data = whole
        let action = machine.loginRequestReceived(second)
        #expect(keys(try #require(action.response).data)["AuthMethod"] == "None")
        #expect(action.response?.transit == true)
    }

    @Test func sessionRefusedByTheEngine() throws {
        var machine = makeMachine()
        _ = machine.loginRequestReceived(request(.loginOperationalNegotiation, .fullFeaturePhase, tsih: 77, identity))
        let action = machine.sessionRefused(.sessionDoesNotExist, reason: "no session 77")
        #expect(action.status == .sessionDoesNotExist)
        #expect(action.isRejection)
    }

    @Test func nonLoginPDUDuringLogin() {
        var machine = makeMachine()
        _ = machine.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, transit: false, identity))
        let action = machine.unexpectedPDUReceived(initiatorTaskTag: 9)
        #expect(action.status == .invalidRequestDuringLogin)
    }

    // MARK: Malformed requests (RFC 7143 §6.1, §11.12, §11.13.5)

    /// The decoding error of `login` sent with byte 1 (T, C, CSG, NSG) replaced by `flags`.
    private func decodingError(of login: LoginRequest, flags: UInt8) throws -> ISCSIProtocolError {
        var bytes = encoded(.loginRequest(login))
        bytes.setInteger(flags, at: bytes.readerIndex + 1)
        var decoder = PDUFrameDecoder()
        return try #require(throws: ISCSIProtocolError.self) { try decoder.decode(buffer: &bytes) }
    }

    // > RFC 7143 §11.12.3: CSG and NSG ... 2 is reserved. A Login Request that cannot be decoded is answered with
    // > a Login Response, status class 2 (Initiator Error), and the connection closes: not a bare close.
    @Test(arguments: [
        (0x88 as UInt8, "CSG=2, T, NSG=0"), (0x8b, "CSG=2, T, NSG=3"), (0x82, "CSG=0, T, NSG=2"),
        (0x86, "CSG=1, T, NSG=2"),
    ])
    func reservedStageInTheFirstRequestIsAnInitiatorError(_ flags: UInt8, _ what: String) throws {
        var machine = makeMachine()
        let login = request(.securityNegotiation, .loginOperationalNegotiation, identity)
        let action = machine.undecodablePDUReceived(try decodingError(of: login, flags: flags))
        #expect(action.isRejection, "\(what)")
        #expect(action.status == .initiatorError, "\(what)")
        let response = try #require(action.response)
        #expect(response.initiatorTaskTag == login.initiatorTaskTag)
        #expect(response.isid == isid && response.tsih == 0)
        #expect(response.sequence.statSN == 100)
        #expect(!response.transit)
        #expect(machine.loginRequestReceived(login) == .closeConnection)
    }

    @Test func reservedStageLaterInTheLoginIsAnInitiatorError() throws {
        var machine = makeMachine()
        let first = machine.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, transit: false, identity))
        #expect(!first.isRejection)
        let next = request(.securityNegotiation, .loginOperationalNegotiation, [("AuthMethod", "None")])
        let action = machine.undecodablePDUReceived(try decodingError(of: next, flags: 0x82))
        #expect(action.status == .initiatorError)
        #expect(action.response?.sequence.statSN == 101)
        #expect(action.response?.currentStage == .securityNegotiation)
    }

    // > RFC 7143 §6.1: Every key=value pair, including the last or only pair in a LTDS, MUST be followed by one
    // > null (0x00) delimiter.
    @Test func lastPairWithoutNULIsAnInitiatorError() {
        var machine = makeMachine()
        var login = request(.securityNegotiation, .loginOperationalNegotiation, identity)
        login.data.writeString("AuthMethod=None")
        let action = machine.loginRequestReceived(login)
        #expect(action.isRejection)
        #expect(action.status == .initiatorError)
    }

    // > RFC 7143 §13.12: MaxRecvDataSegmentLength=<numerical-value-512-to-(2**24 - 1)>. A declaration out of that
    // > range (or no number at all) cannot be adopted, nor answered with a value: the login fails.
    @Test(arguments: ["0", "511", "16777216", "4294967296", "18446744073709551616", "0x1000000", "-512", "", "lots"])
    func maxRecvDataSegmentLengthOutOfRangeIsAnInitiatorError(_ value: String) {
        var machine = makeMachine()
        let action = machine.loginRequestReceived(
            request(
                .loginOperationalNegotiation, .fullFeaturePhase, identity + [("MaxRecvDataSegmentLength", value)]))
        #expect(action.isRejection, "MaxRecvDataSegmentLength=\(value)")
        #expect(action.status == .initiatorError, "MaxRecvDataSegmentLength=\(value)")
    }

    /// Keys never repeat within a login, so without a bound every request may add new ones and the login's record
    /// of them grows until the login times out.
    @Test func keysOfAWholeLoginAreBounded() {
        var machine = makeMachine()
        var action = machine.loginRequestReceived(
            request(.securityNegotiation, .loginOperationalNegotiation, transit: false, identity))
        var sent = identity.count
        var round = 0
        while !action.isRejection && round < 20 {
            let keys = (0..<100).map { ("X-dev.ferry.test-\(round)-\($0)", "1") }
            action = machine.loginRequestReceived(
                request(.securityNegotiation, .loginOperationalNegotiation, transit: false, keys))
            sent += keys.count
            round += 1
        }
        #expect(action.status == .initiatorError)
        #expect(sent <= TextKeys.maximumKeyCount + 100)
    }

    @Test func loginTimeoutClosesTheConnection() {
        var machine = makeMachine()
        #expect(machine.loginTimedOut() == .closeConnection)
    }
}
