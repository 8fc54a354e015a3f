import FerryConfig
import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `FerryConfiguration.toml` and `save(to:)`: what `ferryctl save-config` writes reads back to the same configuration.
@Suite struct ConfigurationWriterTests {
    let directory = NSTemporaryDirectory() + "ferry-writer-\(UUID().uuidString)"

    init() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// A configuration that sets every key away from its default, with a secret file and strings that need escaping.
    func everything() throws -> FerryConfiguration {
        let secretFile = "\(directory)/initiator.secret"
        try "initiator-secret-1\n".write(toFile: secretFile, atomically: false, encoding: .utf8)
        chmod(secretFile, 0o600)
        var limits = Limits()
        limits.maxRecvDataSegmentLength = 65_536
        limits.maxBurstLength = 524_288
        limits.firstBurstLength = 131_072
        limits.maxOutstandingR2T = 4
        limits.commandWindow = 64
        limits.maxSessions = 16
        limits.maxConnectionsPerSession = 2
        limits.loginTimeout = 10
        limits.nopInInterval = 20
        limits.nopInTimeout = 25
        let emulated = LogicalUnit(
            lun: 3, path: "\(directory)/with \"quotes\" and \\ backslash.img", backend: .emulated, size: 8 << 20,
            blockSize: 4096, readOnly: true, vendor: "ACME", product: "DISK \"Q\"", serial: "S-1 \"2\"",
            writeCache: false, sanitizeRate: 64 << 20)
        let passthrough = LogicalUnit(
            lun: 7, path: "naa.5000c500a1b2c3d4", backend: .sg, commandTimeout: 2_500, abortDeadline: 1_500,
            resetDevice: false)
        for file in ["ceph.conf", "gateway.keyring"] {
            try "".write(toFile: "\(directory)/\(file)", atomically: false, encoding: .utf8)
        }
        let image = LogicalUnit.RBDImage(
            pool: "iscsi", image: "lun \"9\"", namespace: "gateways", cephConf: "\(directory)/ceph.conf",
            clientID: "ferry", keyring: "\(directory)/gateway.keyring")
        let rbd = LogicalUnit(lun: 9, path: image.spec, backend: .rbd, writeCache: true, rbd: image)
        Self.expectEveryPropertyAwayFromItsDefault(in: [emulated, passthrough, rbd])
        var configuration = FerryConfiguration(
            portals: [Portal(host: "127.0.0.1", port: 3261, portalGroupTag: 2), Portal(host: "::1", port: 3260)],
            targets: [
                Target(
                    name: "iqn.2026-11.dev.ferry:a", alias: "database disks ☃",
                    luns: [
                        LogicalUnit(lun: 0, path: "\(directory)/a0.img", size: 1 << 20),
                        emulated,
                        passthrough,
                        rbd,
                    ],
                    allowedInitiators: ["iqn.1993-08.org.debian:01:db1", "iqn.1993-08.org.debian:01:db2"],
                    chap: CHAPCredentials(user: "db", secret: "initiator-secret-1", secretFile: secretFile),
                    mutualCHAP: CHAPCredentials(user: "target", secret: "inline \"secret\" 2")),
                Target(
                    name: "iqn.2026-11.dev.ferry:b", luns: [LogicalUnit(lun: 0, path: "\(directory)/b.img", size: 4096)]
                ),
            ],
            stateDirectory: "\(directory)/state",
            discoveryAuthentication: CHAPCredentials(user: "discovery", secret: "discovery-secret"), limits: limits)
        configuration.controlSocket = "\(directory)/control.sock"
        configuration.metricsAddress = ListenAddress(host: "::1", port: 9380)
        return configuration
    }

