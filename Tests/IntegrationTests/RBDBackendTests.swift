import Foundation
import RawISCSI
import Testing

extension AgainstFerryd {
    /// `backend = "rbd"` (issue 13) against the throw-away Ceph cluster of `scripts/ceph-cluster`.
    @Suite struct RBDBackendTests {
        static let target = "iqn.2026-12.dev.ferry:rbd"
        static let initiator = "iqn.2026-12.dev.ferry.test:rbd"
        /// The ratchet of an RBD LUN.
        static let ratchetFile = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("rbd-conformance-known-failures.txt")

        /// libiscsi's SCSI and iSCSI families against a 64 MiB image, each against its ratchet.
        @Test func conformance() async throws {
            try await CephCluster.with { cluster in
                let image = try await cluster.createImage("conformance", size: "64M")
                for family in ["SCSI", "iSCSI"] {
                    try await ConformanceTests.runFamily(family, ratchet: Self.ratchetFile) {
                        try await FerrydProcess.start(
                            targetName: Self.target, lunSize: "64M", sanitizeRate: ConformanceTests.sanitizeRate,
                            rbdImage: image)
                    }
                }
            }
        }

        /// Two ferryd export one image, as two gateways do: what is written through one is in the image (`rbd
        /// export`) and reads back through the other, an UNMAP through the other zeroes it in the image, and both
        /// report the same unit serial number and NAA designator, by which an initiator's multipath knows them for
        /// two paths to one logical unit.
        @Test func twoGatewaysShareTheImageAndItsIdentity() async throws {
            try await CephCluster.with { cluster in
                let image = try await cluster.createImage("shared", size: "16M")
                let exported = cluster.directory.appendingPathComponent("exported.img")
                func imageBytes(at offset: Int, count: Int) async throws -> [UInt8] {
                    try? FileManager.default.removeItem(at: exported)
                    try await cluster.rbd(["export", "\(image.pool)/\(image.image)", exported.path])
                    return Array(try Data(contentsOf: exported)[offset..<offset + count])
                }
                let pattern = (0..<8192).map { UInt8(truncatingIfNeeded: $0 * 7 + 13) }

                try await Self.withTwoGateways(image, alua: false) { _, throughA, _, throughB in
                    let written = try throughA.command(RawISCSIClient.write10(lba: 100, blocks: 16), write: pattern)
                    #expect(written.status == 0, "\(written)")
                    #expect(try await imageBytes(at: 100 * 512, count: 8192) == pattern)
                    let read = try throughB.scsi(
                        lun: 0, cdb: RawISCSIClient.read10(lba: 100, blocks: 16), expectedLength: 8192)
                    #expect(read.status == 0, "\(read)")
                    #expect(read.data == pattern, "gateway B read other bytes than A wrote")

                    // UNMAP of LBAs 104..107 through B: zeroes in the image, the rest of the write stays.
                    var unmap = [UInt8](repeating: 0, count: 24)
                    unmap[1] = 22
                    unmap[3] = 16
                    unmap[15] = 104
                    unmap[19] = 4
                    let unmapped = try throughB.command([0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0], write: unmap)
                    #expect(unmapped.status == 0, "\(unmapped)")
                    let after = try await imageBytes(at: 100 * 512, count: 8192)
                    #expect(after[0..<2048] == pattern[0..<2048])
                    #expect(after[2048..<4096].allSatisfy { $0 == 0 }, "the unmapped blocks are not zeroes")
                    #expect(after[4096...] == pattern[4096...])

                    let serialA = try throughA.scsi(lun: 0, cdb: [0x12, 0x01, 0x80, 0, 255, 0]).data
                    let serialB = try throughB.scsi(lun: 0, cdb: [0x12, 0x01, 0x80, 0, 255, 0]).data
                    #expect(serialA.count > 4 && serialA == serialB, "\(serialA) \(serialB)")
                    #expect(try throughA.logicalUnitDesignator() == throughB.logicalUnitDesignator())
                }
            }
        }

