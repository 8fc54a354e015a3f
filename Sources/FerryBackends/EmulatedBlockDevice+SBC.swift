import NIOCore
import SCSI

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// SBC-4 medium access commands of the emulated block device.
extension EmulatedBlockDevice {
    /// The LBA and transfer length fields of an SBC CDB, and the flags of byte 1.
    struct Transfer {
        var lba: UInt64
        var blocks: UInt64
        /// The byte of the CDB holding the TRANSFER LENGTH field, for field pointers.
        var lengthByte: Int
        var flags: UInt8

        var forceUnitAccess: Bool { flags & 0x08 != 0 }
        /// RDPROTECT, WRPROTECT, VRPROTECT or ORPROTECT.
        var protect: UInt8 { flags >> 5 }

        init(_ cdb: CDB) {
            flags = cdb[1]
            switch CDB.length(ofGroupOf: cdb.operationCode) ?? 16 {
            case 6:
                lba = cdb.field(at: 1, width: 3) & 0x1f_ffff
                // > A TRANSFER LENGTH field set to zero specifies that 256 logical blocks shall be read.
                blocks = cdb[4] == 0 ? 256 : UInt64(cdb[4])
                lengthByte = 4
                flags = 0
            case 10:
                lba = UInt64(cdb.uint32(at: 2))
                blocks = UInt64(cdb.uint16(at: 7))
                lengthByte = 7
            case 12:
                lba = UInt64(cdb.uint32(at: 2))
                blocks = UInt64(cdb.uint32(at: 6))
                lengthByte = 6
            default:
                lba = cdb.uint64(at: 2)
                blocks = UInt64(cdb.uint32(at: 10))
                lengthByte = 10
            }
        }
    }

    func executeBlockCommand(_ cdb: CDB, _ request: SCSIRequest) throws(SenseData) -> SCSIResult {
        switch cdb.operationCode {
        case OperationCode.read6, OperationCode.read10, OperationCode.read12, OperationCode.read16:
            return try read(Transfer(cdb), expectedDataTransferLength: request.expectedDataTransferLength)
        case OperationCode.write6, OperationCode.write10, OperationCode.write12, OperationCode.write16:
            try write(Transfer(cdb), request.dataOut, forceUnitAccess: Transfer(cdb).forceUnitAccess)
            return .good
        case OperationCode.writeAndVerify10, OperationCode.writeAndVerify12, OperationCode.writeAndVerify16:
            // The verification reads back from the medium, so the data goes there first.
            try write(Transfer(cdb), request.dataOut, forceUnitAccess: true)
            return .good
        case OperationCode.verify10, OperationCode.verify12, OperationCode.verify16:
            return try verify(cdb, request.dataOut)
        case OperationCode.compareAndWrite:
            return try compareAndWrite(cdb, request)
        case OperationCode.writeAtomic16:
            return try writeAtomic(cdb, request.dataOut)
        case OperationCode.orWrite16:
            return try orWrite(Transfer(cdb), request.dataOut)
        case OperationCode.preFetch10, OperationCode.preFetch16:
            var transfer = Transfer(cdb)
            transfer.flags = 0
            try checkRange(transfer)
            // > CONDITION MET: the specified logical blocks were transferred to the cache.
            return SCSIResult(status: .conditionMet)
        case OperationCode.synchronizeCache10, OperationCode.synchronizeCache16:
            var transfer = Transfer(cdb)
            transfer.flags = 0
            try checkRange(transfer)
            try synchronize()
            return .good
        case OperationCode.readCapacity10:
            return readCapacity10(cdb)
        case OperationCode.serviceActionIn16 where cdb.serviceAction == ServiceAction.readCapacity16:
            return readCapacity16(cdb)
        case OperationCode.serviceActionIn16:
            return try getLBAStatus(cdb)
        case OperationCode.readDefectData10, OperationCode.readDefectData12:
            return readDefectData(cdb)
        case OperationCode.writeSame10, OperationCode.writeSame16:
            return try writeSame(cdb, request)
        case OperationCode.unmap:
            return try unmap(cdb, request.dataOut)
        default:
            throw .invalidCommandOperationCode
        }
    }

