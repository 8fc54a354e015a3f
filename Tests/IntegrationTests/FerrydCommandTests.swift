import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

extension AgainstFerryd {
    /// ferryd's own behaviour: configuration checks and clear failures at startup.
    @Suite struct FerrydCommandTests {
        @Test func checkConfigAcceptsAGoodFileAndListsEveryProblemOfABadOne() async throws {
            let ferryd = try FerrydProcess.locateFerryd()
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let good = try FerrydProcess.writeConfiguration(
                in: directory, port: 3260, targetName: "iqn.2026-11.dev.ferry:check",
                lunPath: "\(directory.path)/lun0.img", lunSize: "1M")
            let accepted = try await ExternalTool.run(
                ferryd, ["--config", good.path, "--check-config"], timeout: .seconds(30))
            #expect(accepted.status == 0, "\(accepted.output)")
            #expect(accepted.output.contains("OK (1 portal(s), 1 target(s), 1 LUN(s))"), "\(accepted.output)")

            let bad = directory.appendingPathComponent("bad.toml")
            try """
            [[portal]]
            address = "127.0.0.1:3260"
            [[target]]
            name = "iqn.2026-11.dev.ferry:Check"
            [[target.lun]]
            lun = 0
            path = "lun0.img"
            size = "1M"
            block_size = 1024
            """.write(to: bad, atomically: true, encoding: .utf8)
            let rejected = try await ExternalTool.run(
                ferryd, ["--config", bad.path, "--check-config"], timeout: .seconds(30))
            #expect(rejected.status == 1, "\(rejected.output)")
            #expect(
                rejected.output.contains("\(bad.path):4: target name \"iqn.2026-11.dev.ferry:Check\" must be lowercase")
            )
            #expect(rejected.output.contains("\(bad.path):9: target \"iqn.2026-11.dev.ferry:Check\" lun 0: block_size"))
        }

        @Test func portInUseIsAClearErrorAndExitStatus1() async throws {
            let ferryd = try FerrydProcess.locateFerryd()
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let port = try FerrydProcess.freePort()
            let listener = try Self.listen(port: port)
            defer { close(listener) }
            let configuration = try FerrydProcess.writeConfiguration(
                in: directory, port: port, targetName: "iqn.2026-11.dev.ferry:busy",
                lunPath: "\(directory.path)/lun0.img", lunSize: "1M")
            let result = try await ExternalTool.run(ferryd, ["--config", configuration.path], timeout: .seconds(30))
            #expect(result.status == 1, "\(result.output)")
            #expect(result.output.contains("Address already in use"), "\(result.output)")
            #expect(result.output.contains("127.0.0.1:\(port)"), "\(result.output)")
        }

        @Test func unopenableBackingPathIsAClearErrorAndExitStatus1() async throws {
            let ferryd = try FerrydProcess.locateFerryd()
            let directory = try Self.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let configuration = try FerrydProcess.writeConfiguration(
                in: directory, port: try FerrydProcess.freePort(), targetName: "iqn.2026-11.dev.ferry:nofile",
                lunPath: "\(directory.path)/no/such/directory/lun0.img", lunSize: "1M")
            let result = try await ExternalTool.run(ferryd, ["--config", configuration.path], timeout: .seconds(30))
            #expect(result.status == 1, "\(result.output)")
            #expect(result.output.contains("cannot open the logical units"), "\(result.output)")
            #expect(result.output.contains("no/such/directory/lun0.img"), "\(result.output)")
        }

        private static func temporaryDirectory() throws -> URL {
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "ferryd-command-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            return directory
        }

        /// A socket listening on 127.0.0.1:`port`, standing in for another target.
        private static func listen(port: Int) throws -> Int32 {
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = UInt16(port).bigEndian
            address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
            let bound = withUnsafePointer(to: &address) { pointer in
                pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                }
            }
            guard bound, Glibc.listen(descriptor, 8) == 0 else {
                close(descriptor)
                throw IntegrationFailure("cannot listen on 127.0.0.1:\(port): errno \(errno)")
            }
            return descriptor
        }
    }
}
