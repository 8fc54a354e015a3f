import FerryBackends
import FerrySync

/// An in-memory ``BlockStore`` for device server tests; unmapped ranges are tracked per byte
/// range and read as zero.
final class MemoryBlockStore: BlockStore {
    private struct Contents {
        var bytes: [UInt8]
        var mapped: [Bool]
        var synchronizations = 0
        var forcedWrites = 0
        var bytesRead = 0
        var largestRead = 0
    }

    let byteCount: UInt64
    let supportsUnmap: Bool
    let unmappedReadsZero = true
    let identity = "memory:1"
    let physicalBlockSize: Int
    /// The granularity of mapping state, in bytes.
    let mappingGranularity = 512
    private let contents: Locked<Contents>
    /// Called at the start of every unmap, outside the store's lock: a window into a running command.
    let duringUnmap = Locked<(@Sendable () -> Void)?>(nil)

    init(byteCount: Int, supportsUnmap: Bool = true, physicalBlockSize: Int = 0) {
        self.byteCount = UInt64(byteCount)
        self.physicalBlockSize = physicalBlockSize
        self.supportsUnmap = supportsUnmap
        contents = Locked(Contents(bytes: [UInt8](repeating: 0, count: byteCount), mapped: [Bool](repeating: false, count: byteCount / 512)))
    }

    var bytes: [UInt8] { contents.withLock { $0.bytes } }
    var synchronizations: Int { contents.withLock { $0.synchronizations } }
    var forcedWrites: Int { contents.withLock { $0.forcedWrites } }
    /// Every byte read from the store so far.
    var bytesRead: Int { contents.withLock { $0.bytesRead } }
    /// The most bytes one read asked for.
    var largestRead: Int { contents.withLock { $0.largestRead } }

    func fill(_ value: UInt8, offset: Int, count: Int) {
        contents.withLock {
            for index in offset..<(offset + count) { $0.bytes[index] = value }
            for unit in (offset / 512)..<((offset + count + 511) / 512) { $0.mapped[unit] = true }
        }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) {
        guard offset + UInt64(buffer.count) <= byteCount else { throw BlockStoreError(operation: "read", errno: 5) }
        contents.withLock { contents in
            contents.bytesRead += buffer.count
            contents.largestRead = max(contents.largestRead, buffer.count)
            contents.bytes.withUnsafeBytes { source in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[Int(offset)..<(Int(offset) + buffer.count)]))
            }
        }
    }

    /// Whether ``readWithoutWaiting(into:at:)`` reads, as from a page cache that holds every block; false at first,
    /// so that every read goes the waiting way.
    let cached = Locked(false)

    func readWithoutWaiting(into buffer: UnsafeMutableRawBufferPointer, at offset: UInt64) throws(BlockStoreError) -> Bool {
        guard cached.withLock({ $0 }) else { return false }
        try read(into: buffer, at: offset)
        return true
    }

    func write(_ buffer: UnsafeRawBufferPointer, at offset: UInt64, forceUnitAccess: Bool) throws(BlockStoreError) {
        guard offset + UInt64(buffer.count) <= byteCount else { throw BlockStoreError(operation: "write", errno: 5) }
        contents.withLock { contents in
            for (index, byte) in buffer.enumerated() { contents.bytes[Int(offset) + index] = byte }
            for unit in (Int(offset) / 512)..<((Int(offset) + buffer.count + 511) / 512) { contents.mapped[unit] = true }
            if forceUnitAccess { contents.forcedWrites += 1 }
        }
    }

    func synchronize() throws(BlockStoreError) {
        contents.withLock { $0.synchronizations += 1 }
    }

    func unmap(offset: UInt64, length: UInt64) throws(BlockStoreError) {
        duringUnmap.withLock { $0 }?()
        contents.withLock { contents in
            for index in Int(offset)..<Int(offset + length) { contents.bytes[index] = 0 }
            for unit in (Int(offset) / 512)..<(Int(offset + length) / 512) { contents.mapped[unit] = false }
        }
    }

    func mappingStatus(at offset: UInt64) throws(BlockStoreError) -> (mapped: Bool, length: UInt64) {
        contents.withLock { contents in
            let first = Int(offset) / 512
            let state = contents.mapped[first]
            var unit = first
            while unit < contents.mapped.count && contents.mapped[unit] == state { unit += 1 }
            return (state, UInt64(unit * 512) - offset)
        }
    }
}
