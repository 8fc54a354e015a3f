public import Foundation

/// Lines of JSON: how requests and responses cross the control socket.
public enum ControlCodec {
    /// `value` as one line of JSON, with the newline that ends it.
    public static func line(_ value: some Encodable) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var data = try encoder.encode(value)
        data.append(UInt8(ascii: "\n"))
        return data
    }

    /// Pretty JSON for people (`ferryctl --json`).
    public static func prettyJSON(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    /// Decodes one line (without its newline); the error says what was wrong with it.
    public static func decode<Value: Decodable>(
        _ type: Value.Type, from line: some DataProtocol
    ) throws(ControlFailure)
        -> Value
    {
        do {
            return try JSONDecoder().decode(type, from: Data(line))
        } catch DecodingError.dataCorrupted(let context) {
            throw ControlFailure(message: "the request is not JSON: \(context.debugDescription)")
        } catch DecodingError.keyNotFound(let key, _) {
            throw ControlFailure(message: "the request lacks \"\(key.stringValue)\"")
        } catch DecodingError.typeMismatch(_, let context), DecodingError.valueNotFound(_, let context) {
            let path = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw ControlFailure(message: "the request has a wrong value at \"\(path)\": \(context.debugDescription)")
        } catch {
            throw ControlFailure(message: "cannot decode the request: \(error)")
        }
    }
}

/// Splits what a stream socket delivers into lines (without their `\n`), with a length limit.
public struct ControlLineBuffer: Sendable {
    private var buffer: [UInt8] = []
    private var scanned = 0
    public let maximumLineLength: Int

    public init(maximumLineLength: Int = ControlProtocol.maximumLineLength) {
        self.maximumLineLength = maximumLineLength
    }

    public mutating func append(_ bytes: some Sequence<UInt8>) {
        buffer.append(contentsOf: bytes)
    }

    /// The next complete line, or nil until more bytes arrive. Throws when a line grows past the limit.
    public mutating func nextLine() throws(ControlFailure) -> [UInt8]? {
        guard let end = buffer[scanned...].firstIndex(of: UInt8(ascii: "\n")) else {
            scanned = buffer.count
            if buffer.count > maximumLineLength {
                throw ControlFailure(message: "a line is longer than \(maximumLineLength) bytes")
            }
            return nil
        }
        let line = Array(buffer[..<end])
        buffer.removeSubrange(...end)
        scanned = 0
        return line
    }

    /// Bytes received after the last complete line.
    public var pendingByteCount: Int { buffer.count }
}
