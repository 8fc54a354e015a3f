import FerrySync
import NIOCore
public import SCSI

/// The EXTENDED COPY (LID1) copy manager of a logical unit (SPC-4 §5.16, §6.4) and RECEIVE COPY
/// RESULTS (SPC-4 §6.18).
///
/// It copies between the logical units of a ``CopyTargetDirectory`` (those of one target node)
/// named by identification
/// descriptor CSCD descriptors (E4h) with block device to block device segment descriptors (02h),
/// through the block stores, in bounded chunks. Every descriptor is checked before any data
/// moves, so a rejected parameter list changes nothing. A copy with LIST ID USAGE 00b keeps its
/// status for RECEIVE COPY RESULTS (COPY STATUS), per I_T nexus and list identifier.
public final class CopyManager: Sendable {
    /// What the copy manager supports, as the Third-party Copy VPD page and OPERATING PARAMETERS
    /// report it.
    enum Limits {
        static let maximumTargetDescriptors = 4
        static let maximumSegmentDescriptors = 16
        static let maximumDescriptorListLength = 1024
        /// Bytes one segment may copy. NUMBER OF BLOCKS is 16 bits, so no segment of a 4096-byte
        /// block device can exceed it.
        static let maximumSegmentLength: UInt32 = 0xffff * 4096
        static let totalConcurrentCopies: UInt16 = 16
        static let maximumConcurrentCopies: UInt8 = 16
        /// log2 of the granularity of a segment: the 512-byte logical block.
        static let dataSegmentGranularity: UInt8 = 9
        /// Copy status kept for RECEIVE COPY RESULTS; the oldest is dropped beyond this.
        static let heldStatusLimit = 64
        /// The bytes read and written at a time.
        static let chunkSize = 1 << 20
    }

    static let identificationDescriptorCSCD: UInt8 = 0xe4
    static let blockToBlockSegment: UInt8 = 0x02

    /// The result of a finished copy, for COPY STATUS.
    struct CopyStatus: Hashable {
        var segmentsProcessed: UInt16
        var bytesTransferred: UInt64
    }

    struct ListKey: Hashable {
        var nexus: ITNexus
        var listIdentifier: UInt8
    }

    struct State {
        /// Copies in progress whose list identifier is in use.
        var active: Set<ListKey> = []
        /// Finished copies with LIST ID USAGE 00b, oldest first.
        var held: [(key: ListKey, status: CopyStatus)] = []
    }

    let directory: CopyTargetDirectory
    private let state = Locked(State())

    public init(directory: CopyTargetDirectory) {
        self.directory = directory
    }

    // MARK: EXTENDED COPY

    /// EXTENDED COPY (LID1), service action 00h, received by the logical unit `source` (which may
    /// itself be named by a CSCD descriptor whether or not the directory holds it).
    public func extendedCopy(_ request: SCSIRequest, source: CopyEndpoint) -> SCSIResult {
        let cdb = CDB(request.cdb)
        guard cdb.serviceAction == 0x00 else { return .checkCondition(.invalidFieldInCDB(byte: 1, bit: 4)) }
        let parameterListLength = Int(cdb.uint32(at: 10))
        // > A PARAMETER LIST LENGTH field set to zero […] shall not be considered an error.
        if parameterListLength == 0 { return .good }
        guard parameterListLength >= 16, request.dataOut.readableBytes >= parameterListLength else {
            return .checkCondition(.parameterListLengthError)
        }
        let parameters = ParameterList(request.dataOut, count: parameterListLength)
        let plan: CopyPlan
        do throws(SenseData) {
            plan = try CopyPlan(parameters, source: source, directory: directory, nexus: request.nexus)
        } catch {
            return .checkCondition(error)
        }
        // Checked for every segment before any data moves, so that a refused copy changes nothing.
        if plan.conflictsWithReservations { return SCSIResult(status: .reservationConflict) }

        let key = ListKey(nexus: request.nexus, listIdentifier: plan.listIdentifier)
        if plan.listIdentifierIsUnique {
            let inUse = state.withLock { state in !state.active.insert(key).inserted }
            // > If the LIST IDENTIFIER field identifies a copy operation already in progress […]
            // > OPERATION IN PROGRESS.
            if inUse { return .checkCondition(SenseData(.illegalRequest, .operationInProgress)) }
        }
        defer { if plan.listIdentifierIsUnique { _ = state.withLock { $0.active.remove(key) } } }

        let outcome = plan.run()
        if case .success(let status) = outcome, plan.holdsStatus {
            state.withLock { state in
                state.held.removeAll { $0.key == key }
                if state.held.count == Limits.heldStatusLimit { state.held.removeFirst() }
                state.held.append((key, status))
            }
        }
        switch outcome {
        case .success: return .good
        case .failure(.sense(let sense)): return .checkCondition(sense)
        case .failure(.reservationConflict): return SCSIResult(status: .reservationConflict)
        }
    }

    // MARK: RECEIVE COPY RESULTS

    /// RECEIVE COPY RESULTS: COPY STATUS (00h) and OPERATING PARAMETERS (03h).
    public func receiveCopyResults(_ request: SCSIRequest) -> SCSIResult {
        let cdb = CDB(request.cdb)
        let allocationLength = Int(cdb.uint32(at: 10))
        switch cdb.serviceAction {
        case 0x00:
            let key = ListKey(nexus: request.nexus, listIdentifier: cdb[2])
            let status = state.withLock { state in state.held.last { $0.key == key }?.status }
            // > If the LIST IDENTIFIER field does not identify a held copy operation […] INVALID
            // > FIELD IN CDB.
            guard let status else { return .checkCondition(.invalidFieldInCDB(byte: 2)) }
            return .dataIn(Self.copyStatusData(status), allocationLength: allocationLength)
        case 0x03:
            return .dataIn(Self.operatingParameters(), allocationLength: allocationLength)
        default:
            return .checkCondition(.invalidFieldInCDB(byte: 1, bit: 4))
        }
    }

