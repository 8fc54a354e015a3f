import NIOCore

/// The six persistent reservation types (SPC-4 §6.16.4 table 171).
enum PersistentReservationType: UInt8, Sendable, Hashable, CaseIterable {
    case writeExclusive = 0x1
    case exclusiveAccess = 0x3
    case writeExclusiveRegistrantsOnly = 0x5
    case exclusiveAccessRegistrantsOnly = 0x6
    case writeExclusiveAllRegistrants = 0x7
    case exclusiveAccessAllRegistrants = 0x8

    /// > For the all registrants types every registered I_T nexus is a reservation holder.
    var isAllRegistrants: Bool { self == .writeExclusiveAllRegistrants || self == .exclusiveAccessAllRegistrants }

    /// Whether releasing it, or losing its holder, tells the other registrants (2A/04): the
    /// registrants-only and all-registrants types (SPC-4 §5.13.11.2.2).
    var notifiesRegistrantsOnRelease: Bool { self != .writeExclusive && self != .exclusiveAccess }
}

/// The persistent reservation of a logical unit: its holder (nil for the all-registrants types)
/// and type. The scope is always LU_SCOPE.
struct PersistentReservation: Hashable {
    var holder: ITNexus?
    var type: PersistentReservationType
}

extension ReservationState {
    /// The reservation state behind the lock.
    struct State {
        /// The I_T nexus holding the SPC-2 reservation.
        var spc2Holder: ITNexus?
        /// > PRGENERATION […] incremented […] every PERSISTENT RESERVE OUT command that completes
        /// > successfully with a REGISTER, REGISTER AND IGNORE EXISTING KEY, CLEAR, PREEMPT, PREEMPT
        /// > AND ABORT or REGISTER AND MOVE service action.
        var generation: UInt32 = 0
        /// Registered I_T nexuses and their reservation keys, in order of registration.
        var registrations: [(nexus: ITNexus, key: UInt64)] = []
        var reservation: PersistentReservation?

        func key(of nexus: ITNexus) -> UInt64? {
            registrations.first { $0.nexus == nexus }?.key
        }

        /// Whether the persistent reservation lets a command of `access` from `nexus` through
        /// (SPC-4 §5.13.1 table 66, SBC-4 §4.17 table 13).
        func persistentReservationAllows(_ access: ReservationState.Access, from nexus: ITNexus) -> Bool {
            guard let reservation, access != .unrestricted, !isReservationHolder(nexus) else { return true }
            let registered = key(of: nexus) != nil
            switch reservation.type {
            case .writeExclusive: return access == .read
            case .exclusiveAccess: return false
            case .writeExclusiveRegistrantsOnly, .writeExclusiveAllRegistrants: return access == .read || registered
            case .exclusiveAccessRegistrantsOnly, .exclusiveAccessAllRegistrants: return registered
            }
        }

        func isReservationHolder(_ nexus: ITNexus) -> Bool {
            guard let reservation else { return false }
            if reservation.type.isAllRegistrants { return key(of: nexus) != nil }
            return reservation.holder == nexus
        }

        /// Removes the registration of `nexus` and what goes with it: the reservation it held,
        /// or, for the all-registrants types, the reservation once no registrant is left.
        /// Returns the I_T nexuses to tell 2A/04 RESERVATIONS RELEASED.
        mutating func unregister(_ nexus: ITNexus) -> [ITNexus] {
            registrations.removeAll { $0.nexus == nexus }
            guard let reservation else { return [] }
            if reservation.type.isAllRegistrants {
                if registrations.isEmpty { self.reservation = nil }
                return []
            }
            guard reservation.holder == nexus else { return [] }
            self.reservation = nil
            // > If the persistent reservation is of type Write Exclusive – Registrants Only or
            // > Exclusive Access – Registrants Only, the device server shall establish a unit
            // > attention condition […] RESERVATIONS RELEASED for the initiator port associated
            // > with every registered I_T nexus other than the I_T nexus on which the command was
            // > received.
            return reservation.type.notifiesRegistrantsOnRelease ? registrations.map(\.nexus) : []
        }
    }

    // MARK: PERSISTENT RESERVE IN

