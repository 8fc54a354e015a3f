import FerryConfig
import Foundation
import Testing

/// `backend = "null"` in `[[target.lun]]` (issue 12): a LUN with a size and no path, for benchmarking.
@Suite struct NullBackendConfigurationTests {
    private static let header = """
        [[portal]]
        address = "127.0.0.1:3260"

        [[target]]
        name = "iqn.2026-11.dev.ferry:bench"

        [[target.lun]]
        lun = 4

        """

    private static let prefix = #"target "iqn.2026-11.dev.ferry:bench" lun 4: "#

    private func load(_ lines: String) throws(ConfigurationError) -> FerryConfiguration {
        try ConfigurationText.load(Self.header + lines, baseDirectory: "/nonexistent")
    }

    private func problems(_ lines: String) -> [String] {
        ConfigurationText.problems(Self.header + lines, baseDirectory: "/nonexistent")
    }

    @Test func nullWithASizeLoadsWithoutAPath() throws {
        let configuration = try load(
            """
            backend = "null"
            size = "16G"
            block_size = 4096
            vendor = "BENCH"
            product = "NULL DISK"
            serial = "NULL-4"
            write_cache = false
            read_only = true

            """)
        let lun = try #require(configuration.targets.first?.luns.first)
        #expect(lun.lun == 4)
        #expect(lun.backend == .null)
        #expect(lun.path == "")
        #expect(lun.size == 16 << 30)
        #expect(lun.blockSize == 4096)
        #expect(lun.vendor == "BENCH")
        #expect(lun.product == "NULL DISK")
        #expect(lun.serial == "NULL-4")
        #expect(lun.writeCache == false)
        #expect(lun.readOnly == true)
    }

    @Test func nullWithoutASizeIsAnErrorNamingTheLUN() {
        #expect(
            problems("backend = \"null\"\n") == [
                Self.prefix + #"size is missing: backend "null" needs the LUN's capacity, e.g. size = "16G""#
            ])
        #expect(problems("backend = \"null\"\nsize = 0\n") == [Self.prefix + "size must be positive"])
    }

    @Test func nullWithAPathIsAnError() {
        #expect(
            problems("backend = \"null\"\nsize = \"1G\"\npath = \"/srv/ferry/bench.img\"\n") == [
                Self.prefix + #"path does not apply to backend "null", which stores nothing"#
                    + " (reads return zeroes, writes are discarded); remove it"
            ])
    }

    @Test func keysOfOtherBackendsAreErrors() {
        #expect(
            problems("backend = \"null\"\nsize = \"1G\"\ncommand_timeout = \"10s\"\nsanitize_rate = \"64M\"\n") == [
                Self.prefix + #"command_timeout applies only to backend "sg" (this LUN's is "null")"#,
                Self.prefix + #"sanitize_rate applies only to backends "emulated" and "rbd" (this LUN's is "null")"#,
            ])
    }

    @Test func sizeMustBeAMultipleOfTheBlockSize() {
        #expect(
            problems("backend = \"null\"\nsize = 1000\n") == [
                Self.prefix + "size 1000 is not a multiple of block_size 512"
            ])
    }

    @Test func unknownBackendNamesNull() {
        #expect(
            problems("backend = \"nul\"\npath = \"/srv/ferry/x.img\"\nsize = \"1M\"\n") == [
                Self.prefix + #"backend "nul" is unknown; use "emulated", "sg", "rbd" or "null""#
            ])
    }

    /// Two null LUNs share no path: both load, in one target and across targets.
    @Test func severalNullLUNsDoNotClash() throws {
        let configuration = try load(
            """
            backend = "null"
            size = "1G"

            [[target.lun]]
            lun = 5
            backend = "null"
            size = "2G"

            [[target]]
            name = "iqn.2026-11.dev.ferry:bench2"

            [[target.lun]]
            lun = 0
            backend = "null"
            size = "1G"

            """)
        #expect(configuration.targets.map { $0.luns.map(\.backend) } == [[.null, .null], [.null]])
    }

    /// `ferryctl save-config` writes a null LUN without a path, and it reads back the same.
    @Test func savedConfigurationReadsBack() throws {
        let configuration = try load("backend = \"null\"\nsize = \"1G\"\nblock_size = 4096\nvendor = \"BENCH\"\n")
        let text = try ConfigurationText.savedReadingBack(configuration)
        #expect(!text.contains("path"), "\(text)")
        #expect(text.contains("backend = \"null\""), "\(text)")
    }
}
