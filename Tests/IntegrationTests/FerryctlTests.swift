import Foundation
import RawISCSI
import Testing

#if canImport(Glibc)
    import Glibc
#endif

extension AgainstFerryd {
    /// ferryctl against a running ferryd over its control socket, and the metrics endpoint.
    @Suite struct FerryctlTests {
        static let target = "iqn.2026-11.dev.ferry:ctl"
        static let initiator = "iqn.2026-11.dev.ferry.test:ctl"

        @Test func listsChangesAndLogsOutThroughTheControlSocket() async throws {
            let ferryctl = URL(fileURLWithPath: try FerrydProcess.locateFerryd()).deletingLastPathComponent()
                .appendingPathComponent("ferryctl").path
            let metricsPort = try FerrydProcess.freePort()
            try await ConfiguredFerryd.with(configuration: { port, directory in
                ConfiguredFerryd.portal(port: port, directory: directory)
                    + """
                    [control]
                    socket = "\(directory)/control.sock"

                    [metrics]
                    address = "127.0.0.1:\(metricsPort)"

                    """ + ConfiguredFerryd.target(Self.target, directory: directory)
            }) { ferryd in
                let socket = ferryd.directory.appendingPathComponent("control.sock").path
                func run(_ arguments: String...) async throws -> ToolResult {
                    try await ExternalTool.run(ferryctl, arguments + ["--socket", socket], timeout: .seconds(30))
                }
                var status = stat()
                #expect(stat(socket, &status) == 0 && status.st_mode & 0o777 == 0o600, "the socket is mode 0600")

                let client = try RawISCSIClient(port: ferryd.port)
                #expect(
                    try client.login(initiatorName: Self.initiator, targetName: Self.target).response.loginStatus == (
                        0, 0
                    ))
                #expect(try client.read10(lba: 0, blocks: 2).count == 1024)

                let sessions = try await run("sessions", "--json")
                #expect(sessions.status == 0, "\(sessions.output)")
                let json = try JSONSerialization.jsonObject(with: Data(sessions.output.utf8)) as? [String: Any]
                let session = (json?["sessions"] as? [[String: Any]])?.first
                #expect(session?["initiator"] as? String == Self.initiator, "\(sessions.output)")
                #expect(session?["tsih"] as? Int == Int(client.tsih), "\(sessions.output)")
                #expect(session?["target"] as? String == Self.target)
                let window = (session?["maxCmdSN"] as? Int ?? 0) - (session?["expCmdSN"] as? Int ?? 0)
                #expect(window == 127, "the CmdSN window of command_window 128: \(sessions.output)")
                let connection = (session?["connections"] as? [[String: Any]])?.first
                #expect((connection?["address"] as? String)?.hasPrefix("127.0.0.1:") == true, "\(sessions.output)")
                #expect((session?["parameters"] as? [String: String])?["MaxBurstLength"] == "262144")

                let targets = try await run("targets")
                let row = targets.output.split(separator: "\n").first { $0.hasPrefix(Self.target) }
                #expect(
                    row?.split(separator: " ", omittingEmptySubsequences: true).prefix(4) == [
                        Substring(Self.target), "1", "1", "none",
                    ], "\(targets.output)")

                let added = try await run(
                    "lun", "add", Self.target, "1", "\(ferryd.directory.path)/ctl1.img", "--size", "4M")
                #expect(added.status == 0 && added.output.contains("added LUN 1 to \(Self.target)"), "\(added.output)")
                let luns = try await run("luns", Self.target)
                #expect(luns.output.contains("  1    emulated  file    online  4 MiB   512    rw"), "\(luns.output)")
                #expect(try client.ping().opcode == RawOpcode.nopIn, "adding a LUN leaves the session alone")

