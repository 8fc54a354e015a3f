import NIOCore
import SCSI
import Testing

@Suite struct ReportLUNsTests {
    @Test func encodesLUNs() {
        let result = ReportLUNs.response(luns: [300, 0, 1], cdb: ByteBuffer(bytes: [0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]))
        #expect(result.bytes == [0, 0, 0, 24, 0, 0, 0, 0] + [0, 0, 0, 0, 0, 0, 0, 0] + [0, 1, 0, 0, 0, 0, 0, 0]
            + [0x41, 0x2c, 0, 0, 0, 0, 0, 0])
        ReportLUNs.response(luns: [0], cdb: ByteBuffer(bytes: [0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]))
            .expectSense(.illegalRequest, .invalidFieldInCDB, fieldPointer: (6, nil))
        ReportLUNs.response(luns: [0], cdb: ByteBuffer(bytes: [0xa0, 0, 0x05, 0, 0, 0, 0, 0, 1, 0, 0, 0]))
            .expectSense(.illegalRequest, .invalidFieldInCDB, fieldPointer: (2, nil))
        #expect(ReportLUNs.response(luns: [0], cdb: ByteBuffer(bytes: [0xa0, 0, 0x01, 0, 0, 0, 0, 0, 1, 0, 0, 0])).bytes
            == [0, 0, 0, 0, 0, 0, 0, 0])
    }

    @Test func logicalUnitNotPresent() throws {
        let data = Inquiry.logicalUnitNotPresent(cdb: ByteBuffer(bytes: [0x12, 0, 0, 0, 0xff, 0])).bytes
        try #require(data.count == 36)
        #expect(data[0] == 0x7f)
    }
}
