public import NIOCore
public import SCSI
import FerrySync

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The device server of an emulated SBC-4 direct access block device over a ``BlockStore``.
///
/// ``execute(_:)`` is called concurrently from several I/O threads and blocks on the store.
/// Commands that must be atomic with respect to other writes (COMPARE AND WRITE, WRITE ATOMIC,
/// ORWRITE) hold the device's write ordering lock exclusively; every other medium access holds it
/// shared.
public final class EmulatedBlockDevice: Sendable {
    /// How the logical unit presents itself.
    public struct Configuration: Sendable, Hashable {
        /// The logical block length in bytes: 512 or 4096.
        public var blockSize: Int
        /// A read-only logical unit fails writes with DATA PROTECT, WRITE PROTECTED.
        public var readOnly: Bool
        /// T10 VENDOR IDENTIFICATION (8 ASCII characters), PRODUCT IDENTIFICATION (16), PRODUCT
        /// REVISION LEVEL (4).
        public var vendor: String
        public var product: String
        public var revision: String
        /// The unit serial number (VPD page 80h); derived from the store identity when nil.
        public var serial: String?
        /// The NAA designator (8 bytes NAA 5 or 16 bytes NAA 6) of VPD page 83h; an NAA 6 value
        /// is derived from ``ieeeCompanyID`` and the store identity when nil.
        public var naaIdentifier: [UInt8]?
        /// The IEEE company ID placed in a derived NAA 6 designator.
        public var ieeeCompanyID: UInt32
        /// WCE of the caching mode page at start and after a reset.
        public var writeCacheEnabled: Bool
        /// Logical block provisioning management (UNMAP, WRITE SAME with UNMAP, GET LBA STATUS
        /// deallocated extents); effective only when the store supports unmap.
        public var thinProvisioning: Bool
        /// MAXIMUM TRANSFER LENGTH in logical blocks; 8 MiB worth when nil.
        public var maximumTransferLength: UInt32?
        /// The most bytes per second that SANITIZE OVERWRITE writes, so that erasing this logical
        /// unit leaves bandwidth to the others; unlimited when nil.
        public var sanitizeRate: UInt64?
        /// The most I_T nexuses whose unit attention conditions the logical unit keeps
        /// (``UnitAttentionConditions/nexusLimit``); at least the number that can be logged in at once.
        public var unitAttentionNexusLimit = UnitAttentionConditions.defaultNexusLimit

        public init(
            blockSize: Int = 512, readOnly: Bool = false, vendor: String = "FERRY",
            product: String = "EMULATED DISK", revision: String = "0001", serial: String? = nil,
            naaIdentifier: [UInt8]? = nil, ieeeCompanyID: UInt32 = 0x001405, writeCacheEnabled: Bool = true,
            thinProvisioning: Bool = true, maximumTransferLength: UInt32? = nil, sanitizeRate: UInt64? = nil
        ) {
            self.blockSize = blockSize
            self.readOnly = readOnly
            self.vendor = vendor
            self.product = product
            self.revision = revision
            self.serial = serial
            self.naaIdentifier = naaIdentifier
            self.ieeeCompanyID = ieeeCompanyID
            self.writeCacheEnabled = writeCacheEnabled
            self.thinProvisioning = thinProvisioning
            self.maximumTransferLength = maximumTransferLength
            self.sanitizeRate = sanitizeRate
        }
    }

    /// The mutable state of the device server that is not on the medium.
    struct State: Sendable {
        var modePages: ModePages
        /// Set when a SANITIZE failed; cleared by a successful SANITIZE or EXIT FAILURE MODE.
        var sanitizeFailed = false
        /// Set while a SANITIZE runs.
        var sanitizeInProgress = false
        /// How much of the running SANITIZE is done, in 65536ths: the progress indication of
        /// NOT READY, SANITIZE IN PROGRESS.
        var sanitizeProgress: UInt16 = 0
    }

