import FerryConfig
import Foundation
import Testing

/// The emulated backend opens its file with O_NOFOLLOW; the loader says so before ferryd starts.
@Suite struct LUNPathLinkTests {
    @Test func aSymbolicLinkAsAnEmulatedLUNPathIsRefused() throws {
        let directory = NSTemporaryDirectory() + "ferry-links-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = FileManager.default.createFile(atPath: "\(directory)/real.img", contents: Data(count: 4096))
        try FileManager.default.createSymbolicLink(atPath: "\(directory)/link.img", withDestinationPath: "real.img")
        let toml = """
            [[portal]]
            address = "127.0.0.1:3260"
            [[target]]
            name = "iqn.2026-11.dev.ferry:links"
            [[target.lun]]
            lun = 0
            path = "link.img"
            """
        #expect {
            try FerryConfiguration(
                toml: toml, fileName: "ferry.toml", baseDirectory: directory, defaultStateDirectory: directory)
        } throws: { error in
            (error as? ConfigurationError)?.description == """
                ferry.toml:7: target "iqn.2026-11.dev.ferry:links" lun 0: \(directory)/link.img is a symbolic link; \
                give the file itself (Ferry follows links only under /dev, to device nodes)
                """
        }
        #expect(
            try FerryConfiguration(
                toml: toml.replacingOccurrences(of: "link.img", with: "real.img"), fileName: "ferry.toml",
                baseDirectory: directory, defaultStateDirectory: directory
            ).targets.count == 1)
    }
}
