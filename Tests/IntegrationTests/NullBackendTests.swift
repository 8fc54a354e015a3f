import Foundation
import RawISCSI
import Testing

extension AgainstFerryd {
    /// A ferryd with a `backend = "null"` LUN (issue 12), as `scripts/benchmark` starts one: libiscsi's utilities see
    /// a direct access disk of the configured capacity, a write over the wire reads back as zeroes, ferryctl shows
    /// the backend and device "null", and nothing is created on disk.
    @Suite struct NullBackendTests {
        static let target = "iqn.2026-11.dev.ferry:null"
        static let initiator = "iqn.2026-11.dev.ferry.test:null"

        /// 64 GiB of 4096-byte blocks: far more than the temporary directory could hold.
        static func configuration(port: Int, directory: String) -> String {
            ConfiguredFerryd.portal(port: port, directory: directory)
                + """
                [control]
                socket = "\(directory)/control.sock"

                [[target]]
                name = "\(target)"

                [[target.lun]]
                lun = 0
                backend = "null"
                size = "64G"
                block_size = 4096
                product = "NULL DISK"

                """
        }

        @Test func aNullLUNAnswersWithItsCapacityAndReadsZeroes() async throws {
            let inquiry = try ExternalTool.locate("iscsi-inq")
            let readCapacity = try ExternalTool.locate("iscsi-readcapacity16")
            let ferryctl = try FerrydProcess.locateFerryctl()
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                let url = "iscsi://127.0.0.1:\(ferryd.port)/\(Self.target)/0"
                let standard = try await ExternalTool.run(inquiry, [url], timeout: .seconds(60))
                #expect(standard.status == 0, "iscsi-inq failed:\n\(standard.output)")
                let identification = Self.fields(standard.output)
                #expect(identification["Peripheral Device Type"] == "DIRECT_ACCESS", "\(standard.output)")
                #expect(identification["Vendor"] == "FERRY", "\(standard.output)")
                #expect(identification["Product"] == "NULL DISK", "\(standard.output)")

                let capacity = try await ExternalTool.run(readCapacity, [url], timeout: .seconds(60))
                #expect(capacity.status == 0, "iscsi-readcapacity16 failed:\n\(capacity.output)")
                let fields = Self.fields(capacity.output)
                #expect(fields["RETURNED LOGICAL BLOCK ADDRESS"] == "16777215", "\(capacity.output)")
                #expect(fields["LOGICAL BLOCK LENGTH IN BYTES"] == "4096", "\(capacity.output)")
                #expect(fields["Total size"] == "68719476736", "\(capacity.output)")

                // A write is accepted and lost: the blocks read back as zeroes.
                let client = try RawISCSIClient(port: ferryd.port)
                defer { client.shutdown() }
                let login = try client.login(initiatorName: Self.initiator, targetName: Self.target)
                try #require(login.succeeded, "\(login.response.loginStatus)")
                let written = try client.command(
                    RawISCSIClient.write10(lba: 100, blocks: 2), write: [UInt8](repeating: 0xa5, count: 8192))
                #expect(written.status == 0, "\(written)")
                let read = try client.scsi(lun: 0, cdb: RawISCSIClient.read10(lba: 100, blocks: 2), expectedLength: 8192)
                #expect(read.status == 0, "\(read)")
                #expect(read.data.count == 8192, "\(read)")
                #expect(read.data.allSatisfy { $0 == 0 }, "\(read)")

                let socket = ferryd.directory.appendingPathComponent("control.sock").path
                let luns = try await ExternalTool.run(
                    ferryctl, ["luns", "--json", "--socket", socket], timeout: .seconds(30))
                #expect(luns.status == 0, "\(luns.output)")
                let json = try JSONSerialization.jsonObject(with: Data(luns.output.utf8)) as? [String: Any]
                let lun = try #require((json?["luns"] as? [[String: Any]])?.first, "\(luns.output)")
                #expect(lun["backend"] as? String == "null", "\(luns.output)")
                #expect(lun["device"] as? String == "null", "\(luns.output)")
                #expect(lun["sizeBytes"] as? Int == 64 << 30, "\(luns.output)")
                #expect(lun["path"] as? String == "", "\(luns.output)")
                #expect(lun["state"] as? String == "online", "\(luns.output)")
                let table = try await ExternalTool.run(ferryctl, ["luns", "--socket", socket], timeout: .seconds(30))
                #expect(table.output.contains("  0    null     null    online  64 GiB  4096   rw    -"), "\(table.output)")

                #expect(ferryd.logLines(containing: "null backend: reads return zeroes") == 1, "\(ferryd.log)")
                // No backing file: the directory holds only what the test and ferryd's state put there.
                let entries = try FileManager.default.contentsOfDirectory(atPath: ferryd.directory.path).sorted()
                #expect(entries == ["control.sock", "ferry.toml", "ferryd.log", "state"], "\(entries)")
            }
        }

        /// `Key:value` lines as libiscsi's utilities print them, values trimmed.
        private static func fields(_ output: String) -> [String: String] {
            var fields: [String: String] = [:]
            for line in output.split(separator: "\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let key = line[..<colon].trimmingCharacters(in: .whitespaces)
                if fields[key] == nil {
                    fields[key] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                }
            }
            return fields
        }
    }
}
