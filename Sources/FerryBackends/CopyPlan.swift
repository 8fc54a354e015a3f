import SCSI

/// A validated EXTENDED COPY (LID1) parameter list (SPC-4 §6.4.3): the copy targets its CSCD
/// descriptors name and the block to block segments to copy between them.
struct CopyPlan {
    /// One block device to block device segment (SPC-4 §6.4.6.5), resolved to byte ranges.
    struct Segment {
        var source: CopyEndpoint
        var destination: CopyEndpoint
        var sourceOffset: UInt64
        var destinationOffset: UInt64
        var byteCount: UInt64
    }

    var listIdentifier: UInt8
    /// LIST ID USAGE 00b or 10b: the list identifier must not name a copy in progress.
    var listIdentifierIsUnique: Bool
    /// LIST ID USAGE 00b: the copy manager holds the status for RECEIVE COPY RESULTS.
    var holdsStatus: Bool
    var segments: [Segment]
    /// The I_T nexus of the EXTENDED COPY, for which the copy manager reads and writes.
    var nexus: ITNexus

    /// The offset of the first CSCD descriptor: the parameter list header is 16 bytes.
    private static let headerLength = 16
    private static let cscdDescriptorLength = 32
    private static let blockToBlockDescriptorLength = 28

    /// Validates `list`, received by the logical unit `source` from `nexus`. Copy targets are
    /// looked up in `directory`: the logical units of the target node `nexus` is logged in to.
    init(
        _ list: ParameterList, source: CopyEndpoint, directory: CopyTargetDirectory, nexus: ITNexus
    ) throws(SenseData) {
        typealias Limits = CopyManager.Limits
        self.nexus = nexus
        listIdentifier = list[0]
        let usage = (list[1] >> 3) & 0x03
        // > LIST ID USAGE 01b is reserved.
        guard usage != 0b01 else { throw .invalidFieldInParameterList(byte: 1, bit: 4) }
        listIdentifierIsUnique = usage != 0b11
        holdsStatus = usage == 0b00
        let targetListLength = Int(list.field(at: 2, width: 2))
        let segmentListLength = Int(list.field(at: 8, width: 4))
        let inlineDataLength = Int(list.field(at: 12, width: 4))
        // > If the sum of the CSCD DESCRIPTOR LIST LENGTH and SEGMENT DESCRIPTOR LIST LENGTH
        // > exceeds the MAXIMUM DESCRIPTOR LIST LENGTH […] PARAMETER LIST LENGTH ERROR.
        guard targetListLength + segmentListLength <= Limits.maximumDescriptorListLength,
            Self.headerLength + targetListLength + segmentListLength + inlineDataLength <= list.count
        else { throw .parameterListLengthError }
        guard inlineDataLength == 0 else { throw .invalidFieldInParameterList(byte: 12) }
        guard targetListLength % Self.cscdDescriptorLength == 0 else {
            throw .invalidFieldInParameterList(byte: 2)
        }
        guard targetListLength / Self.cscdDescriptorLength <= Limits.maximumTargetDescriptors else {
            throw SenseData(.illegalRequest, .tooManyTargetDescriptors)
        }

        // Count the segment descriptors by their lengths before judging any of them.
        let segmentListStart = Self.headerLength + targetListLength
        var segmentOffsets: [Int] = []
        var offset = segmentListStart
        while offset < segmentListStart + segmentListLength {
            // A descriptor's length is in its own header: a list too short to hold that header is wrong in length.
            guard offset + 4 <= segmentListStart + segmentListLength else {
                throw .invalidFieldInParameterList(byte: 8)
            }
            segmentOffsets.append(offset)
            offset += 4 + Int(list.field(at: offset + 2, width: 2))
        }
        guard offset == segmentListStart + segmentListLength else {
            throw .invalidFieldInParameterList(byte: segmentOffsets.last! + 2)
        }
        guard segmentOffsets.count <= Limits.maximumSegmentDescriptors else {
            throw SenseData(.illegalRequest, .tooManySegmentDescriptors)
        }

        var targets: [CopyEndpoint?] = []
        for offset in stride(from: Self.headerLength, to: segmentListStart, by: Self.cscdDescriptorLength) {
            targets.append(try Self.target(at: offset, in: list, source: source, directory: directory))
        }
        segments = []
        for offset in segmentOffsets {
            if let segment = try Self.segment(at: offset, in: list, targets: targets) { segments.append(segment) }
        }
    }