                let refused = try await run("acl", "add", Self.target, "Not A Name")
                #expect(
                    refused.status != 0 && refused.output.contains("initiator name \"Not A Name\""), "\(refused.output)"
                )
                let missing = try await run("logout", "65000")
                #expect(
                    missing.status != 0 && missing.output.contains("ferryctl sessions lists them"), "\(missing.output)")

                // Task management functions are counted per function and response.
                try client.sendTaskManagement(.abortTask)
                let notFound = try client.expectPDU()
                #expect(notFound.opcode == RawOpcode.taskManagementResponse && notFound.header[2] == 1, "Task does not exist")
                try client.sendTaskManagement(.queryTask)
                #expect(try client.expectPDU().header[2] == 0, "Function complete")
                let functions = try await run("task-management")
                let rows = functions.output.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
                #expect(rows.contains([Self.target, "0", "abortTask", "taskDoesNotExist", "1"]), "\(functions.output)")
                #expect(rows.contains([Self.target, "0", "queryTask", "functionComplete", "1"]), "\(functions.output)")
                let functionsJSON = try await run("task-management", "--json")
                #expect(functionsJSON.output.contains("\"function\" : \"abortTask\""), "\(functionsJSON.output)")

                let metrics = try Self.httpGet(port: metricsPort, path: "/metrics")
                #expect(metrics.hasPrefix("HTTP/1.1 200 OK"), "\(metrics)")
                let labels = "{target=\"\(Self.target)\",lun=\"0\"}"
                #expect(metrics.contains("ferry_lun_reads_total\(labels) 1"), "\(metrics)")
                #expect(metrics.contains("ferry_lun_read_bytes_total\(labels) 1024"), "\(metrics)")
                #expect(metrics.contains("ferry_lun_read_duration_seconds_count\(labels) 1"), "\(metrics)")
                #expect(metrics.contains("ferry_target_sessions{target=\"\(Self.target)\"} 1.0"), "\(metrics)")
                #expect(metrics.contains("ferry_login_successes_total{target=\"\(Self.target)\"} 1"), "\(metrics)")
                #expect(
                    metrics.contains(
                        "ferry_task_management_functions_total{target=\"\(Self.target)\",lun=\"0\",function=\"abortTask\","
                            + "response=\"taskDoesNotExist\"} 1"), "\(metrics)")
                #expect(try Self.httpGet(port: metricsPort, path: "/").hasPrefix("HTTP/1.1 404"))

                let logout = try await run("logout", "\(client.tsih)")
                #expect(logout.status == 0, "\(logout.output)")
                let message = try client.expectPDU()
                #expect(message.opcode == 0x32 && message.header[36] == 1, "an Async Message asking for logout")
                try client.logout()
            }

            // check-config needs no ferryd.
            let directory = try ServiceManagerTests.temporaryDirectory()
            defer { try? FileManager.default.removeItem(at: directory) }
            let bad = directory.appendingPathComponent("bad.toml")
            try "[[portal]]\naddress = \"127.0.0.1:3260\"\n[metrics]\naddress = \"127.0.0.1\"\n"
                .write(to: bad, atomically: true, encoding: .utf8)
            let checked = try await ExternalTool.run(ferryctl, ["check-config", bad.path], timeout: .seconds(30))
            #expect(checked.status != 0, "\(checked.output)")
            #expect(
                checked.output.contains("\(bad.path):4: metrics: address \"127.0.0.1\" needs a port"),
                "\(checked.output)")
            #expect(checked.output.contains("no [[target]]"), "\(checked.output)")
        }

        /// A plain HTTP/1.1 GET; the whole response, headers included.
        static func httpGet(port: Int, path: String) throws -> String {
            try MetricsEndpointTests.request(port: port, "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        }
    }
}

extension RawISCSIClient {
    /// READ(10) of `blocks` 512-byte blocks from LUN 0; the data of the Data-In PDUs.
    func read10(lba: UInt32, blocks: UInt16) throws -> [UInt8] {
        try scsi(lun: 0, cdb: Self.read10(lba: lba, blocks: blocks), expectedLength: UInt32(blocks) * 512).data
    }
}