    let store: any BlockStore
    let configuration: Configuration
    /// The number of logical blocks (the RETURNED LOGICAL BLOCK ADDRESS plus one).
    let blockCount: UInt64
    let blockSize: Int
    let serial: String
    let naa: [UInt8]
    /// Whether logical block provisioning management is enabled (LBPME).
    let provisioning: Bool
    /// LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT: the store's physical block holds
    /// 2^exponent logical blocks.
    let physicalBlockExponent: Int
    let limits: BlockLimits
    let supportedCommands: [SupportedCommand]
    /// Indexes into ``supportedCommands`` by operation code, and by operation code and service
    /// action (`opcode << 8 | action`) for the operation codes that have service actions.
    private let commandIndex: [UInt16: Int]
    private let operationCodesWithServiceActions: Set<UInt8>
    let state: Locked<State>
    let ordering = WriteOrderingLock()
    let allocator = ByteBufferAllocator()
    /// The clock that paces SANITIZE OVERWRITE to ``Configuration/sanitizeRate``.
    let erasureClock: any ErasureClock

    /// The unit attention conditions of the logical unit.
    public let unitAttentions: UnitAttentionConditions
    /// SPC-2 reservations and SPC-4 persistent reservations.
    public let reservations: ReservationState
    let copyManager: CopyManager
    /// The target port groups when several gateways export the logical unit (TPGS 01b); nil when this one alone does.
    let asymmetricAccess: (any AsymmetricAccess)?

    /// Creates the device server. `copyTargets` is where EXTENDED COPY finds its copy targets: the
    /// directory of the target node the logical unit belongs to, which the node keeps equal to its
    /// LUN map (``copyEndpoint`` is this logical unit's entry).
    /// `erasureClock` paces SANITIZE OVERWRITE when the configuration limits its rate. `asymmetricAccess` gives the
    /// target port groups of a logical unit that several gateways export.
    public init(
        store: any BlockStore, configuration: Configuration, copyTargets: CopyTargetDirectory,
        erasureClock: any ErasureClock = SystemErasureClock(), asymmetricAccess: (any AsymmetricAccess)? = nil
    ) {
        self.store = store
        self.asymmetricAccess = asymmetricAccess
        self.erasureClock = erasureClock
        self.configuration = configuration
        blockSize = configuration.blockSize
        blockCount = store.byteCount / UInt64(configuration.blockSize)
        let identityHash = Self.fnv1a(store.identity, seed: 0xcbf2_9ce4_8422_2325)
        serial = configuration.serial ?? String(identityHash, radix: 16, uppercase: true)
        naa =
            configuration.naaIdentifier
            ?? Self.naa6(
                companyID: configuration.ieeeCompanyID, high: identityHash,
                low: Self.fnv1a(store.identity, seed: 0x8422_2325_cbf2_9ce4))
        provisioning = configuration.thinProvisioning && store.supportsUnmap
        physicalBlockExponent = Self.physicalBlockExponent(
            physicalBlockSize: store.physicalBlockSize, blockSize: configuration.blockSize)
        limits = BlockLimits(
            blockSize: configuration.blockSize, physicalBlockExponent: physicalBlockExponent,
            maximumTransferLength: configuration.maximumTransferLength)
        supportedCommands = SupportedCommand.all(unmap: provisioning, targetPortGroups: asymmetricAccess != nil)
        var index: [UInt16: Int] = [:]
        var withActions: Set<UInt8> = []
        for (position, command) in supportedCommands.enumerated() {
            if let action = command.serviceAction {
                withActions.insert(command.operationCode)
                index[UInt16(command.operationCode) << 8 | UInt16(action)] = position
            } else {
                index[UInt16(command.operationCode)] = position
            }
        }
        commandIndex = index
        operationCodesWithServiceActions = withActions
        state = Locked(State(modePages: ModePages(writeCacheEnabled: configuration.writeCacheEnabled)))
        unitAttentions = UnitAttentionConditions(nexusLimit: configuration.unitAttentionNexusLimit)
        reservations = ReservationState(unitAttentions: unitAttentions)
        asymmetricAccess?.reportChanges(to: unitAttentions)
        copyManager = CopyManager(directory: copyTargets)
    }

    /// This logical unit as a source or destination of EXTENDED COPY.
    public var copyEndpoint: CopyEndpoint {
        var endpoint = CopyEndpoint(
            store: store, blockSize: blockSize, blockCount: blockCount, designator: naa,
            isWriteProtected: { [weak self] in self?.isWriteProtected ?? true }, reservations: reservations)
        endpoint.ordering = ordering
        return endpoint
    }

    /// TAS of the control mode page: a task aborted by another I_T nexus ends with TASK ABORTED.
    public var taskAbortedStatus: Bool {
        state.withLock { $0.modePages.taskAbortedStatus }
    }