    /// An identification descriptor CSCD descriptor (E4h, SPC-4 §6.4.5.6) with the block device
    /// parameters (SPC-4 §6.4.5.2.1). nil for a NUL descriptor.
    private static func target(
        at offset: Int, in list: ParameterList, source: CopyEndpoint, directory: CopyTargetDirectory
    ) throws(SenseData) -> CopyEndpoint? {
        guard list[offset] == CopyManager.identificationDescriptorCSCD else {
            throw SenseData(
                .illegalRequest, .unsupportedTargetDescriptorTypeCode,
                senseKeySpecific: .fieldPointer(inCDB: false, byte: UInt16(offset), bit: nil))
        }
        // The LU ID TYPE field (bits 7-6 of byte 1) qualifies an LU IDENTIFIER field, which this
        // descriptor does not have: the designator names the logical unit, and SPC-4 has the copy
        // manager ignore LU ID TYPE here.
        // > PERIPHERAL DEVICE TYPE 00h: direct access block device.
        guard list[offset + 1] & 0x1f == 0 else {
            throw SenseData(
                .illegalRequest, .unsupportedTargetDescriptorTypeCode,
                senseKeySpecific: .fieldPointer(inCDB: false, byte: UInt16(offset + 1), bit: 4))
        }
        // > A NUL bit set to one specifies that the copy manager shall not issue commands to it.
        if list[offset + 1] & 0x20 != 0 { return nil }
        let designatorLength = min(Int(list[offset + 7]), 20)
        let designatorType = list[offset + 5] & 0x0f
        let designator = list.bytes(at: offset + 8, count: designatorLength)
        let endpoint: CopyEndpoint?
        if designatorType == 0x3, designator == source.designator {
            endpoint = source
        } else {
            endpoint = designatorType == 0x3 ? directory.lookup(designator: designator) : nil
        }
        guard let endpoint else { throw SenseData(.copyAborted, .copyTargetDeviceNotReachable) }
        // > The DISK BLOCK LENGTH field shall contain the logical block length of the copy target.
        guard list.field(at: offset + 29, width: 3) == UInt64(endpoint.blockSize) else {
            throw SenseData(.copyAborted, .invalidCopyTargetDeviceType)
        }
        return endpoint
    }

    /// A block device to block device segment descriptor (02h); nil when it copies no blocks.
    private static func segment(
        at offset: Int, in list: ParameterList, targets: [CopyEndpoint?]
    ) throws(SenseData) -> Segment? {
        guard list[offset] == CopyManager.blockToBlockSegment else {
            throw SenseData(
                .illegalRequest, .unsupportedSegmentDescriptorTypeCode,
                senseKeySpecific: .fieldPointer(inCDB: false, byte: UInt16(offset), bit: nil))
        }
        guard list.field(at: offset + 2, width: 2) == UInt64(blockToBlockDescriptorLength - 4) else {
            throw .invalidFieldInParameterList(byte: offset + 2)
        }
        let sourceIndex = Int(list.field(at: offset + 4, width: 2))
        let destinationIndex = Int(list.field(at: offset + 6, width: 2))
        // > An index that names no CSCD descriptor, or a NUL one: the copy target is not reachable.
        guard sourceIndex < targets.count, destinationIndex < targets.count,
            let source = targets[sourceIndex], let destination = targets[destinationIndex]
        else { throw SenseData(.copyAborted, .copyTargetDeviceNotReachable) }
        let blocks = list.field(at: offset + 10, width: 2)
        let sourceLBA = list.field(at: offset + 12, width: 8)
        let destinationLBA = list.field(at: offset + 20, width: 8)
        // > DC set: NUMBER OF BLOCKS counts destination blocks; clear: source blocks.
        let destinationCounted = list[offset + 1] & 0x02 != 0
        let byteCount = blocks * UInt64(destinationCounted ? destination.blockSize : source.blockSize)
        guard byteCount % UInt64(source.blockSize) == 0, byteCount % UInt64(destination.blockSize) == 0 else {
            throw SenseData(.copyAborted, .unexpectedInexactSegment)
        }
        if byteCount == 0 { return nil }
        let sourceBlocks = byteCount / UInt64(source.blockSize)
        let destinationBlocks = byteCount / UInt64(destination.blockSize)
        // A range past the end of either copy target cannot be reached; libiscsi accepts COPY
        // ABORTED with 00/00, 08/04 or 0D/02 here.
        guard sourceLBA <= source.blockCount, sourceBlocks <= source.blockCount - sourceLBA,
            destinationLBA <= destination.blockCount, destinationBlocks <= destination.blockCount - destinationLBA
        else { throw SenseData(.copyAborted, .copyTargetDeviceNotReachable) }
        // A write-protected destination (read-only, or SWP) refuses the copy as it refuses a WRITE.
        guard !destination.isWriteProtected() else { throw SenseData(.copyAborted, .writeProtected) }
        return Segment(
            source: source, destination: destination, sourceOffset: sourceLBA * UInt64(source.blockSize),
            destinationOffset: destinationLBA * UInt64(destination.blockSize), byteCount: byteCount)
    }

