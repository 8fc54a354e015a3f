import Foundation
import RawISCSI
import Testing

extension AgainstFerryd {
    /// SendTargets answers with addresses an initiator can connect to, also for a wildcard portal.
    @Suite struct DiscoveryAddressTests {
        static let target = "iqn.2026-11.dev.ferry:wildcard"

        @Test(arguments: ["0.0.0.0", "[::]"])
        func aWildcardPortalIsReportedAsTheAddressTheInitiatorConnectedTo(host: String) async throws {
            let configuration = { (port: Int, directory: String) in
                ConfiguredFerryd.portal(port: port, directory: directory, host: host)
                    + ConfiguredFerryd.target(Self.target, directory: directory)
            }
            try await ConfiguredFerryd.with(configuration: configuration) { ferryd in
                let client = try RawISCSIClient(port: ferryd.port)
                #expect(
                    try client.login(initiatorName: "iqn.2026-11.dev.ferry.test:discovery", targetName: nil).succeeded)
                let pairs = try client.sendTargets()
                #expect(pairs.filter { $0.key == "TargetName" }.map(\.value) == [Self.target])
                #expect(pairs.filter { $0.key == "TargetAddress" }.map(\.value) == ["127.0.0.1:\(ferryd.port),1"])

                let tool = try ExternalTool.locate("iscsi-ls")
                let listing = try await ExternalTool.run(
                    tool, ["-s", "iscsi://127.0.0.1:\(ferryd.port)/"], timeout: .seconds(60))
                #expect(listing.status == 0, "\(listing.output)")
                #expect(listing.output.contains("Portal:127.0.0.1:\(ferryd.port),1"), "\(listing.output)")
            }
        }
    }
}
