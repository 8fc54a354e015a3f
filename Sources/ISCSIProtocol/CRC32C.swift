internal import CISAL
public import NIOCore

/// The CRC32C (Castagnoli) checksum that iSCSI uses for HeaderDigest and DataDigest (RFC 7143 §13.1).
///
/// > The generator polynomial G(x) for this digest is given in hexadecimal notation (...) 0x11edc6f41.
///
/// The checksum is computed by ISA-L's `crc32_iscsi`, which keeps the raw (non-inverted) register: it must be
/// seeded with `0xffffffff`, and the result is the final register XOR `0xffffffff`. With that convention, the
/// RFC 3720 Appendix B.4 vectors hold (32 bytes of zeros give `0x8a9136aa`).
///
/// On the wire, the digest is sent least significant byte first: the zeros vector appears as `aa 36 91 8a`
/// (RFC 3720 B.4), which is what Linux (`put_unaligned_le32`) and libiscsi send. Use
/// ``ByteBuffer/writeDigest(_:)`` and ``ByteBuffer/readDigest()`` for that.
///
/// Incremental use: create one value, call ``update(_:)`` for each piece, then read ``value``.
public struct CRC32C: Sendable, Hashable {
    /// The raw ISA-L register (not yet inverted).
    private var register: UInt32

    public init() {
        self.register = 0xffff_ffff
    }

    /// The checksum of everything passed to ``update(_:)`` so far.
    public var value: UInt32 { self.register ^ 0xffff_ffff }

    /// Adds the readable bytes of `buffer` to the checksum, without consuming them.
    public mutating func update(_ buffer: ByteBuffer) {
        buffer.withUnsafeReadableBytes { self.update($0) }
    }

    /// Adds `bytes` to the checksum.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var base = bytes.baseAddress else { return }
        var remaining = bytes.count
        // ISA-L takes an `int` length: feed very large regions in pieces.
        while remaining > 0 {
            let chunk = min(remaining, Int(Int32.max) & ~0xfff)
            // ISA-L's prototype lacks `const`; it does not write through the pointer.
            let pointer = UnsafeMutablePointer(mutating: base.assumingMemoryBound(to: UInt8.self))
            self.register = crc32_iscsi(pointer, Int32(chunk), self.register)
            base += chunk
            remaining -= chunk
        }
    }

    /// Adds `count` zero bytes (the pad bytes of a segment) to the checksum.
    public mutating func updateWithZeros(count: Int) {
        precondition(count >= 0 && count <= 8)
        guard count > 0 else { return }
        let zeros: UInt64 = 0
        withUnsafeBytes(of: zeros) { self.update(UnsafeRawBufferPointer(rebasing: $0.prefix(count))) }
    }

    /// The checksum of the readable bytes of `buffer`.
    public static func checksum(_ buffer: ByteBuffer) -> UInt32 {
        var crc = CRC32C()
        crc.update(buffer)
        return crc.value
    }

    /// The checksum of the readable bytes of several buffers, in order, as if they were one.
    public static func checksum(_ buffers: some Sequence<ByteBuffer>) -> UInt32 {
        var crc = CRC32C()
        for buffer in buffers {
            crc.update(buffer)
        }
        return crc.value
    }
}

extension ByteBuffer {
    /// Writes an iSCSI digest, least significant byte first (RFC 3720 B.4), and returns the number of bytes written.
    @discardableResult
    @inlinable
    public mutating func writeDigest(_ digest: UInt32) -> Int {
        self.writeInteger(digest, endianness: .little)
    }

    /// Reads an iSCSI digest written by ``writeDigest(_:)``.
    @inlinable
    public mutating func readDigest() -> UInt32? {
        self.readInteger(endianness: .little)
    }

    /// Gets an iSCSI digest at `index`, without moving the reader index.
    @inlinable
    public func getDigest(at index: Int) -> UInt32? {
        self.getInteger(at: index, endianness: .little)
    }
}