    /// PERSISTENT RESERVE IN (SPC-4 §6.15): READ KEYS, READ RESERVATION, REPORT CAPABILITIES and
    /// READ FULL STATUS.
    public func persistentReserveIn(_ request: SCSIRequest) -> SCSIResult {
        let cdb = CDB(request.cdb)
        let allocationLength = Int(cdb.uint16(at: 7))
        var data: [UInt8] = []
        switch cdb.serviceAction {
        case 0x00:
            // READ KEYS: PRGENERATION, ADDITIONAL LENGTH, then every registered key. The
            // additional length is not reduced to the allocation length.
            state.withLock { state in
                data.appendBigEndian(state.generation)
                data.appendBigEndian(UInt32(8 * state.registrations.count))
                for registration in state.registrations { data.appendBigEndian(registration.key) }
            }
        case 0x01:
            // READ RESERVATION
            state.withLock { state in
                data.appendBigEndian(state.generation)
                guard let reservation = state.reservation else {
                    data.appendBigEndian(UInt32(0))
                    return
                }
                data.appendBigEndian(UInt32(16))
                // > If the persistent reservation is an all registrants type, the RESERVATION KEY
                // > field shall be set to zero.
                let key = reservation.holder.flatMap { state.key(of: $0) } ?? 0
                data.appendBigEndian(reservation.type.isAllRegistrants ? 0 : key)
                data += [0, 0, 0, 0, 0, reservation.type.rawValue, 0, 0]
            }
        case 0x02:
            // REPORT CAPABILITIES: CRH set (RESERVE conflicts with persistent reservations);
            // SIP_C, ATP_C and PTPL_C clear; TMV set with the six types.
            data = [0x00, 0x08, 0x10, 0x80, 0xea, 0x01, 0x00, 0x00]
        case 0x03:
            data = readFullStatus()
        default:
            return .checkCondition(.invalidFieldInCDB(byte: 1, bit: 4))
        }
        return .dataIn(data, allocationLength: allocationLength)
    }

    /// READ FULL STATUS: one descriptor per registered I_T nexus, with its iSCSI TransportID.
    private func readFullStatus() -> [UInt8] {
        state.withLock { state in
            var descriptors: [UInt8] = []
            for registration in state.registrations {
                descriptors.appendBigEndian(registration.key)
                descriptors += [0, 0, 0, 0]
                let holder = state.isReservationHolder(registration.nexus)
                // ALL_TG_PT (bit 1) clear, R_HOLDER (bit 0); SCOPE and TYPE when a holder.
                descriptors.append(holder ? 0x01 : 0x00)
                descriptors.append(holder ? state.reservation!.type.rawValue : 0)
                descriptors += [0, 0, 0, 0]
                descriptors.appendBigEndian(registration.nexus.relativeTargetPortIdentifier)
                let transportID = Self.iSCSITransportID(initiatorPortName: registration.nexus.initiatorPortName)
                descriptors.appendBigEndian(UInt32(transportID.count))
                descriptors += transportID
            }
            var data: [UInt8] = []
            data.appendBigEndian(state.generation)
            data.appendBigEndian(UInt32(descriptors.count))
            return data + descriptors
        }
    }

    /// The iSCSI TransportID of an initiator port (SPC-4 §7.6.4.6, RFC 7143 §13.3): format 01b,
    /// protocol identifier 5, and the initiator port name `<name>,i,0x<ISID>`, NUL terminated and
    /// padded to a multiple of four bytes, at least 24 bytes in all.
    static func iSCSITransportID(initiatorPortName: String) -> [UInt8] {
        var name = Array(initiatorPortName.utf8)
        name.append(0)
        while name.count % 4 != 0 || name.count < 20 { name.append(0) }
        var id: [UInt8] = [0x45, 0x00]
        id.appendBigEndian(UInt16(name.count))
        return id + name
    }

    // MARK: PERSISTENT RESERVE OUT

