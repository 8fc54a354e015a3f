import Foundation
import RawISCSI
import Testing

#if canImport(Glibc)
    import Glibc
#endif

extension AgainstFerryd {
    /// SIGHUP applies a changed configuration without disturbing unaffected sessions; SIGTERM
    /// drains: initiators are asked to log out and ferryd exits once they have.
    @Suite struct ReloadAndDrainTests {
        static let keep = "iqn.2026-11.dev.ferry:keep"
        static let gone = "iqn.2026-11.dev.ferry:gone"
        static let added = "iqn.2026-11.dev.ferry:added"
        static let stays = "iqn.2026-11.dev.ferry.test:stays"
        static let denied = "iqn.2026-11.dev.ferry.test:denied"

        static func configuration(port: Int, directory: String, reloaded: Bool) -> String {
            let allowed = reloaded ? "[\"\(stays)\"]" : "[\"\(stays)\", \"\(denied)\"]"
            var text =
                ConfiguredFerryd.portal(port: port, directory: directory)
                + ConfiguredFerryd.target(keep, directory: directory, extra: "allowed_initiators = \(allowed)")
            if reloaded {
                text += """
                    [[target.lun]]
                    lun = 1
                    path = "\(directory)/keep1.img"
                    size = "8M"

                    """
                text += ConfiguredFerryd.target(added, directory: directory)
            } else {
                text += ConfiguredFerryd.target(gone, directory: directory)
            }
            return text
        }

        @Test func reloadAddsAndRemovesAndLeavesUnaffectedSessionsAlone() async throws {
            let iscsiLS = try ExternalTool.locate("iscsi-ls")
            try await ConfiguredFerryd.with(configuration: { port, directory in
                Self.configuration(port: port, directory: directory, reloaded: false)
            }) { ferryd in
                /// iscsi-ls -s: each target's portal line and LUN numbers, by target name.
                func listing() async throws -> [String: [String]] {
                    let result = try await ExternalTool.run(
                        iscsiLS, ["-s", "-i", Self.stays, "iscsi://127.0.0.1:\(ferryd.port)/"], timeout: .seconds(60))
                    #expect(result.status == 0, "\(result.output)")
                    var targets: [String: [String]] = [:]
                    var current = ""
                    for line in result.output.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) {
                        if line.hasPrefix("Target:") {
                            current = String(line.dropFirst(7).prefix { $0 != " " })
                            targets[current] = [String(line.drop { $0 != " " }.dropFirst())]
                        } else if line.hasPrefix("Lun:") {
                            targets[current, default: []].append(String(line.prefix(5)))
                        }
                    }
                    return targets
                }
                let port = ferryd.port
                let before = try await listing()
                #expect(
                    before == [
                        Self.gone: ["Portal:127.0.0.1:\(port),1", "Lun:0"],
                        Self.keep: ["Portal:127.0.0.1:\(port),1", "Lun:0"],
                    ], "\(before)")

