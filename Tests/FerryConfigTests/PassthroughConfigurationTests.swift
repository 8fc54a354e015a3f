import FerryConfig
import Foundation
import Testing

/// The passthrough parts of `[[target.lun]]`: `backend = "sg"`, its automatic default and
/// `command_timeout`.
@Suite struct PassthroughConfigurationTests {
    private static let header = """
        [[portal]]
        address = "127.0.0.1:3260"

        [[target]]
        name = "iqn.2026-11.dev.ferry:disk0"

        [[target.lun]]
        lun = 0

        """

    /// The LUN `lines` describe, or the problems loading it reports.
    private func load(_ lines: String, directory: String = NSTemporaryDirectory()) -> Result<
        LogicalUnit, ConfigurationError
    > {
        do throws(ConfigurationError) {
            let configuration = try FerryConfiguration(
                toml: Self.header + lines, fileName: "ferry.toml", baseDirectory: directory,
                defaultStateDirectory: "/var/lib/ferry")
            guard let lun = configuration.targets.first?.luns.first else {
                // The header declares one target with LUN 0: a loader that loses it fails the test, not the process.
                let problem = "the loaded configuration has no LUN: \(configuration.targets)"
                Issue.record("\(problem)")
                return .failure(
                    ConfigurationError(problems: [.init(file: "ferry.toml", line: nil, message: problem)]))
            }
            return .success(lun)
        } catch {
            return .failure(error)
        }
    }

    private func problems(_ lines: String) -> [String] {
        guard case .failure(let error) = load(lines) else { return [] }
        return error.problems.map(\.message)
    }

    private let prefix = #"target "iqn.2026-11.dev.ferry:disk0" lun 0: "#

    @Test func explicitSGBackendWithTimeouts() throws {
        let lun = try load("path = \"/dev/null\"\nbackend = \"sg\"\ncommand_timeout = \"15s\"\n").get()
        #expect(lun.backend == .sg)
        #expect(lun.path == "/dev/null")
        #expect(lun.commandTimeout == 15_000)
        #expect(
            try load("path = \"/dev/null\"\nbackend = \"sg\"\ncommand_timeout = 2500\n").get().commandTimeout == 2_500)
        #expect(
            try load("path = \"/dev/null\"\nbackend = \"sg\"\ncommand_timeout = \"1500ms\"\n").get().commandTimeout
                == 1_500)
        #expect(try load("path = \"/dev/null\"\nbackend = \"sg\"\n").get().commandTimeout == 20_000)
    }

    @Test func commandTimeoutChecks() {
        #expect(
            problems("path = \"/dev/null\"\nbackend = \"sg\"\ncommand_timeout = \"soon\"\n") == [
                prefix + #"command_timeout must be milliseconds, or a string such as "20s" or "500ms""#
            ])
        #expect(
            problems("path = \"/dev/null\"\nbackend = \"sg\"\ncommand_timeout = 999\n") == [
                prefix + "command_timeout must be in 1000...600000 milliseconds"
            ])
    }

    @Test func keysOfTheOtherBackendAreErrors() {
        #expect(
            problems("path = \"/dev/null\"\nbackend = \"sg\"\nsize = \"1G\"\nvendor = \"ACME\"\n") == [
                prefix + #"size applies only to backends "emulated" and "null" (this LUN's is "sg")"#,
                prefix + #"vendor applies only to backends "emulated", "null" and "rbd" (this LUN's is "sg")"#,
            ])
        #expect(
            problems("path = \"/dev/null\"\nbackend = \"emulated\"\ncommand_timeout = \"10s\"\n") == [
                prefix + #"command_timeout applies only to backend "sg" (this LUN's is "emulated")"#
            ])
    }

    @Test func sgPathMustExistUnlessItIsAWorldWideName() throws {
        #expect(
            problems("path = \"/dev/sg-missing\"\nbackend = \"sg\"\n") == [prefix + "/dev/sg-missing does not exist"])
        let lun = try load("path = \"wwn-0x5000c500a1b2c3d4\"\n").get()
        #expect(lun.backend == .sg)
        #expect(lun.path == "wwn-0x5000c500a1b2c3d4")
    }

    @Test func automaticBackendForFiles() throws {
        let lun = try load("path = \"automatic.img\"\nsize = \"1M\"\n").get()
        #expect(lun.backend == .emulated)
        // A character device that is not an sg node stays emulated.
        #expect(LogicalUnit.Backend.classify("/dev/null") == .otherCharacterDevice)
    }

    @Test func automaticChoice() {
        #expect(LogicalUnit.Backend.automatic(for: .scsiGeneric) == .sg)
        #expect(LogicalUnit.Backend.automatic(for: .scsiDisk) == .sg)
        #expect(LogicalUnit.Backend.automatic(for: .worldWideName) == .sg)
        #expect(LogicalUnit.Backend.automatic(for: .file) == .emulated)
        #expect(LogicalUnit.Backend.automatic(for: .otherBlockDevice) == .emulated)
        #expect(LogicalUnit.Backend.automatic(for: .otherCharacterDevice) == .emulated)
    }

    @Test func worldWideNames() {
        #expect(LogicalUnit.Backend.isWorldWideName("naa.5000c500a1b2c3d4"))
        #expect(LogicalUnit.Backend.isWorldWideName("0x5000C500A1B2C3D4"))
        #expect(LogicalUnit.Backend.isWorldWideName("wwn-0x5000c500a1b2c3d4"))
        #expect(LogicalUnit.Backend.isWorldWideName("/dev/disk/by-id/wwn-0x5000c500a1b2c3d4") == false)
        #expect(LogicalUnit.Backend.isWorldWideName("disk0.img") == false)
        #expect(LogicalUnit.Backend.isWorldWideName("naa.img") == false)
        #expect(LogicalUnit.Backend.isWorldWideName("0xdeadbeef.img") == false)
    }

    @Test func classifyReadsSysfsForDevices() throws {
        // /dev/null is a character device; a fake sysfs that lists it as scsi_generic makes it one.
        let sysfs = NSTemporaryDirectory() + "ferry-sysfs-\(UUID().uuidString)"
        try FileManager.default.createDirectory(
            atPath: sysfs + "/class/scsi_generic/null", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: sysfs) }
        #expect(LogicalUnit.Backend.classify("/dev/null", sysfs: sysfs) == .scsiGeneric)
        let file = sysfs + "/plain"
        FileManager.default.createFile(atPath: file, contents: Data())
        #expect(LogicalUnit.Backend.classify(file, sysfs: sysfs) == .file)
    }
}
