public import NIOCore
public import SCSI

/// Ferry's edit of the Block Limits VPD page (SBC-4 §6.6.4) that a passthrough device returns.
///
/// The device reports what it can take, but a command also has to fit through the host's request
/// queue (`max_hw_sectors_kb` for passthrough requests); a larger one fails in the kernel before
/// it reaches the device. So MAXIMUM TRANSFER LENGTH and OPTIMAL TRANSFER LENGTH are lowered to
/// that limit, and an initiator that honours the page never sends a command the host cannot carry.
public enum BlockLimits {
    /// The Block Limits VPD page code.
    public static let pageCode: UInt8 = 0xb0

    /// Whether `cdb` is INQUIRY for the Block Limits VPD page (EVPD set, PAGE CODE B0h).
    public static func isBlockLimitsInquiry(_ cdb: CDB) -> Bool {
        cdb.operationCode == OperationCode.inquiry && cdb[1] & 0x01 != 0 && cdb[2] == pageCode
    }

    /// Lowers MAXIMUM TRANSFER LENGTH (bytes 8-11) and OPTIMAL TRANSFER LENGTH (bytes 12-15) of
    /// the page in `data` to `maximumBlocks` logical blocks, where the allocation length let them
    /// through. A MAXIMUM TRANSFER LENGTH of zero (no limit reported) becomes the limit; an
    /// OPTIMAL TRANSFER LENGTH of zero (not reported) stays zero.
    public static func clamp(_ data: inout ByteBuffer, maximumBlocks: UInt32) {
        let base = data.readerIndex
        guard data.readableBytes >= 4, data.getInteger(at: base + 1, as: UInt8.self) == pageCode else { return }
        if data.readableBytes >= 12, let maximum = data.getInteger(at: base + 8, as: UInt32.self),
            maximum == 0 || maximum > maximumBlocks
        {
            data.setInteger(maximumBlocks, at: base + 8)
        }
        if data.readableBytes >= 16, let optimal = data.getInteger(at: base + 12, as: UInt32.self),
            optimal > maximumBlocks
        {
            data.setInteger(maximumBlocks, at: base + 12)
        }
    }
}
