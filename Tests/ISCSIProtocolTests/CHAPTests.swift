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
    /// RFC 1994 §4.1 CHAP for every algorithm, H(identifier || secret || challenge), against digests computed outside
    /// the code by openssl (see `CHAPVector`).
    @Test(arguments: CHAPVector.all)
    func responseMatchesKnownAnswer(_ vector: CHAPVector) throws {
        let challenge = try #require(BinaryValue.decode(vector.challenge))
        let response = vector.algorithm.response(
            identifier: vector.identifier, secret: vector.secret, challenge: challenge)
        #expect(BinaryValue.encodeHex(response) == vector.response)
    }

    /// Every algorithm Ferry offers has a known answer, both with the short identifier and counting challenge and with
    /// a high identifier and a binary challenge.
    @Test func everyAlgorithmHasKnownAnswers() {
        for algorithm in CHAPAlgorithm.allCases {
            let vectors = CHAPVector.all.filter { $0.algorithm == algorithm }
            #expect(Set(vectors.map(\.identifier)) == [0x01, 0xc5], "\(algorithm)")
        }
    }

    /// Mutual CHAP: the target's CHAP_R answers the initiator's CHAP_I and CHAP_C with the mutual secret. The
    /// initiator's own proof is computed by `response`, which `responseMatchesKnownAnswer` pins; what the target
    /// answers is checked against the openssl digests of the binary vectors (CHAP_I=197, secret "ferry-secret-34").
    @Test(arguments: CHAPVector.all.filter { $0.identifier == 0xc5 })
    func mutualResponseMatchesKnownAnswer(_ vector: CHAPVector) throws {
        var random = SeededRandom(state: 11)
        var authenticator = CHAPAuthenticator(
            account: CHAPAccount(user: "alice", secret: "alice-secret-1"),
            mutualAccount: CHAPAccount(user: "ferry", secret: vector.secret),
            algorithms: Set(CHAPAlgorithm.allCases))
        let challenge = try authenticator.process(
            [TextKeyValue("CHAP_A", String(vector.algorithm.rawValue))], random: &random)
        let answers = Dictionary(challenge.map { ($0.key, $0.value) }, uniquingKeysWith: { $1 })
        #expect(answers["CHAP_A"] == String(vector.algorithm.rawValue))
        let identifier = try #require(UInt8(answers["CHAP_I"] ?? ""))
        let targetChallenge = try #require(BinaryValue.decode(answers["CHAP_C"] ?? ""))
        let proof = vector.algorithm.response(
            identifier: identifier, secret: "alice-secret-1", challenge: targetChallenge)
        let result = try authenticator.process(
            [
                TextKeyValue("CHAP_N", "alice"), TextKeyValue("CHAP_R", BinaryValue.encodeHex(proof)),
                TextKeyValue("CHAP_I", String(vector.identifier)), TextKeyValue("CHAP_C", vector.challenge),
            ], random: &random)
        #expect(result == [TextKeyValue("CHAP_N", "ferry"), TextKeyValue("CHAP_R", vector.response)])
        #expect(authenticator.isAuthenticated)
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

/// A CHAP known answer: `response` is H(identifier || UTF-8 secret || challenge), computed outside the code by
/// OpenSSL 3.0 `openssl dgst` from the bytes that `printf` writes. Run the commands in bash (or with coreutils'
/// /usr/bin/printf); dash's printf has no `\x` escapes and hashes different bytes.
///
/// Identifier 1, secret "secret", challenge 0x00...0x0f:
///
///     printf '\x01secret\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f' | openssl dgst -md5
///     printf '\x01secret\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f' | openssl dgst -sha1
///     printf '\x01secret\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f' | openssl dgst -sha256
///     printf '\x01secret\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f' | openssl dgst -sha3-256
///
/// Identifier 0xc5 (197, high bit set), secret "ferry-secret-34", and a 32-byte binary challenge (from
/// `openssl rand -hex 32`; it has bytes with the high bit set, 0x03, and 0x25, which is '%'):
///
///     C='\x23\xdd\xbe\x93\xdf\x4b\x41\x19\x5a\x93\xf4\x25\x1f\x91\x3a\x83\xc1\xc0\x9f\xf9\x3f\x94\xaa\x03\x86\x1a\x53\xae\x7f\x65\xc8\x57'
///     printf "\xc5ferry-secret-34$C" | openssl dgst -md5
///     printf "\xc5ferry-secret-34$C" | openssl dgst -sha1
///     printf "\xc5ferry-secret-34$C" | openssl dgst -sha256
///     printf "\xc5ferry-secret-34$C" | openssl dgst -sha3-256
///
/// (Python's hashlib gives the same digests: `hashlib.new("sha3_256", bytes([0xc5]) + b"ferry-secret-34" +
/// bytes.fromhex("23dd...c857")).hexdigest()`.)
struct CHAPVector: Sendable, CustomTestStringConvertible {
    let algorithm: CHAPAlgorithm
    let identifier: UInt8
    let secret: String
    /// CHAP_C as the hex-constant the wire carries.
    let challenge: String
    /// CHAP_R as the hex-constant the wire carries: the openssl digest, prefixed with 0x.
    let response: String

    var testDescription: String { "\(algorithm) CHAP_I=\(identifier)" }

    private static let counting = "0x000102030405060708090a0b0c0d0e0f"
    private static let binary = "0x23ddbe93df4b41195a93f4251f913a83c1c09ff93f94aa03861a53ae7f65c857"

    static let all: [CHAPVector] = [
        CHAPVector(
            algorithm: .md5, identifier: 0x01, secret: "secret", challenge: counting,
            response: "0x740e86463bda3a4d7017d6e0fba0699d"),
        CHAPVector(
            algorithm: .sha1, identifier: 0x01, secret: "secret", challenge: counting,
            response: "0x3890198f5112376188a9742805758384545583a6"),
        CHAPVector(
            algorithm: .sha256, identifier: 0x01, secret: "secret", challenge: counting,
            response: "0x28b96c916cf784528bbfaa6ad7e012cab293437604aae8d66a3295b319132cef"),
        CHAPVector(
            algorithm: .sha3_256, identifier: 0x01, secret: "secret", challenge: counting,
            response: "0xbdceca071be509f41acf88309bb6d12e51526c23a2d18f22c2bb8ed199c36fd8"),
        CHAPVector(
            algorithm: .md5, identifier: 0xc5, secret: "ferry-secret-34", challenge: binary,
            response: "0x859f9cc125669c1f88507996d5181b3a"),
        CHAPVector(
            algorithm: .sha1, identifier: 0xc5, secret: "ferry-secret-34", challenge: binary,
            response: "0xc93c3ab6408c56d797eeea6eb5450bf683e42f9b"),
        CHAPVector(
            algorithm: .sha256, identifier: 0xc5, secret: "ferry-secret-34", challenge: binary,
            response: "0x8222fdd009a6287b385b22895b2381892c23f12383a109f093c2963acf11a3a9"),
        CHAPVector(
            algorithm: .sha3_256, identifier: 0xc5, secret: "ferry-secret-34", challenge: binary,
            response: "0x7e730201729275a4f2922081323ff8208fa2d8bfa7e2cbc405d5d89f70a0a97b"),
    ]
}