    /// Applies the logical unit side effects of a task management function or nexus loss
    /// (SAM-5 §6.3, SPC-4 §5.14).
    public func apply(_ event: LogicalUnitEvent) {
        switch event {
        case .logicalUnitReset, .targetReset:
            state.withLock { $0.modePages.reset() }
        case .itNexusLoss:
            break
        case .tasksClearedByAnotherInitiator:
            // > If the TAS bit is set to zero, […] a unit attention condition […] COMMANDS CLEARED
            // > BY ANOTHER INITIATOR shall be established for the initiator port associated with
            // > each I_T nexus on which a task was aborted.
            if taskAbortedStatus { return reservations.apply(event) }
        }
        unitAttentions.apply(event)
        reservations.apply(event)
    }

    /// The number of bytes `cdb` transfers from the initiator to the device (the Data-Out
    /// buffer), or nil for an operation code the device does not know.
    public func dataOutLength(for cdb: ByteBuffer) -> Int? {
        let cdb = CDB(cdb)
        return cdb.dataOutLength(blockSize: blockSize) ?? (lookUp(cdb) == nil ? nil : 0)
    }

    /// Runs one command. Never throws and never crashes on malformed input: every failure is a
    /// CHECK CONDITION with sense data in the format the control mode page asks for.
    public func execute(_ request: SCSIRequest) -> SCSIResult {
        let cdb = CDB(request.cdb)
        if let answer = admit(request, cdb) { return answer }
        do throws(SenseData) {
            return try dispatch(request, cdb)
        } catch {
            return checkCondition(error)
        }
    }

    /// What every command meets before its own work (SAM-5 §5.14, SPC-4 §5.9 and §5.14, SBC-4 §4.11): the unit
    /// attention condition, a reservation conflict, a SANITIZE in progress. Nil when the command may go on.
    private func admit(_ request: SCSIRequest, _ cdb: CDB) -> SCSIResult? {
        let nexus = request.nexus
        unitAttentions.noteNexus(nexus)
        switch cdb.operationCode {
        case OperationCode.inquiry, OperationCode.requestSense:
            break
        case OperationCode.reportLUNs:
            // > the REPORTED LUNS DATA HAS CHANGED unit attention condition is cleared by REPORT LUNS.
            if unitAttentions.peek(for: nexus) == .reportedLUNsDataHasChanged { _ = unitAttentions.take(for: nexus) }
        default:
            // > If a logical unit has a unit attention condition pending for an I_T nexus, the device
            // > server shall terminate any command other than INQUIRY, REPORT LUNS or REQUEST SENSE
            // > with CHECK CONDITION status, sense key UNIT ATTENTION.
            if let code = unitAttentions.take(for: nexus) {
                return checkCondition(SenseData(.unitAttention, code))
            }
        }
        if let conflict = reservations.check(request.cdb, from: nexus) {
            return conflict
        }
        if let notAccessible = asymmetricAccess?.localState.notAccessible,
            !AsymmetricAccessState.servesInStandby(operationCode: cdb.operationCode)
        {
            return checkCondition(SenseData(.notReady, notAccessible))
        }
        switch cdb.operationCode {
        case OperationCode.inquiry, OperationCode.requestSense, OperationCode.reportLUNs:
            break
        default:
            // > While the sanitize operation is in progress, the device server shall terminate
            // > [every other] command with CHECK CONDITION status with the sense key set to NOT
            // > READY and the additional sense code set to LOGICAL UNIT NOT READY, SANITIZE IN
            // > PROGRESS.
            if let sense = sanitizeInProgressSense() { return checkCondition(sense) }
        }
        return nil
    }

    /// Runs a READ or a WRITE at once, on the caller's thread, when that needs no wait: no FUA, the write-ordering
    /// lock free, and a store that can serve it so (``BlockStore/readWithoutWaiting(into:at:)``: the bytes are in
    /// the page cache; ``BlockStore/writeWithoutWaiting(_:at:)``). A command that fails its checks also ends here,
    /// with its CHECK CONDITION. Nil when the command must run with ``execute(_:)`` on an I/O thread; nothing has
    /// changed then but the nexus being noted. Never blocks: event loops call it.
    public func executeWithoutWaiting(_ request: SCSIRequest) -> SCSIResult? {
        let cdb = CDB(request.cdb)
        let isRead: Bool
        switch cdb.operationCode {
        case OperationCode.read6, OperationCode.read10, OperationCode.read12, OperationCode.read16: isRead = true
        case OperationCode.write6, OperationCode.write10, OperationCode.write12, OperationCode.write16: isRead = false
        default: return nil
        }
        if let answer = admit(request, cdb) { return answer }
        do throws(SenseData) {
            _ = try supportedCommand(cdb)
            try checkMediumAccess()
            if isRead {
                return try readWithoutWaiting(Transfer(cdb), expectedDataTransferLength: request.expectedDataTransferLength)
            }
            return try writeWithoutWaiting(Transfer(cdb), request.dataOut) ? .good : nil
        } catch {
            return checkCondition(error)
        }
    }