    /// PERSISTENT RESERVE OUT (SPC-4 §6.16): REGISTER, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT
    /// AND ABORT and REGISTER AND IGNORE EXISTING KEY. REGISTER AND MOVE is not supported (ILLEGAL
    /// REQUEST, INVALID FIELD IN CDB), nor are SPEC_I_PT, ALL_TG_PT and APTPL (INVALID FIELD IN
    /// PARAMETER LIST).
    public func persistentReserveOut(_ request: SCSIRequest) -> SCSIResult {
        let cdb = CDB(request.cdb)
        let serviceAction = cdb.serviceAction
        guard serviceAction <= 0x06 else {
            return .checkCondition(.invalidFieldInCDB(byte: 1, bit: 4))
        }
        // > The PARAMETER LIST LENGTH field shall contain 24 (18h) if the following conditions
        // > are true: a) the SPEC_I_PT bit is set to zero […]
        let parameterListLength = cdb.uint32(at: 5)
        guard parameterListLength == 24, request.dataOut.readableBytes >= 24 else {
            return .checkCondition(.parameterListLengthError)
        }
        let parameters = request.dataOut
        let base = parameters.readerIndex
        let reservationKey = parameters.getInteger(at: base, as: UInt64.self)!
        let serviceActionReservationKey = parameters.getInteger(at: base + 8, as: UInt64.self)!
        let flags = parameters.getInteger(at: base + 20, as: UInt8.self)!
        if flags & 0x08 != 0 { return .checkCondition(.invalidFieldInParameterList(byte: 20, bit: 3)) }
        if flags & 0x04 != 0 { return .checkCondition(.invalidFieldInParameterList(byte: 20, bit: 2)) }
        if flags & 0x01 != 0, serviceAction == 0x00 || serviceAction == 0x06 {
            return .checkCondition(.invalidFieldInParameterList(byte: 20, bit: 0))
        }

        let nexus = request.nexus
        switch serviceAction {
        case 0x00, 0x06:
            return register(
                nexus, reservationKey: reservationKey, serviceActionKey: serviceActionReservationKey,
                ignoreExistingKey: serviceAction == 0x06)
        case 0x03:
            return clear(nexus, reservationKey: reservationKey)
        default:
            break
        }
        // RESERVE, RELEASE, PREEMPT and PREEMPT AND ABORT name a scope and a type.
        guard cdb[2] >> 4 == 0 else { return .checkCondition(.invalidFieldInCDB(byte: 2, bit: 7)) }
        guard let type = PersistentReservationType(rawValue: cdb[2] & 0x0f) else {
            return .checkCondition(.invalidFieldInCDB(byte: 2, bit: 3))
        }
        switch serviceAction {
        case 0x01: return reserve(nexus, reservationKey: reservationKey, type: type)
        case 0x02: return release(nexus, reservationKey: reservationKey, type: type)
        default:
            return preempt(
                nexus, reservationKey: reservationKey, serviceActionKey: serviceActionReservationKey, type: type,
                abort: serviceAction == 0x05)
        }
    }

    private static let conflict = SCSIResult(status: .reservationConflict)

    private func register(
        _ nexus: ITNexus, reservationKey: UInt64, serviceActionKey: UInt64, ignoreExistingKey: Bool
    ) -> SCSIResult {
        var released: [ITNexus] = []
        let result = state.withLock { state -> SCSIResult in
            let current = state.key(of: nexus)
            if !ignoreExistingKey {
                // > If the I_T nexus is not registered and the RESERVATION KEY field is not zero,
                // > or it is registered and the field differs from its key: RESERVATION CONFLICT.
                guard reservationKey == (current ?? 0) else { return Self.conflict }
            }
            switch (current, serviceActionKey) {
            case (nil, 0):
                // Unregistering an unregistered I_T nexus does nothing.
                return .good
            case (nil, let key):
                state.registrations.append((nexus, key))
            case (.some, 0):
                released = state.unregister(nexus)
            case (.some, let key):
                let index = state.registrations.firstIndex { $0.nexus == nexus }!
                state.registrations[index].key = key
            }
            state.generation &+= 1
            return .good
        }
        for other in released where other != nexus { unitAttentions.establish(.reservationsReleased, for: other) }
        return result
    }

    private func reserve(_ nexus: ITNexus, reservationKey: UInt64, type: PersistentReservationType) -> SCSIResult {
        state.withLock { state -> SCSIResult in
            guard let key = state.key(of: nexus), key == reservationKey else { return Self.conflict }
            // > RESERVE while an SPC-2 reservation is held by another I_T nexus conflicts.
            if let holder = state.spc2Holder, holder != nexus { return Self.conflict }
            if let reservation = state.reservation {
                // > If the I_T nexus is the holder and the type and scope match, GOOD with no
                // > change; any other reservation conflicts.
                return state.isReservationHolder(nexus) && reservation.type == type ? .good : Self.conflict
            }
            state.reservation = PersistentReservation(holder: type.isAllRegistrants ? nil : nexus, type: type)
            return .good
        }
    }

