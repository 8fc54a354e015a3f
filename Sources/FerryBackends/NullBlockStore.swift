#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A ``BlockStore`` that stores nothing, for benchmarking (`backend = "null"`): reads return zeroes, and writes,
/// unmaps and synchronizations succeed at once and are dropped. A benchmark against it measures Ferry's protocol
/// path and the emulated device server rather than a disk, as tgt's bs_null, LIO's nullio and SPDK's null bdev do.
/// Every write is lost: it is never for data.
///
/// Every block is deallocated and deallocated blocks read as zeroes (LBPRZ), so GET LBA STATUS, reads and the
/// provisioning VPD page agree: whatever was written, each block reads back as zeroes and is reported deallocated.
/// Nothing blocks, so READs and WRITEs complete on the event loop, and nothing is created on disk.
public final class NullBlockStore: BlockStore {
    /// What ferryctl shows as the LUN's device.
    public let kind = "null"
    public let byteCount: UInt64
    public let supportsUnmap = true
    public let unmappedReadsZero = true
    /// Derived from the target and LUN, so that the serial number and NAA designator derived from it stay the same
    /// across restarts.
    public let identity: String

    /// A store of `byteCount` bytes for LUN `lun` of `target`.
    public init(byteCount: UInt64, target: String, lun: UInt64) {
        self.byteCount = byteCount
        identity = "null:\(target):\(lun)"
    }

    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
        // > Short reads past the end are an error (BlockStore), as they are for a file.
        try checkRange(offset: offset, length: UInt64(buffer.count), operation: "read")
        buffer.initializeMemory(as: UInt8.self, repeating: 0)
    }

    public func write(
        _ buffer: UnsafeRawBufferPointer, at offset: UInt64, forceUnitAccess: Bool
    ) throws(BlockStoreError) {
        try checkRange(offset: offset, length: UInt64(buffer.count), operation: "write")
    }

    /// Nothing to wait for: reads are served on the event loop.
    public func readWithoutWaiting(
        into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64
    ) throws(BlockStoreError) -> Bool {
        try read(into: buffer, at: offset)
        return true
    }

    /// Nothing to wait for: writes are dropped on the event loop.
    public func writeWithoutWaiting(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws(BlockStoreError) -> Bool {
        try write(buffer, at: offset, forceUnitAccess: false)
        return true
    }

    public func synchronize() throws(BlockStoreError) {}

    public func unmap(offset: UInt64, length: UInt64) throws(BlockStoreError) {
        try checkRange(offset: offset, length: length, operation: "unmap")
    }

    /// Everything is deallocated, from `offset` to the end.
    public func mappingStatus(at offset: UInt64) throws(BlockStoreError) -> (mapped: Bool, length: UInt64) {
        guard offset < byteCount else { return (true, 0) }
        return (false, byteCount - offset)
    }

    /// The device server checks every range against the capacity before it reaches the store: a range past the end
    /// here is a bug, and fails (EIO) rather than reading as zeroes or vanishing.
    private func checkRange(offset: UInt64, length: UInt64, operation: String) throws(BlockStoreError) {
        guard offset <= byteCount, length <= byteCount - offset else {
            throw BlockStoreError(operation: "\(operation) past the end of a null store", errno: EIO)
        }
    }
}
