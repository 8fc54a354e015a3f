import Foundation
import RawISCSI
import Testing

#if canImport(Glibc)
    import Glibc
#endif

extension AgainstFerryd {
    /// CHAP secrets, inline or from a secret file, never reach ferryd's log (at trace level, through
    /// logins that succeed and fail), ferryctl's tables and JSON, or a saved configuration that read
    /// them from a file.
    @Suite struct SecretHygieneTests {
        static let target = "iqn.2026-11.dev.ferry:secrets"
        static let initiator = "iqn.2026-11.dev.ferry.test:secrets"
        static let inlineSecret = "inline-secret-7391"
        static let fileSecret = "file-secret-target-5520"

        @Test func secretsStayOutOfLogsAndFerryctl() async throws {
            let ferryctl = try FerrydProcess.locateFerryctl()
            try await ConfiguredFerryd.with(
                configuration: { port, directory in
                    let secretFile = "\(directory)/target.secret"
                    FileManager.default.createFile(
                        atPath: secretFile, contents: Data("\(Self.fileSecret)\n".utf8), attributes: [.posixPermissions: 0o600])
                    return ConfiguredFerryd.portal(port: port, directory: directory)
                        + "[control]\nsocket = \"\(directory)/control.sock\"\n"
                        + ConfiguredFerryd.target(
                            Self.target, directory: directory,
                            extra: """
                                [target.chap]
                                user = "initiator"
                                secret = "\(Self.inlineSecret)"
                                [target.mutual_chap]
                                user = "target"
                                secret_file = "\(secretFile)"
                                """)
                }, logLevel: "trace"
            ) { ferryd in
                for algorithm in [5, 7] as [UInt8] {
                    let client = try RawISCSIClient(port: ferryd.port)
                    let chap = RawCHAP(
                        algorithm: algorithm, user: "initiator", secret: Self.inlineSecret,
                        target: (user: "target", secret: Self.fileSecret))
                    let login = try client.login(initiatorName: Self.initiator, targetName: Self.target, chap: chap)
                    #expect(login.succeeded && login.targetVerified == true, "\(login.response.loginStatus)")
                    #expect(try client.read10(lba: 0, blocks: 1).count == 512)
                    try client.logout()
                }
                let wrong = try RawISCSIClient(port: ferryd.port)
                let refused = try wrong.login(
                    initiatorName: Self.initiator, targetName: Self.target,
                    chap: RawCHAP(algorithm: 5, user: "initiator", secret: "wrong-secret-000000"))
                #expect(refused.response.loginStatus == (2, 1), "authentication failure")

                let socket = ferryd.directory.appendingPathComponent("control.sock").path
                var outputs: [String] = []
                for arguments in [
                    ["targets"], ["targets", "--json"], ["sessions", "--json"], ["luns", "--json"],
                    ["task-management", "--json"], ["save-config"],
                ] {
                    let result = try await ExternalTool.run(ferryctl, arguments + ["--socket", socket], timeout: .seconds(30))
                    #expect(result.status == 0, "ferryctl \(arguments): \(result.output)")
                    outputs.append(result.output)
                }
                let saved = try String(contentsOf: ferryd.configurationFile, encoding: .utf8)
                #expect(saved.contains("secret_file = \"\(ferryd.directory.path)/target.secret\""), "\(saved)")
                #expect(!saved.contains(Self.fileSecret), "save-config wrote the secret of a secret file:\n\(saved)")

                let log = ferryd.log
                #expect(log.contains("CHAP"), "the trace log covers the CHAP exchanges")
                for secret in [Self.inlineSecret, Self.fileSecret] {
                    let hex = secret.utf8.map { String(format: "%02x", $0) }.joined()
                    #expect(!log.contains(secret) && !log.lowercased().contains(hex), "ferryd logged a CHAP secret")
                    for output in outputs { #expect(!output.contains(secret), "ferryctl showed a CHAP secret:\n\(output)") }
                }
            }
        }
    }
}