    /// Checks the protection field and the LBA range of a transfer (SBC-4 §4.5).
    func checkRange(_ transfer: Transfer, maximum: UInt64? = nil) throws(SenseData) {
        // > If the logical unit does not support protection information […] and the RDPROTECT
        // > field is set to a non-zero value, the command shall be terminated […] INVALID FIELD IN CDB.
        guard transfer.protect == 0 else { throw .invalidFieldInCDB(byte: 1, bit: 7) }
        guard transfer.lba <= blockCount, transfer.blocks <= blockCount - transfer.lba else {
            throw .logicalBlockAddressOutOfRange
        }
        // > If the TRANSFER LENGTH field is greater than the MAXIMUM TRANSFER LENGTH field in the
        // > Block Limits VPD page, the command shall be terminated […] INVALID FIELD IN CDB.
        if transfer.blocks > maximum ?? UInt64(limits.maximumTransferLength) {
            throw .invalidFieldInCDB(byte: transfer.lengthByte)
        }
    }

    /// Fails a command that writes the medium with DATA PROTECT, WRITE PROTECTED when the logical
    /// unit is read-only or software write protected (SWP of the control mode page).
    func checkWritable() throws(SenseData) {
        guard !isWriteProtected else { throw .writeProtected }
    }

    var isWriteProtected: Bool {
        configuration.readOnly || state.withLock { $0.modePages.softwareWriteProtect }
    }

    /// READ(6/10/12/16). The range and the TRANSFER LENGTH are checked whole, but only the blocks that cover the
    /// initiator's Expected Data Transfer Length are read: the transport would discard the others, and reading
    /// them would let a READ(10) of 16384 blocks sent with EDTL 0 make Ferry read and hold 8 MiB. The result
    /// gives the length the CDB asks for, from which the transport reports the overflow residual.
    func read(_ transfer: Transfer, expectedDataTransferLength: Int) throws(SenseData) -> SCSIResult {
        try checkRange(transfer)
        // > FUA: the device server shall read the logical blocks from the medium.
        if transfer.forceUnitAccess { try synchronize() }
        let blocks = Self.blocksRead(transfer, expectedDataTransferLength: expectedDataTransferLength, blockSize: blockSize)
        let buffer = try ordering.shared { () throws(SenseData) -> ByteBuffer in
            try readBuffer(lba: transfer.lba, blocks: blocks)
        }
        return readResult(buffer, blocks: blocks, of: transfer)
    }

    /// The largest READ or WRITE that ``readWithoutWaiting(_:expectedDataTransferLength:)`` and
    /// ``writeWithoutWaiting(_:_:)`` carry out on an event loop.
    /// Larger ones go to the I/O threads, which copy them in parallel with the loop's socket work: a 128 KiB READ
    /// done on the loop made 128 KiB sequential reads 23 % slower (`scripts/benchmark`, seqread-128k-qd8).
    static let withoutWaitingLimit = 64 * 1024

    /// ``read(_:expectedDataTransferLength:)`` when the blocks can be had without waiting; nil otherwise (FUA, a
    /// command holding the write-ordering lock, a block not in the page cache, a read over 64 KiB).
    func readWithoutWaiting(_ transfer: Transfer, expectedDataTransferLength: Int) throws(SenseData) -> SCSIResult? {
        try checkRange(transfer)
        guard !transfer.forceUnitAccess else { return nil }
        let blocks = Self.blocksRead(transfer, expectedDataTransferLength: expectedDataTransferLength, blockSize: blockSize)
        guard Int(blocks) * blockSize <= Self.withoutWaitingLimit else { return nil }
        let buffer = try ordering.sharedIfFree { () throws(SenseData) -> ByteBuffer? in
            try readBuffer(lba: transfer.lba, blocks: blocks, waiting: false)
        }
        return (buffer ?? nil).map { readResult($0, blocks: blocks, of: transfer) }
    }

