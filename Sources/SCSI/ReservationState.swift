public import NIOCore
import FerrySync

/// The SPC-2 reservation and the SPC-4 persistent reservations of one logical unit.
///
/// SPC-2 RESERVE and RELEASE reserve the whole logical unit for one I_T nexus until that nexus
/// releases it, the logical unit is reset or the nexus is lost. Persistent reservations
/// (SPC-4 §5.13) are kept per I_T nexus: registrations and at most one reservation, which survive
/// resets and nexus loss (but not a restart of the target: APTPL is not supported). The device
/// reports compatible reservation handling (CRH): RESERVE conflicts while a persistent
/// reservation or registration exists.
///
/// PREEMPT AND ABORT has to abort the tasks of the preempted I_T nexuses, which only the transport
/// can do: it installs ``preemptAndAbortHandler`` and, when called, aborts every task of those
/// nexuses in the task set of this logical unit (SPC-4 §5.13.11.2.6: as if by ABORT TASK SET, with
/// no further unit attention; 2A/05 REGISTRATIONS PREEMPTED is established here).
public final class ReservationState: Sendable {
    let unitAttentions: UnitAttentionConditions
    let state = Locked(State())
    private let abortHandler = Locked<(@Sendable (Set<ITNexus>) -> Void)?>(nil)

    public init(unitAttentions: UnitAttentionConditions) {
        self.unitAttentions = unitAttentions
    }

    /// Called by PERSISTENT RESERVE OUT with PREEMPT AND ABORT, outside any lock, with the I_T
    /// nexuses whose registrations it removed and whose tasks the transport must now abort.
    public var preemptAndAbortHandler: (@Sendable (Set<ITNexus>) -> Void)? {
        get { abortHandler.withLock { $0 } }
        set { abortHandler.withLock { $0 = newValue } }
    }

    func abortTasks(of nexuses: Set<ITNexus>) {
        guard !nexuses.isEmpty, let handler = preemptAndAbortHandler else { return }
        handler(nexuses)
    }

    /// nil when the command in `cdb` from `nexus` may run; otherwise the RESERVATION CONFLICT
    /// result to end it with (SPC-2 §5.5.1, SPC-4 §5.13.1 table 66, SBC-4 §4.17 table 13).
    public func check(_ cdb: ByteBuffer, from nexus: ITNexus) -> SCSIResult? {
        let cdb = CDB(cdb)
        let access = Self.access(of: cdb)
        let allowed = state.withLock { state -> Bool in
            if let holder = state.spc2Holder, holder != nexus {
                return Self.allowedUnderSPC2Reservation(cdb)
            }
            return state.persistentReservationAllows(access, from: nexus)
        }
        return allowed ? nil : SCSIResult(status: .reservationConflict)
    }

    /// Whether a command of `access` that the copy manager sends to this logical unit for `nexus`
    /// (the I_T nexus of the EXTENDED COPY) conflicts with a reservation, as a READ (`.read`) or a
    /// WRITE (`.write`) from `nexus` itself would.
    package func conflicts(_ access: Access, from nexus: ITNexus) -> Bool {
        state.withLock { state in
            // > SPC-2 §5.5.1: every medium access command from another I_T nexus conflicts.
            if let holder = state.spc2Holder, holder != nexus { return access != .unrestricted }
            return !state.persistentReservationAllows(access, from: nexus)
        }
    }

    /// RESERVE(6) and RESERVE(10) (SPC-2 §7.21): reserves the logical unit for the I_T nexus.
    public func reserve(_ request: SCSIRequest) -> SCSIResult {
        let cdb = CDB(request.cdb)
        // > LONGID / 3RDPTY: third-party reservations are obsolete; extents are not supported.
        if cdb.operationCode == OperationCode.reserve10, cdb[1] & 0x12 != 0 {
            return .checkCondition(.invalidFieldInCDB(byte: 1, bit: cdb[1] & 0x10 != 0 ? 4 : 1))
        }
        if cdb.operationCode == OperationCode.reserve6, cdb[1] & 0x01 != 0 {
            return .checkCondition(.invalidFieldInCDB(byte: 1, bit: 0))
        }
        let granted = state.withLock { state -> Bool in
            // > If [CRH is one and] a persistent reservation [or registration] exists, RESERVE
            // > shall be terminated with RESERVATION CONFLICT.
            guard state.reservation == nil, state.registrations.isEmpty else { return false }
            if let holder = state.spc2Holder, holder != request.nexus { return false }
            state.spc2Holder = request.nexus
            return true
        }
        return granted ? .good : SCSIResult(status: .reservationConflict)
    }