        /// Two gateways with `[alua]` (portal group tags 1 and 2): the first to open the image holds its exclusive lock
        /// and is active/optimized, the second standby. Both report TPGS 01b, their own target port group in VPD 83h,
        /// and the same REPORT TARGET PORT GROUPS; the standby answers media access with NOT READY 04/0B and still
        /// serves PERSISTENT RESERVE IN and REPORT LUNS.
        @Test func theImageOwnerIsActiveOptimizedAndTheOtherGatewayStandby() async throws {
            try await CephCluster.with { cluster in
                let image = try await cluster.createImage("alua", size: "16M")
                try await Self.withTwoGateways(image, alua: true) { owner, throughOwner, standby, throughStandby in
                    #expect(owner.logLines(containing: "this gateway is active/optimized") == 1, "\(owner.log)")
                    #expect(standby.logLines(containing: "this one is standby") == 1, "\(standby.log)")

                    // Group 1 (port 1) active/optimized, group 2 (port 2) standby; AO, S and U supported;
                    // altered by implicit behavior.
                    let expected: [UInt8] = [
                        0, 0, 0, 24,
                        0x00, 0x0d, 0, 1, 0, 0x02, 0, 1, 0, 0, 0, 1,
                        0x02, 0x0d, 0, 2, 0, 0x02, 0, 1, 0, 0, 0, 2,
                    ]
                    let reportTargetPortGroups: [UInt8] = [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
                    for (client, group) in [(throughOwner, UInt8(1)), (throughStandby, 2)] {
                        let report = try client.scsi(lun: 0, cdb: reportTargetPortGroups)
                        #expect(report.status == 0, "\(report)")
                        #expect(report.data == expected, "REPORT TARGET PORT GROUPS through group \(group)")
                        let inquiry = try client.scsi(lun: 0, cdb: .inquiry)
                        #expect(inquiry.data.count > 5 && inquiry.data[5] & 0x30 == 0x10, "TPGS 01b: \(inquiry.data)")
                        let page = try client.scsi(lun: 0, cdb: [0x12, 0x01, 0x83, 0, 255, 0]).data
                        #expect(Self.designator(type: 5, in: page) == [0, 0, 0, group], "\(page)")
                        #expect(Self.designator(type: 4, in: page) == [0, 0, 0, group], "\(page)")
                    }

                    let read = RawISCSIClient.read10(lba: 0, blocks: 1)
                    #expect(try throughOwner.scsi(lun: 0, cdb: read, expectedLength: 512).status == 0)
                    for cdb in [read, [UInt8].testUnitReady, RawISCSIClient.write10(lba: 0, blocks: 1)] {
                        let refused = try throughStandby.scsi(lun: 0, cdb: cdb, expectedLength: 512)
                        #expect(refused.status == 0x02, "\(cdb): \(refused)")
                        #expect(refused.senseCode == [0x02, 0x04, 0x0b], "\(cdb): \(refused)")
                    }
                    let readKeys = try throughStandby.scsi(lun: 0, cdb: [0x5e, 0, 0, 0, 0, 0, 0, 0, 255, 0])
                    #expect(readKeys.status == 0, "PERSISTENT RESERVE IN on the standby: \(readKeys)")
                    #expect(try throughStandby.scsi(lun: 0, cdb: .reportLUNs).status == 0)
                }
            }
        }

        /// Failover with fencing: the owner is stopped (SIGSTOP) with a WRITE waiting in its socket; the standby takes
        /// the image over within the default takeover_after (10 s) and a heartbeat, and reports 2A/06 once. When the
        /// old owner runs again (SIGCONT), the waiting WRITE and a new one fail, and neither lands in the image
        /// (`rbd export`); the old owner says it was fenced and stays standby, with a new client.
        @Test func aStandbyTakesOverFromAStoppedOwnerAndFencesIt() async throws {
            try await CephCluster.with { cluster in
                let image = try await cluster.createImage("failover", size: "16M")
                let exported = cluster.directory.appendingPathComponent("exported.img")
                let patterns = (1...4).map { [UInt8](repeating: UInt8($0 * 0x11), count: 4096) }
                try await Self.withTwoGateways(image, alua: true) { owner, throughOwner, standby, throughStandby in
                    let first = try throughOwner.command(RawISCSIClient.write10(lba: 0, blocks: 8), write: patterns[0])
                    #expect(first.status == 0, "\(first)")

                    kill(owner.processIdentifier, SIGSTOP)
                    var resumed = false
                    defer { if !resumed { kill(owner.processIdentifier, SIGCONT) } }
                    // Every thread stopped, before the WRITE goes out: a thread still running could take it in
                    // and write it before the takeover, which is no fault.
                    try await waitUntil("every thread of the owner stopped") {
                        Self.allThreadsStopped(owner.processIdentifier)
                    }
                    let stopped = ContinuousClock.now
                    // Into the stopped owner's socket: it is read once the owner runs again.
                    let queued = try throughOwner.sendCommand(
                        RawISCSIClient.write10(lba: 8, blocks: 8), write: patterns[1])

                    let reportTargetPortGroups: [UInt8] = [0xa3, 0x0a, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
                    var attentions = 0
                    var active = false
                    while !active, ContinuousClock.now - stopped < .seconds(30) {
                        let report = try throughStandby.scsi(lun: 0, cdb: reportTargetPortGroups)
                        if report.senseCode == [0x06, 0x2a, 0x06] {
                            attentions += 1
                            continue
                        }
                        // The second descriptor, group 2: its state.
                        active = report.status == 0 && report.data.count > 16 && report.data[16] & 0x0f == 0
                        if !active { try await Task.sleep(for: .milliseconds(250)) }
                    }
                    let takeover = ContinuousClock.now - stopped
                    print("failover: the standby was active/optimized \(takeover) after SIGSTOP of the owner")
                    #expect(active, "the standby never took over:\n\(standby.log)")
                    #expect(takeover <= .seconds(15), "took \(takeover)")
                    #expect(attentions == 1, "ASYMMETRIC ACCESS STATE CHANGED \(attentions) times")
                    #expect(standby.logLines(containing: "RBD image taken over") == 1, "\(standby.log)")
                    let third = try throughStandby.command(RawISCSIClient.write10(lba: 16, blocks: 8), write: patterns[2])
                    #expect(third.status == 0, "\(third)")

                    kill(owner.processIdentifier, SIGCONT)
                    resumed = true
                    var queuedStatus: UInt8?
                    while queuedStatus == nil, let pdu = try throughOwner.receivePDU(within: .seconds(30)) {
                        if pdu.initiatorTaskTag == queued.initiatorTaskTag { queuedStatus = pdu.scsiStatus }
                    }
                    #expect(queuedStatus != nil && queuedStatus != 0, "the WRITE queued in the fenced owner: \(String(describing: queuedStatus))")
                    let fourth = try throughOwner.command(RawISCSIClient.write10(lba: 24, blocks: 8), write: patterns[3])
                    #expect(fourth.status != 0, "a new WRITE to the fenced owner: \(fourth)")
                    print("failover: the fenced owner answered the queued WRITE with status \(queuedStatus ?? 0) and a new one with \(fourth)")
                    try await owner.waitForLog(containing: "RBD gateway fenced", within: .seconds(20))
                    // Fenced and standby now: a WRITE meets 04/0B (after 2A/06 if nothing took it yet).
                    var fifth = try throughOwner.command(RawISCSIClient.write10(lba: 24, blocks: 8), write: patterns[3])
                    if fifth.senseCode == [0x06, 0x2a, 0x06] {
                        fifth = try throughOwner.command(RawISCSIClient.write10(lba: 24, blocks: 8), write: patterns[3])
                    }
                    #expect(fifth.senseCode == [0x02, 0x04, 0x0b], "\(fifth)")

                    try await cluster.rbd(["export", "\(image.pool)/\(image.image)", exported.path])
                    let bytes = [UInt8](try Data(contentsOf: exported))
                    #expect(Array(bytes[0..<4096]) == patterns[0])
                    #expect(bytes[4096..<8192].allSatisfy { $0 == 0 }, "the queued WRITE landed after fencing")
                    #expect(Array(bytes[8192..<12288]) == patterns[2])
                    #expect(bytes[12288..<16384].allSatisfy { $0 == 0 }, "a WRITE to the fenced owner landed")
                    // No automatic failback: the old owner reports the new one.
                    let report = try throughOwner.scsi(lun: 0, cdb: reportTargetPortGroups)
                    #expect(report.status == 0, "\(report)")
                    #expect(report.data.count > 16 && report.data[4] & 0x0f == 0x02 && report.data[16] & 0x0f == 0)
                }
            }
        }

        /// Whether every thread of process `pid` is stopped (state T in /proc/PID/task/TID/stat).
        private static func allThreadsStopped(_ pid: Int32) -> Bool {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
            return !tasks.isEmpty
                && tasks.allSatisfy { task in
                    let stat = (try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/stat", encoding: .utf8)) ?? ""
                    // The state follows the command name, which is in parentheses.
                    return stat.split(separator: ")").last?.split(separator: " ").first == "T"
                }
        }

        /// The value of the first VPD 83h designator of `type` associated with the target port.
        private static func designator(type: UInt8, in page: [UInt8]) -> [UInt8]? {
            var offset = 4
            while offset + 4 <= page.count {
                let length = Int(page[offset + 3])
                guard offset + 4 + length <= page.count else { return nil }
                if page[offset + 1] & 0x0f == type, page[offset + 1] & 0x30 == 0x10 {
                    return Array(page[(offset + 4)..<(offset + 4 + length)])
                }
                offset += 4 + length
            }
            return nil
        }

        /// A LUN whose image is not in the pool: ferryd does not start, and says which image and why.
        @Test func aMissingImageIsNamedAtStartup() async throws {
            try await CephCluster.with { cluster in
                let ferryd = try FerrydProcess.locateFerryd()
                let directory = cluster.directory.appendingPathComponent("gateway")
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
                let missing = FerrydProcess.RBDImage(pool: CephCluster.pool, image: "absent", cephConf: cluster.cephConf)
                let file = directory.appendingPathComponent("ferry.toml")
                try Self.configuration(port: try FerrydProcess.freePort(), directory: directory.path, missing)
                    .write(to: file, atomically: true, encoding: .utf8)
                let run = try await ExternalTool.run(ferryd, ["--config", file.path], timeout: .seconds(60))
                #expect(!run.timedOut && run.status != 0, "ferryd started without its image:\n\(run.output)")
                #expect(
                    run.output.contains("cannot open RBD image rbd/absent: rbd_open failed: No such file or directory"),
                    "\(run.output)")
            }
        }

        /// One target with `image` as LUN 0, on a portal with `portalGroupTag`; with `gateways`, `[alua] port_groups`.
        static func configuration(
            port: Int, directory: String, _ image: FerrydProcess.RBDImage, portalGroupTag: UInt16 = 1,
            gateways: [UInt16]? = nil
        ) -> String {
            ConfiguredFerryd.portal(port: port, directory: directory, portalGroupTag: portalGroupTag)
                + (gateways.map { "[alua]\nport_groups = \($0)\n\n" } ?? "")
                + """
                [control]
                socket = "\(directory)/control.sock"

                [[target]]
                name = "\(target)"

                [[target.lun]]
                lun = 0
                backend = "rbd"
                pool = "\(image.pool)"
                image = "\(image.image)"
                ceph_conf = "\(image.cephConf)"

                """
        }

        /// Runs `body` with two ferryd exporting `image`, on portal group tags 1 (started first) and 2, with
        /// `[alua] port_groups = [1, 2]` when `alua`, and a session logged in to each.
        private static func withTwoGateways(
            _ image: FerrydProcess.RBDImage, alua: Bool,
            _ body: (ConfiguredFerryd, RawISCSIClient, ConfiguredFerryd, RawISCSIClient) async throws -> Void
        ) async throws {
            let gateways: [UInt16]? = alua ? [1, 2] : nil
            try await ConfiguredFerryd.with(configuration: {
                configuration(port: $0, directory: $1, image, portalGroupTag: 1, gateways: gateways)
            }) { first in
                try await ConfiguredFerryd.with(configuration: {
                    configuration(port: $0, directory: $1, image, portalGroupTag: 2, gateways: gateways)
                }) { second in
                    let throughFirst = try login(port: first.port)
                    defer { throughFirst.shutdown() }
                    let throughSecond = try login(port: second.port)
                    defer { throughSecond.shutdown() }
                    try await body(first, throughFirst, second, throughSecond)
                }
            }
        }

        private static func login(port: Int) throws -> RawISCSIClient {
            let client = try RawISCSIClient(port: port)
            let login = try client.login(initiatorName: initiator, targetName: target)
            guard login.succeeded else {
                client.shutdown()
                throw IntegrationFailure("login failed: \(login.response.loginStatus)")
            }
            return client
        }
    }
}
