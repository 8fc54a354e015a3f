import FerrySync
import NIOCore
import Testing

@testable import SCSI

extension ReservationFixture {
    /// PERSISTENT RESERVE OUT with a basic 24-byte parameter list.
    func persistentReserveOut(
        _ serviceAction: UInt8, type: UInt8 = 0, key: UInt64 = 0, serviceActionKey: UInt64 = 0, flags: UInt8 = 0,
        parameterListLength: UInt32 = 24, from nexus: ITNexus
    ) -> SCSIResult {
        var cdb: [UInt8] = [0x5f, serviceAction, type, 0, 0, 0, 0, 0, 0, 0]
        cdb.setBigEndian(parameterListLength, at: 5)
        var parameters: [UInt8] = []
        parameters.appendBigEndian(key)
        parameters.appendBigEndian(serviceActionKey)
        parameters += [0, 0, 0, 0, flags, 0, 0, 0]
        return reservations.persistentReserveOut(request(cdb, from: nexus, dataOut: parameters))
    }

    func registerAndIgnore(_ key: UInt64, from nexus: ITNexus) -> SCSIResult {
        persistentReserveOut(0x06, serviceActionKey: key, from: nexus)
    }

    func persistentReserveIn(
        _ serviceAction: UInt8, allocationLength: UInt16 = 4096, from nexus: ITNexus
    ) -> SCSIResult {
        var cdb: [UInt8] = [0x5e, serviceAction, 0, 0, 0, 0, 0, 0, 0, 0]
        cdb.setBigEndian(allocationLength, at: 7)
        return reservations.persistentReserveIn(request(cdb, from: nexus))
    }

    /// READ KEYS: the generation and the registered keys.
    func readKeys(from nexus: ITNexus) throws -> (generation: UInt32, keys: [UInt64]) {
        var data = persistentReserveIn(0x00, from: nexus).dataIn
        let generationField = data.readInteger(as: UInt32.self)
        let lengthField = data.readInteger(as: UInt32.self)
        let generation = try #require(generationField, "READ KEYS: no PRGENERATION")
        let length = Int(try #require(lengthField, "READ KEYS: no ADDITIONAL LENGTH"))
        let keys = try (0..<length / 8).map { _ in
            let key = data.readInteger(as: UInt64.self)
            return try #require(key, "READ KEYS: fewer keys than ADDITIONAL LENGTH says")
        }
        return (generation, keys)
    }

    /// READ RESERVATION: the key and type, nil when there is no reservation.
    func readReservation(from nexus: ITNexus) throws -> (key: UInt64, type: UInt8)? {
        let data = persistentReserveIn(0x01, from: nexus).dataIn
        guard data.getInteger(at: 4, as: UInt32.self) == 16 else { return nil }
        return (
            try #require(data.getInteger(at: 8, as: UInt64.self), "READ RESERVATION: no RESERVATION KEY"),
            try #require(data.getInteger(at: 21, as: UInt8.self), "READ RESERVATION: no TYPE") & 0x0f
        )
    }
}

@Suite struct PersistentReservationTests {
    @Test func registerReregisterAndUnregister() throws {
        let f = ReservationFixture()
        #expect(f.registerAndIgnore(0xabc, from: f.first).status == .good)
        #expect(try f.readKeys(from: f.first).keys == [0xabc])
        // REGISTER with a zero reservation key from a registered nexus conflicts.
        #expect(f.persistentReserveOut(0x00, serviceActionKey: 0xabd, from: f.first).status == .reservationConflict)
        // With the right key it changes the key.
        #expect(f.persistentReserveOut(0x00, key: 0xabc, serviceActionKey: 0xabd, from: f.first).status == .good)
        #expect(try f.readKeys(from: f.first).keys == [0xabd])
        // Unregister.
        #expect(f.persistentReserveOut(0x00, key: 0xabd, from: f.first).status == .good)
        #expect(try f.readKeys(from: f.first) == (3, []))
        // Unregistering an unregistered nexus does nothing, and does not bump the generation.
        #expect(f.persistentReserveOut(0x00, from: f.first).status == .good)
        #expect(try f.readKeys(from: f.first).generation == 3)
        // REGISTER from an unregistered nexus with a nonzero reservation key conflicts.
        #expect(f.persistentReserveOut(0x00, key: 1, serviceActionKey: 2, from: f.first).status == .reservationConflict)
    }

