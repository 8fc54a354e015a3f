import NIOCore
import SCSI
import Testing

@testable import FerryPassthrough

@Suite struct CommandTransferTests {
    private func cdb(_ bytes: [UInt8]) -> CDB {
        CDB(ByteBuffer(bytes: bytes + [UInt8](repeating: 0, count: 16 - bytes.count)))
    }

    @Test func dataOutLengths() {
        #expect(
            cdb([0x2a, 0, 0, 0, 0, 0, 0, 0x00, 0x08, 0]).dataOutLength(blockSize: 512) == 4096)
        #expect(cdb([0x0a, 0, 0, 0, 0, 0]).dataOutLength(blockSize: 512) == 256 * 512)
        var write16 = [UInt8](repeating: 0, count: 16)
        write16[0] = 0x8a
        write16[13] = 0x02
        #expect(cdb(write16).dataOutLength(blockSize: 4096) == 8192)
        #expect(cdb([0x00, 0, 0, 0, 0, 0]).dataOutLength(blockSize: 512) == 0)
        #expect(cdb([0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0]).dataOutLength(blockSize: 512) == 24)
        #expect(cdb([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]).dataOutLength(blockSize: 512) == nil)
    }

    @Test func compareAndWriteAndVerifyDataOut() {
        // COMPARE AND WRITE: the verify instance and the write instance, NUMBER OF LOGICAL BLOCKS each.
        var compareAndWrite = [UInt8](repeating: 0, count: 16)
        compareAndWrite[0] = 0x89
        compareAndWrite[13] = 3
        #expect(cdb(compareAndWrite).dataOutLength(blockSize: 512) == 2 * 3 * 512)
        // > SBC-4: a NUMBER OF LOGICAL BLOCKS of zero is not an error; nothing is transferred.
        compareAndWrite[13] = 0
        #expect(cdb(compareAndWrite).dataOutLength(blockSize: 512) == 0)
        // VERIFY(16) of 4 blocks: BYTCHK 00b none, 01b every block, 11b one block.
        var verify16 = [UInt8](repeating: 0, count: 16)
        verify16[0] = 0x8f
        verify16[13] = 4
        #expect(cdb(verify16).dataOutLength(blockSize: 512) == 0)
        verify16[1] = 0x02
        #expect(cdb(verify16).dataOutLength(blockSize: 512) == 4 * 512)
        verify16[1] = 0x06
        #expect(cdb(verify16).dataOutLength(blockSize: 512) == 512)
    }

    @Test func dataInLengths() {
        #expect(
            CommandTransfer.dataInLength(of: cdb([0x28, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0]), blockSize: 512) == 131_072)
        #expect(CommandTransfer.dataInLength(of: cdb([0x12, 0x01, 0xb0, 0x00, 0x40, 0]), blockSize: 512) == 64)
        #expect(CommandTransfer.dataInLength(of: cdb([0x1a, 0, 0x3f, 0, 0xff, 0]), blockSize: 512) == 255)
        #expect(CommandTransfer.dataInLength(of: cdb([0x25]), blockSize: 512) == 8)
        #expect(
            CommandTransfer.dataInLength(of: cdb([0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32]), blockSize: 512)
                == 32)
        #expect(CommandTransfer.dataInLength(of: cdb([0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0]), blockSize: 512) == nil)
    }

    @Test func shortWritesAreCutToTheWholeBlocksReceived() {
        let write10 = ByteBuffer(bytes: [0x2a, 0, 0, 0, 0x10, 0, 0, 0x00, 0x08, 0])
        let shortened = CommandTransfer.shortenedWrite(write10, received: 1536, blockSize: 512)
        #expect(shortened?.blocks == 3)
        #expect(shortened.map { Array($0.cdb.readableBytesView) } == [0x2a, 0, 0, 0, 0x10, 0, 0, 0x00, 0x03, 0])
        #expect(CommandTransfer.shortenedWrite(write10, received: 100, blockSize: 512)?.blocks == 0)
        #expect(CommandTransfer.shortenedWrite(write10, received: 4096, blockSize: 512) == nil)
        // Only WRITE and WRITE AND VERIFY are cut; a short parameter list goes as it is.
        let unmap = ByteBuffer(bytes: [0x42, 0, 0, 0, 0, 0, 0, 0x00, 0x18, 0])
        #expect(CommandTransfer.shortenedWrite(unmap, received: 8, blockSize: 512) == nil)
    }

    @Test func cdbLengths() {
        #expect(PassthroughBackend.cdbLength(cdb([0x00])) == 6)
        #expect(PassthroughBackend.cdbLength(cdb([0x28])) == 10)
        #expect(PassthroughBackend.cdbLength(cdb([0xa8])) == 12)
        #expect(PassthroughBackend.cdbLength(cdb([0x88])) == 16)
        // Variable length: 8 + ADDITIONAL CDB LENGTH.
        let variable = CDB(ByteBuffer(bytes: [0x7f, 0, 0, 0, 0, 0, 0, 24] + [UInt8](repeating: 0, count: 24)))
        #expect(PassthroughBackend.cdbLength(variable) == 32)
        // Vendor specific: as received.
        #expect(PassthroughBackend.cdbLength(cdb([0xc0])) == 16)
    }
}
