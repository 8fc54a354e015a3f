import FerryConfig
import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A directory of its own for each test, removed afterwards.
private final class TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "ferry-config-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func write(_ name: String, _ contents: String, mode: Int = 0o600) throws -> String {
        let file = "\(path)/\(name)"
        try contents.write(toFile: file, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: file)
        return file
    }
}

private func parse(_ toml: String, in directory: TemporaryDirectory) throws(ConfigurationError) -> FerryConfiguration {
    try FerryConfiguration(
        toml: toml, fileName: "ferry.toml", baseDirectory: directory.path, defaultStateDirectory: "/var/lib/ferry")
}

/// The problems loading `toml` reports, as `line: message` strings.
private func problems(_ toml: String, in directory: TemporaryDirectory? = nil) throws -> [String] {
    let directory = try directory ?? TemporaryDirectory()
    do {
        _ = try parse(toml, in: directory)
        return []
    } catch {
        return error.problems.map { "\($0.line.map(String.init) ?? "-"): \($0.message)" }
    }
}

private let minimal = """
    [[portal]]
    address = "127.0.0.1:3260"

    [[target]]
    name = "iqn.2026-11.dev.ferry:disk0"

    [[target.lun]]
    lun = 0
    path = "disk0.img"
    size = "1G"

    """

