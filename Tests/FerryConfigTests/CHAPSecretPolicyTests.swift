import FerryConfig
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// RFC 7143 §9.2.1 and file hygiene: a CHAP secret authenticates one party in one place, and a
/// configuration file that holds secrets itself is readable by its owner only.
@Suite struct CHAPSecretPolicyTests {
    let directory = NSTemporaryDirectory() + "ferry-secrets-\(UUID().uuidString)"

    init() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// Writes `contents` to `name` in the test's directory with `mode`; returns the path.
    func write(_ name: String, _ contents: String, mode: mode_t = 0o600) throws -> String {
        let file = "\(directory)/\(name)"
        try contents.write(toFile: file, atomically: false, encoding: .utf8)
        chmod(file, mode)
        return file
    }

    /// The problems loading the file `toml` (written 0600 unless `mode` says otherwise) reports, as `line: message`.
    func problems(_ toml: String, mode: mode_t = 0o600) throws -> [String] {
        let file = try write("ferry.toml", toml, mode: mode)
        do {
            _ = try FerryConfiguration.load(contentsOf: file, defaultStateDirectory: directory)
            return []
        } catch {
            return error.problems.map { "\($0.line.map(String.init) ?? "-"): \($0.message)" }
        }
    }

    /// A `[[target]]` named `iqn.2026-11.dev.ferry:NAME` with one LUN and the CHAP tables in `chap`.
    func target(_ name: String, _ chap: String) -> String {
        """

        [[target]]
        name = "iqn.2026-11.dev.ferry:\(name)"
        \(chap)
        [[target.lun]]
        lun = 0
        path = "\(name).img"
        size = "1M"

        """
    }

    let portal = "[[portal]]\naddress = \"127.0.0.1:3260\"\n"
    static let quote =
        #"RFC 7143 §9.2.1: "Any CHAP secret used for initiator authentication MUST NOT be configured"#
        + #" for authentication of any target""#

    @Test func aTargetSecretReflectedFromAnotherTargetsMutualCHAPIsRefused() throws {
        // Target a's initiator secret is target b's target secret: the finding of issue 10 (item 8).
        let found = try problems(
            portal
                + target("a", "[target.chap]\nuser = \"alice\"\nsecret = \"shared-secret-0001\"")
                + target("b", """
                    [target.chap]
                    user = \"bob\"
                    secret = \"bob-initiator-secret\"
                    [target.mutual_chap]
                    user = \"b\"
                    secret = \"shared-secret-0001\"
                    """))
        #expect(
            found == [
                #"21: target "iqn.2026-11.dev.ferry:b": mutual_chap: the same secret as target "iqn.2026-11.dev.ferry:a": chap (line 8); give each its own secret. "#
                    + Self.quote
            ])
    }

    @Test func everyRoleAndEveryTargetNeedsASecretOfItsOwn() throws {
        let discovery = "[discovery.chap]\nuser = \"d\"\nsecret = \"discovery-secret-1\"\n"
        // The discovery secret again as a target's initiator secret.
        #expect(
            try problems(portal + discovery + target("a", "[target.chap]\nuser = \"a\"\nsecret = \"discovery-secret-1\""))
                == [
                    #"11: target "iqn.2026-11.dev.ferry:a": chap: the same secret as discovery chap (line 5); give each its own secret. "#
                        + Self.quote
                ])
        // One initiator secret for two targets.
        #expect(
            try problems(
                portal + target("a", "[target.chap]\nuser = \"a\"\nsecret = \"one-secret-for-all\"")
                    + target("b", "[target.chap]\nuser = \"b\"\nsecret = \"one-secret-for-all\"")).count == 1)
        // chap and mutual_chap of one target.
        #expect(
            try problems(
                portal
                    + target(
                        "a",
                        "[target.chap]\nuser = \"a\"\nsecret = \"same-both-ways-1\"\n"
                            + "[target.mutual_chap]\nuser = \"t\"\nsecret = \"same-both-ways-1\"")) == [
                    #"11: target "iqn.2026-11.dev.ferry:a": mutual_chap: the same secret as target "iqn.2026-11.dev.ferry:a": chap (line 8); give each its own secret. "#
                        + Self.quote
                ])
        // Distinct secrets everywhere are fine.
        #expect(
            try problems(
                portal + discovery + target("a", "[target.chap]\nuser = \"a\"\nsecret = \"a-initiator-secret\"\n"
                    + "[target.mutual_chap]\nuser = \"t\"\nsecret = \"a-target-secret-1\"")
                    + target("b", "[target.chap]\nuser = \"b\"\nsecret = \"b-initiator-secret\"")).isEmpty)
    }

    @Test func secretsFromSecretFilesCountToo() throws {
        let one = try write("one.secret", "file-secret-00001\n")
        let two = try write("two.secret", "file-secret-00001")
        let found = try problems(
            portal + target("a", "[target.chap]\nuser = \"a\"\nsecret_file = \"\(one)\"")
                + target("b", "[target.chap]\nuser = \"b\"\nsecret = \"b-initiator-secret\"\n"
                    + "[target.mutual_chap]\nuser = \"t\"\nsecret_file = \"\(two)\""))
        #expect(
            found == [
                #"21: target "iqn.2026-11.dev.ferry:b": mutual_chap: the same secret as target "iqn.2026-11.dev.ferry:a": chap (line 8); give each its own secret. "#
                    + Self.quote
            ])
        #expect(!found.joined().contains("file-secret-00001"), "a problem never shows the secret")
    }

    @Test func aGroupOrWorldReadableFileWithAnInlineSecretIsRefused() throws {
        let inline = portal + target("a", "[target.chap]\nuser = \"a\"\nsecret = \"inline-secret-0001\"")
        let file = "\(directory)/ferry.toml"
        for mode: mode_t in [0o644, 0o640, 0o604] {
            #expect(
                try problems(inline, mode: mode) == [
                    #"8: target "iqn.2026-11.dev.ferry:a": chap: secret is inline in \#(file), which is accessible by group or others (mode \#(String(mode, radix: 8))); chmod 600 it, or move the secret to a secret_file"#
                ])
        }
        #expect(try problems(inline, mode: 0o600).isEmpty)
        #expect(try problems(inline, mode: 0o400).isEmpty)
        // Secrets in secret files and no secrets at all leave the file's mode free.
        let secretFile = try write("a.secret", "file-secret-00002")
        #expect(
            try problems(
                portal + target("a", "[target.chap]\nuser = \"a\"\nsecret_file = \"\(secretFile)\""), mode: 0o644
            ).isEmpty)
        #expect(try problems(portal + target("a", ""), mode: 0o644).isEmpty)
    }
}
