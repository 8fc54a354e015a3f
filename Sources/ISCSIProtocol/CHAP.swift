internal import Crypto

/// The CHAP hash algorithms usable in CHAP_A (RFC 7143 §12.1.3), numbered by the IANA "PPP Authentication
/// Algorithms" registry: 5 MD5, 6 SHA-1, 7 SHA-256, 8 SHA3-256 (the numbers Linux LIO also uses).
public enum CHAPAlgorithm: UInt8, Sendable, Hashable, CaseIterable {
    case md5 = 5
    case sha1 = 6
    case sha256 = 7
    case sha3_256 = 8

    /// The digest size in bytes, which is also the size of CHAP_R.
    public var digestLength: Int {
        switch self {
        case .md5: 16
        case .sha1: 20
        case .sha256, .sha3_256: 32
        }
    }

    /// The CHAP response of RFC 1994 §4.1: the hash of the identifier, the secret and the challenge.
    public func response(identifier: UInt8, secret: String, challenge: [UInt8]) -> [UInt8] {
        switch self {
        case .md5: Self.hash(Insecure.MD5(), identifier, secret, challenge)
        case .sha1: Self.hash(Insecure.SHA1(), identifier, secret, challenge)
        case .sha256: Self.hash(SHA256(), identifier, secret, challenge)
        case .sha3_256: Self.hash(SHA3_256(), identifier, secret, challenge)
        }
    }

    private static func hash<H: HashFunction>(
        _ function: H, _ identifier: UInt8, _ secret: String, _ challenge: [UInt8]
    ) -> [UInt8] {
        var function = function
        function.update(data: [identifier])
        function.update(data: Array(secret.utf8))
        function.update(data: challenge)
        return Array(function.finalize())
    }
}

/// A CHAP name and secret, either the one an initiator must prove or the one the target answers with.
public struct CHAPAccount: Sendable, Hashable, CustomStringConvertible {
    public var user: String
    public var secret: String

    public init(user: String, secret: String) {
        self.user = user
        self.secret = secret
    }

    /// Never prints the secret.
    public var description: String { "CHAP user \(user)" }
}

/// The binary value encodings of RFC 7143 §6.1 used by CHAP_C and CHAP_R.
enum BinaryValue {
    /// Decodes `0x...` (hex-constant; an odd number of digits has an implied leading zero) or `0b...`
    /// (base64-constant). Returns nil for anything else or an empty value.
    static func decode(_ value: String) -> [UInt8]? {
        let utf8 = Array(value.utf8)
        guard utf8.count > 2, utf8[0] == UInt8(ascii: "0") else { return nil }
        switch utf8[1] {
        case UInt8(ascii: "x"), UInt8(ascii: "X"): return decodeHex(utf8[2...])
        case UInt8(ascii: "b"), UInt8(ascii: "B"): return decodeBase64(utf8[2...])
        default: return nil
        }
    }

    /// Encodes as a hex-constant, `0x` followed by lowercase hex digits.
    static func encodeHex(_ bytes: [UInt8]) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var text: [UInt8] = [UInt8(ascii: "0"), UInt8(ascii: "x")]
        text.reserveCapacity(2 + bytes.count * 2)
        for byte in bytes {
            text.append(digits[Int(byte >> 4)])
            text.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: text, as: UTF8.self)
    }

    private static func decodeHex(_ digits: ArraySlice<UInt8>) -> [UInt8]? {
        var result: [UInt8] = []
        result.reserveCapacity((digits.count + 1) / 2)
        var index = digits.startIndex
        var high: UInt8? = digits.count % 2 == 1 ? 0 : nil
        while index < digits.endIndex {
            guard let nibble = hexValue(digits[index]) else { return nil }
            if let h = high {
                result.append(h << 4 | nibble)
                high = nil
            } else {
                high = nibble
            }
            index += 1
        }
        return result
    }

    static func hexValue(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    private static func decodeBase64(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        var result: [UInt8] = []
        var accumulator: UInt32 = 0
        var bits = 0
        var padding = 0
        for character in text {
            let sextet: UInt8
            switch character {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): sextet = character - UInt8(ascii: "A")
            case UInt8(ascii: "a")...UInt8(ascii: "z"): sextet = character - UInt8(ascii: "a") + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): sextet = character - UInt8(ascii: "0") + 52
            case UInt8(ascii: "+"): sextet = 62
            case UInt8(ascii: "/"): sextet = 63
            case UInt8(ascii: "="):
                padding += 1
                continue
            default: return nil
            }
            guard padding == 0 else { return nil }
            accumulator = accumulator << 6 | UInt32(sextet)
            bits += 6
            if bits >= 8 {
                bits -= 8
                result.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        guard padding <= 2, text.count % 4 == 0 || padding == 0 else { return nil }
        return result.isEmpty ? nil : result
    }
}