    /// The blocks a READ reads: those that cover the Expected Data Transfer Length.
    private static func blocksRead(_ transfer: Transfer, expectedDataTransferLength: Int, blockSize: Int) -> UInt64 {
        let room = max(0, expectedDataTransferLength)
        let covering = UInt64(room / blockSize + (room % blockSize == 0 ? 0 : 1))
        return min(transfer.blocks, covering)
    }

    private func readResult(_ buffer: ByteBuffer, blocks: UInt64, of transfer: Transfer) -> SCSIResult {
        var result = SCSIResult(status: .good, dataIn: buffer)
        // checkRange bounds the blocks by MAXIMUM TRANSFER LENGTH: the byte count fits.
        if blocks < transfer.blocks { result.requestedDataInLength = Int(transfer.blocks) * blockSize }
        return result
    }

    /// Reads `blocks` blocks at `lba` straight into one new buffer.
    func readBuffer(lba: UInt64, blocks: UInt64) throws(SenseData) -> ByteBuffer {
        // Waiting, the store reads every byte or throws.
        try readBuffer(lba: lba, blocks: blocks, waiting: true)!
    }

    /// Reads `blocks` blocks at `lba` into one new buffer; without `waiting`, nil when the store would wait.
    private func readBuffer(lba: UInt64, blocks: UInt64, waiting: Bool) throws(SenseData) -> ByteBuffer? {
        let length = Int(blocks) * blockSize
        var buffer = allocator.buffer(capacity: length)
        var failure: BlockStoreError?
        var complete = true
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { pointer in
            let destination = UnsafeMutableRawBufferPointer(rebasing: pointer[..<length])
            do throws(BlockStoreError) {
                if waiting {
                    try store.read(into: destination, at: offset(lba))
                } else {
                    complete = try store.readWithoutWaiting(into: destination, at: offset(lba))
                }
            } catch {
                failure = error
            }
            return length
        }
        if let failure { throw Self.readSense(failure) }
        return complete ? buffer : nil
    }

    /// The Data-Out bytes a command needs, or INVALID FIELD IN COMMAND INFORMATION UNIT when the
    /// initiator sent fewer (FCP-4 §9.4.2: transfer no data and report the error).
    func requireDataOut(_ dataOut: ByteBuffer, _ length: Int) throws(SenseData) -> ByteBuffer {
        guard let slice = dataOut.getSlice(at: dataOut.readerIndex, length: length) else {
            throw SenseData(.illegalRequest, .invalidFieldInCommandInformationUnit)
        }
        return slice
    }

    func write(_ transfer: Transfer, _ dataOut: ByteBuffer, forceUnitAccess: Bool) throws(SenseData) {
        try checkRange(transfer)
        try checkWritable()
        // > RFC 7143 §11.4.5.2 / libiscsi's residual tests: when the Expected Data Transfer Length
        // > is below the CDB's transfer length, only the whole blocks that arrived are written and
        // > the command ends GOOD with the overflow residual that the transport reports.
        let wholeBlocks = min(Int(transfer.blocks) * blockSize, dataOut.readableBytes / blockSize * blockSize)
        let data = dataOut.getSlice(at: dataOut.readerIndex, length: wholeBlocks)!
        try ordering.shared { () throws(SenseData) in
            try storeWrite(data, lba: transfer.lba, forceUnitAccess: forceUnitAccess)
        }
    }

