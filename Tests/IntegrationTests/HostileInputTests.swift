import Foundation
import RawISCSI
import Testing

extension AgainstFerryd {
    /// Malformed and hostile PDUs, each on a connection of its own while a healthy session on another connection
    /// keeps working: ferryd answers as RFC 7143 prescribes for ErrorRecoveryLevel 0, logs the event once, and
    /// neither crashes nor disturbs other sessions.
    @Suite struct HostileInputTests {
        static let target = "iqn.2026-11.dev.ferry:hostile"
        static let healthyInitiator = "iqn.2026-11.dev.ferry.test:healthy"
        static let attacker = "iqn.2026-11.dev.ferry.test:attacker"

        static func configuration(port: Int, directory: String) -> String {
            // Two sessions: the healthy one and the attacker's. A session the attack leaves behind makes the
            // login after it fail with 0x0302 (out of resources).
            ConfiguredFerryd.portal(port: port, directory: directory)
                + ConfiguredFerryd.target(target, directory: directory)
                + "\n[limits]\nmax_sessions = 2\n"
        }

        /// Runs `attack` against ferryd, then checks that ferryd still runs, the healthy session still answers a
        /// NOP-Out and a TEST UNIT READY, exactly one log line of the attacker's connection (the one `attack` returns,
        /// named by its port) holds every string of `logged`, and the attacker's session (if it got one) ended with
        /// its connection: another session can log in. The test waits for that line itself, not for a while: lines
        /// of other connections (ferryd's readiness probe, the healthy session) never count.
        private func withHealthySession(
            logged: [String], _ attack: (ConfiguredFerryd) throws -> RawISCSIClient
        ) async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                let healthy = try RawISCSIClient(port: ferryd.port)
                let login = try healthy.login(initiatorName: Self.healthyInitiator, targetName: Self.target)
                #expect(login.succeeded, "\(login.response.loginStatus)")
                _ = try healthy.ping()