    @Test func parameterListChecks() {
        let f = ReservationFixture()
        let short = f.persistentReserveOut(0x06, serviceActionKey: 1, parameterListLength: 23, from: f.first)
        #expect(short.sense?.code == .parameterListLengthError)
        for flags: UInt8 in [0x01, 0x04, 0x08] {
            let result = f.persistentReserveOut(0x06, serviceActionKey: 1, flags: flags, from: f.first)
            #expect(result.sense?.code == .invalidFieldInParameterList)
        }
        #expect(f.persistentReserveOut(0x07, from: f.first).sense?.code == .invalidFieldInCDB)
        _ = f.registerAndIgnore(1, from: f.first)
        #expect(f.persistentReserveOut(0x01, type: 0x02, key: 1, from: f.first).sense?.code == .invalidFieldInCDB)
        #expect(f.persistentReserveOut(0x01, type: 0x11, key: 1, from: f.first).sense?.code == .invalidFieldInCDB)
    }

    @Test func serviceActionRange() {
        let f = ReservationFixture()
        for serviceAction: UInt8 in 0...3 {
            #expect(f.persistentReserveIn(serviceAction, from: f.first).status == .good)
        }
        for serviceAction: UInt8 in 4...0x1f {
            #expect(f.persistentReserveIn(serviceAction, from: f.first).sense?.code == .invalidFieldInCDB)
        }
    }

    @Test func readKeysTruncatesButKeepsAdditionalLength() {
        let f = ReservationFixture()
        _ = f.registerAndIgnore(7, from: f.first)
        let data = f.persistentReserveIn(0x00, allocationLength: 8, from: f.first).dataIn
        #expect(data.readableBytes == 8)
        #expect(data.getInteger(at: 4, as: UInt32.self) == 8)
    }

    @Test func reportCapabilities() throws {
        let f = ReservationFixture()
        let data = Array(f.persistentReserveIn(0x02, from: f.first).dataIn.readableBytesView)
        try #require(data.count == 8)
        #expect(data[0] == 0 && data[1] == 8)
        #expect(data[2] & 0x0d == 0)  // SIP_C, ATP_C, PTPL_C clear
        #expect(data[4] == 0xea && data[5] == 0x01)
    }

    /// libiscsi's ProutReserveAccess*: (registered reads, registered writes, unregistered reads,
    /// unregistered writes) of the second nexus while the first holds the reservation.
    @Test(arguments: [
        (UInt8(0x3), [false, false, false, false]),
        (UInt8(0x1), [true, false, true, false]),
        (UInt8(0x6), [true, true, false, false]),
        (UInt8(0x5), [true, true, true, false]),
        (UInt8(0x8), [true, true, false, false]),
        (UInt8(0x7), [true, true, true, false]),
    ])
    func accessByType(_ type: UInt8, _ expected: [Bool]) throws {
        let f = ReservationFixture()
        #expect(f.registerAndIgnore(1, from: f.first).status == .good)
        #expect(f.registerAndIgnore(2, from: f.second).status == .good)
        #expect(f.persistentReserveOut(0x01, type: type, key: 1, from: f.first).status == .good)
        let allRegistrants = type == 0x7 || type == 0x8
        let reservation = try f.readReservation(from: f.first).map { [$0.key, UInt64($0.type)] }
        #expect(reservation == [allRegistrants ? 0 : 1, UInt64(type)])
        #expect(f.allowed(ReservationFixture.read10, from: f.first))
        #expect(f.allowed(ReservationFixture.write10, from: f.first))
        var observed = [
            f.allowed(ReservationFixture.read10, from: f.second), f.allowed(ReservationFixture.write10, from: f.second),
        ]
        #expect(f.persistentReserveOut(0x00, key: 2, from: f.second).status == .good)
        observed += [
            f.allowed(ReservationFixture.read10, from: f.second), f.allowed(ReservationFixture.write10, from: f.second),
        ]
        #expect(observed == expected)
        // INQUIRY and PERSISTENT RESERVE never conflict.
        #expect(f.allowed(ReservationFixture.inquiry, from: f.second))
        #expect(f.allowed([0x5e, 0, 0, 0, 0, 0, 0, 0x10, 0, 0], from: f.second))
        #expect(f.persistentReserveOut(0x02, type: type, key: 1, from: f.first).status == .good)
        #expect(try f.readReservation(from: f.first) == nil)
    }

    /// libiscsi's ProutReserveOwnership*: unregistering the holder releases the reservation,
    /// except for the all-registrants types, which the other registrant keeps.
    @Test(arguments: [UInt8(0x1), 0x3, 0x5, 0x6, 0x7, 0x8])
    func ownership(_ type: UInt8) throws {
        let f = ReservationFixture()
        _ = f.registerAndIgnore(1, from: f.first)
        _ = f.registerAndIgnore(2, from: f.second)
        #expect(f.persistentReserveOut(0x01, type: type, key: 1, from: f.first).status == .good)
        #expect(f.persistentReserveOut(0x00, key: 1, from: f.first).status == .good)
        if type == 0x7 || type == 0x8 {
            #expect(try f.readReservation(from: f.first)?.type == type)
            #expect(f.persistentReserveOut(0x02, type: type, key: 2, from: f.second).status == .good)
            #expect(f.unitAttentions.take(for: f.second) == nil)
        } else {
            #expect(try f.readReservation(from: f.first) == nil)
            let registrantsOnly = type == 0x5 || type == 0x6
            #expect(f.unitAttentions.take(for: f.second) == (registrantsOnly ? .reservationsReleased : nil))
        }
    }