    /// ``write(_:_:forceUnitAccess:)`` when the store takes the blocks without waiting; false otherwise (FUA or the
    /// write cache disabled, a command holding the write-ordering lock, a store that would wait, over 64 KiB).
    func writeWithoutWaiting(_ transfer: Transfer, _ dataOut: ByteBuffer) throws(SenseData) -> Bool {
        try checkRange(transfer)
        try checkWritable()
        guard !transfer.forceUnitAccess, state.withLock({ $0.modePages.writeCacheEnabled }) else { return false }
        let wholeBlocks = min(Int(transfer.blocks) * blockSize, dataOut.readableBytes / blockSize * blockSize)
        guard wholeBlocks <= Self.withoutWaitingLimit else { return false }
        let data = dataOut.getSlice(at: dataOut.readerIndex, length: wholeBlocks)!
        let written = try ordering.sharedIfFree { () throws(SenseData) -> Bool in
            var failure: BlockStoreError?
            let written = data.withUnsafeReadableBytes { pointer in
                do throws(BlockStoreError) {
                    return try store.writeWithoutWaiting(pointer, at: offset(transfer.lba))
                } catch {
                    failure = error
                    return false
                }
            }
            if let failure { throw Self.writeSense(failure) }
            return written
        }
        return written ?? false
    }

    /// Writes all of `data` at `lba`, durably when FUA is set or the write cache is disabled.
    func storeWrite(_ data: ByteBuffer, lba: UInt64, forceUnitAccess: Bool) throws(SenseData) {
        guard data.readableBytes > 0 else { return }
        let durable = forceUnitAccess || !state.withLock { $0.modePages.writeCacheEnabled }
        var failure: BlockStoreError?
        data.withUnsafeReadableBytes { pointer in
            do throws(BlockStoreError) {
                try store.write(pointer, at: offset(lba), forceUnitAccess: durable)
            } catch {
                failure = error
            }
        }
        if let failure { throw Self.writeSense(failure) }
    }

    func synchronize() throws(SenseData) {
        do {
            try store.synchronize()
        } catch {
            throw Self.writeSense(error)
        }
    }

    /// The RETURNED LOGICAL BLOCK ADDRESS of READ CAPACITY.
    var lastLBA: UInt64 { max(blockCount, 1) - 1 }

    func offset(_ lba: UInt64) -> UInt64 { lba * UInt64(blockSize) }

    static func readSense(_ error: BlockStoreError) -> SenseData {
        SenseData(.mediumError, .unrecoveredReadError)
    }

    static func writeSense(_ error: BlockStoreError) -> SenseData {
        // ENOSPC, EDQUOT: a thin provisioned store ran out of space.
        if error.errno == 28 || error.errno == 122 { return SenseData(.dataProtect, .spaceAllocationFailedWriteProtect) }
        return SenseData(.mediumError, .writeError)
    }

    /// MISCOMPARE with the offset of the first differing byte in INFORMATION.
    static func miscompare(at offset: Int) -> SenseData {
        SenseData(.miscompare, .miscompareDuringVerifyOperation, information: UInt64(offset))
    }

    /// The offset of the first byte where `lhs` and `rhs` differ, if any.
    static func firstDifference(_ lhs: ByteBuffer, _ rhs: ByteBuffer) -> Int? {
        lhs.withUnsafeReadableBytes { a in
            rhs.withUnsafeReadableBytes { b in
                let count = min(a.count, b.count)
                if count == 0 || memcmp(a.baseAddress!, b.baseAddress!, count) == 0 { return nil }
                for index in 0..<count where a[index] != b[index] { return index }
                return nil
            }
        }
    }

    /// The most bytes VERIFY reads from the medium at once.
    public static let verifyChunkLength = 256 * 1024