                let unaffected = try RawISCSIClient(port: port)
                #expect(
                    try unaffected.login(initiatorName: Self.stays, targetName: Self.keep).response.loginStatus == (
                        0, 0
                    ))
                let deniedLater = try RawISCSIClient(port: port)
                #expect(
                    try deniedLater.login(initiatorName: Self.denied, targetName: Self.keep).response.loginStatus == (
                        0, 0
                    ))
                let removedLater = try RawISCSIClient(port: port)
                #expect(
                    try removedLater.login(initiatorName: Self.stays, targetName: Self.gone).response.loginStatus == (
                        0, 0
                    ))

                // A broken file is refused as a whole; everything stays as it was.
                try "[[target]]\nname = 5\n".write(to: ferryd.configurationFile, atomically: true, encoding: .utf8)
                ferryd.send(SIGHUP)
                try await Self.waitFor("reload refused", in: ferryd)
                #expect(ferryd.log.contains("still serving the previous configuration"))
                #expect(try unaffected.ping().opcode == RawOpcode.nopIn)
                #expect(try await listing() == before)

                try Self.configuration(port: port, directory: ferryd.directory.path, reloaded: true)
                    .write(to: ferryd.configurationFile, atomically: true, encoding: .utf8)
                ferryd.send(SIGHUP)
                try await Self.waitFor("reloaded", in: ferryd)
                #expect(ferryd.log.contains("added LUN 1 to \(Self.keep)"), "\(ferryd.log)")
                #expect(ferryd.log.contains("removed target \(Self.gone)"), "\(ferryd.log)")
                #expect(ferryd.log.contains("added target \(Self.added)"), "\(ferryd.log)")

                // Sessions of the removed target and of the initiator the ACL dropped are asked to
                // log out (RFC 7143 §11.9.1 AsyncEvent 1), within Parameter3 seconds.
                for client in [removedLater, deniedLater] {
                    let message = try client.expectPDU()
                    #expect(message.opcode == Self.asynchronousMessage)
                    #expect(message.header[36] == 1, "AsyncEvent \(message.header[36])")
                    #expect(UInt16(message.header[42]) << 8 | UInt16(message.header[43]) == 5)
                    try client.logout()
                }
                // The other session carries on: no Async Message came before the ping's answer.
                #expect(try unaffected.ping().opcode == RawOpcode.nopIn)
                // LUN 1 joined its target: the next command hears of it once (SPC-4 §6.33).
                let changed = try unaffected.scsi(lun: 0, cdb: .testUnitReady)
                #expect(changed.status == 2 && changed.senseCode == [0x06, 0x3f, 0x0e], "\(changed)")
                #expect(try unaffected.testUnitReady() == 0)

                let after = try await listing()
                #expect(
                    after == [
                        Self.added: ["Portal:127.0.0.1:\(port),1", "Lun:0"],
                        Self.keep: ["Portal:127.0.0.1:\(port),1", "Lun:0", "Lun:1"],
                    ], "\(after)")
                let refused = try RawISCSIClient(port: port)
                #expect(
                    try refused.login(initiatorName: Self.denied, targetName: Self.keep).response.loginStatus == (2, 2))
            }
        }

        @Test func stopAsksInitiatorsToLogOutAndExitsOnceTheyHave() async throws {
            try await ConfiguredFerryd.with(configuration: { port, directory in
                ConfiguredFerryd.portal(port: port, directory: directory)
                    + ConfiguredFerryd.target(Self.keep, directory: directory)
            }) { ferryd in
                let client = try RawISCSIClient(port: ferryd.port)
                #expect(
                    try client.login(initiatorName: Self.stays, targetName: Self.keep).response.loginStatus == (0, 0))
                #expect(try client.testUnitReady() == 0)
                let start = ContinuousClock.now
                ferryd.send(SIGTERM)
                let message = try client.expectPDU()
                #expect(message.opcode == Self.asynchronousMessage && message.header[36] == 1)
                try client.logout()
                while ferryd.isRunning && ContinuousClock.now - start < .seconds(10) {
                    try await Task.sleep(for: .milliseconds(50))
                }
                #expect(!ferryd.isRunning, "ferryd still runs after its initiator logged out")
                #expect(ContinuousClock.now - start < .seconds(5))
                #expect(ferryd.log.contains("asking initiators to log out"))
                #expect(!ferryd.log.contains("closing sessions that did not log out"), "\(ferryd.log)")
            }
        }

        static let asynchronousMessage: UInt8 = 0x32

        static func waitFor(_ text: String, in ferryd: ConfiguredFerryd) async throws {
            try await ferryd.waitForLog(containing: text, within: .seconds(20))
        }
    }
}

extension RawISCSIClient {
    /// Logout Request "close the session" (RFC 7143 §11.14), then the Logout Response and the
    /// target closing the connection.
    func logout() throws {
        let bytes = header(opcode: 0x06, immediate: true, flags: 0x80, initiatorTaskTag: nextTaskTag())
        try send(encode(header: bytes))
        let response = try expectPDU()
        guard response.opcode == 0x26, response.header[2] == 0 else {
            throw IntegrationFailure(
                "Logout answered with opcode 0x\(String(response.opcode, radix: 16)), "
                    + "response \(response.header[2])")
        }
        _ = try drainUntilClosed()
    }
}
