import Foundation
import RawISCSI
import Testing

#if canImport(Glibc)
    import Glibc
#endif

extension AgainstFerryd {
    /// `ferryctl save-config`: a LUN added at runtime is in the file, and a ferryd started from that file serves it.
    @Suite struct SaveConfigTests {
        static let target = "iqn.2026-11.dev.ferry:saved"

        @Test func aLUNAddedAtRuntimeSurvivesARestartFromTheSavedFile() async throws {
            // Backing files and the socket live outside the directories ConfiguredFerryd removes after each run.
            let shared = try ServiceManagerTests.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: shared) }
            let ferryctl = try FerrydProcess.locateFerryctl()
            let socket = "\(shared.path)/control.sock"
            let saved = try await ConfiguredFerryd.with(configuration: { port, _ in
                "# this comment is not kept\n" + ConfiguredFerryd.portal(port: port, directory: shared.path)
                    + "[control]\nsocket = \"\(socket)\"\n"
                    + ConfiguredFerryd.target(Self.target, directory: shared.path)
            }) { ferryd in
                chmod(ferryd.configurationFile.path, 0o640)
                // A read-only LUN needs its file: Ferry does not create one it may not write.
                let image = "\(shared.path)/one.img"
                #expect(FileManager.default.createFile(atPath: image, contents: nil) && truncate(image, 8 << 20) == 0)
                let added = try await ExternalTool.run(
                    ferryctl, ["lun", "add", Self.target, "1", image, "--read-only", "--socket", socket],
                    timeout: .seconds(30))
                #expect(added.output.contains("ferryctl save-config writes them to"), "\(added.output)")
                let save = try await ExternalTool.run(
                    ferryctl, ["save-config", "--socket", socket], timeout: .seconds(30))
                #expect(save.status == 0, "\(save.output)")
                #expect(save.output.contains("saved the running configuration to \(ferryd.configurationFile.path)"))
                var status = stat()
                #expect(stat(ferryd.configurationFile.path, &status) == 0 && status.st_mode & 0o777 == 0o640)
                let text = try String(contentsOf: ferryd.configurationFile, encoding: .utf8)
                let check = try await ExternalTool.run(
                    ferryctl, ["check-config", ferryd.configurationFile.path], timeout: .seconds(30))
                #expect(check.status == 0, "\(check.output)\n\(text)")
                let reload = try await ExternalTool.run(
                    ferryctl, ["reload", "--socket", socket], timeout: .seconds(30))
                #expect(reload.output.hasPrefix("no changes"), "the saved file is what runs: \(reload.output)")
                return (text: text, port: ferryd.port)
            }
            #expect(!saved.text.contains("comment"), "comments are not kept")
            #expect(saved.text.contains("read_only = true"), "\(saved.text)")

            // A new ferryd from the saved file (on a port of its own) serves LUN 1 with its data.
            try await ConfiguredFerryd.with(configuration: { port, _ in
                saved.text.replacingOccurrences(of: "127.0.0.1:\(saved.port)", with: "127.0.0.1:\(port)")
            }) { ferryd in
                let luns = try await ExternalTool.run(ferryctl, ["luns", "--socket", socket], timeout: .seconds(30))
                #expect(luns.output.contains("  1    emulated  file    online  8 MiB   512    ro"), "\(luns.output)")
                let client = try RawISCSIClient(port: ferryd.port)
                #expect(
                    try client.login(initiatorName: "iqn.2026-11.dev.ferry.test:saved", targetName: Self.target)
                        .succeeded)
                let report = try client.scsi(lun: 0, cdb: .reportLUNs)
                #expect(report.status == 0 && report.data.count == 24 && report.data[17] == 1, "\(report)")
                #expect(try client.scsi(lun: 1, cdb: .testUnitReady).status == 0)
                try client.logout()
            }
        }
    }
}
