import NIOCore
import SCSI

/// Logical block provisioning (SBC-4 §4.7) and sanitize (SBC-4 §4.11) commands of the emulated
/// block device: WRITE SAME, UNMAP, GET LBA STATUS and SANITIZE.
extension EmulatedBlockDevice {
    /// The largest buffer, in bytes, that WRITE SAME and SANITIZE OVERWRITE write at a time.
    static let patternChunkSize = 1 << 20

    /// WRITE SAME(10) and WRITE SAME(16) (SBC-4 §5.50, §5.51).
    func writeSame(_ cdb: CDB, _ request: SCSIRequest) throws(SenseData) -> SCSIResult {
        var transfer = Transfer(cdb)
        let unmapRequested = transfer.flags & 0x08 != 0
        let noDataOutBuffer = cdb.operationCode == OperationCode.writeSame16 && transfer.flags & 0x01 != 0
        if transfer.blocks == 0 {
            // > If the NUMBER OF LOGICAL BLOCKS field is set to zero [and WSNZ is zero], then the
            // > device server shall write [or unmap] all the logical blocks starting with the one
            // > specified in the LOGICAL BLOCK ADDRESS field to the last logical block on the medium.
            guard transfer.lba < blockCount else { throw .logicalBlockAddressOutOfRange }
            transfer.blocks = blockCount - transfer.lba
        }
        // > If the number of logical blocks specified to be written or unmapped exceeds the value
        // > in the MAXIMUM WRITE SAME LENGTH field […] INVALID FIELD IN CDB.
        try checkRange(transfer, maximum: limits.maximumWriteSameLength)
        try checkWritable()
        var pattern: ByteBuffer
        if noDataOutBuffer {
            pattern = allocator.buffer(capacity: blockSize)
            pattern.writeRepeatingByte(0, count: blockSize)
        } else {
            // The Data-Out buffer holds a single logical block: an initiator sending more disagrees
            // with the command as much as one sending less.
            guard request.expectedDataTransferLength <= blockSize else {
                throw SenseData(.illegalRequest, .invalidFieldInCommandInformationUnit)
            }
            pattern = try requireDataOut(request.dataOut, blockSize)
        }
        let isZero = pattern.readableBytesView.allSatisfy { $0 == 0 }
        try ordering.shared { () throws(SenseData) in
            // > The device server shall perform the write operations specified by a WRITE SAME command
            // > and shall not perform any unmap operations if the device server sets the LBPRZ field to
            // > xx1b (see 6.6.7), and: a) any bit in the user data transferred from the Data-Out Buffer
            // > is not zero […] (SBC-4 §4.7.3.4.4)
            if unmapRequested && provisioning && store.unmappedReadsZero && isZero {
                try deallocate(lba: transfer.lba, blocks: transfer.blocks)
            } else {
                try writePattern(pattern, lba: transfer.lba, blocks: transfer.blocks, forceUnitAccess: false)
            }
        }
        return .good
    }

    /// Writes the one-block `pattern` to every block of a range, calling `afterChunk` with the
    /// number of blocks of each chunk written.
    func writePattern(
        _ pattern: ByteBuffer, lba: UInt64, blocks: UInt64, forceUnitAccess: Bool,
        afterChunk: (UInt64) -> Void = { _ in }
    ) throws(SenseData) {
        let chunkBlocks = UInt64(max(1, Self.patternChunkSize / blockSize))
        var chunk = allocator.buffer(capacity: Int(min(blocks, chunkBlocks)) * blockSize)
        for _ in 0..<min(blocks, chunkBlocks) { chunk.writeImmutableBuffer(pattern) }
        var done: UInt64 = 0
        while done < blocks {
            let count = min(blocks - done, chunkBlocks)
            let slice = chunk.getSlice(at: chunk.readerIndex, length: Int(count) * blockSize)!
            try storeWrite(slice, lba: lba + done, forceUnitAccess: forceUnitAccess)
            done += count
            afterChunk(count)
        }
    }

    func deallocate(lba: UInt64, blocks: UInt64) throws(SenseData) {
        guard blocks > 0 else { return }
        do {
            try store.unmap(offset: offset(lba), length: blocks * UInt64(blockSize))
        } catch {
            throw Self.writeSense(error)
        }
    }