    @Test func everyKeyReadsBackToTheSameConfiguration() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let configuration = try everything()
        let text = configuration.toml(defaultStateDirectory: "/var/lib/ferry")
        let loaded = try FerryConfiguration(
            toml: text, fileName: "saved.toml", baseDirectory: "/nonexistent", defaultStateDirectory: "/var/lib/ferry")
        #expect(loaded == configuration, "\(text)")
        #expect(!text.contains("initiator-secret-1"), "a secret from a file stays in its file:\n\(text)")
        #expect(text.contains("secret_file = \"\(directory)/initiator.secret\""))
    }

    @Test func defaultsAreLeftOut() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let configuration = FerryConfiguration(
            portals: [Portal(host: "0.0.0.0")],
            targets: [Target(name: "iqn.2026-11.dev.ferry:x", luns: [LogicalUnit(lun: 0, path: "/x.img", size: 512)])],
            stateDirectory: "/var/lib/ferry")
        #expect(
            configuration.toml(defaultStateDirectory: "/var/lib/ferry") == """
                [[portal]]
                address = "0.0.0.0:3260"

                [[target]]
                name = "iqn.2026-11.dev.ferry:x"

                [[target.lun]]
                lun = 0
                path = "/x.img"
                backend = "emulated"
                size = 512

                """)
    }

    @Test func saveReplacesTheFileAtomicallyAndKeepsItsMode() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var configuration = try everything()
        // Secrets from files only: a file with inline secrets is narrowed to 0600 (the next test).
        configuration.discoveryAuthentication = nil
        configuration.targets[0].mutualCHAP = nil
        #expect(!configuration.holdsInlineSecrets)
        let file = "\(directory)/ferry.toml"
        try "# a comment that saving drops\n".write(toFile: file, atomically: false, encoding: .utf8)
        chmod(file, 0o640)
        try configuration.save(to: file, defaultStateDirectory: "/var/lib/ferry")
        var status = stat()
        #expect(stat(file, &status) == 0 && status.st_mode & 0o7777 == 0o640, "the mode of the file it replaces")
        #expect(try FerryConfiguration.load(contentsOf: file, defaultStateDirectory: "/var/lib/ferry") == configuration)
        let left = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".tmp") }
        #expect(left.isEmpty, "no temporary file stays behind: \(left)")

        let fresh = "\(directory)/new.toml"
        try configuration.save(to: fresh)
        #expect(
            stat(fresh, &status) == 0 && status.st_mode & 0o7777 == 0o600, "a new file is 0600: it may hold secrets")

        #expect(throws: FerryConfiguration.SaveError.self) {
            try configuration.save(to: "\(directory)/missing/ferry.toml")
        }
    }

    @Test func saveNarrowsAGroupReadableFileToOwnerOnlyWhenItHoldsInlineSecrets() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let configuration = try everything()
        #expect(configuration.holdsInlineSecrets)
        let file = "\(directory)/ferry.toml"
        try "# no secrets yet\n".write(toFile: file, atomically: false, encoding: .utf8)
        chmod(file, 0o644)
        try configuration.save(to: file, defaultStateDirectory: "/var/lib/ferry")
        var status = stat()
        #expect(stat(file, &status) == 0 && status.st_mode & 0o7777 == 0o600, "inline secrets: owner only")
        #expect(try FerryConfiguration.load(contentsOf: file, defaultStateDirectory: "/var/lib/ferry") == configuration)
    }

    /// Fails when a stored property of `LogicalUnit` is at the value `LogicalUnit(lun: 0, path: "")` gives it in every
    /// one of `units`: a key added to the model must be added to the writer and to this test.
    static func expectEveryPropertyAwayFromItsDefault(in units: [LogicalUnit]) {
        let defaults = Mirror(reflecting: LogicalUnit(lun: 0, path: "")).children.map {
            ($0.label ?? "", "\($0.value)")
        }
        for (index, (label, value)) in defaults.enumerated() where label != "lun" && label != "path" {
            #expect(
                units.contains { "\(Array(Mirror(reflecting: $0).children)[index].value)" != value },
                "LogicalUnit.\(label) is at its default in every test LUN: does ConfigurationWriter write it?")
        }
    }
}
