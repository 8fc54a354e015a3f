import Foundation
import RawISCSI
import Testing

extension AgainstFerryd {
    /// Login security against a real ferryd: CHAP with every algorithm, one-way and mutual, from Ferry's own raw
    /// client and from libiscsi, and access lists in login and SendTargets.
    @Suite struct LoginSecurityTests {
        static let chapTarget = "iqn.2026-11.dev.ferry:chap"
        static let mutualTarget = "iqn.2026-11.dev.ferry:mutual"
        static let openTarget = "iqn.2026-11.dev.ferry:open"
        static let initiator = "iqn.2026-11.dev.ferry.test:initiator"
        static let user = "ferry-user"
        static let secret = "initiator-secret-1"
        /// The mutual target's own initiator secret: ferryd refuses one secret in two places (RFC 7143 §9.2.1).
        static let mutualSecret = "initiator-secret-2"
        static let targetUser = "ferry-target"
        static let targetSecret = "target-secret-22"

        static func configuration(port: Int, directory: String) -> String {
            ConfiguredFerryd.portal(port: port, directory: directory)
                + ConfiguredFerryd.target(
                    chapTarget, directory: directory,
                    extra: """
                        [target.chap]
                        user = "\(user)"
                        secret = "\(secret)"
                        """)
                + ConfiguredFerryd.target(
                    mutualTarget, directory: directory,
                    extra: """
                        [target.chap]
                        user = "\(user)"
                        secret = "\(mutualSecret)"
                        [target.mutual_chap]
                        user = "\(targetUser)"
                        secret = "\(targetSecret)"
                        """)
                + ConfiguredFerryd.target(openTarget, directory: directory)
        }