    @Test func reserveRules() throws {
        let f = ReservationFixture()
        // Unregistered: conflict.
        #expect(f.persistentReserveOut(0x01, type: 0x1, key: 1, from: f.first).status == .reservationConflict)
        _ = f.registerAndIgnore(1, from: f.first)
        _ = f.registerAndIgnore(2, from: f.second)
        // Wrong key: conflict.
        #expect(f.persistentReserveOut(0x01, type: 0x1, key: 2, from: f.first).status == .reservationConflict)
        #expect(f.persistentReserveOut(0x01, type: 0x1, key: 1, from: f.first).status == .good)
        // Same holder and type: GOOD; another type or another nexus: conflict.
        #expect(f.persistentReserveOut(0x01, type: 0x1, key: 1, from: f.first).status == .good)
        #expect(f.persistentReserveOut(0x01, type: 0x3, key: 1, from: f.first).status == .reservationConflict)
        #expect(f.persistentReserveOut(0x01, type: 0x1, key: 2, from: f.second).status == .reservationConflict)
        // RELEASE by a non-holder does nothing; with the wrong type it is an invalid release.
        #expect(f.persistentReserveOut(0x02, type: 0x1, key: 2, from: f.second).status == .good)
        #expect(try f.readReservation(from: f.first)?.type == 0x1)
        let wrongType = f.persistentReserveOut(0x02, type: 0x3, key: 1, from: f.first)
        #expect(wrongType.sense?.code == .invalidReleaseOfPersistentReservation)
        // RESERVE and RELEASE do not change the generation.
        #expect(try f.readKeys(from: f.first).generation == 2)
    }

    @Test func releaseOfRegistrantsOnlyNotifiesOtherRegistrants() {
        let f = ReservationFixture()
        _ = f.registerAndIgnore(1, from: f.first)
        _ = f.registerAndIgnore(2, from: f.second)
        _ = f.persistentReserveOut(0x01, type: 0x5, key: 1, from: f.first)
        #expect(f.persistentReserveOut(0x02, type: 0x5, key: 1, from: f.first).status == .good)
        #expect(f.unitAttentions.take(for: f.second) == .reservationsReleased)
        #expect(f.unitAttentions.take(for: f.first) == nil)
    }

    @Test func clearRemovesEverything() throws {
        let f = ReservationFixture()
        _ = f.registerAndIgnore(1, from: f.first)
        _ = f.registerAndIgnore(2, from: f.second)
        let generation = try f.readKeys(from: f.first).generation
        _ = f.persistentReserveOut(0x01, type: 0x3, key: 1, from: f.first)
        #expect(f.persistentReserveOut(0x03, key: 9, from: f.first).status == .reservationConflict)
        #expect(f.persistentReserveOut(0x03, key: 1, from: f.first).status == .good)
        #expect(try f.readReservation(from: f.first) == nil)
        #expect(try f.readKeys(from: f.first) == (generation + 1, []))
        #expect(f.unitAttentions.take(for: f.second) == .reservationsPreempted)
        #expect(f.unitAttentions.take(for: f.first) == nil)
    }

