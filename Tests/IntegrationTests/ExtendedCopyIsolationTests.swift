import Foundation
import RawISCSI
import Testing

extension AgainstFerryd {
    /// EXTENDED COPY cannot cross targets (the class of CVE-2020-28374): an initiator logged in to an open target
    /// names, in its CSCD descriptors, the logical unit of a CHAP- and ACL-protected target of the same ferryd. The
    /// designator must resolve exactly as one that exists nowhere, in both directions, and neither logical unit may
    /// change.
    @Suite struct ExtendedCopyIsolationTests {
        static let protectedTarget = "iqn.2026-11.dev.ferry:vault"
        static let openTarget = "iqn.2026-11.dev.ferry:open"
        static let owner = "iqn.2026-11.dev.ferry.test:owner"
        static let intruder = "iqn.2026-11.dev.ferry.test:intruder"
        static let user = "vault-user"
        static let secret = "vault-secret-0123"

        static func configuration(port: Int, directory: String) -> String {
            ConfiguredFerryd.portal(port: port, directory: directory)
                + ConfiguredFerryd.target(
                    protectedTarget, directory: directory,
                    extra: """
                        allowed_initiators = ["\(owner)"]
                        [target.chap]
                        user = "\(user)"
                        secret = "\(secret)"
                        """)
                + ConfiguredFerryd.target(openTarget, directory: directory)
        }

        @Test func designatorOfAProtectedTargetAnswersAsOneThatExistsNowhere() async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                // The owner of the protected target logs in legitimately, marks LBA 0 and reads its designator.
                let vault = try RawISCSIClient(port: ferryd.port)
                defer { vault.shutdown() }
                let chap = RawCHAP(algorithm: 5, user: Self.user, secret: Self.secret)
                let vaultLogin = try vault.login(initiatorName: Self.owner, targetName: Self.protectedTarget, chap: chap)
                try #require(vaultLogin.succeeded, "\(vaultLogin.response.loginStatus)")
                let secretBlock = [UInt8](repeating: 0xa5, count: 512)
                try #require(try vault.command(RawISCSIClient.write10(lba: 0, blocks: 1), write: secretBlock).status == 0)
                let vaultDesignator = try vault.logicalUnitDesignator()

                // The intruder, logged in to the open target, marks its own LBA 0 and 1.
                let open = try RawISCSIClient(port: ferryd.port)
                defer { open.shutdown() }
                let openLogin = try open.login(initiatorName: Self.intruder, targetName: Self.openTarget)
                try #require(openLogin.succeeded, "\(openLogin.response.loginStatus)")
                let ownBlocks = [UInt8](repeating: 0x5a, count: 1024)
                try #require(try open.command(RawISCSIClient.write10(lba: 0, blocks: 2), write: ownBlocks).status == 0)
                let ownDesignator = try open.logicalUnitDesignator()
                #expect(ownDesignator != vaultDesignator)

                // The designator's first byte keeps its NAA type; the rest is random.
                var nowhere = vaultDesignator
                for index in 1..<nowhere.count { nowhere[index] = UInt8.random(in: 0...255) }
                let missing = try open.extendedCopy(from: nowhere, to: ownDesignator)
                #expect(missing.status == 0x02, "\(missing)")
                #expect(missing.senseCode == [0x0a, 0x0d, 0x02], "\(missing)")
                // Reading the protected logical unit into the open one, and writing the open one's data into it.
                let read = try open.extendedCopy(from: vaultDesignator, to: ownDesignator)
                let written = try open.extendedCopy(from: ownDesignator, to: vaultDesignator)
                for outcome in [read, written] {
                    #expect(outcome.status == missing.status, "\(outcome)")
                    #expect(outcome.sense == missing.sense, "\(outcome)")
                }

                // Nothing moved: the intruder's LBA 1 is its own data, the vault's LBA 0 its owner's.
                #expect(try open.scsi(lun: 0, cdb: RawISCSIClient.read10(lba: 1, blocks: 1)).data == Array(ownBlocks[512...]))
                #expect(try vault.scsi(lun: 0, cdb: RawISCSIClient.read10(lba: 0, blocks: 1)).data == secretBlock)
                // Within its own target the copy works.
                let own = try open.extendedCopy(from: ownDesignator, to: ownDesignator, sourceLBA: 0, destinationLBA: 2)
                #expect(own.status == 0, "\(own)")
            }
        }
    }
}

extension RawISCSIClient {
    /// EXTENDED COPY (LID1) to LUN 0: one block from `sourceLBA` of the logical unit designated `from` to
    /// `destinationLBA` of the one designated `to`, both named by identification descriptor CSCD descriptors.
    fileprivate func extendedCopy(
        from: [UInt8], to: [UInt8], sourceLBA: UInt64 = 0, destinationLBA: UInt64 = 1
    ) throws -> RawSCSIOutcome {
        func target(_ designator: [UInt8]) -> [UInt8] {
            var descriptor = [UInt8](repeating: 0, count: 32)
            descriptor[0] = 0xe4
            descriptor[4] = 0x01  // binary
            descriptor[5] = 0x03  // NAA, associated with the logical unit
            descriptor[7] = UInt8(designator.count)
            descriptor.replaceSubrange(8..<8 + designator.count, with: designator)
            descriptor[30] = 0x02  // DISK BLOCK LENGTH 512
            return descriptor
        }
        var segment = [UInt8](repeating: 0, count: 28)
        segment[0] = 0x02
        segment[3] = 24
        segment[7] = 1  // destination CSCD 1
        segment[11] = 1  // one block
        for byte in 0..<8 {
            segment[12 + byte] = UInt8(truncatingIfNeeded: sourceLBA >> (56 - 8 * UInt64(byte)))
            segment[20 + byte] = UInt8(truncatingIfNeeded: destinationLBA >> (56 - 8 * UInt64(byte)))
        }
        let targets = target(from) + target(to)
        var header = [UInt8](repeating: 0, count: 16)
        header[1] = 0x18  // LIST ID USAGE 11b: no list identifier
        header[3] = UInt8(targets.count)
        header[11] = UInt8(segment.count)
        let list = header + targets + segment
        var cdb = [UInt8](repeating: 0, count: 16)
        cdb[0] = 0x83
        cdb[13] = UInt8(list.count)
        return try command(cdb, write: list)
    }
}