    /// VERIFY(10/12/16) (SBC-4 §5.33): BYTCHK 00b checks the medium is readable, 01b compares
    /// the Data-Out buffer, 11b compares one block against every block of the range.
    func verify(_ cdb: CDB, _ dataOut: ByteBuffer) throws(SenseData) -> SCSIResult {
        let transfer = Transfer(cdb)
        let byteCheck = (transfer.flags >> 1) & 0x03
        guard byteCheck != 0x02 else { throw .invalidFieldInCDB(byte: 1, bit: 2) }
        try checkRange(transfer)
        guard transfer.blocks > 0 else { return .good }
        let length = Int(transfer.blocks) * blockSize
        let expected: ByteBuffer? =
            switch byteCheck {
            case 0x01: try requireDataOut(dataOut, length)
            case 0x03: try requireDataOut(dataOut, blockSize)
            default: nil
            }
        // The medium is read one piece at a time: with BYTCHK 0 the initiator sends nothing and may expect nothing,
        // so the data buffer budget counts nothing for a VERIFY of up to MAXIMUM TRANSFER LENGTH blocks.
        let chunkBlocks = UInt64(max(1, Self.verifyChunkLength / blockSize))
        var verified: UInt64 = 0
        while verified < transfer.blocks {
            let count = min(chunkBlocks, transfer.blocks - verified)
            let medium = try ordering.shared { () throws(SenseData) -> ByteBuffer in
                try readBuffer(lba: transfer.lba + verified, blocks: count)
            }
            let base = Int(verified) * blockSize
            switch (byteCheck, expected) {
            case (0x01, let expected?):
                let part = expected.getSlice(at: expected.readerIndex + base, length: Int(count) * blockSize)!
                if let offset = Self.firstDifference(medium, part) { throw Self.miscompare(at: base + offset) }
            case (0x03, let expected?):
                for block in 0..<Int(count) {
                    let slice = medium.getSlice(at: medium.readerIndex + block * blockSize, length: blockSize)!
                    if let offset = Self.firstDifference(slice, expected) {
                        throw Self.miscompare(at: base + block * blockSize + offset)
                    }
                }
            default:
                break
            }
            verified += count
        }
        return .good
    }

    /// COMPARE AND WRITE (SBC-4 §5.3): compare and write as one atomic operation.
    func compareAndWrite(_ cdb: CDB, _ request: SCSIRequest) throws(SenseData) -> SCSIResult {
        var transfer = Transfer(cdb)
        transfer.blocks = UInt64(cdb[13])
        transfer.lengthByte = 13
        try checkRange(transfer, maximum: UInt64(limits.maximumCompareAndWriteLength))
        let length = Int(transfer.blocks) * blockSize
        // The Data-Out buffer holds the verify instance and the write instance of the logical
        // blocks: 2 × NUMBER OF LOGICAL BLOCKS of them; a zero count transfers none. An initiator
        // offering more disagrees with the count (256 blocks wrap to 0 in the one-byte field):
        // comparing fewer blocks than it meant and reporting GOOD would pass off a compare that
        // never happened, so the field is refused. Fewer bytes fail in requireDataOut.
        guard request.expectedDataTransferLength <= 2 * length else { throw .invalidFieldInCDB(byte: 13) }
        guard transfer.blocks > 0 else { return .good }
        try checkWritable()
        let data = try requireDataOut(request.dataOut, 2 * length)
        let verifyData = data.getSlice(at: data.readerIndex, length: length)!
        let writeData = data.getSlice(at: data.readerIndex + length, length: length)!
        try ordering.exclusive { () throws(SenseData) in
            let medium = try readBuffer(lba: transfer.lba, blocks: transfer.blocks)
            // > If the compare operation does not indicate a match, the device server shall
            // > terminate the command with CHECK CONDITION status with the sense key set to
            // > MISCOMPARE and the additional sense code set to MISCOMPARE DURING VERIFY OPERATION.
            // > […] the INFORMATION field set to the offset from the start of the Data-Out Buffer
            // > to the first byte of data that was not equal.
            if let offset = Self.firstDifference(medium, verifyData) { throw Self.miscompare(at: offset) }
            try storeWrite(writeData, lba: transfer.lba, forceUnitAccess: transfer.forceUnitAccess)
        }
        return .good
    }