    /// RELEASE(6) and RELEASE(10) (SPC-2 §7.17): releases the reservation the I_T nexus holds;
    /// from any other I_T nexus it does nothing and completes with GOOD.
    public func release(_ request: SCSIRequest) -> SCSIResult {
        let cdb = CDB(request.cdb)
        if cdb.operationCode == OperationCode.release10, cdb[1] & 0x12 != 0 {
            return .checkCondition(.invalidFieldInCDB(byte: 1, bit: cdb[1] & 0x10 != 0 ? 4 : 1))
        }
        if cdb.operationCode == OperationCode.release6, cdb[1] & 0x01 != 0 {
            return .checkCondition(.invalidFieldInCDB(byte: 1, bit: 0))
        }
        state.withLock { state in
            if state.spc2Holder == request.nexus { state.spc2Holder = nil }
        }
        return .good
    }

    /// Applies the reservation effects of a task management event: a logical unit or target
    /// reset and the loss of the holding I_T nexus release the SPC-2 reservation; persistent
    /// reservations are not affected.
    public func apply(_ event: LogicalUnitEvent) {
        state.withLock { state in
            switch event {
            case .logicalUnitReset, .targetReset:
                state.spc2Holder = nil
            case .itNexusLoss(let nexus):
                if state.spc2Holder == nexus { state.spc2Holder = nil }
            case .tasksClearedByAnotherInitiator:
                break
            }
        }
    }

    /// How a command is restricted by a reservation it does not hold.
    package enum Access: Equatable {
        /// Never conflicts (INQUIRY, REPORT LUNS, REQUEST SENSE, PERSISTENT RESERVE IN and OUT…).
        case unrestricted
        /// Reads the medium: allowed through Write Exclusive reservations.
        case read
        /// Changes the medium or the logical unit: allowed only to holders (and registrants of
        /// the registrants-only and all-registrants types).
        case write
    }

    static func access(of cdb: CDB) -> Access {
        switch cdb.operationCode {
        case OperationCode.inquiry, OperationCode.reportLUNs, OperationCode.requestSense,
            OperationCode.testUnitReady, OperationCode.readCapacity10, OperationCode.persistentReserveIn,
            OperationCode.persistentReserveOut, OperationCode.receiveCopyResults, 0x4d /* LOG SENSE */:
            return .unrestricted
        case OperationCode.maintenanceIn:
            // REPORT SUPPORTED OPERATION CODES, REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS, REPORT
            // TARGET PORT GROUPS…
            return .unrestricted
        case OperationCode.serviceActionIn16:
            return cdb.serviceAction == ServiceAction.readCapacity16 ? .unrestricted : .read
        case OperationCode.read6, OperationCode.read10, OperationCode.read12, OperationCode.read16,
            OperationCode.verify10, OperationCode.verify12, OperationCode.verify16,
            OperationCode.preFetch10, OperationCode.preFetch16, OperationCode.modeSense6, OperationCode.modeSense10,
            OperationCode.readDefectData10, OperationCode.readDefectData12:
            return .read
        default:
            return .write
        }
    }

    /// The commands another I_T nexus may send while an SPC-2 reservation is held (SPC-2 §5.5.1
    /// table 10): every other command, PERSISTENT RESERVE OUT and TEST UNIT READY included,
    /// conflicts. RELEASE from a non-holder completes with GOOD and does nothing.
    static func allowedUnderSPC2Reservation(_ cdb: CDB) -> Bool {
        switch cdb.operationCode {
        case OperationCode.inquiry, OperationCode.reportLUNs, OperationCode.requestSense, OperationCode.release6,
            OperationCode.release10, OperationCode.persistentReserveIn, OperationCode.maintenanceIn,
            0x4d /* LOG SENSE */:
            return true
        default:
            return false
        }
    }
}
