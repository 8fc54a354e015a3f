import FerryConfig
import Foundation
import Testing

/// `backend = "rbd"` in `[[target.lun]]` (issue 13): a LUN on a Ceph RBD image, named by pool and image.
@Suite struct RBDConfigurationTests {
    private static let header = """
        [[portal]]
        address = "127.0.0.1:3260"

        [[target]]
        name = "iqn.2026-12.dev.ferry:ceph"

        [[target.lun]]
        lun = 2

        """

    private static let prefix = #"target "iqn.2026-12.dev.ferry:ceph" lun 2: "#

    /// A directory with a ceph.conf and a keyring, for the keys that must name existing files.
    private static let directory: String = {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ferry-rbd-config-\(getpid())")
        try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        for name in ["ceph.conf", "gateway.keyring"] {
            FileManager.default.createFile(atPath: directory.appendingPathComponent(name).path, contents: Data())
        }
        return directory.path
    }()

    private func load(_ lines: String) throws(ConfigurationError) -> FerryConfiguration {
        try ConfigurationText.load(Self.header + lines, baseDirectory: Self.directory)
    }

    private func problems(_ lines: String) -> [String] {
        ConfigurationText.problems(Self.header + lines, baseDirectory: Self.directory)
    }

    @Test func everyKeyLoads() throws {
        let configuration = try load(
            """
            backend = "rbd"
            pool = "iscsi"
            namespace = "gateways"
            image = "lun2"
            ceph_conf = "ceph.conf"
            client_id = "ferry"
            keyring = "gateway.keyring"
            block_size = 4096
            product = "RBD DISK"
            write_cache = true
            sanitize_rate = "100M"

            """)
        let lun = try #require(configuration.targets.first?.luns.first)
        #expect(lun.backend == .rbd)
        #expect(lun.path == "iscsi/gateways/lun2")
        #expect(
            lun.rbd
                == LogicalUnit.RBDImage(
                    pool: "iscsi", image: "lun2", namespace: "gateways", cephConf: "\(Self.directory)/ceph.conf",
                    clientID: "ferry", keyring: "\(Self.directory)/gateway.keyring"))
        #expect(lun.size == nil)
        #expect(lun.blockSize == 4096)
        #expect(lun.product == "RBD DISK")
        #expect(lun.writeCache == true)
        #expect(lun.sanitizeRate == 100 << 20)
    }

    @Test func defaultsAreTheAdminClientAndEtcCephConf() throws {
        let configuration = try load("backend = \"rbd\"\npool = \"rbd\"\nimage = \"lun2\"\n")
        let lun = try #require(configuration.targets.first?.luns.first)
        #expect(lun.path == "rbd/lun2")
        #expect(lun.rbd == LogicalUnit.RBDImage(pool: "rbd", image: "lun2"))
        #expect(lun.rbd?.cephConf == "/etc/ceph/ceph.conf")
        #expect(lun.rbd?.clientID == "admin")
        #expect(lun.rbd?.keyring == nil)
        // No client cache: nothing volatile to report.
        #expect(lun.writeCache == false)
    }

    @Test func poolAndImageAreRequiredNamesWithoutSlashes() {
        #expect(
            problems("backend = \"rbd\"\n") == [Self.prefix + "pool is missing", Self.prefix + "image is missing"])
        #expect(
            problems("backend = \"rbd\"\npool = \"rbd/x\"\nimage = \"\"\n") == [
                Self.prefix + #"pool must be a name without "/""#, Self.prefix + #"image must be a name without "/""#,
            ])
    }

    @Test func keysOfOtherBackendsAreErrors() {
        #expect(
            problems("backend = \"rbd\"\npool = \"rbd\"\nimage = \"a\"\npath = \"/srv/a.img\"\nsize = \"1G\"\n") == [
                Self.prefix + #"path does not apply to backend "rbd"; name the image with pool and image"#,
                Self.prefix + #"size applies only to backends "emulated" and "null" (this LUN's is "rbd")"#,
            ])
        #expect(
            problems("path = \"/srv/a.img\"\nsize = \"1G\"\npool = \"rbd\"\n") == [
                Self.prefix + #"pool applies only to backend "rbd" (this LUN's is "emulated")"#
            ])
    }

    @Test func missingFilesAndAPrefixedClientIDAreErrors() {
        #expect(
            problems(
                """
                backend = "rbd"
                pool = "rbd"
                image = "a"
                ceph_conf = "/nonexistent/ceph.conf"
                keyring = "missing.keyring"
                client_id = "client.admin"

                """) == [
                    Self.prefix + "ceph_conf /nonexistent/ceph.conf does not exist",
                    Self.prefix + "keyring \(Self.directory)/missing.keyring does not exist",
                    Self.prefix + #"client_id is the id alone, e.g. "admin" for client.admin"#,
                ])
    }

    /// One image behind two LUNs would be two logical units writing one medium.
    @Test func anImageBacksOneLUN() {
        #expect(
            problems(
                """
                backend = "rbd"
                pool = "rbd"
                image = "a"

                [[target.lun]]
                lun = 3
                backend = "rbd"
                pool = "rbd"
                image = "a"

                """) == [#"target "iqn.2026-12.dev.ferry:ceph": lun 3: rbd/a already backs target "iqn.2026-12.dev.ferry:ceph" lun 2"#])
    }

    /// `[alua] port_groups`: every gateway's portal group tag, this gateway's (1, from the header's portal) among them.
    @Test func gatewayPortGroups() throws {
        let image = "backend = \"rbd\"\npool = \"rbd\"\nimage = \"a\"\n"
        let configuration = try load(image + "\n[alua]\nport_groups = [2, 1, 3]\n")
        #expect(configuration.gateways == Gateways(portGroups: [2, 1, 3], takeoverAfter: 10_000))
        #expect(try load(image).gateways == nil)
        #expect(try ConfigurationText.savedReadingBack(configuration).contains("[alua]\nport_groups = [2, 1, 3]\n"))
        let quicker = try load(image + "\n[alua]\nport_groups = [1, 2]\ntakeover_after = \"5s\"\n")
        #expect(quicker.gateways == Gateways(portGroups: [1, 2], takeoverAfter: 5_000))
        #expect(try ConfigurationText.savedReadingBack(quicker).contains("takeover_after = 5000\n"))
        #expect(
            problems(image + "\n[alua]\nport_groups = [1]\ntakeover_after = \"1s\"\n") == [
                "alua: takeover_after must be in 2000...600000 milliseconds"
            ])
        let wrong = #"alua: port_groups must be a list of portal group tags, 1 to 65535"#
        for value in ["[]", "[1, 0]", "[1, \"2\"]", "1", "[65536, 1]"] {
            #expect(problems(image + "\n[alua]\nport_groups = \(value)\n") == [wrong], "\(value)")
        }
        #expect(
            problems(image + "\n[alua]\nport_groups = [2, 3]\n") == [
                "alua: port_groups must list this gateway's portal group tag 1 (portal 127.0.0.1:3260)"
            ])
        #expect(
            problems(image + "\n[alua]\nport_groups = [1, 2, 2]\n") == [
                "alua: port_groups lists a portal group tag twice"
            ])
        #expect(problems(image + "\n[alua]\n") == ["alua: port_groups is missing"])
    }

    /// `ferryctl save-config` writes an RBD LUN's image keys and no path, and it reads back the same.
    @Test func savedConfigurationReadsBack() throws {
        let configuration = try load(
            "backend = \"rbd\"\npool = \"rbd\"\nnamespace = \"n\"\nimage = \"a\"\nclient_id = \"ferry\"\nkeyring = \"gateway.keyring\"\n"
                + "write_cache = true\n")
        let text = try ConfigurationText.savedReadingBack(configuration)
        #expect(!text.contains("path"), "\(text)")
        #expect(text.contains("backend = \"rbd\""), "\(text)")
    }
}