/// Compares two byte strings in time that depends only on their lengths.
func constantTimeEquals(_ lhs: [UInt8], _ rhs: [UInt8]) -> Bool {
    guard lhs.count == rhs.count else { return false }
    var difference: UInt8 = 0
    for index in lhs.indices {
        difference |= lhs[index] ^ rhs[index]
    }
    return difference == 0
}

/// The target side of CHAP (RFC 7143 §12.1.3), once AuthMethod=CHAP has been agreed.
///
/// > I->T CHAP_A=<A1,A2,...>
/// > T->I CHAP_A=<A> CHAP_I=<I> CHAP_C=<C>
/// > I->T CHAP_N=<N> CHAP_R=<R>
/// > or, if it requires target authentication, with:
/// > I->T CHAP_N=<N> CHAP_R=<R> CHAP_I=<I> CHAP_C=<C>
/// > T->I CHAP_N=<N> CHAP_R=<R>
struct CHAPAuthenticator: Sendable {
    private enum State: Sendable {
        case waitingForAlgorithm
        case waitingForResponse(algorithm: CHAPAlgorithm, identifier: UInt8, challenge: [UInt8])
        case authenticated
    }

    /// What the initiator must prove.
    let account: CHAPAccount
    /// What the target proves when the initiator asks (mutual CHAP); nil refuses mutual CHAP.
    let mutualAccount: CHAPAccount?
    let algorithms: Set<CHAPAlgorithm>
    private var state: State = .waitingForAlgorithm

    init(account: CHAPAccount, mutualAccount: CHAPAccount?, algorithms: Set<CHAPAlgorithm>) {
        self.account = account
        self.mutualAccount = mutualAccount
        self.algorithms = algorithms
    }

    /// The CHAP keys.
    static let keys: Set<String> = ["CHAP_A", "CHAP_I", "CHAP_C", "CHAP_N", "CHAP_R"]

    /// Whether the initiator proved its identity (and, for mutual CHAP, the target answered).
    var isAuthenticated: Bool {
        if case .authenticated = state { return true }
        return false
    }