    /// WRITE ATOMIC(16) (SBC-4 §5.48): the write is atomic with respect to every other command.
    func writeAtomic(_ cdb: CDB, _ dataOut: ByteBuffer) throws(SenseData) -> SCSIResult {
        var transfer = Transfer(cdb)
        transfer.blocks = UInt64(cdb.uint16(at: 12))
        transfer.lengthByte = 12
        // > If the ATOMIC BOUNDARY field is not zero and the MAXIMUM ATOMIC BOUNDARY SIZE is zero
        // > […] INVALID FIELD IN CDB.
        guard cdb.uint16(at: 10) == 0 else { throw .invalidFieldInCDB(byte: 10) }
        try checkRange(transfer, maximum: UInt64(limits.maximumAtomicTransferLength))
        guard transfer.blocks > 0 else { return .good }
        try checkWritable()
        let data = try requireDataOut(dataOut, Int(transfer.blocks) * blockSize)
        try ordering.exclusive { () throws(SenseData) in
            try storeWrite(data, lba: transfer.lba, forceUnitAccess: transfer.forceUnitAccess)
        }
        return .good
    }

    /// ORWRITE(16) (SBC-4 §5.9): OR the Data-Out buffer into the medium, atomically.
    func orWrite(_ transfer: Transfer, _ dataOut: ByteBuffer) throws(SenseData) -> SCSIResult {
        try checkRange(transfer)
        guard transfer.blocks > 0 else { return .good }
        try checkWritable()
        let data = try requireDataOut(dataOut, Int(transfer.blocks) * blockSize)
        try ordering.exclusive { () throws(SenseData) in
            var medium = try readBuffer(lba: transfer.lba, blocks: transfer.blocks)
            medium.withUnsafeMutableReadableBytes { target in
                data.withUnsafeReadableBytes { source in
                    for index in 0..<target.count { target[index] |= source[index] }
                }
            }
            try storeWrite(medium, lba: transfer.lba, forceUnitAccess: transfer.forceUnitAccess)
        }
        return .good
    }

    /// READ CAPACITY(10) (SBC-4 §5.16).
    func readCapacity10(_ cdb: CDB) -> SCSIResult {
        var data: [UInt8] = []
        // > If the number of logical blocks exceeds the maximum value that is able to be specified
        // > in the RETURNED LOGICAL BLOCK ADDRESS field, the device server shall set the RETURNED
        // > LOGICAL BLOCK ADDRESS field to FFFF_FFFFh.
        data.appendBigEndian(UInt32(clamping: lastLBA))
        data.appendBigEndian(UInt32(blockSize))
        return .dataIn(data, allocationLength: 8)
    }

    /// READ CAPACITY(16) (SBC-4 §5.17).
    func readCapacity16(_ cdb: CDB) -> SCSIResult {
        var data = [UInt8](repeating: 0, count: 32)
        data.setBigEndian(lastLBA, at: 0)
        data.setBigEndian(UInt32(blockSize), at: 8)
        // LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT; LOWEST ALIGNED LOGICAL BLOCK ADDRESS 0.
        data[13] = UInt8(physicalBlockExponent)
        if provisioning {
            data[14] = 0x80 | (store.unmappedReadsZero ? 0x40 : 0)  // LBPME, LBPRZ
        }
        return .dataIn(data, allocationLength: Int(cdb.uint32(at: 10)))
    }

    /// READ DEFECT DATA(10/12) (SBC-4 §5.19, §5.20): an empty defect list in the requested format.
    func readDefectData(_ cdb: CDB) -> SCSIResult {
        if cdb.operationCode == OperationCode.readDefectData10 {
            return .dataIn([0, cdb[2] & 0x1f, 0, 0], allocationLength: Int(cdb.uint16(at: 7)))
        }
        return .dataIn([0, cdb[1] & 0x1f, 0, 0, 0, 0, 0, 0], allocationLength: Int(cdb.uint32(at: 6)))
    }
}
