/// The storage under an emulated SBC disk: a regular file or a block device. All calls block,
/// so the emulated device server calls them from I/O threads, never from an event loop.
public protocol BlockStore: AnyObject, Sendable {
    /// The size of the store in bytes.
    var byteCount: UInt64 { get }
    /// Whether the store can deallocate ranges (sparse file hole punching, BLKDISCARD).
    var supportsUnmap: Bool { get }
    /// Whether deallocated ranges read back as zeroes.
    var unmappedReadsZero: Bool { get }
    /// A stable identity for the store (e.g. device and inode), used to derive the default
    /// NAA identifier and serial number.
    var identity: String { get }
    /// The unit in bytes in which the store allocates, deallocates and writes atomically: the
    /// file system block of a file, the physical block of a device; 0 when unknown.
    var physicalBlockSize: Int { get }

    /// Reads `buffer.count` bytes at `offset`. Short reads past the end are an error.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError)
    /// Reads `buffer.count` bytes at `offset` only if that needs no wait for the device (the bytes are in the
    /// page cache); false, with `buffer` undefined, when it would wait or the store cannot tell. Called on event
    /// loops, so it never blocks; the caller reads with ``read(into:at:)`` on an I/O thread after a false.
    func readWithoutWaiting(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) -> Bool
    /// Writes all of `buffer` at `offset` only if that needs no wait; false, having written nothing or part of it,
    /// when it would wait or the store cannot tell. Called on event loops, so it never blocks; the caller writes with
    /// ``write(_:at:forceUnitAccess:)`` on an I/O thread after a false.
    func writeWithoutWaiting(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws(BlockStoreError) -> Bool
    /// Writes all of `buffer` at `offset`; with `forceUnitAccess` the data is durable on return.
    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, forceUnitAccess: Bool) throws(BlockStoreError)
    /// Makes every completed write durable (fdatasync).
    func synchronize() throws(BlockStoreError)
    /// Deallocates a range; later reads return zeroes when ``unmappedReadsZero``.
    func unmap(offset: UInt64, length: UInt64) throws(BlockStoreError)
    /// Whether the byte at `offset` is mapped, and how far (in bytes) that state extends,
    /// for GET LBA STATUS. Stores that do not know report everything mapped.
    func mappingStatus(at offset: UInt64) throws(BlockStoreError) -> (mapped: Bool, length: UInt64)
    /// Lets go of what the store holds beyond this process (an RBD image's exclusive lock and watch), once no call
    /// is running or will come; later calls fail. Stores that hold nothing outside do nothing.
    func release()
}

extension BlockStore {
    public var physicalBlockSize: Int { 0 }

    public func release() {}

    public func readWithoutWaiting(
        into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64
    ) throws(BlockStoreError) -> Bool {
        false
    }

    public func writeWithoutWaiting(_ buffer: UnsafeRawBufferPointer, at offset: UInt64) throws(BlockStoreError) -> Bool {
        false
    }
}

/// An I/O failure of a block store, with the errno that caused it.
public struct BlockStoreError: Error, Sendable, Hashable, CustomStringConvertible {
    public var operation: String
    public var errno: Int32

    public init(operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String { "\(operation) failed with errno \(errno)" }
}
