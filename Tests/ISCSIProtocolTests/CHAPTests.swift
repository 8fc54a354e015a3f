import Testing

@testable import ISCSIProtocol

/// A deterministic generator (SplitMix64) so that CHAP challenges are reproducible.
struct SeededRandom: RandomNumberGenerator, Sendable {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}

@Suite struct CHAPTests {
    /// RFC 1994 CHAP with MD5: MD5(0x01 || "secret" || 0x00..0x0f), checked against an independent computation
    /// (Python hashlib).
    @Test func md5ResponseMatchesKnownAnswer() {
        let response = CHAPAlgorithm.md5.response(identifier: 1, secret: "secret", challenge: Array(0..<16))
        #expect(BinaryValue.encodeHex(response) == knownMD5)
    }

    @Test func algorithmNumbersFollowIANA() {
        #expect(CHAPAlgorithm(rawValue: 5) == .md5)
        #expect(CHAPAlgorithm(rawValue: 6) == .sha1)
        #expect(CHAPAlgorithm(rawValue: 7) == .sha256)
        #expect(CHAPAlgorithm(rawValue: 8) == .sha3_256)
        #expect(
            CHAPAlgorithm.allCases.map { $0.response(identifier: 0, secret: "s", challenge: [1]).count } == [
                16, 20, 32, 32,
            ])
    }

    @Test func constantTimeComparison() {
        #expect(constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEquals([1, 2], [1, 2, 3]))
    }

    @Test(arguments: CHAPAlgorithm.allCases)
    func authenticatorVerifiesTheInitiator(_ algorithm: CHAPAlgorithm) throws {
        var random = SeededRandom(state: 7)
        var authenticator = CHAPAuthenticator(
            account: CHAPAccount(user: "alice", secret: "alice-secret-1"), mutualAccount: nil,
            algorithms: Set(CHAPAlgorithm.allCases))
        let challenge = try authenticator.process(
            [TextKeyValue("CHAP_A", "99,\(algorithm.rawValue),5")], random: &random)
        let answers = Dictionary(challenge.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 })
        #expect(answers["CHAP_A"] == String(algorithm.rawValue))
        let identifier = try #require(UInt8(answers["CHAP_I"] ?? ""))
        let bytes = try #require(BinaryValue.decode(answers["CHAP_C"] ?? ""))
        #expect(bytes.count == max(16, algorithm.digestLength))
        let response = algorithm.response(identifier: identifier, secret: "alice-secret-1", challenge: bytes)
        let result = try authenticator.process(
            [TextKeyValue("CHAP_N", "alice"), TextKeyValue("CHAP_R", BinaryValue.encodeHex(response))],
            random: &random)
        #expect(result.isEmpty)
        #expect(authenticator.isAuthenticated)
    }

    /// CHAP_A's values are numerical (RFC 7143 §6.1: unsigned constants): "+5" and "-0" name no algorithm, though
    /// `UInt8("+5")` is 5.
    @Test(arguments: ["+5", "-0", " 5", "5 "])
    func aSignedOrPaddedAlgorithmNumberNamesNoAlgorithm(_ offered: String) {
        var random = SeededRandom(state: 1)
        var authenticator = CHAPAuthenticator(
            account: CHAPAccount(user: "a", secret: "b"), mutualAccount: nil, algorithms: [.md5])
        #expect(throws: LoginFailure.self) {
            try authenticator.process([TextKeyValue("CHAP_A", offered)], random: &random)
        }
    }

    @Test func unsupportedAlgorithmFails() {
        var random = SeededRandom(state: 1)
        var authenticator = CHAPAuthenticator(
            account: CHAPAccount(user: "a", secret: "b"), mutualAccount: nil, algorithms: [.sha256])
        #expect(throws: LoginFailure.self) {
            try authenticator.process([TextKeyValue("CHAP_A", "5")], random: &random)
        }
    }
}

private let knownMD5 = "0x" + "740e86463bda3a4d7017d6e0fba0699d"
