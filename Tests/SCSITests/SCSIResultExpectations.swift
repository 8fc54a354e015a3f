import NIOCore
import SCSI
import Testing

/// Checks of a device server's answer, for the SCSI tests and the FerryBackends tests (which link this file).
extension SCSIResult {
    var bytes: [UInt8] { dataIn.getBytes(at: dataIn.readerIndex, length: dataIn.readableBytes) ?? [] }

    func expectSense(
        _ key: SenseKey, _ code: AdditionalSenseCode, fieldPointer: (byte: UInt16, bit: UInt8?)? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        #expect(status == .checkCondition, sourceLocation: sourceLocation)
        #expect(sense?.senseKey == key, sourceLocation: sourceLocation)
        #expect(sense?.code == code, sourceLocation: sourceLocation)
        if let fieldPointer {
            #expect(
                sense?.senseKeySpecific == .fieldPointer(inCDB: true, byte: fieldPointer.byte, bit: fieldPointer.bit),
                sourceLocation: sourceLocation)
        }
    }
}