        @Test(arguments: [5, 6, 7, 8] as [UInt8])
        func chapWithTheRightSecretLogsIn(algorithm: UInt8) async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                let client = try RawISCSIClient(port: ferryd.port)
                let chap = RawCHAP(algorithm: algorithm, user: Self.user, secret: Self.secret)
                let login = try client.login(initiatorName: Self.initiator, targetName: Self.chapTarget, chap: chap)
                #expect(login.succeeded, "CHAP_A=\(algorithm): \(login.response.loginStatus) \(login.keys)")
                #expect(login.value("CHAP_A") == String(algorithm))
                #expect(try client.testUnitReady() == 0)
            }
        }

        @Test(arguments: [5, 6, 7, 8] as [UInt8])
        func chapWithAWrongSecretOrNoneIsAnAuthenticationFailure(algorithm: UInt8) async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                let wrong = RawCHAP(algorithm: algorithm, user: Self.user, secret: "not-the-secret-at-all")
                let refused = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.initiator, targetName: Self.chapTarget, chap: wrong)
                // > 0x0201 Authentication failure: the initiator could not be successfully authenticated.
                #expect(refused.response.loginStatus == (2, 0x01), "\(refused.response.loginStatus)")

                let wrongUser = RawCHAP(algorithm: algorithm, user: "someone-else", secret: Self.secret)
                let refusedUser = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.initiator, targetName: Self.chapTarget, chap: wrongUser)
                #expect(refusedUser.response.loginStatus == (2, 0x01), "\(refusedUser.response.loginStatus)")
            }
        }

        @Test func loginWithoutCHAPToACHAPTargetIsAnAuthenticationFailure() async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                let none = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.initiator, targetName: Self.chapTarget, authMethod: "None")
                #expect(none.response.loginStatus == (2, 0x01), "AuthMethod=None: \(none.response.loginStatus)")

                // Straight to LoginOperationalNegotiation, skipping SecurityNegotiation.
                let skipped = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.initiator, targetName: Self.chapTarget)
                #expect(skipped.response.loginStatus == (2, 0x01), "no security stage: \(skipped.response.loginStatus)")

                // The open target still takes logins without CHAP.
                let open = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.initiator, targetName: Self.openTarget, authMethod: "None")
                #expect(open.succeeded, "\(open.response.loginStatus)")
            }
        }

        @Test(arguments: [5, 6, 7, 8] as [UInt8])
        func mutualCHAPTheTargetsAnswerVerifies(algorithm: UInt8) async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                let chap = RawCHAP(
                    algorithm: algorithm, user: Self.user, secret: Self.mutualSecret,
                    target: (Self.targetUser, Self.targetSecret))
                let client = try RawISCSIClient(port: ferryd.port)
                let login = try client.login(initiatorName: Self.initiator, targetName: Self.mutualTarget, chap: chap)
                #expect(login.targetVerified == true, "\(login.keys)")
                #expect(login.succeeded, "\(login.response.loginStatus)")
                #expect(try client.testUnitReady() == 0)

                // An initiator that expects another target secret sees the target's proof fail.
                let impostor = RawCHAP(
                    algorithm: algorithm, user: Self.user, secret: Self.mutualSecret,
                    target: (Self.targetUser, "some-other-secret"))
                let detected = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.initiator, targetName: Self.mutualTarget, chap: impostor)
                #expect(detected.targetVerified == false)
            }
        }

        @Test func mutualCHAPToATargetWithoutMutualCredentialsIsRefused() async throws {
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                let chap = RawCHAP(
                    algorithm: 7, user: Self.user, secret: Self.secret, target: (Self.targetUser, Self.targetSecret))
                let login = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.initiator, targetName: Self.chapTarget, chap: chap)
                #expect(login.response.loginStatus == (2, 0x01), "\(login.response.loginStatus)")
            }
        }

        @Test func libiscsiCHAPOneWayAndMutual() async throws {
            let tool = try ExternalTool.locate("iscsi-inq")
            try await ConfiguredFerryd.with(configuration: Self.configuration) { ferryd in
                let base = "127.0.0.1:\(ferryd.port)"
                let good = try await ExternalTool.run(
                    tool, ["iscsi://\(Self.user)%\(Self.secret)@\(base)/\(Self.chapTarget)/0"], timeout: .seconds(60))
                #expect(good.status == 0, "\(good.output)")
                #expect(good.output.contains("Vendor:FERRY"), "\(good.output)")

                let bad = try await ExternalTool.run(
                    tool, ["iscsi://\(Self.user)%wrong-secret-here@\(base)/\(Self.chapTarget)/0"], timeout: .seconds(60)
                )
                #expect(bad.status != 0, "\(bad.output)")

                // libiscsi takes the target's credentials as URL arguments (target_user, target_password).
                let mutualURL =
                    "iscsi://\(Self.user)%\(Self.mutualSecret)@\(base)/\(Self.mutualTarget)/0"
                    + "?target_user=\(Self.targetUser)&target_password=\(Self.targetSecret)"
                let mutual = try await ExternalTool.run(tool, [mutualURL], timeout: .seconds(60))
                #expect(mutual.status == 0, "\(mutual.output)")

                let impostorURL =
                    "iscsi://\(Self.user)%\(Self.mutualSecret)@\(base)/\(Self.mutualTarget)/0"
                    + "?target_user=\(Self.targetUser)&target_password=not-the-target-secret"
                let impostor = try await ExternalTool.run(tool, [impostorURL], timeout: .seconds(60))
                #expect(impostor.status != 0, "\(impostor.output)")
                #expect(ferryd.isRunning)
            }
        }

        // MARK: Discovery

        static func discoveryCHAPConfiguration(port: Int, directory: String) -> String {
            ConfiguredFerryd.portal(port: port, directory: directory)
                + "\n[discovery.chap]\nuser = \"\(user)\"\nsecret = \"\(secret)\"\n"
                + ConfiguredFerryd.target(openTarget, directory: directory)
        }

        @Test func discoveryCHAPIsRequiredWhenConfigured() async throws {
            try await ConfiguredFerryd.with(configuration: Self.discoveryCHAPConfiguration) { ferryd in
                let none = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.initiator, targetName: nil, authMethod: "None")
                #expect(none.response.loginStatus == (2, 0x01), "\(none.response.loginStatus)")
                let wrong = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.initiator, targetName: nil,
                    chap: RawCHAP(algorithm: 7, user: Self.user, secret: "not-the-secret-at-all"))
                #expect(wrong.response.loginStatus == (2, 0x01), "\(wrong.response.loginStatus)")

                let client = try RawISCSIClient(port: ferryd.port)
                let login = try client.login(
                    initiatorName: Self.initiator, targetName: nil,
                    chap: RawCHAP(algorithm: 7, user: Self.user, secret: Self.secret))
                #expect(login.succeeded, "\(login.response.loginStatus)")
                #expect(try client.sendTargets().contains { $0.key == "TargetName" && $0.value == Self.openTarget })

                // Discovery CHAP guards discovery only: the open target still takes logins without it.
                let normal = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.initiator, targetName: Self.openTarget, authMethod: "None")
                #expect(normal.succeeded, "\(normal.response.loginStatus)")

                let tool = try ExternalTool.locate("iscsi-ls")
                let listed = try await ExternalTool.run(
                    tool, ["-s", "iscsi://\(Self.user)%\(Self.secret)@127.0.0.1:\(ferryd.port)/"],
                    timeout: .seconds(60))
                #expect(listed.status == 0, "\(listed.output)")
                #expect(listed.output.contains("Target:\(Self.openTarget)"), "\(listed.output)")
            }
        }

        // MARK: Access lists

        static let restricted = "iqn.2026-11.dev.ferry:restricted"
        static let allowed = "iqn.2026-11.dev.ferry.test:allowed"
        static let stranger = "iqn.2026-11.dev.ferry.test:stranger"

        static func aclConfiguration(port: Int, directory: String) -> String {
            ConfiguredFerryd.portal(port: port, directory: directory)
                + ConfiguredFerryd.target(
                    restricted, directory: directory, extra: "allowed_initiators = [\"\(allowed)\"]")
                + ConfiguredFerryd.target(openTarget, directory: directory)
        }

        @Test func anInitiatorOffTheListIsNotAuthorizedAndDoesNotSeeTheTarget() async throws {
            try await ConfiguredFerryd.with(configuration: Self.aclConfiguration) { ferryd in
                let refused = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: Self.stranger, targetName: Self.restricted, authMethod: "None")
                // > 0x0202 Authorization failure: the initiator is not allowed access to the given target.
                #expect(refused.response.loginStatus == (2, 0x02), "\(refused.response.loginStatus)")

                let strangerDiscovery = try RawISCSIClient(port: ferryd.port)
                #expect(try strangerDiscovery.login(initiatorName: Self.stranger, targetName: nil).succeeded)
                let seenByStranger = try strangerDiscovery.sendTargets().filter { $0.key == "TargetName" }.map(\.value)
                #expect(seenByStranger == [Self.openTarget])

                let listed = try RawISCSIClient(port: ferryd.port)
                #expect(try listed.login(initiatorName: Self.allowed, targetName: nil).succeeded)
                let seenByListed = try listed.sendTargets().filter { $0.key == "TargetName" }.map(\.value)
                #expect(seenByListed.sorted() == [Self.openTarget, Self.restricted])

                let admitted = try RawISCSIClient(port: ferryd.port)
                let login = try admitted.login(
                    initiatorName: Self.allowed, targetName: Self.restricted, authMethod: "None")
                #expect(login.succeeded, "\(login.response.loginStatus)")
                #expect(try admitted.testUnitReady() == 0)
            }
        }

        @Test func initiatorNamesCompareCaseInsensitivelyInLoginAndSendTargetsAlike() async throws {
            try await ConfiguredFerryd.with(configuration: Self.aclConfiguration) { ferryd in
                let shouting = Self.allowed.uppercased()
                let discovery = try RawISCSIClient(port: ferryd.port)
                #expect(try discovery.login(initiatorName: shouting, targetName: nil).succeeded)
                let seen = try discovery.sendTargets().filter { $0.key == "TargetName" }.map(\.value)
                let login = try RawISCSIClient(port: ferryd.port).login(
                    initiatorName: shouting, targetName: Self.restricted, authMethod: "None")
                // Whatever the answer, SendTargets must not advertise a target that login then refuses.
                #expect(seen.contains(Self.restricted) == login.succeeded, "\(seen) \(login.response.loginStatus)")
            }
        }
    }
}
