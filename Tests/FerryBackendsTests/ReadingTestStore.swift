import FerryBackends

/// A 1 MiB store for backend tests that only read: writes, flushes and unmaps do nothing, and every block is
/// mapped. A conformer gives its `identity` and `read(into:at:)`.
protocol ReadingTestStore: BlockStore {}

extension ReadingTestStore {
    var byteCount: UInt64 { 1 << 20 }
    var supportsUnmap: Bool { false }
    var unmappedReadsZero: Bool { false }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, forceUnitAccess: Bool) throws(BlockStoreError) {}
    func synchronize() throws(BlockStoreError) {}
    func unmap(offset: UInt64, length: UInt64) throws(BlockStoreError) {}
    func mappingStatus(at offset: UInt64) throws(BlockStoreError) -> (mapped: Bool, length: UInt64) {
        (true, byteCount - offset)
    }
}
