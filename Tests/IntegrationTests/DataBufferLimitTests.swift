import Foundation
import RawISCSI
import Testing

extension AgainstFerryd {
    /// `[limits] max_data_buffer_mib` against a real ferryd: a command whose Expected Data Transfer
    /// Length does not fit in the buffer memory left ends with TASK SET FULL, and the session goes on.
    @Suite struct DataBufferLimitTests {
        static let target = "iqn.2026-11.dev.ferry:buffers"

        @Test func aCommandBeyondTheBufferMemoryEndsWithTaskSetFull() async throws {
            try await ConfiguredFerryd.with(configuration: { port, directory in
                ConfiguredFerryd.portal(port: port, directory: directory)
                    + "[limits]\nmax_data_buffer_mib = 16\n"
                    + ConfiguredFerryd.target(Self.target, directory: directory)
            }) { ferryd in
                let client = try RawISCSIClient(port: ferryd.port)
                #expect(try client.login(initiatorName: "iqn.2026-11.dev.ferry.test:buffers", targetName: Self.target).succeeded)
                // 17 MiB asked for: more than the 16 MiB all sessions may hold.
                let blocks = 17 * 2048
                let large = try client.sendCommand(
                    RawISCSIClient.read10(lba: 0, blocks: UInt16(blocks)), readLength: blocks * 512)
                let answer = try #require(try client.receivePDU(within: .seconds(10)))
                #expect(answer.initiatorTaskTag == large.initiatorTaskTag)
                #expect(answer.scsiStatus == 0x28, "TASK SET FULL, not \(answer.scsiStatus.map { String($0, radix: 16) } ?? "none")")
                // 1 MiB fits.
                let small = try client.sendCommand(RawISCSIClient.read10(lba: 0, blocks: 2048), readLength: 2048 * 512)
                var status: UInt8?
                while status == nil, let pdu = try client.receivePDU(within: .seconds(10)) {
                    if pdu.initiatorTaskTag == small.initiatorTaskTag { status = pdu.scsiStatus }
                }
                #expect(status == 0x00)
            }
        }
    }
}