    private func release(_ nexus: ITNexus, reservationKey: UInt64, type: PersistentReservationType) -> SCSIResult {
        var notify: [ITNexus] = []
        let result = state.withLock { state -> SCSIResult in
            guard let key = state.key(of: nexus), key == reservationKey else { return Self.conflict }
            // > If there is no persistent reservation or the I_T nexus is not a holder, GOOD and
            // > nothing else.
            guard let reservation = state.reservation, state.isReservationHolder(nexus) else { return .good }
            guard reservation.type == type else {
                return .checkCondition(SenseData(.illegalRequest, .invalidReleaseOfPersistentReservation))
            }
            state.reservation = nil
            if reservation.type.notifiesRegistrantsOnRelease {
                notify = state.registrations.map(\.nexus).filter { $0 != nexus }
            }
            return .good
        }
        for other in notify { unitAttentions.establish(.reservationsReleased, for: other) }
        return result
    }

    private func clear(_ nexus: ITNexus, reservationKey: UInt64) -> SCSIResult {
        var notify: [ITNexus] = []
        let result = state.withLock { state -> SCSIResult in
            guard let key = state.key(of: nexus), key == reservationKey else { return Self.conflict }
            // > […] a unit attention condition […] RESERVATIONS PREEMPTED for the initiator port
            // > associated with each I_T nexus other than the one that received the command.
            notify = state.registrations.map(\.nexus).filter { $0 != nexus }
            state.registrations.removeAll()
            state.reservation = nil
            state.generation &+= 1
            return .good
        }
        for other in notify { unitAttentions.establish(.reservationsPreempted, for: other) }
        return result
    }

    /// PREEMPT and PREEMPT AND ABORT (SPC-4 §5.13.11.4).
    private func preempt(
        _ nexus: ITNexus, reservationKey: UInt64, serviceActionKey: UInt64, type: PersistentReservationType,
        abort: Bool
    ) -> SCSIResult {
        var preempted: Set<ITNexus> = []
        var reservationChanged: [ITNexus] = []
        let result = state.withLock { state -> SCSIResult in
            guard let key = state.key(of: nexus), key == reservationKey else { return Self.conflict }
            let reservation = state.reservation
            let holderKey = reservation?.holder.flatMap { state.key(of: $0) }
            let preemptsReservation: Bool
            let victims: [ITNexus]
            if let reservation, reservation.type.isAllRegistrants, serviceActionKey == 0 {
                // > If the reservation is an all registrants type and the SERVICE ACTION
                // > RESERVATION KEY is zero: remove every other registration, release the
                // > reservation and create one of the new type for this I_T nexus.
                victims = state.registrations.map(\.nexus).filter { $0 != nexus }
                preemptsReservation = true
            } else {
                // > Otherwise […] a SERVICE ACTION RESERVATION KEY field set to zero […] INVALID
                // > FIELD IN PARAMETER LIST.
                guard serviceActionKey != 0 else {
                    return .checkCondition(.invalidFieldInParameterList(byte: 8))
                }
                victims = state.registrations.filter { $0.key == serviceActionKey && $0.nexus != nexus }.map(\.nexus)
                // > If the SERVICE ACTION RESERVATION KEY does not identify any registration:
                // > RESERVATION CONFLICT.
                guard !victims.isEmpty || state.registrations.contains(where: { $0.key == serviceActionKey })
                else { return Self.conflict }
                preemptsReservation =
                    reservation.map { !$0.type.isAllRegistrants && holderKey == serviceActionKey } ?? false
            }
            state.registrations.removeAll { registration in victims.contains(registration.nexus) }
            if preemptsReservation {
                let previous = state.reservation!
                state.reservation = PersistentReservation(holder: type.isAllRegistrants ? nil : nexus, type: type)
                // > If the type or scope changed, RESERVATIONS RELEASED to every registrant left
                // > other than this I_T nexus.
                if previous.type != type {
                    reservationChanged = state.registrations.map(\.nexus).filter { $0 != nexus }
                }
            }
            preempted = Set(victims)
            state.generation &+= 1
            return .good
        }
        for victim in preempted { unitAttentions.establish(.registrationsPreempted, for: victim) }
        for other in reservationChanged { unitAttentions.establish(.reservationsReleased, for: other) }
        if abort { abortTasks(of: preempted) }
        return result
    }
}
