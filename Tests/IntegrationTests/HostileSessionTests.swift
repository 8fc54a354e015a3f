import Dispatch
import Foundation
import RawISCSI
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension AgainstFerryd {
    /// Sessions and logins used as weapons: discovery sessions that run commands or take every place, floods of
    /// logins that never finish, and an initiator that never reads what it asks for. A well-behaved initiator beside
    /// them still logs in and is served.
    @Suite struct HostileSessionTests {
        static let target = "iqn.2026-11.dev.ferry:hostile-session"
        static let initiator = "iqn.2026-11.dev.ferry.test:normal"
        static let attacker = "iqn.2026-11.dev.ferry.test:attacker"

        static func configuration(_ limits: String) -> (Int, String) -> String {
            { port, directory in
                ConfiguredFerryd.portal(port: port, directory: directory) + "[limits]\n\(limits)\n"
                    + ConfiguredFerryd.target(target, directory: directory)
            }
        }

        /// Waits until `condition` holds, at most `timeout`; whether it held.
        private static func eventually(within timeout: Duration = .seconds(10), _ condition: () -> Bool) async throws
            -> Bool
        {
            let deadline = ContinuousClock.now + timeout
            while !condition() {
                guard ContinuousClock.now < deadline else { return false }
                try await Task.sleep(for: .milliseconds(20))
            }
            return true
        }

        /// How many lines of ferryd's log were written for the connection of `client` and hold `text`.
        private static func lines(_ ferryd: ConfiguredFerryd, of client: RawISCSIClient, containing text: String) -> Int {
            let peer = "127.0.0.1:\(client.localPort) "
            return ferryd.log.split(separator: "\n").filter { $0.contains(peer) && $0.contains(text) }.count
        }

        /// Reads 4 KiB from LBA 0 and returns the status.
        private static func read(_ client: RawISCSIClient) throws -> UInt8? {
            let read = try client.sendCommand(RawISCSIClient.read10(lba: 0, blocks: 8), readLength: 4096)
            while let pdu = try client.receivePDU(within: .seconds(10)) {
                if pdu.initiatorTaskTag == read.initiatorTaskTag, let status = pdu.scsiStatus { return status }
            }
            return nil
        }

        // MARK: Sessions

        @Test func discoverySessionsAndOneInitiatorCannotTakeEveryPlace() async throws {
            let limits = "max_sessions = 4\nmax_discovery_sessions = 4\nmax_sessions_per_initiator = 2"
            try await ConfiguredFerryd.with(configuration: Self.configuration(limits)) { ferryd in
                // Discovery sessions beyond max_sessions: they have places of their own.
                var discoveries: [RawISCSIClient] = []
                for index in 0..<4 {
                    let client = try RawISCSIClient(port: ferryd.port)
                    let login = try client.login(
                        initiatorName: "iqn.2026-11.dev.ferry.test:discoverer\(index)", targetName: nil)
                    #expect(login.succeeded, "discovery login \(index): \(login.response.loginStatus)")
                    discoveries.append(client)
                }
                // > RFC 7143 §11.13.5: 0x0302 Out of resources.
                let fifth = try RawISCSIClient(port: ferryd.port)
                let refused = try fifth.login(initiatorName: "iqn.2026-11.dev.ferry.test:discoverer4", targetName: nil)
                #expect(refused.response.loginStatus == (3, 0x02), "\(refused.response.loginStatus)")
                #expect(try await Self.eventually { Self.lines(ferryd, of: fifth, containing: "max_discovery_sessions") == 1 })

                // A normal login still gets in beside them.
                let normal = try RawISCSIClient(port: ferryd.port)
                #expect(try normal.login(initiatorName: Self.initiator, targetName: Self.target).succeeded)
                #expect(try Self.read(normal) == 0)

                // One initiator name holds at most max_sessions_per_initiator sessions; others still get in.
                var attackers: [RawISCSIClient] = []
                for _ in 0..<2 {
                    let client = try RawISCSIClient(port: ferryd.port)
                    #expect(try client.login(initiatorName: Self.attacker, targetName: Self.target).succeeded)
                    attackers.append(client)
                }
                let third = try RawISCSIClient(port: ferryd.port)
                let tooMany = try third.login(initiatorName: Self.attacker, targetName: Self.target)
                #expect(tooMany.response.loginStatus == (3, 0x02), "\(tooMany.response.loginStatus)")
                #expect(try await Self.eventually {
                    Self.lines(ferryd, of: third, containing: "max_sessions_per_initiator") == 1
                        && Self.lines(ferryd, of: third, containing: "initiator=\(Self.attacker)") == 1
                })
                let other = try RawISCSIClient(port: ferryd.port)
                #expect(try other.login(initiatorName: "iqn.2026-11.dev.ferry.test:other", targetName: Self.target)
                    .succeeded)
                withExtendedLifetime((discoveries, attackers)) {}
            }
        }
    }
}