@Suite struct ConfigurationLoaderTests {
    @Test func minimalFileTakesDefaults() throws {
        let directory = try TemporaryDirectory()
        let configuration = try parse(minimal, in: directory)
        #expect(configuration.portals == [Portal(host: "127.0.0.1", port: 3260, portalGroupTag: 1)])
        #expect(configuration.stateDirectory == "/var/lib/ferry")
        #expect(configuration.discoveryAuthentication == nil)
        #expect(configuration.limits == Limits())
        #expect(
            configuration.targets == [
                Target(
                    name: "iqn.2026-11.dev.ferry:disk0",
                    luns: [LogicalUnit(lun: 0, path: "\(directory.path)/disk0.img", size: 1 << 30)])
            ])
    }

    @Test func fullFile() throws {
        let directory = try TemporaryDirectory()
        let secretFile = try directory.write("target.secret", "0123456789abcdef\n")
        let toml = """
            state_directory = "/srv/ferry"

            [[portal]]
            address = "[::1]:3261"
            portal_group_tag = 7

            [[portal]]
            address = "0.0.0.0"

            [discovery.chap]
            user = "discover"
            secret = "discovery-secret"

            [[target]]
            name = "iqn.2026-11.dev.ferry:db"
            alias = "database disks"
            allowed_initiators = ["iqn.1993-08.org.debian:01:abcdef", "eui.02004567A425678D"]

            [target.chap]
            user = "db-initiator"
            secret_file = "target.secret"

            [target.mutual_chap]
            user = "db-target"
            secret = "another-secret-1"

            [[target.lun]]
            lun = 3
            path = "/dev/null"
            backend = "emulated"
            size = 8192
            block_size = 4096
            read_only = true
            vendor = "ACME"
            product = "FAST DISK"
            serial = "SN-0001"
            write_cache = false

            [[target]]
            name = "naa.6001405abcdef0123456789abcdef012"
            lun = [{ lun = 0, path = "naa.img", size = "64M" }]

            [limits]
            max_recv_data_segment_length = 65536
            max_burst_length = 262144
            first_burst_length = 65536
            max_outstanding_r2t = 1
            command_window = 32
            max_sessions = 4
            max_connections_per_session = 2
            login_timeout = 5
            nop_in_interval = 10
            nop_in_timeout = 3
            """
        let configuration = try parse(toml, in: directory)
        #expect(configuration.stateDirectory == "/srv/ferry")
        #expect(
            configuration.portals == [
                Portal(host: "::1", port: 3261, portalGroupTag: 7),
                Portal(host: "0.0.0.0", port: 3260, portalGroupTag: 1),
            ])
        #expect(configuration.portals.map(\.address) == ["[::1]:3261", "0.0.0.0:3260"])
        #expect(configuration.discoveryAuthentication == CHAPCredentials(user: "discover", secret: "discovery-secret"))
        try #require(configuration.targets.count == 2)
        let database = configuration.targets[0]
        #expect(database.alias == "database disks")
        #expect(database.allowedInitiators == ["iqn.1993-08.org.debian:01:abcdef", "eui.02004567A425678D"])
        #expect(
            database.chap
                == CHAPCredentials(
                    user: "db-initiator", secret: "0123456789abcdef", secretFile: "\(directory.path)/target.secret"))
        #expect(database.mutualCHAP == CHAPCredentials(user: "db-target", secret: "another-secret-1"))
        #expect(
            database.luns == [
                LogicalUnit(
                    lun: 3, path: "/dev/null", size: 8192, blockSize: 4096, readOnly: true, vendor: "ACME",
                    product: "FAST DISK", serial: "SN-0001", writeCache: false)
            ])
        #expect(secretFile.hasSuffix("target.secret"))
        #expect(
            configuration.targets[1].luns == [LogicalUnit(lun: 0, path: "\(directory.path)/naa.img", size: 64 << 20)])
        var limits = Limits()
        limits.maxRecvDataSegmentLength = 65536
        limits.maxBurstLength = 262_144
        limits.firstBurstLength = 65536
        limits.maxOutstandingR2T = 1
        limits.commandWindow = 32
        limits.maxSessions = 4
        limits.maxConnectionsPerSession = 2
        limits.loginTimeout = 5
        limits.nopInInterval = 10
        limits.nopInTimeout = 3
        #expect(configuration.limits == limits)
    }

    @Test func embeddedDefault() throws {
        let configuration = FerryConfiguration.embeddedDefault(stateDirectory: "/var/lib/ferry")
        #expect(configuration.portals == [Portal(host: "127.0.0.1", port: 3260, portalGroupTag: 1)])
        #expect(configuration.targets.map(\.name) == ["iqn.2026-11.dev.ferry:default"])
        let target = try #require(configuration.targets.first)
        #expect(
            target.luns == [
                LogicalUnit(lun: 0, path: "/var/lib/ferry/default.img", size: 1 << 30, blockSize: 512)
            ])
        #expect(target.chap == nil && target.allowedInitiators.isEmpty)
    }

    @Test func syntaxErrorHasItsLine() throws {
        let lines = try problems("[[portal]]\naddress = \"127.0.0.1\"\nportal_group_tag = = 1\n")
        #expect(lines.count == 1)
        #expect(lines.first?.hasPrefix("3: TOML syntax error") == true)
    }

    @Test func problemsAreFormattedWithFileAndLine() throws {
        let directory = try TemporaryDirectory()
        do {
            _ = try parse(minimal + "block_size = 1024\n", in: directory)
            Issue.record("expected an error")
        } catch {
            #expect(
                error.description
                    == #"ferry.toml:11: target "iqn.2026-11.dev.ferry:disk0" lun 0: block_size must be 512 or 4096"#)
        }
    }

    @Test func unknownKeysAreErrors() throws {
        #expect(
            try problems(minimal + "blocksize = 512\n") == [
                #"11: target "iqn.2026-11.dev.ferry:disk0" lun 0: unknown key "blocksize" (did you mean "block_size"?)"#
            ])
        #expect(try problems("colour = 1\n" + minimal) == [#"1: unknown key "colour""#])
        #expect(
            try problems(minimal + "[limits]\nmax_sesions = 3\n") == [
                #"12: limits: unknown key "max_sesions" (did you mean "max_sessions"?)"#
            ])
    }

    @Test func badNames() throws {
        func nameProblems(_ name: String) throws -> [String] {
            try problems(minimal.replacingOccurrences(of: "iqn.2026-11.dev.ferry:disk0", with: name))
        }
        #expect(try nameProblems("iqn.2026-11.dev.ferry:disk0").isEmpty)
        #expect(try nameProblems("eui.02004567A425678D").isEmpty)
        #expect(try nameProblems("naa.52004567BA64678D").isEmpty)
        #expect(try nameProblems("iqn.2026-11.dev.ferry").isEmpty)
        #expect(
            try nameProblems("iqn.2026-11.dev.Ferry:disk0") == [
                #"5: target name "iqn.2026-11.dev.Ferry:disk0" must be lowercase (RFC 3720 §3.2.6.2)"#
            ])
        #expect(try nameProblems("iqn.2026-13.dev.ferry").first?.contains("yyyy-mm") == true)
        #expect(try nameProblems("iqn.2026-11:disk").first?.contains("naming authority") == true)
        #expect(try nameProblems("iqn.2026-11.dev..ferry").first?.contains("reversed domain") == true)
        #expect(try nameProblems("iqn.2026-11.dev.ferry:").first?.contains("nothing follows") == true)
        #expect(try nameProblems("iqn.2026-11.dev.ferry:disk_0").first?.contains(#""_""#) == true)
        #expect(try nameProblems("eui.0200").first?.contains("16 hexadecimal digits") == true)
        #expect(try nameProblems("naa.12345").first?.contains("16 or 32") == true)
        #expect(try nameProblems("target0").first?.contains("must start with") == true)
        #expect(
            try nameProblems("iqn.2026-11.dev.ferry:" + String(repeating: "x", count: 220)).first?.contains("223")
                == true)
    }

    @Test func duplicates() throws {
        let toml = """
            [[portal]]
            address = "127.0.0.1:3260"
            [[portal]]
            address = "127.0.0.1:3260"
            portal_group_tag = 2

            [[target]]
            name = "iqn.2026-11.dev.ferry:a"
            [[target.lun]]
            lun = 0
            path = "a.img"
            size = "1M"
            [[target.lun]]
            lun = 0
            path = "b.img"
            size = "1M"

            [[target]]
            name = "iqn.2026-11.dev.ferry:a"
            [[target.lun]]
            lun = 1
            path = "a.img"
            size = "1M"
            """
        let directory = try TemporaryDirectory()
        #expect(
            try problems(toml, in: directory) == [
                "4: portal 127.0.0.1:3260 is listed twice",
                #"14: target "iqn.2026-11.dev.ferry:a": lun 0 is defined twice"#,
                #"19: target "iqn.2026-11.dev.ferry:a" is defined twice"#,
                #"22: target "iqn.2026-11.dev.ferry:a": lun 1: \#(directory.path)/a.img already backs "#
                    + #"target "iqn.2026-11.dev.ferry:a" lun 0"#,
            ])
    }

    @Test func logicalUnitChecks() throws {
        func lunProblems(_ lines: String) throws -> [String] {
            try problems(
                minimal.replacingOccurrences(of: "lun = 0\npath = \"disk0.img\"\nsize = \"1G\"\n", with: lines))
        }
        let prefix = #"target "iqn.2026-11.dev.ferry:disk0" lun 0: "#
        #expect(
            try lunProblems("lun = 16384\npath = \"x\"\nsize = 512\n") == [
                #"8: target "iqn.2026-11.dev.ferry:disk0": lun must be in 0...16383"#
            ])
        #expect(
            try lunProblems("lun = 0\npath = \"x\"\nsize = 1000\n") == [
                "10: \(prefix)size 1000 is not a multiple of block_size 512"
            ])
        #expect(
            try lunProblems("lun = 0\npath = \"x\"\nsize = \"3K\"\nblock_size = 4096\n") == [
                "10: \(prefix)size 3072 is not a multiple of block_size 4096"
            ])
        #expect(
            try lunProblems("lun = 0\npath = \"x\"\nsize = \"1X\"\n").last?.hasPrefix(
                "10: \(prefix)size \"1X\" must be") == true)
        #expect(
            try lunProblems("lun = 0\npath = \"x\"\nsize = \"2T\"\nbackend = \"tape\"\n") == [
                #"11: \#(prefix)backend "tape" is unknown; use "emulated", "sg", "rbd" or "null""#
            ])
        #expect(try lunProblems("lun = 0\nsize = \"1M\"\n") == ["7: \(prefix)path is missing"])
        #expect(
            try lunProblems("lun = 0\npath = \"missing.img\"\n").first?.contains("does not exist; give a size") == true)
        #expect(
            try lunProblems("lun = 0\npath = \"x\"\nsize = 512\nread_only = \"yes\"\n") == [
                "11: \(prefix)read_only must be true or false"
            ])
        #expect(
            try lunProblems("lun = 0\npath = \"x\"\nsize = 512\nvendor = \"TOO LONG VENDOR\"\n") == [
                "11: \(prefix)vendor must be 1 to 8 printable ASCII characters"
            ])
        #expect(
            try problems(
                minimal.replacingOccurrences(
                    of: "[[target.lun]]\nlun = 0\npath = \"disk0.img\"\nsize = \"1G\"\n", with: "")) == [
                    #"4: target "iqn.2026-11.dev.ferry:disk0": has no [[target.lun]]"#
                ])
    }

    @Test func portalChecks() throws {
        func portalProblems(_ address: String) throws -> [String] {
            try problems(minimal.replacingOccurrences(of: "127.0.0.1:3260", with: address))
        }
        #expect(try portalProblems("[::1]").isEmpty)
        #expect(try portalProblems("::1").first?.contains("without brackets") == true)
        #expect(try portalProblems("127.0.0.1:0").first?.contains("port outside") == true)
        #expect(try portalProblems("localhost:3260").first?.contains("IPv4 address") == true)
        #expect(
            try problems(
                "portal = 1\n"
                    + minimal.replacingOccurrences(of: "[[portal]]\naddress = \"127.0.0.1:3260\"\n", with: ""))
                == ["1: portal must be an array of tables: write [[portal]]"])
        #expect(
            try problems(minimal.replacingOccurrences(of: "[[portal]]\naddress = \"127.0.0.1:3260\"\n", with: ""))
                == [#"-: no [[portal]]: add one, e.g. [[portal]] address = "0.0.0.0:3260""#])
        #expect(
            try problems(minimal + "[[portal]]\naddress = \"127.0.0.2\"\nportal_group_tag = 0\n") == [
                "13: portal_group_tag must be in 1...65535"
            ])
    }

    @Test func chapChecks() throws {
        let directory = try TemporaryDirectory()
        let open = try directory.write("open.secret", "0123456789abcdef", mode: 0o640)
        let good = try directory.write("good.secret", "0123456789abcdef", mode: 0o400)
        let prefix = #"target "iqn.2026-11.dev.ferry:disk0": "#
        func chapProblems(_ section: String) throws -> [String] {
            try problems(minimal + section, in: directory)
        }
        #expect(try chapProblems("[target.chap]\nuser = \"u\"\nsecret_file = \"\(good)\"\n").isEmpty)
        #expect(
            try chapProblems("[target.chap]\nuser = \"u\"\nsecret_file = \"\(open)\"\n") == [
                "13: \(prefix)chap: secret_file \(open) is accessible by group or others (mode 640); chmod 600 it"
            ])
        #expect(
            try chapProblems("[target.chap]\nuser = \"u\"\nsecret = \"short\"\n") == [
                "13: \(prefix)chap: the secret must be at least 12 bytes (RFC 7143 §9.2.1)"
            ])
        #expect(try chapProblems("[target.chap]\nuser = \"u\"\n") == ["11: \(prefix)chap: give secret or secret_file"])
        #expect(
            try chapProblems("[target.chap]\nuser = \"u\"\nsecret = \"0123456789abcdef\"\nsecret_file = \"\(good)\"\n")
                == [
                    "14: \(prefix)chap: give secret or secret_file, not both"
                ])
        #expect(
            try chapProblems("[target.mutual_chap]\nuser = \"t\"\nsecret = \"0123456789abcdef\"\n") == [
                "11: \(prefix)mutual_chap needs [target.chap]: the initiator authenticates first"
            ])
        #expect(
            try chapProblems(
                "[target.chap]\nuser = \"u\"\nsecret = \"0123456789abcdef\"\n"
                    + "[target.mutual_chap]\nuser = \"t\"\nsecret_file = \"\(good)\"\n") == [
                    "16: \(prefix)mutual_chap: the same secret as \(prefix.dropLast(2)): chap (line 13);"
                        + " give each its own secret. RFC 7143 §9.2.1: \"Any CHAP secret used for initiator authentication MUST NOT be"
                        + " configured for authentication of any target\""
                ])
        #expect(
            try chapProblems("[discovery.chap]\nuser = \"d\"\nsecret = \"0123456789abcdef\"\ncolor = 1\n") == [
                #"14: discovery chap: unknown key "color""#
            ])
    }

    @Test func limitsChecks() throws {
        #expect(
            try problems(minimal + "[limits]\nmax_burst_length = 1024\nfirst_burst_length = 4096\n") == [
                "13: limits: first_burst_length must not exceed max_burst_length"
            ])
        #expect(
            try problems(minimal + "[limits]\nmax_recv_data_segment_length = 100\n") == [
                "12: limits: max_recv_data_segment_length must be in 512...16777215"
            ])
        #expect(
            try problems(minimal + "[limits]\nlogin_timeout = \"15\"\n") == [
                "12: limits: login_timeout must be an integer"
            ])
    }

    @Test func everyProblemIsReportedInFileOrder() throws {
        let toml = """
            [[portal]]
            address = "1.2.3"
            [[target]]
            name = "iqn.bad"
            [[target.lun]]
            lun = 0
            path = "x"
            size = 100
            block_size = 1000
            """
        let lines = try problems(toml).map { $0.prefix(while: { $0 != ":" }) }
        #expect(lines == ["2", "4", "8", "9"])
    }

    @Test func loadReadsFilesAndResolvesRelativePaths() throws {
        let directory = try TemporaryDirectory()
        let file = try directory.write("ferry.toml", minimal + "\n", mode: 0o644)
        let configuration = try FerryConfiguration.load(contentsOf: file, defaultStateDirectory: "/tmp/state")
        #expect(configuration.targets.first?.luns.first?.path == "\(directory.path)/disk0.img")
        #expect(configuration.stateDirectory == "/tmp/state")
        #expect(throws: ConfigurationError.self) {
            try FerryConfiguration.load(contentsOf: "\(directory.path)/missing.toml", defaultStateDirectory: "/")
        }
    }
}
