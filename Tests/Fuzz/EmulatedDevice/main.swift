import FerryBackends
import FuzzSupport
import NIOCore
import SCSI

/// libFuzzer target: the emulated SBC device server, fed arbitrary commands against a small in-memory store
/// (`MemoryBlockStore.swift` is the one the FerryBackends unit tests use, linked here).
///
/// Input: one byte of settings, then commands, each as: CDB length (1 byte: 16 plus its low 4 bits), the CDB, the Expected Data
/// Transfer Length (4 bytes, big-endian), the Data-Out length (2 bytes, big-endian) and the Data-Out. Settings bit 0
/// makes the logical unit read-only, bit 1 takes unmap support from the store, bit 2 chooses 4096-byte logical
/// blocks, bit 3 a transfer limit of 8 blocks; each command comes from one of two I_T nexuses (the high bit of its
/// CDB length byte). A second logical unit of the same target is registered for EXTENDED COPY.
///
/// Checked after every command: nothing traps; CHECK CONDITION comes with sense data and every other status without;
/// sense data fits its 252 bytes and a field pointer points into the CDB or the parameter list it blames; Data-In
/// stays within the store and the Expected Data Transfer Length (plus what a CDB may ask beyond it); and a command
/// that ends with ILLEGAL REQUEST leaves the medium as it was.
func fuzzEmulatedDevice(_ input: UnsafeBufferPointer<UInt8>) {
    guard let settings = input.first else { return }
    var reader = InputReader(input.dropFirst())
    let blockSize = settings & 4 != 0 ? 4096 : 512
    let storeSize = 64 * blockSize
    let store = MemoryBlockStore(byteCount: storeSize, supportsUnmap: settings & 2 == 0)
    let copyTargets = CopyTargetDirectory()
    let configuration = EmulatedBlockDevice.Configuration(
        blockSize: blockSize, readOnly: settings & 1 != 0, serial: "FUZZ1",
        maximumTransferLength: settings & 8 != 0 ? 8 : nil)
    let device = EmulatedBlockDevice(
        store: store, configuration: configuration, copyTargets: copyTargets, erasureClock: InstantErasureClock())
    let peer = EmulatedBlockDevice(
        store: MemoryBlockStore(byteCount: 16 * 512), configuration: .init(serial: "FUZZ2"), copyTargets: copyTargets,
        erasureClock: InstantErasureClock())
    copyTargets.register(device.copyEndpoint)
    copyTargets.register(peer.copyEndpoint)
    let nexuses = [
        ITNexus(
            initiatorPortName: "iqn.2026-12.dev.ferry:fuzz-a,i,0x23d000000001",
            targetPortName: "iqn.2026-12.dev.ferry:fuzz,t,0x0001", relativeTargetPortIdentifier: 1),
        ITNexus(
            initiatorPortName: "iqn.2026-12.dev.ferry:fuzz-b,i,0x23d000000002",
            targetPortName: "iqn.2026-12.dev.ferry:fuzz,t,0x0001", relativeTargetPortIdentifier: 1),
    ]

    while let lengthByte = reader.byte() {
        // The CDB field of a SCSI Command PDU is 16 bytes, with more in an Extended CDB AHS.
        let cdbLength = 16 + Int(lengthByte & 0x0F)
        guard let cdb = reader.bytes(cdbLength), let edtl = reader.integer(UInt32.self),
            let dataLength = reader.integer(UInt16.self)
        else { return }
        let data = reader.bytes(Int(dataLength)) ?? reader.rest()
        let request = SCSIRequest(
            cdb: ByteBuffer(bytes: cdb), lun: 0, nexus: nexuses[Int(lengthByte >> 7)],
            expectedDataTransferLength: Int(edtl), dataOut: ByteBuffer(bytes: data))
        let before = store.bytes
        let result = device.execute(request)
        check(result, cdb: cdb, dataOut: data.count, expectedDataTransferLength: Int(edtl), storeSize: storeSize)
        if result.sense?.senseKey == .illegalRequest {
            require(store.bytes == before, "command \(cdb) changed the medium and ended with ILLEGAL REQUEST")
        }
    }
}

private func check(
    _ result: SCSIResult, cdb: [UInt8], dataOut: Int, expectedDataTransferLength: Int, storeSize: Int
) {
    let command = "command \(cdb.map { String($0, radix: 16) })"
    if result.status == .checkCondition {
        require(result.sense != nil, "\(command): CHECK CONDITION without sense data")
    } else {
        require(result.sense == nil, "\(command): sense data with status \(result.status)")
    }
    if let sense = result.sense {
        for descriptorFormat in [false, true] {
            let bytes = sense.bytes(descriptorFormat: descriptorFormat)
            require((8...252).contains(bytes.count), "\(command): \(bytes.count) bytes of sense data")
        }
        if case .fieldPointer(let inCDB, let byte, let bit) = sense.senseKeySpecific {
            let limit = inCDB ? cdb.count : dataOut
            require(Int(byte) < limit, "\(command): field pointer to byte \(byte) of \(limit) (in CDB: \(inCDB))")
            require(bit.map { $0 < 8 } ?? true, "\(command): field pointer to bit \(bit!)")
        }
    }
    // A device server may return more than the EDTL (the transport truncates it), but never more than a CDB can
    // ask of a store this small: its whole medium, or a 64 KiB allocation length.
    let bound = max(expectedDataTransferLength, storeSize + 65_536)
    require(result.dataIn.readableBytes <= bound, "\(command): \(result.dataIn.readableBytes) bytes of Data-In")
}

/// SANITIZE's pacing without the waiting.
private struct InstantErasureClock: ErasureClock {
    var now: ContinuousClock.Instant { .now }
    func sleep(for duration: Duration) {}
}

private struct InputReader {
    var remaining: Slice<UnsafeBufferPointer<UInt8>>
    init(_ bytes: Slice<UnsafeBufferPointer<UInt8>>) { remaining = bytes }

    mutating func byte() -> UInt8? { remaining.popFirst() }

    mutating func bytes(_ count: Int) -> [UInt8]? {
        guard remaining.count >= count else { return nil }
        defer { remaining = remaining.dropFirst(count) }
        return Array(remaining.prefix(count))
    }

    mutating func rest() -> [UInt8] {
        defer { remaining = remaining.dropFirst(remaining.count) }
        return Array(remaining)
    }

    mutating func integer<T: FixedWidthInteger>(_: T.Type) -> T? {
        bytes(MemoryLayout<T>.size).map { $0.reduce(T.zero) { $0 << 8 | T($1) } }
    }
}

// Last, after every global of this file has its value: top-level code runs in order.
runFuzzer(fuzzEmulatedDevice)