    /// NOT READY, SANITIZE IN PROGRESS with the progress indication while a SANITIZE runs.
    func sanitizeInProgressSense() -> SenseData? {
        // > The PROGRESS INDICATION field is a percent complete indication in which the returned
        // > value is a numerator that has 65 536 (i.e., 1_0000h) as its denominator.
        guard let progress = state.withLock({ $0.sanitizeInProgress ? $0.sanitizeProgress : nil }) else { return nil }
        return SenseData(.notReady, .logicalUnitNotReadySanitizeInProgress, senseKeySpecific: .progress(progress))
    }

    /// CHECK CONDITION with `sense`, in descriptor format when D_SENSE is set.
    func checkCondition(_ sense: SenseData) -> SCSIResult {
        .checkCondition(sense, descriptorFormat: state.withLock { $0.modePages.descriptorFormatSense })
    }

    /// The supported command entry for `cdb`, if its operation code (and service action) is known.
    func lookUp(_ cdb: CDB) -> SupportedCommand? {
        if operationCodesWithServiceActions.contains(cdb.operationCode) {
            return commandIndex[UInt16(cdb.operationCode) << 8 | UInt16(cdb.serviceAction)].map { supportedCommands[$0] }
        }
        return commandIndex[UInt16(cdb.operationCode)].map { supportedCommands[$0] }
    }

    /// The supported command entry for `cdb`, whose reserved bits are all zero.
    private func supportedCommand(_ cdb: CDB) throws(SenseData) -> SupportedCommand {
        guard let command = lookUp(cdb) else {
            if operationCodesWithServiceActions.contains(cdb.operationCode) {
                throw .invalidFieldInCDB(byte: 1, bit: 4)
            }
            throw .invalidCommandOperationCode
        }
        switch cdb.operationCode {
        case OperationCode.reserve6, OperationCode.reserve10, OperationCode.release6, OperationCode.release10:
            // SPC-2 reservation CDBs carry obsolete third-party fields; ReservationState judges them.
            break
        default:
            // > reserved bits […] set to nonzero: ILLEGAL REQUEST, INVALID FIELD IN CDB.
            if let (byte, bit) = command.firstReservedBitSet(in: cdb) {
                throw .invalidFieldInCDB(byte: byte, bit: bit)
            }
        }
        return command
    }

    private func dispatch(_ request: SCSIRequest, _ cdb: CDB) throws(SenseData) -> SCSIResult {
        _ = try supportedCommand(cdb)
        switch cdb.operationCode {
        case OperationCode.testUnitReady: return try testUnitReady()
        case OperationCode.requestSense: return requestSense(cdb, nexus: request.nexus)
        case OperationCode.inquiry: return try inquiry(cdb, nexus: request.nexus)
        case OperationCode.reportLUNs: return ReportLUNs.response(luns: [request.lun], cdb: request.cdb)
        case OperationCode.modeSense6, OperationCode.modeSense10: return try modeSense(cdb)
        case OperationCode.modeSelect6, OperationCode.modeSelect10: return try modeSelect(cdb, request)
        case OperationCode.startStopUnit: return try startStopUnit(cdb)
        case OperationCode.preventAllowMediumRemoval: return .good
        case OperationCode.maintenanceIn:
            if cdb.serviceAction == ServiceAction.reportSupportedOperationCodes {
                return try reportSupportedOperationCodes(cdb)
            }
            if cdb.serviceAction == ServiceAction.reportTargetPortGroups, let asymmetricAccess {
                return try reportTargetPortGroups(cdb, asymmetricAccess)
            }
            return reportSupportedTaskManagementFunctions(cdb)
        case OperationCode.reserve6, OperationCode.reserve10: return reservations.reserve(request)
        case OperationCode.release6, OperationCode.release10: return reservations.release(request)
        case OperationCode.persistentReserveIn: return reservations.persistentReserveIn(request)
        case OperationCode.persistentReserveOut: return reservations.persistentReserveOut(request)
        case OperationCode.extendedCopy:
            try checkMediumAccess()
            return copyManager.extendedCopy(request, source: copyEndpoint)
        case OperationCode.receiveCopyResults: return copyManager.receiveCopyResults(request)
        case OperationCode.sanitize: return try sanitize(cdb, request)
        default:
            try checkMediumAccess()
            return try executeBlockCommand(cdb, request)
        }
    }