    static func copyStatusData(_ status: CopyStatus) -> [UInt8] {
        var data: [UInt8] = []
        data.appendBigEndian(UInt32(8))
        // HDD clear; COPY MANAGER STATUS 01h: completed without errors.
        data.append(0x01)
        data.appendBigEndian(status.segmentsProcessed)
        // TRANSFER COUNT UNITS: 00h bytes, 01h kibibytes, 02h mebibytes…, the smallest that fits.
        var units: UInt8 = 0
        var count = status.bytesTransferred
        while count > UInt64(UInt32.max) {
            count >>= 10
            units += 1
        }
        data.append(units)
        data.appendBigEndian(UInt32(count))
        return data
    }

    static func operatingParameters() -> [UInt8] {
        var data = [UInt8](repeating: 0, count: 44)
        // SNLID: LIST ID USAGE 11b is supported.
        data[4] = 0x01
        data.setBigEndian(UInt16(Limits.maximumTargetDescriptors), at: 8)
        data.setBigEndian(UInt16(Limits.maximumSegmentDescriptors), at: 10)
        data.setBigEndian(UInt32(Limits.maximumDescriptorListLength), at: 12)
        data.setBigEndian(Limits.maximumSegmentLength, at: 16)
        // MAXIMUM INLINE DATA LENGTH, HELD DATA LIMIT and MAXIMUM STREAM DEVICE TRANSFER SIZE: 0.
        data.setBigEndian(Limits.totalConcurrentCopies, at: 34)
        data[36] = Limits.maximumConcurrentCopies
        data[37] = Limits.dataSegmentGranularity
        let implemented = [blockToBlockSegment, identificationDescriptorCSCD]
        data[43] = UInt8(implemented.count)
        data += implemented
        data.setBigEndian(UInt32(data.count - 4), at: 0)
        return data
    }

    // MARK: Third-party Copy VPD page

    /// The Third-party Copy VPD page (8Fh, SPC-4 §7.8.17), header included: the Supported
    /// Commands, Parameter Data, Supported Descriptors, Supported CSCD Descriptor IDs and General
    /// Copy Operations third-party copy descriptors.
    public static func thirdPartyCopyVPDPage() -> [UInt8] {
        var descriptors: [UInt8] = []
        // Supported Commands (0001h): EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (COPY STATUS,
        // OPERATING PARAMETERS).
        appendDescriptor(0x0001, to: &descriptors) { body in
            let commands: [UInt8] = [
                OperationCode.extendedCopy, 1, 0x00, OperationCode.receiveCopyResults, 2, 0x00, 0x03,
            ]
            body.append(UInt8(commands.count))
            body += commands
        }
        // Parameter Data (0008h).
        appendDescriptor(0x0008, to: &descriptors) { body in
            body += [0, 0, 0, 0]
            body.appendBigEndian(UInt16(Limits.maximumTargetDescriptors))
            body.appendBigEndian(UInt16(Limits.maximumSegmentDescriptors))
            body.appendBigEndian(UInt32(Limits.maximumDescriptorListLength))
            body.appendBigEndian(UInt32(0))  // MAXIMUM INLINE DATA LENGTH
            body += [UInt8](repeating: 0, count: 12)
        }
        // Supported Descriptors (0009h).
        appendDescriptor(0x0009, to: &descriptors) { body in
            body += [2, blockToBlockSegment, identificationDescriptorCSCD]
        }
        // Supported CSCD Descriptor IDs (000Ch): none.
        appendDescriptor(0x000c, to: &descriptors) { body in
            body += [0, 0]
        }
        // General Copy Operations (8001h).
        appendDescriptor(0x8001, to: &descriptors) { body in
            body.appendBigEndian(UInt32(Limits.totalConcurrentCopies))
            body.appendBigEndian(UInt32(Limits.maximumConcurrentCopies))
            body.appendBigEndian(Limits.maximumSegmentLength)
            body.append(Limits.dataSegmentGranularity)
            body.append(0)  // INLINE DATA GRANULARITY
            body += [UInt8](repeating: 0, count: 18)
        }
        var page: [UInt8] = [0x00, 0x8f]
        page.appendBigEndian(UInt16(descriptors.count))
        return page + descriptors
    }

    /// Appends a third-party copy descriptor: type, length, and the body padded to a multiple of
    /// four bytes.
    private static func appendDescriptor(_ type: UInt16, to out: inout [UInt8], body build: (inout [UInt8]) -> Void) {
        var body: [UInt8] = []
        build(&body)
        while body.count % 4 != 0 { body.append(0) }
        out.appendBigEndian(type)
        out.appendBigEndian(UInt16(body.count))
        out += body
    }
}

/// The parameter list of an EXTENDED COPY command, read in place.
struct ParameterList {
    let buffer: ByteBuffer
    let count: Int

    init(_ buffer: ByteBuffer, count: Int) {
        self.buffer = buffer
        self.count = count
    }

    subscript(_ index: Int) -> UInt8 {
        guard index < count else { return 0 }
        return buffer.getInteger(at: buffer.readerIndex + index, as: UInt8.self) ?? 0
    }

    func field(at index: Int, width: Int) -> UInt64 {
        var value: UInt64 = 0
        for offset in 0..<width { value = value << 8 | UInt64(self[index + offset]) }
        return value
    }

    func bytes(at index: Int, count: Int) -> [UInt8] {
        (index..<index + count).map { self[$0] }
    }
}
