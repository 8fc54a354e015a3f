import Foundation
import RawISCSI
import Testing

extension AgainstFerryd {
    /// REPORTED LUNS DATA HAS CHANGED (3F/0E) after `ferryctl lun add` and after a reload that adds a LUN: once per I_T
    /// nexus, on its next command to any LUN of the target; INQUIRY does not report it, REPORT LUNS clears it.
    @Suite struct ReportedLUNsChangedTests {
        static let target = "iqn.2026-11.dev.ferry:inventory"

        @Test func eachSessionOfTheTargetHearsOfTheChangeOnce() async throws {
            try await ConfiguredFerryd.with(configuration: { port, directory in
                ConfiguredFerryd.portal(port: port, directory: directory)
                    + "[control]\nsocket = \"\(directory)/control.sock\"\n"
                    + ConfiguredFerryd.target(Self.target, directory: directory)
            }) { ferryd in
                let socket = ferryd.directory.appendingPathComponent("control.sock").path
                let first = try RawISCSIClient(port: ferryd.port)
                #expect(
                    try first.login(initiatorName: "iqn.2026-11.dev.ferry.test:first", targetName: Self.target)
                        .succeeded)
                let second = try RawISCSIClient(port: ferryd.port)
                #expect(
                    try second.login(initiatorName: "iqn.2026-11.dev.ferry.test:second", targetName: Self.target)
                        .succeeded)
                #expect(try first.scsi(lun: 0, cdb: .testUnitReady).status == 0)
                #expect(try second.scsi(lun: 0, cdb: .testUnitReady).status == 0)

                let added = try await ExternalTool.run(
                    try FerrydProcess.locateFerryctl(),
                    [
                        "lun", "add", Self.target, "1", "\(ferryd.directory.path)/one.img", "--size", "4M", "--socket",
                        socket,
                    ],
                    timeout: .seconds(30))
                #expect(added.status == 0, "\(added.output)")

                // First session: INQUIRY neither reports nor clears it; the next other command, to any LUN, reports it.
                #expect(try first.scsi(lun: 0, cdb: .inquiry).status == 0)
                let reported = try first.scsi(lun: 1, cdb: .testUnitReady)
                #expect(reported.status == 2 && reported.senseCode == [0x06, 0x3f, 0x0e], "\(reported)")
                #expect(try first.scsi(lun: 0, cdb: .testUnitReady).status == 0, "reported once per I_T nexus")
                #expect(try first.scsi(lun: 1, cdb: .testUnitReady).status == 0)

                // Second session: REPORT LUNS shows the new LUN and clears the condition on every LUN.
                let luns = try second.scsi(lun: 0, cdb: .reportLUNs)
                #expect(luns.status == 0 && luns.data.count == 24 && luns.data[17] == 1, "\(luns)")
                #expect(try second.scsi(lun: 0, cdb: .testUnitReady).status == 0)
                #expect(try second.scsi(lun: 1, cdb: .testUnitReady).status == 0)

                // A reload that adds a LUN does the same; a session that logs in afterwards starts without it.
                var file = try String(contentsOf: ferryd.configurationFile, encoding: .utf8)
                file += "\n[[target.lun]]\nlun = 2\npath = \"\(ferryd.directory.path)/two.img\"\nsize = \"4M\"\n"
                try file.write(to: ferryd.configurationFile, atomically: true, encoding: .utf8)
                let reloaded = try await ExternalTool.run(
                    try FerrydProcess.locateFerryctl(), ["reload", "--socket", socket], timeout: .seconds(30))
                #expect(reloaded.output.contains("added LUN 2 to \(Self.target)"), "\(reloaded.output)")
                let third = try RawISCSIClient(port: ferryd.port)
                #expect(
                    try third.login(initiatorName: "iqn.2026-11.dev.ferry.test:third", targetName: Self.target)
                        .succeeded)
                #expect(try third.scsi(lun: 2, cdb: .testUnitReady).status == 0)
                for client in [first, second] {
                    let again = try client.scsi(lun: 2, cdb: .testUnitReady)
                    #expect(again.status == 2 && again.senseCode == [0x06, 0x3f, 0x0e], "\(again)")
                    #expect(try client.scsi(lun: 0, cdb: .testUnitReady).status == 0)
                }
                for client in [first, second, third] { try client.logout() }
            }
        }
    }
}