    /// Why a copy stopped: a copy target that failed (CHECK CONDITION with this sense), or a
    /// reservation that forbids the I_T nexus of the EXTENDED COPY to read a source or write a
    /// destination.
    enum Failure: Error {
        case sense(SenseData)
        case reservationConflict
    }

    /// Whether a reservation forbids `nexus` a read or a write of some segment.
    ///
    /// The copy manager acts for the I_T nexus of the EXTENDED COPY: its reads of each source and
    /// its writes to each destination are checked against their reservations as a READ and a
    /// WRITE from that nexus would be, so that a copy reaches nothing the initiator could not
    /// reach itself, and ends as that READ or WRITE would, with RESERVATION CONFLICT (as LIO's
    /// copy manager passes on the status of its internal command). Only logical units of the
    /// nexus's own target are ever checked: one of another target does not resolve at all.
    var conflictsWithReservations: Bool {
        segments.contains { Self.conflicts($0, for: nexus) }
    }

    private static func conflicts(_ segment: Segment, for nexus: ITNexus) -> Bool {
        segment.source.reservations?.conflicts(.read, from: nexus) == true
            || segment.destination.reservations?.conflicts(.write, from: nexus) == true
    }

    /// Copies every segment in order through one bounded buffer.
    func run() -> Result<CopyManager.CopyStatus, Failure> {
        let bufferSize = Int(min(UInt64(CopyManager.Limits.chunkSize), segments.map(\.byteCount).max() ?? 0))
        var status = CopyManager.CopyStatus(segmentsProcessed: 0, bytesTransferred: 0)
        guard bufferSize > 0 else { return .success(status) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: bufferSize, alignment: 4096)
        defer { buffer.deallocate() }
        for segment in segments {
            do throws(Failure) {
                try Self.copy(segment, through: buffer, for: nexus)
            } catch {
                return .failure(error)
            }
            status.segmentsProcessed &+= 1
            status.bytesTransferred &+= segment.byteCount
        }
        return .success(status)
    }

    /// Copies one segment chunk by chunk; backwards when the destination overlaps the source
    /// further into the same store, so that no source byte is overwritten before it is read. The
    /// reservations are checked again before each chunk: one taken by another I_T nexus while the
    /// copy runs stops it, as it would stop the next READ or WRITE of the initiator.
    private static func copy(
        _ segment: Segment, through buffer: UnsafeMutableRawBufferPointer, for nexus: ITNexus
    ) throws(Failure) {
        let chunk = UInt64(buffer.count)
        let backwards =
            segment.source.store === segment.destination.store && segment.destinationOffset > segment.sourceOffset
            && segment.destinationOffset < segment.sourceOffset + segment.byteCount
        let chunkCount = (segment.byteCount + chunk - 1) / chunk
        for step in 0..<chunkCount {
            let index = backwards ? chunkCount - 1 - step : step
            let start = index * chunk
            let length = Int(min(chunk, segment.byteCount - start))
            let part = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<length])
            guard !conflicts(segment, for: nexus) else { throw .reservationConflict }
            try shared(segment.source.ordering) { () throws(Failure) in
                do {
                    try segment.source.store.read(into: part, at: segment.sourceOffset + start)
                } catch {
                    throw .sense(SenseData(.copyAborted, .unrecoveredReadError))
                }
            }
            try shared(segment.destination.ordering) { () throws(Failure) in
                do {
                    try segment.destination.store.write(
                        UnsafeRawBufferPointer(part), at: segment.destinationOffset + start, forceUnitAccess: false)
                } catch {
                    throw .sense(SenseData(.copyAborted, .writeError))
                }
            }
        }
    }

    /// Runs `body` holding `lock` shared, or without a lock for a copy target that has none.
    private static func shared(_ lock: WriteOrderingLock?, _ body: () throws(Failure) -> Void) throws(Failure) {
        guard let lock else { return try body() }
        try lock.shared(body)
    }
}
