import Foundation
import Testing

extension AgainstFerryd {
    /// libiscsi's utilities against a ferryd of the embedded default's shape: the target
    /// `iqn.2026-11.dev.ferry:default`, LUN 0 a 1 GiB sparse file of 512-byte blocks (on a free port
    /// rather than 3260, so that a ferryd already running on this machine does not matter).
    @Suite struct EmbeddedDefaultTests {
        static let targetName = "iqn.2026-11.dev.ferry:default"

        @Test func discoveryShowsTheTargetAndItsDisk() async throws {
            let tool = try ExternalTool.locate("iscsi-ls")
            try await FerrydProcess.with(targetName: Self.targetName, lunSize: "1G") { ferryd in
                let result = try await ExternalTool.run(
                    tool, ["-s", "iscsi://127.0.0.1:\(ferryd.port)/"], timeout: .seconds(60))
                #expect(result.status == 0, "iscsi-ls failed:\n\(result.output)")
                let lines = result.output.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
                #expect(
                    lines.first == "Target:\(Self.targetName) Portal:127.0.0.1:\(ferryd.port),1", "\(result.output)")
                let luns = lines.filter { $0.hasPrefix("Lun:") }
                #expect(luns.count == 1, "\(result.output)")
                #expect(luns.first?.hasPrefix("Lun:0") == true, "\(result.output)")
                #expect(luns.first?.contains("Type:DIRECT_ACCESS (Size:") == true, "\(result.output)")
            }
        }

        @Test func inquiryAndIdentifiers() async throws {
            let tool = try ExternalTool.locate("iscsi-inq")
            try await FerrydProcess.with(targetName: Self.targetName, lunSize: "1G") { ferryd in
                let standard = try await ExternalTool.run(tool, [ferryd.url()], timeout: .seconds(60))
                #expect(standard.status == 0, "iscsi-inq failed:\n\(standard.output)")
                let fields = Self.fields(standard.output)
                #expect(fields["Peripheral Qualifier"] == "CONNECTED", "\(standard.output)")
                #expect(fields["Peripheral Device Type"] == "DIRECT_ACCESS", "\(standard.output)")
                #expect(fields["Vendor"] == "FERRY", "\(standard.output)")
                #expect(fields["Product"] == "EMULATED DISK", "\(standard.output)")

                let pages = try await ExternalTool.run(
                    tool, ["-e", "1", "-c", "0", ferryd.url()], timeout: .seconds(60))
                #expect(pages.output.contains("Page:0x80 UNIT_SERIAL_NUMBER"), "\(pages.output)")
                #expect(pages.output.contains("Page:0x83 DEVICE_IDENTIFICATION"), "\(pages.output)")

                let serial = try await ExternalTool.run(
                    tool, ["-e", "1", "-c", "128", ferryd.url()], timeout: .seconds(60))
                let serialNumber = Self.fields(serial.output)["Unit Serial Number"] ?? ""
                #expect(
                    serialNumber.trimmingCharacters(in: CharacterSet(charactersIn: "[] ")).count > 0, "\(serial.output)"
                )

                let identification = try await ExternalTool.run(
                    tool, ["-e", "1", "-c", "131", ferryd.url()], timeout: .seconds(60))
                #expect(identification.status == 0, "\(identification.output)")
                #expect(identification.output.contains("Association:(0) LOGICAL_UNIT"), "\(identification.output)")
                #expect(identification.output.contains("Designator Type:(3) NAA"), "\(identification.output)")
            }
        }

        @Test func capacityIsOneGibibyteOf512ByteBlocks() async throws {
            let tool = try ExternalTool.locate("iscsi-readcapacity16")
            try await FerrydProcess.with(targetName: Self.targetName, lunSize: "1G") { ferryd in
                let result = try await ExternalTool.run(tool, [ferryd.url()], timeout: .seconds(60))
                #expect(result.status == 0, "iscsi-readcapacity16 failed:\n\(result.output)")
                let fields = Self.fields(result.output)
                #expect(fields["RETURNED LOGICAL BLOCK ADDRESS"] == "2097151", "\(result.output)")
                #expect(fields["LOGICAL BLOCK LENGTH IN BYTES"] == "512", "\(result.output)")
                #expect(fields["Total size"] == "1073741824", "\(result.output)")
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
