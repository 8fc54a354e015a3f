import Foundation
import RawISCSI
import Testing

extension AgainstFerryd {
    /// How logins become sessions: reinstatement (RFC 7143 §6.3.5) and the max_sessions limit.
    @Suite struct SessionAdmissionTests {
        static let target = "iqn.2026-11.dev.ferry:admission"
        static let initiator = "iqn.2026-11.dev.ferry.test:returning"

        static func configuration(port: Int, directory: String) -> String {
            ConfiguredFerryd.portal(port: port, directory: directory)
                + ConfiguredFerryd.target(target, directory: directory)
                + "\n[limits]\nmax_sessions = 1\n"
        }

        @Test func reinstatementReplacesTheOldSessionEvenAtMaxSessions() async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                let first = try RawISCSIClient(port: ferryd.port)
                #expect(try first.login(initiatorName: Self.initiator, targetName: Self.target).succeeded)
                #expect(try first.testUnitReady() == 0)

                // The initiator comes back with the same ISID (its old connection is dead as far as it knows).
                let again = try RawISCSIClient(port: ferryd.port, isid: first.isid)
                let login = try again.login(initiatorName: Self.initiator, targetName: Self.target)
                #expect(login.succeeded, "reinstatement at max_sessions: \(login.response.loginStatus)")
                // > SAM-5: the old nexus's loss is reported once, as a unit attention (CHECK CONDITION).
                // The successor has the same I_T nexus, and Ferry applies the old one's loss before it answers the
                // login, so the first command meets it: UNIT ATTENTION, I_T NEXUS LOSS OCCURRED (29h/07h, SPC-4).
                let reported = try again.scsi(lun: 0, cdb: .testUnitReady)
                #expect(reported.status == 0x02, "CHECK CONDITION: \(reported)")
                #expect(reported.senseCode == [0x06, 0x29, 0x07], "UNIT ATTENTION 29h/07h: \(reported)")
                #expect(try again.testUnitReady() == 0, "reported once")
                // > The old session's connections are closed (implicit logout).
                #expect(try first.drainUntilClosed().allSatisfy { $0.opcode != RawOpcode.scsiResponse })

                // The reinstated session holds the only place.
                let other = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.initiator, targetName: Self.target)
                // > 0x0302 Out of resources.
                #expect(other.response.loginStatus == (3, 0x02), "\(other.response.loginStatus)")
                #expect(try again.testUnitReady() == 0)
            }
        }
    }
}