    /// libiscsi's ProutPreempt.RemoveRegistration.
    @Test func preemptRemovesRegistration() throws {
        let f = ReservationFixture()
        _ = f.registerAndIgnore(1, from: f.first)
        _ = f.registerAndIgnore(2, from: f.second)
        let generation = try f.readKeys(from: f.first).generation
        #expect(f.persistentReserveOut(0x04, type: 0x3, key: 2, serviceActionKey: 1, from: f.second).status == .good)
        #expect(try f.readKeys(from: f.first) == (generation + 1, [2]))
        #expect(f.unitAttentions.take(for: f.first) == .registrationsPreempted)
        #expect(try f.readReservation(from: f.first) == nil)
        // A key nobody holds: conflict; a zero key without an all-registrants reservation: invalid.
        #expect(f.persistentReserveOut(0x04, type: 0x3, key: 2, serviceActionKey: 5, from: f.second).status
            == .reservationConflict)
        #expect(f.persistentReserveOut(0x04, type: 0x3, key: 2, from: f.second).sense?.code
            == .invalidFieldInParameterList)
    }

    @Test func preemptTakesOverTheReservation() throws {
        let f = ReservationFixture()
        _ = f.registerAndIgnore(1, from: f.first)
        _ = f.registerAndIgnore(2, from: f.second)
        _ = f.persistentReserveOut(0x01, type: 0x1, key: 1, from: f.first)
        #expect(f.persistentReserveOut(0x04, type: 0x3, key: 2, serviceActionKey: 1, from: f.second).status == .good)
        #expect(try f.readReservation(from: f.second).map { [$0.key, UInt64($0.type)] } == [2, 3])
        #expect(f.allowed(ReservationFixture.read10, from: f.second))
        #expect(!f.allowed(ReservationFixture.read10, from: f.first))
    }

    @Test func preemptAllRegistrantsWithZeroKey() throws {
        let f = ReservationFixture()
        _ = f.registerAndIgnore(1, from: f.first)
        _ = f.registerAndIgnore(2, from: f.second)
        _ = f.persistentReserveOut(0x01, type: 0x8, key: 1, from: f.first)
        #expect(f.persistentReserveOut(0x04, type: 0x3, key: 2, from: f.second).status == .good)
        #expect(try f.readKeys(from: f.first).keys == [2])
        #expect(try f.readReservation(from: f.first).map { [$0.key, UInt64($0.type)] } == [2, 3])
    }

    @Test func preemptAndAbortCallsTheHandler() {
        let f = ReservationFixture()
        let aborted = Locked<Set<ITNexus>>([])
        f.reservations.preemptAndAbortHandler = { nexuses in aborted.withLock { $0.formUnion(nexuses) } }
        _ = f.registerAndIgnore(1, from: f.first)
        _ = f.registerAndIgnore(2, from: f.second)
        _ = f.persistentReserveOut(0x01, type: 0x1, key: 1, from: f.first)
        #expect(f.persistentReserveOut(0x05, type: 0x1, key: 2, serviceActionKey: 1, from: f.second).status == .good)
        #expect(aborted.withLock { $0 } == [f.first])
        #expect(f.unitAttentions.take(for: f.first) == .registrationsPreempted)
    }

    @Test func readFullStatusCarriesTransportIDs() throws {
        let f = ReservationFixture()
        _ = f.registerAndIgnore(0x11, from: f.first)
        _ = f.registerAndIgnore(0x22, from: f.second)
        _ = f.persistentReserveOut(0x01, type: 0x1, key: 0x22, from: f.second)
        var data = f.persistentReserveIn(0x03, from: f.first).dataIn
        #expect(data.readInteger(as: UInt32.self) == 2)
        let lengthField = data.readInteger(as: UInt32.self)
        let length = Int(try #require(lengthField))
        #expect(length == data.readableBytes)
        var seen: [(UInt64, Bool, String)] = []
        while data.readableBytes > 0 {
            let keyField = data.readInteger(as: UInt64.self)
            let key = try #require(keyField, "a full descriptor")
            data.moveReaderIndex(forwardBy: 4)
            let flags = data.readInteger(as: UInt8.self)
            let holder = try #require(flags) & 0x01 != 0
            let typeField = data.readInteger(as: UInt8.self)
            let type = try #require(typeField)
            #expect(type == (holder ? 0x1 : 0))
            data.moveReaderIndex(forwardBy: 4)
            #expect(data.readInteger(as: UInt16.self) == 1)
            let idLengthField = data.readInteger(as: UInt32.self)
            let idLength = Int(try #require(idLengthField))
            let idField = data.readBytes(length: idLength)
            let id = try #require(idField, "a TransportID of \(idLength) bytes")
            try #require(id.count >= 4)
            #expect(id[0] == 0x45)
            #expect(Int(id[2]) << 8 | Int(id[3]) == idLength - 4)
            #expect(idLength % 4 == 0 && idLength >= 24)
            let name = String(decoding: id[4...].prefix { $0 != 0 }, as: UTF8.self)
            seen.append((key, holder, name))
        }
        #expect(seen.map(\.0) == [0x11, 0x22])
        #expect(seen.map(\.1) == [false, true])
        #expect(seen.map(\.2) == [f.first.initiatorPortName, f.second.initiatorPortName])
    }

    @Test func registrationsSurviveResetsAndNexusLoss() throws {
        let f = ReservationFixture()
        _ = f.registerAndIgnore(1, from: f.first)
        _ = f.persistentReserveOut(0x01, type: 0x3, key: 1, from: f.first)
        f.reservations.apply(.logicalUnitReset)
        f.reservations.apply(.itNexusLoss(f.first))
        #expect(try f.readReservation(from: f.first)?.type == 0x3)
        #expect(!f.allowed(ReservationFixture.read10, from: f.second))
    }
}
