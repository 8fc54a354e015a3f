import FerryConfig
import Foundation
import Testing

/// `sanitize_rate` of `[[target.lun]]`: the bandwidth limit of SANITIZE OVERWRITE.
@Suite struct SanitizeRateConfigurationTests {
    private static let header = """
        [[portal]]
        address = "127.0.0.1:3260"

        [[target]]
        name = "iqn.2026-11.dev.ferry:disk0"

        [[target.lun]]
        lun = 0

        """

    private let prefix = #"target "iqn.2026-11.dev.ferry:disk0" lun 0: "#

    /// The LUN `lines` describe, or the problems loading it reports.
    private func load(_ lines: String) -> Result<LogicalUnit, ConfigurationError> {
        do throws(ConfigurationError) {
            let configuration = try FerryConfiguration(
                toml: Self.header + lines, fileName: "ferry.toml", baseDirectory: NSTemporaryDirectory(),
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

    @Test func unlimitedByDefault() throws {
        #expect(try load("path = \"disk.img\"\nsize = \"1M\"\n").get().sanitizeRate == nil)
    }

    @Test func bytesPerSecondWithUnits() throws {
        let lun = "path = \"disk.img\"\nsize = \"1M\"\n"
        #expect(try load(lun + "sanitize_rate = \"64M\"\n").get().sanitizeRate == 64 << 20)
        #expect(try load(lun + "sanitize_rate = \"2g\"\n").get().sanitizeRate == 2 << 30)
        #expect(try load(lun + "sanitize_rate = 1000000\n").get().sanitizeRate == 1_000_000)
    }

    @Test func invalidRatesAreErrors() {
        let lun = "path = \"disk.img\"\nsize = \"1M\"\n"
        #expect(problems(lun + "sanitize_rate = 0\n") == [prefix + "sanitize_rate must be positive"])
        #expect(
            problems(lun + "sanitize_rate = \"fast\"\n") == [
                prefix + #"sanitize_rate "fast" must be a positive number with an optional unit K, M, G or T"#
            ])
        #expect(
            problems("path = \"/dev/null\"\nbackend = \"sg\"\nsanitize_rate = \"64M\"\n") == [
                prefix + #"sanitize_rate applies only to backends "emulated" and "rbd" (this LUN's is "sg")"#
            ])
    }
}