    /// Fails medium access after a failed SANITIZE (SBC-4 §4.11.4).
    func checkMediumAccess() throws(SenseData) {
        if state.withLock({ $0.sanitizeFailed }) {
            throw SenseData(.mediumError, .sanitizeCommandFailed)
        }
    }

    /// The exponent of a physical block that holds a power of two of logical blocks; 0 (one
    /// logical block per physical block) for any other or an unknown physical block size.
    static func physicalBlockExponent(physicalBlockSize: Int, blockSize: Int) -> Int {
        guard physicalBlockSize > blockSize, physicalBlockSize % blockSize == 0 else { return 0 }
        let ratio = physicalBlockSize / blockSize
        guard ratio & (ratio - 1) == 0 else { return 0 }
        return min(ratio.trailingZeroBitCount, 15)
    }

    /// A 64-bit FNV-1a hash, for identifiers derived from the store identity.
    static func fnv1a(_ string: String, seed: UInt64) -> UInt64 {
        var hash = seed
        for byte in string.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// > NAA 6h: IEEE Registered Extended: 24-bit IEEE COMPANY_ID, 36-bit VENDOR SPECIFIC
    /// > IDENTIFIER, 64-bit VENDOR SPECIFIC IDENTIFIER EXTENSION.
    static func naa6(companyID: UInt32, high: UInt64, low: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendBigEndian(UInt64(0x6) << 60 | UInt64(companyID & 0xff_ffff) << 36 | (high & 0xf_ffff_ffff))
        bytes.appendBigEndian(low)
        return bytes
    }
}

/// The limits reported in the Block Limits VPD page and enforced by the device server.
struct BlockLimits: Sendable {
    var maximumTransferLength: UInt32
    /// OPTIMAL TRANSFER LENGTH GRANULARITY: one physical block.
    var optimalTransferLengthGranularity: UInt16
    var maximumCompareAndWriteLength: UInt8
    var maximumUnmapLBACount: UInt32
    var maximumUnmapBlockDescriptorCount: UInt32
    var optimalUnmapGranularity: UInt32
    var maximumWriteSameLength: UInt64
    var maximumAtomicTransferLength: UInt32

    init(blockSize: Int, physicalBlockExponent: Int, maximumTransferLength: UInt32?) {
        self.maximumTransferLength = maximumTransferLength ?? UInt32(8 << 20 / blockSize)
        optimalTransferLengthGranularity = 1 << physicalBlockExponent
        maximumCompareAndWriteLength = UInt8(min(255, self.maximumTransferLength))
        // Deallocating is cheap on a sparse file, but one command still punches its holes with
        // the write ordering lock held: 512 MiB at a time.
        maximumUnmapLBACount = UInt32((512 << 20) / blockSize)
        maximumUnmapBlockDescriptorCount = 256
        // Holes are punched in whole physical blocks (file system blocks); a partial one is zeroed.
        optimalUnmapGranularity = 1 << physicalBlockExponent
        // WRITE SAME without UNMAP writes every block: as much at a time as one WRITE may carry.
        maximumWriteSameLength = UInt64(self.maximumTransferLength)
        maximumAtomicTransferLength = min(self.maximumTransferLength, UInt32((1 << 20) / blockSize))
    }
}

/// A readers-writer lock ordering medium access: plain reads and writes share it, commands that
/// must be atomic with respect to other writes take it exclusively.
final class WriteOrderingLock: @unchecked Sendable {
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>

    init() {
        lock = .allocate(capacity: 1)
        lock.initialize(to: pthread_rwlock_t())
        pthread_rwlock_init(lock, nil)
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    func shared<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    /// Runs `body` sharing the lock if no exclusive holder has it; nil, without running it, otherwise.
    func sharedIfFree<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T? {
        guard pthread_rwlock_tryrdlock(lock) == 0 else { return nil }
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }

    func exclusive<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body()
    }
}
