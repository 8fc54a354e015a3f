import NIOCore
import Testing

@testable import ISCSIProtocol

/// The NUL-separated text of `pairs`.
func textBuffer(_ pairs: [(String, String)]) -> ByteBuffer {
    var buffer = ByteBuffer()
    TextKeys.write(pairs.map { TextKeyValue($0.0, $0.1) }, into: &buffer)
    return buffer
}

/// The pairs of a response's data segment as a dictionary (last value wins).
func keys(_ data: ByteBuffer) -> [String: String] {
    let pairs = TextKeys.parseAllowingRepeats(data)
    return Dictionary(pairs.map { ($0.key, $0.value) }, uniquingKeysWith: { _, last in last })
}

extension TextKeys {
    /// Test helper: responses such as SendTargets repeat keys, which ``parse(_:)`` refuses.
    static func parseAllowingRepeats(_ buffer: ByteBuffer) -> [TextKeyValue] {
        buffer.readableBytesView.split(separator: 0).map { item in
            let text = String(decoding: item, as: UTF8.self)
            guard let equals = text.firstIndex(of: "=") else { return TextKeyValue(text, "") }
            return TextKeyValue(String(text[..<equals]), String(text[text.index(after: equals)...]))
        }
    }
}

@Suite struct TextKeysTests {
    @Test func parsesPairsInOrder() throws {
        let pairs = try TextKeys.parse(textBuffer([("InitiatorName", "iqn.x"), ("HeaderDigest", "CRC32C,None")]))
        #expect(pairs == [TextKeyValue("InitiatorName", "iqn.x"), TextKeyValue("HeaderDigest", "CRC32C,None")])
    }

    @Test func toleratesEmptyItems() throws {
        var buffer = ByteBuffer(string: "A=1")
        buffer.writeBytes([0, 0])
        buffer.writeString("B=")
        buffer.writeBytes([0])
        let pairs = try TextKeys.parse(buffer)
        #expect(pairs == [TextKeyValue("A", "1"), TextKeyValue("B", "")])
    }

    // > RFC 7143 §6.1: Every key=value pair, including the last or only pair in a LTDS, MUST be followed by one
    // > null (0x00) delimiter.
    @Test(arguments: ["A=1", "A=1\0B=", "A=1\0\0B=2", "X"])
    func refusesALastPairWithoutNUL(_ text: String) {
        #expect(throws: TextFormatError.missingNULTerminator()) { try TextKeys.parse(ByteBuffer(string: text)) }
    }

    @Test func emptyTextHasNoKeys() throws {
        #expect(try TextKeys.parse(ByteBuffer()).isEmpty)
    }

    /// A 64 KiB text of short distinct keys holds about 9000 of them; each was compared with all earlier ones.
    @Test func refusesMoreKeysThanTheLimit() throws {
        let limit = TextKeys.maximumKeyCount
        let most = textBuffer((0..<limit).map { ("X-\($0)", "") })
        #expect(try TextKeys.parse(most).count == limit)
        let tooMany = textBuffer((0...limit).map { ("X-\($0)", "") })
        #expect(throws: TextFormatError.tooManyKeys(limit: limit)) { try TextKeys.parse(tooMany) }
    }

    @Test func valueMayContainEqualsSign() throws {
        let pairs = try TextKeys.parse(ByteBuffer(string: "X-a=b=c\0"))
        #expect(pairs == [TextKeyValue("X-a", "b=c")])
    }

    @Test(arguments: ["novalue\0", "=v\0", "bad key=v\0", "k\u{e9}y=v\0"])
    func rejectsMalformedItems(_ text: String) {
        #expect(throws: TextFormatError.self) { try TextKeys.parse(ByteBuffer(string: text)) }
    }

    @Test func keyNameLimitIs63Bytes() throws {
        let ok = String(repeating: "k", count: 63)
        #expect(try TextKeys.parse(ByteBuffer(string: "\(ok)=1\0")).count == 1)
        #expect(throws: TextFormatError.self) { try TextKeys.parse(ByteBuffer(string: "\(ok)k=1\0")) }
    }

    @Test func valueLimitIs255ExceptCHAPLargeValues() throws {
        let long = String(repeating: "v", count: 256)
        #expect(throws: TextFormatError.self) { try TextKeys.parse(ByteBuffer(string: "TargetAlias=\(long)\0")) }
        let challenge = "0x" + String(repeating: "ab", count: 1024)
        #expect(try TextKeys.parse(ByteBuffer(string: "CHAP_C=\(challenge)\0")).count == 1)
        let tooLong = String(repeating: "a", count: 8193)
        #expect(throws: TextFormatError.self) { try TextKeys.parse(ByteBuffer(string: "CHAP_R=\(tooLong)\0")) }
    }

    @Test func rejectsInvalidUTF8() {
        var buffer = ByteBuffer(string: "TargetAlias=")
        buffer.writeBytes([0xff, 0xfe, 0])
        #expect(throws: TextFormatError.self) { try TextKeys.parse(buffer) }
    }

    @Test func rejectsDuplicateKeys() {
        #expect(throws: TextFormatError.duplicateKey("A")) { try TextKeys.parse(ByteBuffer(string: "A=1\0A=2\0")) }
    }

    @Test func accumulatorJoinsContinuedTextAcrossPDUs() throws {
        var accumulator = TextSegmentAccumulator(limit: 100)
        #expect(try accumulator.append(ByteBuffer(string: "Initiator"), continued: true) == nil)
        #expect(accumulator.isAccumulating)
        let joined = try #require(try accumulator.append(ByteBuffer(string: "Name=iqn.x\0"), continued: false))
        #expect(try TextKeys.parse(joined) == [TextKeyValue("InitiatorName", "iqn.x")])
        #expect(!accumulator.isAccumulating)
    }

    @Test func accumulatorIsBounded() throws {
        var accumulator = TextSegmentAccumulator(limit: 10)
        _ = try accumulator.append(ByteBuffer(string: "123456"), continued: true)
        #expect(throws: TextFormatError.textTooLong(limit: 10)) {
            try accumulator.append(ByteBuffer(string: "78901"), continued: false)
        }
    }

    @Test func writeRoundTrips() throws {
        let pairs = [TextKeyValue("MaxRecvDataSegmentLength", "262144"), TextKeyValue("TargetAlias", "disk")]
        var buffer = ByteBuffer()
        TextKeys.write(pairs, into: &buffer)
        #expect(buffer.readableBytes == TextKeys.encodedLength(of: pairs))
        #expect(try TextKeys.parse(buffer) == pairs)
    }

    @Test func binaryValues() {
        #expect(BinaryValue.decode("0x0aFF") == [0x0a, 0xff])
        #expect(BinaryValue.decode("0XabC") == [0x0a, 0xbc])
        #expect(BinaryValue.decode("0bAQID") == [1, 2, 3])
        #expect(BinaryValue.decode("0bAQI=") == [1, 2])
        #expect(BinaryValue.decode("0x") == nil)
        #expect(BinaryValue.decode("0xzz") == nil)
        #expect(BinaryValue.decode("1234") == nil)
        #expect(BinaryValue.encodeHex([0x00, 0xab]) == "0x00ab")
    }
}
