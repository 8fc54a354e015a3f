internal import CSGUtils
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// What the synchronous probes at open learned about a device (libsgutils2's sg_ll_* commands).
public struct DeviceIdentity: Sendable, Hashable, CustomStringConvertible {
    /// PERIPHERAL DEVICE TYPE of standard INQUIRY data (00h: direct access block device).
    public var peripheralDeviceType: UInt8
    public var vendor: String
    public var product: String
    public var revision: String
    /// The logical block length, from READ CAPACITY(16) (or (10)); 512 when neither answered.
    public var blockSize: Int
    /// The number of logical blocks; nil when READ CAPACITY did not answer (no medium…).
    public var blockCount: UInt64?
    /// TEST UNIT READY's answer, for the log: nil for GOOD, otherwise the decoded sense.
    public var notReadyReason: String?

    /// The capacity in bytes; nil when unknown, or beyond 2^64 - 1 (the device said so, Ferry cannot).
    public var byteCount: UInt64? {
        guard let blockCount else { return nil }
        let (bytes, overflow) = blockCount.multipliedReportingOverflow(by: UInt64(blockSize))
        return overflow ? nil : bytes
    }

    public var description: String {
        let capacity = blockCount.map { "\($0) blocks of \(blockSize) bytes" } ?? "capacity unknown"
        let readiness = notReadyReason.map { ", not ready: \($0)" } ?? ""
        return "\(vendor) \(product) \(revision) (type \(peripheralDeviceType), \(capacity)\(readiness))"
    }
}

/// Synchronous utility commands at open, through libsgutils2. They run once per logical unit,
/// before it serves initiators, so blocking is fine here.
enum SGProbe {
    /// Seconds each probe may take.
    static let timeoutSeconds: Int32 = 20

    /// Opens `node` through sg_cmds_open_device, clears the power-on unit attention with TEST
    /// UNIT READY (so that no initiator sees the one meant for the host), and reads INQUIRY
    /// and READ CAPACITY.
    static func identify(_ node: String) throws(PassthroughError) -> DeviceIdentity {
        let fd = sg_cmds_open_device(node, false, 0)
        guard fd >= 0 else {
            throw .cannotOpen(node, errno: -fd, hint: openHint(errno: -fd))
        }
        defer { _ = sg_cmds_close_device(fd) }

        var readiness: Int32 = 0
        for _ in 0..<3 {
            readiness = sg_ll_test_unit_ready(fd, 0, false, 0)
            if readiness == 0 { break }
        }

        var inquiry = [UInt8](repeating: 0, count: 96)
        let inquiryStatus = sg_ll_inquiry_v2(
            fd, false, 0, &inquiry, Int32(inquiry.count), timeoutSeconds, nil, false, 0)
        guard inquiryStatus == 0 else {
            throw .probeFailed(node, "INQUIRY failed: \(categoryDescription(inquiryStatus))")
        }

        var blockSize = 512
        var blockCount: UInt64?
        var capacity = [UInt8](repeating: 0, count: 32)
        if sg_ll_readcap_16(fd, false, 0, &capacity, Int32(capacity.count), false, 0) == 0 {
            (blockCount, blockSize) = Self.capacity(readCapacity16: capacity)
        } else if sg_ll_readcap_10(fd, false, 0, &capacity, 8, false, 0) == 0 {
            (blockCount, blockSize) = Self.capacity(readCapacity10: capacity)
        }
        if blockSize == 0 { blockSize = 512 }

        return DeviceIdentity(
            peripheralDeviceType: inquiry[0] & 0x1f, vendor: ascii(inquiry[8..<16]), product: ascii(inquiry[16..<32]),
            revision: ascii(inquiry[32..<36]), blockSize: blockSize, blockCount: blockCount,
            notReadyReason: readiness == 0 ? nil : categoryDescription(readiness))
    }

    /// The request queue's limit in bytes, from BLKSECTGET on an sg node (the kernel answers in
    /// bytes there); nil when the ioctl is not supported.
    static func maximumTransferBytes(fd: Int32) -> Int? {
        var value: Int32 = 0
        guard case .success(let bytes) = SGSystemCalls.ioctl(fd, UInt(FERRY_BLKSECTGET), &value), bytes > 0 else {
            return nil
        }
        return Int(bytes)
    }

    static func openHint(errno: Int32) -> String {
        switch errno {
        case EACCES, EPERM:
            "ferryd needs read and write access to the node (run it as root, or give its user the disk group and "
                + "CAP_SYS_RAWIO)"
        case ENOENT, ENXIO, ENODEV:
            "the device is not there: check the path, and that the sg module is loaded (modprobe sg)"
        case EBUSY:
            "another program holds the device exclusively"
        default:
            ""
        }
    }

    /// sg_lib's name for an SG_LIB_CAT_* result or a negated errno.
    static func categoryDescription(_ category: Int32) -> String {
        if category < 0 { return String(cString: strerror(-category)) }
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: 128) { buffer in
            String(cString: sg_get_category_sense_str(category, Int32(buffer.count), buffer.baseAddress, 0))
        }
    }

    /// The number of logical blocks and the logical block length of READ CAPACITY(16) data. The device's
    /// RETURNED LOGICAL BLOCK ADDRESS is not trusted: 2^64 - 1 (2^64 blocks) does not fit, and is unknown.
    static func capacity(readCapacity16 data: [UInt8]) -> (blockCount: UInt64?, blockSize: Int) {
        let (count, overflow) = bigEndian(data[0..<8]).addingReportingOverflow(1)
        return (overflow ? nil : count, Int(bigEndian(data[8..<12])))
    }

    /// The number of logical blocks and the logical block length of READ CAPACITY(10) data.
    static func capacity(readCapacity10 data: [UInt8]) -> (blockCount: UInt64?, blockSize: Int) {
        (bigEndian(data[0..<4]) + 1, Int(bigEndian(data[4..<8])))
    }

    private static func bigEndian(_ bytes: ArraySlice<UInt8>) -> UInt64 {
        bytes.reduce(0) { $0 << 8 | UInt64($1) }
    }

    private static func ascii(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.map { $0 >= 0x20 && $0 < 0x7f ? $0 : 0x20 }, as: UTF8.self)
            .trimmingCharacters(in: .whitespaces)
    }
}

/// Sense data decoded by sg_lib (`sg_get_sense_str`), for logs.
public func describeSense(_ sense: [UInt8]) -> String {
    guard !sense.isEmpty else { return "no sense data" }
    let text = withUnsafeTemporaryAllocation(of: CChar.self, capacity: 1024) { buffer in
        _ = sense.withUnsafeBufferPointer {
            sg_get_sense_str(nil, $0.baseAddress, Int32($0.count), false, Int32(buffer.count), buffer.baseAddress)
        }
        return String(cString: buffer.baseAddress!)
    }
    return text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        .joined(separator: "; ")
}
