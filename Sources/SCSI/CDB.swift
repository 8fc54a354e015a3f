public import NIOCore

/// A read-only view of a command descriptor block (SPC-4 §4.2) with big-endian field accessors.
///
/// Bytes past the end of the received CDB read as zero, so a short CDB behaves as if its missing
/// fields were zero; the CDB length of a known operation code is checked by the device server.
public struct CDB: Sendable {
    public let bytes: ByteBuffer

    public init(_ bytes: ByteBuffer) {
        self.bytes = bytes
    }

    /// The number of CDB bytes received.
    public var count: Int { bytes.readableBytes }

    /// The OPERATION CODE field (byte 0).
    public var operationCode: UInt8 { self[0] }

    /// The SERVICE ACTION field of CDBs that carry one in byte 1 bits 4:0.
    public var serviceAction: UInt8 { self[1] & 0x1f }

    public subscript(_ index: Int) -> UInt8 {
        guard index >= 0, index < bytes.readableBytes else { return 0 }
        return bytes.getInteger(at: bytes.readerIndex + index, as: UInt8.self) ?? 0
    }

    /// A big-endian unsigned field of `width` bytes starting at `index`.
    public func field(at index: Int, width: Int) -> UInt64 {
        var value: UInt64 = 0
        for offset in 0..<width { value = value << 8 | UInt64(self[index + offset]) }
        return value
    }

    public func uint16(at index: Int) -> UInt16 { UInt16(field(at: index, width: 2)) }
    public func uint32(at index: Int) -> UInt32 { UInt32(field(at: index, width: 4)) }
    public func uint64(at index: Int) -> UInt64 { field(at: index, width: 8) }

    /// The CDB length implied by the GROUP CODE of an operation code (SPC-4 §4.2.5.1), nil for
    /// variable-length and vendor-specific groups.
    public static func length(ofGroupOf operationCode: UInt8) -> Int? {
        switch operationCode >> 5 {
        case 0: 6
        case 1, 2: 10
        case 4: 16
        case 5: 12
        default: nil
        }
    }
}

extension Array where Element == UInt8 {
    /// Appends `value` big-endian in `width` bytes.
    mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T, width: Int = MemoryLayout<T>.size) {
        for shift in stride(from: (width - 1) * 8, through: 0, by: -8) {
            append(UInt8(truncatingIfNeeded: value >> T(shift)))
        }
    }

    /// Stores `value` big-endian in `width` bytes at `index`.
    mutating func setBigEndian<T: FixedWidthInteger>(_ value: T, at index: Int, width: Int = MemoryLayout<T>.size) {
        for byte in 0..<width {
            self[index + byte] = UInt8(truncatingIfNeeded: value >> T((width - 1 - byte) * 8))
        }
    }

    /// Appends `string` as ASCII, truncated or padded with spaces to `width` bytes (SPC-4 §4.3.1).
    mutating func appendASCII(_ string: String, width: Int) {
        var bytes = Array(string.utf8.prefix(width)).map { $0 >= 0x20 && $0 < 0x7f ? $0 : UInt8(ascii: " ") }
        bytes += [UInt8](repeating: UInt8(ascii: " "), count: width - bytes.count)
        append(contentsOf: bytes)
    }
}

extension SCSIResult {
    /// GOOD status with `data` as Data-In, truncated to `allocationLength` (SPC-4 §4.2.5.6).
    static func dataIn(_ data: [UInt8], allocationLength: Int) -> SCSIResult {
        let count = Swift.min(data.count, allocationLength)
        var buffer = ByteBufferAllocator().buffer(capacity: count)
        buffer.writeBytes(data.prefix(count))
        return SCSIResult(status: .good, dataIn: buffer)
    }
}