    /// Handles the CHAP keys of one login request and returns the keys to answer with.
    mutating func process(
        _ pairs: [TextKeyValue], random: inout some RandomNumberGenerator
    ) throws(LoginFailure) -> [TextKeyValue] {
        func value(_ key: String) -> String? { pairs.first { $0.key == key }?.value }

        switch state {
        case .waitingForAlgorithm:
            guard let offered = value("CHAP_A") else {
                if pairs.contains(where: { Self.keys.contains($0.key) }) {
                    throw LoginFailure(.authenticationFailure, "CHAP keys sent before CHAP_A")
                }
                return []
            }
            // > ... the target MUST respond with the first algorithm it supports from the list.
            // CHAP_A's values are numerical (RFC 7143 §6.1): unsigned, so "+5" names no algorithm.
            let chosen = TextKeys.listValues(offered).lazy
                .compactMap { OperationalNegotiator.number(String($0), in: 0...255) }
                .compactMap { CHAPAlgorithm(rawValue: UInt8($0)) }
                .first { self.algorithms.contains($0) }
            guard let algorithm = chosen else {
                throw LoginFailure(.authenticationFailure, "no acceptable CHAP algorithm in CHAP_A=\(offered)")
            }
            let identifier = UInt8.random(in: .min ... .max, using: &random)
            // A challenge as long as the digest, and never shorter than 16 bytes.
            let challenge = (0..<max(16, algorithm.digestLength)).map { _ in
                UInt8.random(in: .min ... .max, using: &random)
            }
            state = .waitingForResponse(algorithm: algorithm, identifier: identifier, challenge: challenge)
            return [
                TextKeyValue("CHAP_A", String(algorithm.rawValue)),
                TextKeyValue("CHAP_I", String(identifier)),
                TextKeyValue("CHAP_C", BinaryValue.encodeHex(challenge)),
            ]

        case .waitingForResponse(let algorithm, let identifier, let challenge):
            if value("CHAP_A") != nil {
                throw LoginFailure(.initiatorError, "CHAP_A sent twice")
            }
            guard let name = value("CHAP_N"), let responseText = value("CHAP_R") else {
                throw LoginFailure(.authenticationFailure, "CHAP_N or CHAP_R missing")
            }
            guard let response = BinaryValue.decode(responseText), response.count == algorithm.digestLength else {
                throw LoginFailure(.authenticationFailure, "CHAP_R is not a \(algorithm) digest")
            }
            let expected = algorithm.response(identifier: identifier, secret: account.secret, challenge: challenge)
            // Compare both before deciding, so that a wrong name and a wrong secret take the same time.
            let nameMatches = name == account.user
            let responseMatches = constantTimeEquals(response, expected)
            guard nameMatches && responseMatches else {
                throw LoginFailure(.authenticationFailure, "CHAP response for user \(name) does not verify")
            }
            var answer: [TextKeyValue] = []
            switch (value("CHAP_I"), value("CHAP_C")) {
            case (nil, nil):
                break
            case (let identifierText?, let challengeText?):
                answer = try mutualResponse(
                    algorithm: algorithm, identifierText: identifierText, challengeText: challengeText,
                    ourChallenge: challenge)
            default:
                throw LoginFailure(.authenticationFailure, "mutual CHAP needs both CHAP_I and CHAP_C")
            }
            state = .authenticated
            return answer

        case .authenticated:
            if pairs.contains(where: { Self.keys.contains($0.key) }) {
                throw LoginFailure(.initiatorError, "CHAP keys after CHAP completed")
            }
            return []
        }
    }

    private func mutualResponse(
        algorithm: CHAPAlgorithm, identifierText: String, challengeText: String, ourChallenge: [UInt8]
    ) throws(LoginFailure) -> [TextKeyValue] {
        guard let mutualAccount else {
            throw LoginFailure(.authenticationFailure, "initiator asks for mutual CHAP, none is configured")
        }
        guard let identifier = OperationalNegotiator.number(identifierText, in: 0...255) else {
            throw LoginFailure(.authenticationFailure, "CHAP_I=\(identifierText) is not in 0...255")
        }
        guard let theirChallenge = BinaryValue.decode(challengeText), theirChallenge.count <= 1024 else {
            throw LoginFailure(.authenticationFailure, "CHAP_C is not a valid binary value")
        }
        // > ... the target MUST ... not accept a challenge identical to the one it sent (reflection attack).
        guard theirChallenge != ourChallenge else {
            throw LoginFailure(.authenticationFailure, "the initiator reflected the target's CHAP challenge")
        }
        let response = algorithm.response(
            identifier: UInt8(identifier), secret: mutualAccount.secret, challenge: theirChallenge)
        return [TextKeyValue("CHAP_N", mutualAccount.user), TextKeyValue("CHAP_R", BinaryValue.encodeHex(response))]
    }
}
