public import NIOCore

/// One `key=value` pair of a text data segment (RFC 7143 §6.1).
public struct TextKeyValue: Sendable, Hashable, CustomStringConvertible {
    public var key: String
    public var value: String

    public init(_ key: String, _ value: String) {
        self.key = key
        self.value = value
    }

    /// CHAP secrets never travel in text, but responses do: keep logs readable without hiding keys.
    public var description: String { "\(key)=\(value)" }
}

/// The special values of RFC 7143 §6.2 that answer a key instead of negotiating it.
public enum TextSpecialValue {
    // > If a responder does not understand any particular key, the responder MUST answer with key=NotUnderstood.
    public static let notUnderstood = "NotUnderstood"
    // > ... a key value of Irrelevant ... when the key is irrelevant ... in the current negotiation context.
    public static let irrelevant = "Irrelevant"
    // > ... Reject ... when the value offered is not acceptable (e.g., out of the valid range).
    public static let reject = "Reject"
}

/// Why a text data segment could not be accepted.
///
/// A malformed segment is an initiator error: during login it ends the login with a Login Response of status
/// 0x0200 (RFC 7143 §11.13.5), in Full Feature Phase the Text Request is answered with a Reject (protocol error).
public struct TextFormatError: Error, Sendable, Hashable, CustomStringConvertible {
    fileprivate enum Base: Sendable, Hashable {
        case missingEqualsSign
        case invalidKeyName
        case valueTooLong(key: String, limit: Int)
        case invalidUTF8
        case textTooLong(limit: Int)
        case duplicateKey(String)
        case missingNULTerminator
        case tooManyKeys(limit: Int)
    }

    fileprivate var base: Base

    @inline(never)
    static func missingEqualsSign() -> Self { Self(base: .missingEqualsSign) }
    @inline(never)
    static func invalidKeyName() -> Self { Self(base: .invalidKeyName) }
    @inline(never)
    static func valueTooLong(key: String, limit: Int) -> Self { Self(base: .valueTooLong(key: key, limit: limit)) }
    @inline(never)
    static func invalidUTF8() -> Self { Self(base: .invalidUTF8) }
    @inline(never)
    static func textTooLong(limit: Int) -> Self { Self(base: .textTooLong(limit: limit)) }
    @inline(never)
    static func duplicateKey(_ key: String) -> Self { Self(base: .duplicateKey(key)) }
    @inline(never)
    static func missingNULTerminator() -> Self { Self(base: .missingNULTerminator) }
    @inline(never)
    static func tooManyKeys(limit: Int) -> Self { Self(base: .tooManyKeys(limit: limit)) }

    public var description: String {
        switch self.base {
        case .missingEqualsSign: "a text item has no '=' between key and value"
        case .invalidKeyName: "a key name is empty, longer than 63 bytes or has characters outside [A-Za-z0-9.-+@_]"
        case .valueTooLong(let key, let limit): "the value of \(key) is longer than \(limit) bytes"
        case .invalidUTF8: "the text is not valid UTF-8"
        case .textTooLong(let limit): "the key=value text exceeds \(limit) bytes; the initiator sends too much text"
        case .duplicateKey(let key): "the key \(key) is sent more than once"
        case .missingNULTerminator: "the last key=value of the text has no NUL terminator"
        case .tooManyKeys(let limit): "the text holds more than \(limit) keys; the initiator sends too many keys"
        }
    }
}

/// Parsing and writing of the NUL-separated `key=value` lists of Login and Text PDUs (RFC 7143 §6.1).
public enum TextKeys {
    /// > A key-name ... MUST NOT exceed 63 bytes.
    public static let maximumKeyNameLength = 63
    /// > If not otherwise specified, the maximum length of a simple-value (not its encoded representation) is
    /// > 255 bytes, not including the delimiter (comma or zero byte).
    public static let maximumValueLength = 255
    /// The limit for the large binary values of CHAP (CHAP_C and CHAP_R); RFC 7143 §6.1 bounds a
    /// large-binary-value's encoded form by 8192 bytes.
    public static let maximumLargeValueLength = 8192
    /// The most keys one text (or one whole login) may hold. An ordinary login sends about 25; without a bound,
    /// 64 KiB of short distinct keys would be about 9000, each compared with all the earlier ones.
    public static let maximumKeyCount = 256