    /// UNMAP (SBC-4 §5.30).
    func unmap(_ cdb: CDB, _ dataOut: ByteBuffer) throws(SenseData) -> SCSIResult {
        try checkWritable()
        let listLength = Int(cdb.uint16(at: 7))
        // > A PARAMETER LIST LENGTH set to zero specifies that no data shall be sent; this shall not
        // > be considered an error.
        guard listLength > 0 else { return .good }
        // > If the PARAMETER LIST LENGTH field is greater than zero and less than eight, then the
        // > device server shall terminate the command […] PARAMETER LIST LENGTH ERROR.
        guard listLength >= 8, dataOut.readableBytes >= 8 else { throw .parameterListLengthError }
        let list = dataOut.getSlice(at: dataOut.readerIndex, length: min(listLength, dataOut.readableBytes))!
        let descriptorDataLength = Int(list.getInteger(at: list.readerIndex + 2, as: UInt16.self)!)
        // > If the UNMAP BLOCK DESCRIPTOR DATA LENGTH is not a multiple of 16, then the last UNMAP
        // > block descriptor is incomplete and shall be ignored.
        let descriptorCount = min(descriptorDataLength, list.readableBytes - 8) / 16
        guard descriptorCount <= Int(limits.maximumUnmapBlockDescriptorCount) else {
            throw .invalidFieldInParameterList(byte: 2)
        }
        var ranges: [(lba: UInt64, blocks: UInt64)] = []
        ranges.reserveCapacity(descriptorCount)
        var total: UInt64 = 0
        for index in 0..<descriptorCount {
            let at = list.readerIndex + 8 + 16 * index
            let lba = list.getInteger(at: at, as: UInt64.self)!
            let blocks = UInt64(list.getInteger(at: at + 8, as: UInt32.self)!)
            guard lba <= blockCount, blocks <= blockCount - lba else { throw .logicalBlockAddressOutOfRange }
            total += blocks
            // > If the total number of logical blocks specified in the UNMAP block descriptors
            // > exceeds the MAXIMUM UNMAP LBA COUNT […] INVALID FIELD IN PARAMETER LIST.
            guard total <= UInt64(limits.maximumUnmapLBACount) else {
                throw .invalidFieldInParameterList(byte: 8 + 16 * index + 8)
            }
            ranges.append((lba, blocks))
        }
        try ordering.shared { () throws(SenseData) in
            for range in ranges { try deallocate(lba: range.lba, blocks: range.blocks) }
        }
        return .good
    }

