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
    package mutating func appendBigEndian<T: FixedWidthInteger>(_ value: T, width: Int = MemoryLayout<T>.size) {
        for shift in stride(from: (width - 1) * 8, through: 0, by: -8) {
            append(UInt8(truncatingIfNeeded: value >> T(shift)))
        }
    }

    /// Stores `value` big-endian in `width` bytes at `index`.
    package mutating func setBigEndian<T: FixedWidthInteger>(
        _ value: T, at index: Int, width: Int = MemoryLayout<T>.size
    ) {
        for byte in 0..<width {
            self[index + byte] = UInt8(truncatingIfNeeded: value >> T((width - 1 - byte) * 8))
        }
    }

    /// Appends `string` as ASCII, truncated or padded with spaces to `width` bytes (SPC-4 §4.3.1).
    package mutating func appendASCII(_ string: String, width: Int) {
        var bytes = Array(string.utf8.prefix(width)).map { $0 >= 0x20 && $0 < 0x7f ? $0 : UInt8(ascii: " ") }
        bytes += [UInt8](repeating: UInt8(ascii: " "), count: width - bytes.count)
        append(contentsOf: bytes)
    }
}

extension SCSIResult {
    /// GOOD status with `data` as Data-In, truncated to `allocationLength` (SPC-4 §4.2.5.6).
    package static func dataIn(_ data: [UInt8], allocationLength: Int) -> SCSIResult {
        let count = Swift.min(data.count, allocationLength)
        var buffer = ByteBufferAllocator().buffer(capacity: count)
        buffer.writeBytes(data.prefix(count))
        return SCSIResult(status: .good, dataIn: buffer)
    }
}

extension CDB {
    /// The Data-Out bytes this command asks the initiator for (SBC-4 §5, SPC-4 §6): the blocks of
    /// a WRITE, VERIFY with BYTCHK, WRITE SAME or COMPARE AND WRITE, or the PARAMETER LIST LENGTH of
    /// the commands that carry one. Commands that move no Data-Out give 0; nil means the operation
    /// code is not decoded here, and the caller decides (a device that knows it, or the initiator's
    /// Expected Data Transfer Length).
    public func dataOutLength(blockSize: Int) -> Int? {
        let blocks: UInt64
        switch operationCode {
        case OperationCode.write6:
            blocks = self[4] == 0 ? 256 : UInt64(self[4])
        case OperationCode.write10, OperationCode.writeAndVerify10:
            blocks = UInt64(uint16(at: 7))
        case OperationCode.write12, OperationCode.writeAndVerify12:
            blocks = UInt64(uint32(at: 6))
        case OperationCode.write16, OperationCode.writeAndVerify16, OperationCode.orWrite16:
            blocks = UInt64(uint32(at: 10))
        case OperationCode.writeAtomic16:
            blocks = UInt64(uint16(at: 12))
        case OperationCode.compareAndWrite:
            blocks = 2 * UInt64(self[13])
        case OperationCode.verify10, OperationCode.verify12, OperationCode.verify16:
            let length: UInt64 =
                switch operationCode {
                case OperationCode.verify10: UInt64(uint16(at: 7))
                case OperationCode.verify12: UInt64(uint32(at: 6))
                default: UInt64(uint32(at: 10))
                }
            // > BYTCHK 01b: the verification uses the Data-Out buffer; 11b: one block of it.
            switch (self[1] >> 1) & 0x03 {
            case 0x01: blocks = length
            case 0x03: blocks = length == 0 ? 0 : 1
            default: blocks = 0
            }
        case OperationCode.writeSame10:
            blocks = 1
        case OperationCode.writeSame16:
            // > NDOB set: no Data-Out buffer.
            blocks = self[1] & 0x01 != 0 ? 0 : 1
        case OperationCode.testUnitReady, OperationCode.startStopUnit, OperationCode.synchronizeCache10,
            OperationCode.synchronizeCache16, OperationCode.preFetch10, OperationCode.preFetch16,
            OperationCode.reserve6, OperationCode.release6, OperationCode.preventAllowMediumRemoval:
            return 0
        case OperationCode.modeSelect6:
            return Int(self[4])
        case OperationCode.modeSelect10, OperationCode.unmap, OperationCode.sanitize, OperationCode.reserve10,
            OperationCode.release10:
            return Int(uint16(at: 7))
        case OperationCode.persistentReserveOut:
            return Int(uint32(at: 5))
        case OperationCode.extendedCopy:
            return Int(uint32(at: 10))
        default:
            return nil
        }
        return Int(clamping: blocks.multipliedReportingOverflow(by: UInt64(blockSize)).partialValue)
    }
}