    /// Parses a complete text segment (after any C-bit continuation has been joined).
    ///
    /// Each item is `key=value` followed by a NUL, the last one included; empty items (runs of NULs) are skipped.
    /// Keys must be unique within one segment (RFC 7143 §6.1: "a key MUST NOT be offered more than once"), and
    /// there may be at most ``maximumKeyCount`` of them.
    public static func parse(_ buffer: ByteBuffer) throws(TextFormatError) -> [TextKeyValue] {
        var result: [TextKeyValue] = []
        let view = buffer.readableBytesView
        // > RFC 7143 §6.1: Every key=value pair, including the last or only pair in a LTDS, MUST be followed by one
        // > null (0x00) delimiter.
        guard view.last ?? 0 == 0 else { throw .missingNULTerminator() }
        var itemStart = view.startIndex
        while itemStart < view.endIndex {
            let itemEnd = view[itemStart...].firstIndex(of: 0) ?? view.endIndex
            if itemEnd > itemStart {
                guard result.count < maximumKeyCount else { throw .tooManyKeys(limit: maximumKeyCount) }
                let pair = try parseItem(view[itemStart..<itemEnd])
                if result.contains(where: { $0.key == pair.key }) {
                    throw .duplicateKey(pair.key)
                }
                result.append(pair)
            }
            itemStart = itemEnd == view.endIndex ? itemEnd : view.index(after: itemEnd)
        }
        return result
    }

    private static func parseItem(_ item: ByteBufferView.SubSequence) throws(TextFormatError) -> TextKeyValue {
        guard let equals = item.firstIndex(of: UInt8(ascii: "=")) else { throw .missingEqualsSign() }
        let keyBytes = item[item.startIndex..<equals]
        guard !keyBytes.isEmpty, keyBytes.count <= maximumKeyNameLength, keyBytes.allSatisfy(isKeyNameCharacter)
        else { throw .invalidKeyName() }
        let key = String(decoding: keyBytes, as: UTF8.self)
        let valueBytes = item[item.index(after: equals)...]
        let limit = key == "CHAP_C" || key == "CHAP_R" ? maximumLargeValueLength : maximumValueLength
        guard valueBytes.count <= limit else { throw .valueTooLong(key: key, limit: limit) }
        guard let value = String(validating: valueBytes, as: UTF8.self) else { throw .invalidUTF8() }
        return TextKeyValue(key, value)
    }

    // > key-name: A string of one or more characters consisting of letters, digits, dot (.), minus (-),
    // > plus (+), commercial at (@), or underscore (_).
    private static func isKeyNameCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "-"), UInt8(ascii: "+"),
            UInt8(ascii: "@"), UInt8(ascii: "_"):
            true
        default:
            false
        }
    }

    /// Writes `key=value\0` for each pair.
    public static func write(_ pairs: [TextKeyValue], into buffer: inout ByteBuffer) {
        for pair in pairs {
            buffer.writeString(pair.key)
            buffer.writeInteger(UInt8(ascii: "="))
            buffer.writeString(pair.value)
            buffer.writeInteger(UInt8(0))
        }
    }

    /// The encoded size of `pairs`, to reserve capacity before ``write(_:into:)``.
    public static func encodedLength(of pairs: [TextKeyValue]) -> Int {
        pairs.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count + 2 }
    }

    /// Splits a comma-separated list value (RFC 7143 §6.1 list-of-values).
    static func listValues(_ value: String) -> [Substring] {
        value.split(separator: ",", omittingEmptySubsequences: false)
    }
}

/// Joins the text of a sequence of PDUs sent with the C (continue) bit, with a bound on the total size.
///
/// > C (Continue) bit: When set to 1, this bit indicates that the text (set of key=value pairs) in this
/// > ... Request is not complete (it will be continued on subsequent ... Requests).
public struct TextSegmentAccumulator: Sendable {
    /// The largest joined text accepted, in bytes.
    public let limit: Int
    private var pending: ByteBuffer?

    public init(limit: Int) {
        self.limit = limit
    }

    /// Whether earlier PDUs announced more text to come.
    public var isAccumulating: Bool { pending != nil }

    /// Adds one PDU's data segment. Returns the whole text when `continued` is false, nil while more is expected.
    public mutating func append(_ data: ByteBuffer, continued: Bool) throws(TextFormatError) -> ByteBuffer? {
        var joined: ByteBuffer
        if var pending = self.pending {
            self.pending = nil
            guard pending.readableBytes + data.readableBytes <= limit else { throw .textTooLong(limit: limit) }
            var data = data
            pending.writeBuffer(&data)
            joined = pending
        } else {
            guard data.readableBytes <= limit else { throw .textTooLong(limit: limit) }
            joined = data
        }
        if continued {
            self.pending = joined
            return nil
        }
        return joined
    }

    /// Drops any partial text.
    public mutating func reset() {
        pending = nil
    }
}

/// Splits an outgoing text segment into chunks no larger than the receiver's MaxRecvDataSegmentLength; the
/// responder sends them one per PDU with C=1 on all but the last (RFC 7143 §11.11.2, §11.13.2).
struct TextResponseChunker: Sendable {
    private var remaining: ByteBuffer

    init(_ text: ByteBuffer) {
        self.remaining = text
    }

    /// The next chunk and whether more follow.
    mutating func next(maximumLength: Int) -> (chunk: ByteBuffer, more: Bool) {
        let length = min(remaining.readableBytes, max(1, maximumLength))
        let chunk = remaining.readSlice(length: length)!
        return (chunk, remaining.readableBytes > 0)
    }
}
