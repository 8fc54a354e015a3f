public import NIOCore
public import SCSI

/// What a CDB moves, decoded for the commands a disk sees most, so that the backend can size the
/// sg buffers and the transport its R2Ts and residuals. Commands not listed here are sized by the
/// initiator's Expected Data Transfer Length.
public enum CommandTransfer {
    /// The Data-In bytes `cdb` can return: the transfer length of a READ, the ALLOCATION LENGTH of
    /// the common SPC commands; nil when not decoded here.
    public static func dataInLength(of cdb: CDB, blockSize: Int) -> Int? {
        let blocks: UInt64
        switch cdb.operationCode {
        case OperationCode.read6:
            blocks = cdb[4] == 0 ? 256 : UInt64(cdb[4])
        case OperationCode.read10:
            blocks = UInt64(cdb.uint16(at: 7))
        case OperationCode.read12:
            blocks = UInt64(cdb.uint32(at: 6))
        case OperationCode.read16:
            blocks = UInt64(cdb.uint32(at: 10))
        case OperationCode.inquiry:
            return Int(cdb.uint16(at: 3))
        case OperationCode.logSense, OperationCode.modeSense10, OperationCode.persistentReserveIn:
            return Int(cdb.uint16(at: 7))
        case OperationCode.requestSense, OperationCode.modeSense6:
            return Int(cdb[4])
        case OperationCode.readCapacity10:
            return 8
        case OperationCode.serviceActionIn16, OperationCode.receiveCopyResults:
            return Int(cdb.uint32(at: 10))
        case OperationCode.maintenanceIn:
            return Int(cdb.uint32(at: 6))
        default:
            return nil
        }
        return Int(clamping: blocks.multipliedReportingOverflow(by: UInt64(blockSize)).partialValue)
    }

    /// For a WRITE whose Data-Out buffer holds fewer bytes than its TRANSFER LENGTH asks for
    /// (the initiator's Expected Data Transfer Length was smaller), the CDB rewritten to write the
    /// whole blocks received, as the emulated device does; nil when `cdb` needs no rewrite.
    /// A result of zero blocks means there is nothing to send to the device.
    public static func shortenedWrite(_ cdb: ByteBuffer, received: Int, blockSize: Int) -> (
        cdb: ByteBuffer, blocks: Int
    )? {
        let view = CDB(cdb)
        guard let asked = view.dataOutLength(blockSize: blockSize), received < asked else { return nil }
        let offset: Int
        let width: Int
        switch view.operationCode {
        case OperationCode.write6: (offset, width) = (4, 1)
        case OperationCode.write10, OperationCode.writeAndVerify10: (offset, width) = (7, 2)
        case OperationCode.write12, OperationCode.writeAndVerify12: (offset, width) = (6, 4)
        case OperationCode.write16, OperationCode.writeAndVerify16: (offset, width) = (10, 4)
        default: return nil
        }
        let blocks = received / blockSize
        var rewritten = ByteBufferAllocator().buffer(capacity: cdb.readableBytes)
        rewritten.writeImmutableBuffer(cdb)
        for byte in 0..<width {
            rewritten.setInteger(UInt8(truncatingIfNeeded: blocks >> ((width - 1 - byte) * 8)), at: offset + byte)
        }
        return (rewritten, blocks)
    }
}

extension OperationCode {
    /// LOG SENSE (SPC-4 §6.7).
    static let logSense: UInt8 = 0x4d
}