                let attacker = try attack(ferryd)
                // StreamLogHandler writes `peer=[IPv4]127.0.0.1/127.0.0.1:PORT` followed by a space.
                let peer = "127.0.0.1:\(attacker.localPort) "
                func count() -> Int {
                    ferryd.log.split(separator: "\n").filter { line in
                        line.contains(peer) && logged.allSatisfy { line.contains($0) }
                    }.count
                }
                try await waitUntil("ferryd logs \(logged) for \(peer):\n\(ferryd.log.suffix(4000))") { count() > 0 }
                #expect(ferryd.isRunning)
                _ = try healthy.ping(data: Array("still there".utf8))
                #expect(try healthy.testUnitReady() == 0)
                #expect(count() == 1, "\(ferryd.log.suffix(4000))")
                // An attack that ferryd answers without closing (a data digest error) leaves the attacker's session
                // up: end it, and wait until every session the attacker logged in has closed, not for a while.
                attacker.shutdown()
                func attackerLines(_ event: String) -> Int {
                    ferryd.log.split(separator: "\n").filter {
                        $0.contains(event) && $0.contains("initiator=\(Self.attacker)")
                    }.count
                }
                try await waitUntil(
                    "every session of \(Self.attacker) closes: \(attackerLines("logged in")) logged in, "
                        + "\(attackerLines("session closed")) closed:\n\(ferryd.log.suffix(4000))"
                ) { attackerLines("session closed") >= attackerLines("logged in") }
                let next = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.attacker, targetName: Self.target)
                #expect(next.succeeded, "a login after the attack: \(next.response.loginStatus)")
            }
        }

        /// A fresh connection logged in to the target (its own session).
        private func attackerSession(
            _ ferryd: ConfiguredFerryd, headerDigest: Bool = false, dataDigest: Bool = false
        ) throws -> RawISCSIClient {
            let client = try RawISCSIClient(port: ferryd.port)
            let login = try client.login(
                initiatorName: Self.attacker, targetName: Self.target, headerDigest: headerDigest,
                dataDigest: dataDigest)
            guard login.succeeded, client.headerDigest == headerDigest, client.dataDigest == dataDigest else {
                throw IntegrationFailure("attacker login failed: \(login.response.loginStatus) \(login.keys)")
            }
            return client
        }

        /// A NOP-Out ping header with `dataSegmentLength` written in.
        private func nopOutHeader(_ client: RawISCSIClient, dataSegmentLength: Int = 0) -> [UInt8] {
            var header = client.header(
                opcode: RawOpcode.nopOut, immediate: true, flags: 0x80, initiatorTaskTag: client.nextTaskTag())
            RawISCSIClient.put(0xffff_ffff, into: &header, at: 20)
            header[5] = UInt8(truncatingIfNeeded: dataSegmentLength >> 16)
            header[6] = UInt8(truncatingIfNeeded: dataSegmentLength >> 8)
            header[7] = UInt8(truncatingIfNeeded: dataSegmentLength)
            return header
        }

        @Test func truncatedPDUThenClose() async throws {
            // A PDU cut short by the end of the stream is dropped; the connection's end is logged once.
            try await withHealthySession(logged: ["connection closed", "initiator=\(Self.attacker)"]) { ferryd in
                let client = try attackerSession(ferryd)
                try client.send(Array(nopOutHeader(client).prefix(20)))
                client.shutdown()
                #expect(try client.drainUntilClosed().isEmpty)
                return client
            }
        }

        @Test func truncatedLoginRequestThenClose() async throws {
            try await withHealthySession(logged: ["connection closed during login"]) { ferryd in
                let client = try RawISCSIClient(port: ferryd.port)
                try client.send([0x43, 0x87, 0, 0] + [UInt8](repeating: 0, count: 20))
                client.shutdown()
                #expect(try client.drainUntilClosed().isEmpty)
                return client
            }
        }

        @Test func aPDUOtherThanLoginDuringLoginIsRefused() async throws {
            try await withHealthySession(logged: ["non-login PDU during login"]) { ferryd in
                let client = try RawISCSIClient(port: ferryd.port)
                let first = try client.loginRequest(
                    currentStage: 0, nextStage: 1, transit: false,
                    keys: [("InitiatorName", Self.attacker), ("TargetName", Self.target), ("AuthMethod", "None")])
                #expect(first.loginStatus == (0, 0))
                try client.send(client.encode(header: nopOutHeader(client)))
                // > RFC 7143 §11.13.5: 0x020b Invalid request type during login; then the connection closes.
                let refusal = try client.expectPDU()
                #expect(refusal.opcode == RawOpcode.loginResponse)
                #expect(refusal.loginStatus == (2, 0x0b), "\(refusal.loginStatus)")
                #expect(try client.drainUntilClosed().isEmpty)
                return client
            }
        }

        @Test func dataSegmentOverMaxRecvDataSegmentLengthEndsTheConnection() async throws {
            try await withHealthySession(logged: ["dataSegmentTooLong"]) { ferryd in
                let client = try attackerSession(ferryd)
                let length = client.targetMaxRecvDataSegmentLength + 4
                try client.send(nopOutHeader(client, dataSegmentLength: length))
                try client.send([UInt8](repeating: 0xee, count: 4096))
                // > RFC 7143 §7.3 (protocol errors): the only recovery is to drop the connection; the target may
                // > first answer with a Reject, reason Protocol Error (0x04).
                let received = try client.drainUntilClosed()
                #expect(received.allSatisfy { $0.opcode == RawOpcode.reject && $0.rejectReason == 0x04 })
                return client
            }
        }

        @Test func unknownOpcodeIsRejectedAsCommandNotSupported() async throws {
            try await withHealthySession(logged: ["unknownOpcode"]) { ferryd in
                let client = try attackerSession(ferryd)
                var header = client.header(opcode: 0x0f, flags: 0x80, initiatorTaskTag: client.nextTaskTag())
                try client.send(client.encode(header: header))
                let reject = try client.expectPDU()
                // > RFC 7143 §11.17.1: 0x05 Command not supported.
                #expect(reject.opcode == RawOpcode.reject)
                #expect(reject.rejectReason == 0x05)
                #expect(Array(reject.data.prefix(48)) == header)
                // The connection goes on.
                _ = try client.ping()
                client.shutdown()
                return client
            }
        }

        @Test func headerDigestErrorEndsTheConnection() async throws {
            try await withHealthySession(logged: ["headerDigestError"]) { ferryd in
                let client = try attackerSession(ferryd, headerDigest: true)
                var bytes = client.encode(header: nopOutHeader(client))
                bytes[48] ^= 0xff
                try client.send(bytes)
                // > RFC 7143 §7.8: at ErrorRecoveryLevel 0 a header digest error ends the connection; nothing is
                // > answered, since no field of the header can be trusted.
                #expect(try client.drainUntilClosed().isEmpty)
                return client
            }
        }

        @Test func dataDigestErrorIsRejectedAndTheConnectionGoesOn() async throws {
            try await withHealthySession(logged: ["dataDigestError"]) { ferryd in
                let client = try attackerSession(ferryd, headerDigest: true, dataDigest: true)
                let header = nopOutHeader(client, dataSegmentLength: 8)
                var bytes = client.encode(header: header, data: Array("corrupt!".utf8))
                bytes[bytes.count - 1] ^= 0xff
                try client.send(bytes)
                // > RFC 7143 §7.8: a PDU other than Data-Out with a payload digest error is answered with a Reject,
                // > reason Data Digest Error (0x02), and discarded.
                let reject = try client.expectPDU()
                #expect(reject.opcode == RawOpcode.reject)
                #expect(reject.rejectReason == 0x02)
                _ = try client.ping(data: Array("intact".utf8))
                client.shutdown()
                return client
            }
        }
    }
}