    /// GET LBA STATUS (SBC-4 §5.6): mapped and deallocated extents from the starting LBA.
    func getLBAStatus(_ cdb: CDB) throws(SenseData) -> SCSIResult {
        let start = cdb.uint64(at: 2)
        let allocationLength = Int(cdb.uint32(at: 10))
        // > If the specified starting LBA exceeds the capacity of the medium, then the device
        // > server shall terminate the command […] LOGICAL BLOCK ADDRESS OUT OF RANGE.
        guard start < blockCount else { throw .logicalBlockAddressOutOfRange }
        let maximumDescriptors = max(1, min((allocationLength - 8) / 16, 256))
        var data: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 0]
        var lba = start
        var descriptors = 0
        while lba < blockCount && descriptors < maximumDescriptors {
            var (mapped, length) = (true, (blockCount - lba) * UInt64(blockSize))
            if provisioning {
                do {
                    (mapped, length) = try store.mappingStatus(at: offset(lba))
                } catch {
                    throw Self.readSense(error)
                }
            }
            // A block is deallocated only if all of it is; a partial block counts as mapped.
            var blocks = mapped ? (length + UInt64(blockSize) - 1) / UInt64(blockSize) : length / UInt64(blockSize)
            if blocks == 0 {
                mapped = true
                blocks = 1
            }
            blocks = min(blocks, blockCount - lba, UInt64(UInt32.max))
            if !data.isEmpty, descriptors > 0, data[data.count - 4] == (mapped ? 0 : 1) {
                // Merge with the previous descriptor of the same provisioning status.
                let previous = data.count - 16
                var count = UInt64(0)
                for index in (previous + 8)..<(previous + 12) { count = count << 8 | UInt64(data[index]) }
                if count + blocks <= UInt64(UInt32.max) {
                    data.setBigEndian(UInt32(count + blocks), at: previous + 8)
                    lba += blocks
                    continue
                }
            }
            data.appendBigEndian(lba)
            data.appendBigEndian(UInt32(blocks))
            // PROVISIONING STATUS: 0h mapped, 1h deallocated.
            data += [mapped ? 0x00 : 0x01, 0, 0, 0]
            descriptors += 1
            lba += blocks
        }
        data.setBigEndian(UInt32(data.count - 4), at: 0)
        return .dataIn(data, allocationLength: allocationLength)
    }

    /// SANITIZE (SBC-4 §5.24): OVERWRITE, BLOCK ERASE (deallocate every block) and EXIT FAILURE
    /// MODE. The operation completes before the command returns, whether or not IMMED is set; an
    /// OVERWRITE is paced to ``Configuration/sanitizeRate``.
    func sanitize(_ cdb: CDB, _ request: SCSIRequest) throws(SenseData) -> SCSIResult {
        let listLength = Int(cdb.uint16(at: 7))
        switch cdb.serviceAction {
        case ServiceAction.sanitizeOverwrite:
            // > If the PARAMETER LIST LENGTH is not greater than 4 and less than or equal to the
            // > logical block length plus 4, INVALID FIELD IN CDB.
            guard listLength > 4, listLength <= blockSize + 4 else { throw .invalidFieldInCDB(byte: 7) }
            let list = request.dataOut.getSlice(at: request.dataOut.readerIndex, length: listLength)
            guard let list else { throw .parameterListLengthError }
            let control = list.getInteger(at: list.readerIndex, as: UInt8.self)!
            let invert = control & 0x80 != 0
            let passes = Int(control & 0x1f)
            guard control & 0x60 == 0 else { throw .invalidFieldInParameterList(byte: 0, bit: 6) }
            guard passes > 0 else { throw .invalidFieldInParameterList(byte: 0, bit: 4) }
            let patternLength = Int(list.getInteger(at: list.readerIndex + 2, as: UInt16.self)!)
            guard patternLength > 0, patternLength <= blockSize, patternLength + 4 == listLength else {
                throw .invalidFieldInParameterList(byte: 2)
            }
            try checkWritable()
            let pattern = list.getBytes(at: list.readerIndex + 4, length: patternLength)!
            try runSanitize { () throws(SenseData) in
                var pacer = configuration.sanitizeRate.map { ErasurePacer(bytesPerSecond: $0, clock: erasureClock) }
                let totalBlocks = UInt64(passes) * blockCount
                var blocksDone: UInt64 = 0
                for pass in 0..<passes {
                    // > INVERT: the initialization pattern is inverted between consecutive passes.
                    let passPattern = invert && pass % 2 == 1 ? pattern.map { ~$0 } : pattern
                    var block = allocator.buffer(capacity: blockSize)
                    while block.readableBytes < blockSize {
                        block.writeBytes(passPattern.prefix(blockSize - block.readableBytes))
                    }
                    try writePattern(block, lba: 0, blocks: blockCount, forceUnitAccess: false) { blocks in
                        blocksDone += blocks
                        let progress = Self.sanitizeProgress(blocksDone: blocksDone, of: totalBlocks)
                        state.withLock { $0.sanitizeProgress = progress }
                        pacer?.wrote(Int(blocks) * blockSize)
                    }
                }
                try synchronize()
            }
        case ServiceAction.sanitizeBlockErase:
            guard listLength == 0 else { throw .invalidFieldInCDB(byte: 7) }
            try checkWritable()
            try runSanitize { () throws(SenseData) in try deallocate(lba: 0, blocks: blockCount) }
        default:
            // EXIT FAILURE MODE; CRYPTOGRAPHIC ERASE is not in the supported command table.
            guard listLength == 0 else { throw .invalidFieldInCDB(byte: 7) }
            state.withLock { $0.sanitizeFailed = false }
        }
        return .good
    }

    /// The PROGRESS INDICATION of a sanitize that has written `blocksDone` of `totalBlocks` blocks, in 65536ths.
    /// `blocksDone * 65536` is taken in 128 bits: on a logical unit of 2^48 blocks or more it does not fit in 64.
    static func sanitizeProgress(blocksDone: UInt64, of totalBlocks: UInt64) -> UInt16 {
        guard blocksDone < totalBlocks else { return blocksDone == 0 ? 0 : 65535 }
        // blocksDone < totalBlocks: the quotient is below 65536, so dividingFullWidth cannot overflow.
        return UInt16(totalBlocks.dividingFullWidth(blocksDone.multipliedFullWidth(by: 65536)).quotient)
    }

    /// Runs a sanitize operation with every other medium access held off, entering the sanitize
    /// failure mode if it fails. Commands that arrive meanwhile end with NOT READY, SANITIZE IN
    /// PROGRESS instead of waiting for it.
    private func runSanitize(_ operation: () throws(SenseData) -> Void) throws(SenseData) {
        state.withLock {
            $0.sanitizeInProgress = true
            $0.sanitizeProgress = 0
        }
        do {
            try ordering.exclusive(operation)
            state.withLock {
                $0.sanitizeInProgress = false
                $0.sanitizeFailed = false
            }
        } catch {
            state.withLock {
                $0.sanitizeInProgress = false
                $0.sanitizeFailed = true
            }
            throw SenseData(.mediumError, .sanitizeCommandFailed)
        }
    }
}
