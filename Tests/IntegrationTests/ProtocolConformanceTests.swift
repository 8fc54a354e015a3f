import Foundation
import RawISCSI
import Testing

extension AgainstFerryd {
    /// Malformed Login Requests that RFC 7143 answers with a Login Response of status class 2 (Initiator Error)
    /// before the connection closes: a raw client sends each one, reads the answer, then sees the close. Another
    /// session logs in afterwards, so ferryd went on.
    @Suite struct ProtocolConformanceTests {
        static let target = "iqn.2026-11.dev.ferry:conformance"
        static let initiator = "iqn.2026-11.dev.ferry.test:malformed"

        static func configuration(port: Int, directory: String) -> String {
            ConfiguredFerryd.portal(port: port, directory: directory)
                + ConfiguredFerryd.target(target, directory: directory)
        }

        /// Sends one Login Request with byte 1 = `flags` and `text` as its data segment, and expects a Login
        /// Response with status 0x0200, then the close; ferryd logs the failure with `reason` once.
        private func expectInitiatorError(flags: UInt8, text: [UInt8], reason: String) async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                let client = try RawISCSIClient(port: ferryd.port)
                var header = client.header(
                    opcode: RawOpcode.loginRequest, immediate: true, flags: flags, initiatorTaskTag: 0x5150)
                header.replaceSubrange(8..<14, with: client.isid)
                try client.send(client.encode(header: header, data: text))

                let answer = try client.expectPDU()
                #expect(answer.opcode == RawOpcode.loginResponse)
                #expect(answer.loginStatus == (2, 0), "\(answer.loginStatus)")
                #expect(answer.initiatorTaskTag == 0x5150)
                #expect(Array(answer.header[8..<14]) == client.isid)
                #expect(answer.flags & 0x80 == 0, "a refusing Login Response has T=0")
                #expect(try client.drainUntilClosed().isEmpty)

                try await ferryd.waitForLog(containing: reason)
                #expect(ferryd.logLines(containing: reason) == 1, "\(ferryd.log.suffix(4000))")
                #expect(ferryd.isRunning)
                let next = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.initiator, targetName: Self.target)
                #expect(next.succeeded, "a login after the malformed one: \(next.response.loginStatus)")
            }
        }

        private var identity: [(String, String)] {
            [("InitiatorName", Self.initiator), ("SessionType", "Normal"), ("TargetName", Self.target)]
        }

        // > RFC 7143 §11.12.3: CSG and NSG: 0 SecurityNegotiation, 1 LoginOperationalNegotiation, 3 Full Feature
        // > Phase; 2 is reserved. Before, ferryd closed the connection without a word.
        @Test(arguments: [(0x88 as UInt8, "CSG"), (0x82, "NSG")])
        func reservedLoginStageIsAnInitiatorError(_ flags: UInt8, _ field: String) async throws {
            try await expectInitiatorError(
                flags: flags, text: RawISCSIClient.text(identity + [("AuthMethod", "None")]),
                reason: "reserved login stage in \(field)")
        }

        // > RFC 7143 §6.1: Every key=value pair, including the last or only pair in a LTDS, MUST be followed by
        // > one null (0x00) delimiter. Before, ferryd accepted the text.
        @Test func lastKeyWithoutNULIsAnInitiatorError() async throws {
            let text = RawISCSIClient.text(identity) + Array("AuthMethod=None".utf8)
            try await expectInitiatorError(flags: 0x81, text: text, reason: "no NUL")
        }

        // > RFC 7143 §13.12: MaxRecvDataSegmentLength=<numerical-value-512-to-(2**24 - 1)>. Before, ferryd
        // > answered Reject and went on with the default 8192.
        @Test(arguments: ["0", "4294967296"])
        func maxRecvDataSegmentLengthOutOfRangeIsAnInitiatorError(_ value: String) async throws {
            try await expectInitiatorError(
                flags: 0x87, text: RawISCSIClient.text(identity + [("MaxRecvDataSegmentLength", value)]),
                reason: "MaxRecvDataSegmentLength=\(value)")
        }
    }
}
