import Foundation
import RawISCSI
import Testing

extension AgainstFerryd {
    /// What an initiator that does not play by the rules sends within its own session (issue 10): ferryd answers
    /// each as SAM-5 and RFC 7143 prescribe, holds no more than its limits, and the session goes on.
    @Suite struct HostileCommandTests {
        static let target = "iqn.2026-11.dev.ferry:commands"
        static let initiator = "iqn.2026-11.dev.ferry.test:commands"

        /// Runs `body` with a session logged in to a target with a 16 MiB LUN 0.
        private func withSession(_ body: (ConfiguredFerryd, RawISCSIClient) throws -> Void) async throws {
            try await ConfiguredFerryd.with(configuration: { port, directory in
                ConfiguredFerryd.portal(port: port, directory: directory)
                    + ConfiguredFerryd.target(Self.target, directory: directory)
            }) { ferryd in
                let client = try RawISCSIClient(port: ferryd.port)
                let login = try client.login(initiatorName: Self.initiator, targetName: Self.target)
                #expect(login.succeeded, "\(login.response.loginStatus)")
                try body(ferryd, client)
            }
        }

        /// Immediate commands do not consume CmdSN, so the window does not bound them: before, one session held
        /// every one of 5000 immediate READs while its initiator did not read the responses. Now the session holds
        /// about a window of tasks, and the rest end at once with TASK SET FULL.
        @Test func immediateCommandsBeyondTheTaskLimitEndWithTaskSetFull() async throws {
            try await withSession { _, client in
                // 3000 READs of 64 KiB: 187 MiB of responses, far more than the socket buffers take while the
                // initiator does not read, and far less than max_data_buffer_mib.
                let count = 3000
                var tags = Set<UInt32>()
                for _ in 0..<count { tags.insert(try client.sendImmediateRead(blocks: 128)) }
                var good = 0
                var taskSetFull = 0
                while good + taskSetFull < count, let pdu = try client.receivePDU(within: .seconds(30)) {
                    guard tags.contains(pdu.initiatorTaskTag), let status = pdu.scsiStatus else { continue }
                    switch status {
                    case 0x00: good += 1
                    case 0x28: taskSetFull += 1
                    default: Issue.record("status 0x\(String(status, radix: 16))")
                    }
                }
                #expect(good + taskSetFull == count, "every command is answered")
                #expect(taskSetFull > count / 2, "GOOD \(good), TASK SET FULL \(taskSetFull)")
                #expect(try client.testUnitReady() == 0, "the session goes on")
            }
        }

        /// A READ(10) of 16384 blocks (8 MiB) with a smaller Expected Data Transfer Length: the emulated device
        /// reads only the blocks the EDTL covers, and the answer still carries the overflow residual of what the CDB
        /// asked for (RFC 7143 §11.4.5.2): 8 MiB with EDTL 0 (no R bit), 8 MiB - 1000 with EDTL 1000.
        @Test func aReadBeyondItsExpectedLengthReportsTheOverflowOfWhatItAskedFor() async throws {
            try await withSession { _, client in
                for edtl in [0, 1000] {
                    let sent = try client.sendCommand(RawISCSIClient.read10(lba: 0, blocks: 16384), readLength: edtl)
                    var received = 0
                    var last: RawPDU?
                    while let pdu = try client.receivePDU(within: .seconds(10)) {
                        guard pdu.initiatorTaskTag == sent.initiatorTaskTag else { continue }
                        if pdu.opcode == 0x25 { received += pdu.data.count }
                        // The SCSI Response, or the final Data-In with S set.
                        if pdu.opcode == 0x21 || (pdu.opcode == 0x25 && pdu.flags & 0x01 != 0) {
                            last = pdu
                            break
                        }
                    }
                    let answer = try #require(last, "EDTL \(edtl): no status")
                    #expect(answer.scsiStatus == 0x00, "EDTL \(edtl)")
                    #expect(received == edtl)
                    #expect(answer.flags & 0x06 == 0x04, "EDTL \(edtl): the O bit alone")
                    #expect(RawPDU.uint32(answer.header, at: 44) == UInt32(8 << 20 - edtl), "EDTL \(edtl)")
                }
                #expect(try client.testUnitReady() == 0, "the session goes on")
            }
        }

        /// Immediate data beyond FirstBurstLength (65536 here: the initiator does not offer it): the command is
        /// rejected with Protocol Error and not executed; the session goes on.
        @Test func immediateDataBeyondFirstBurstLengthIsRejected() async throws {
            try await withSession { _, client in
                let sent = try client.sendCommand(
                    RawISCSIClient.write10(lba: 0, blocks: 256), write: [UInt8](repeating: 0xa5, count: 256 * 512))
                let answer = try #require(try client.receivePDU(within: .seconds(10)))
                #expect(answer.opcode == RawOpcode.reject, "opcode 0x\(String(answer.opcode, radix: 16))")
                #expect(answer.rejectReason == 0x04, "Protocol Error")
                #expect(
                    answer.data.count >= 48 && RawPDU.uint32(answer.data, at: 16) == sent.initiatorTaskTag,
                    "the Reject carries the command's header")
                // Not consumed: the initiator plugs the CmdSN gap with its next command.
                client.cmdSN = sent.cmdSN
                let read = try client.sendCommand(RawISCSIClient.read10(lba: 0, blocks: 1), readLength: 512)
                let data = try #require(try client.receivePDU(within: .seconds(10)))
                #expect(data.initiatorTaskTag == read.initiatorTaskTag && data.scsiStatus == 0x00)
                #expect(data.data == [UInt8](repeating: 0, count: 512), "the rejected write never reached the LUN")
            }
        }

        /// SNACK at ErrorRecoveryLevel 0: before, ferryd ignored it without a word and the initiator waited for
        /// ever. Now each is answered with a Reject (Protocol Error) and the first is logged.
        @Test func snackIsRejectedAndLoggedOnce() async throws {
            try await withSession { ferryd, client in
                for _ in 0..<2 {
                    try client.sendSNACK()
                    let answer = try #require(try client.receivePDU(within: .seconds(10)), "no answer to the SNACK")
                    #expect(answer.opcode == RawOpcode.reject && answer.rejectReason == 0x04)
                    #expect(answer.data.first.map { $0 & 0x3f } == 0x10, "the Reject carries the SNACK's header")
                }
                #expect(ferryd.logLines(containing: "rejecting SNACK") == 1, "\(ferryd.log.suffix(2000))")
                #expect(try client.testUnitReady() == 0)
            }
        }

        /// Functions that address a logical unit, sent to a LUN that is not mapped: before, LOGICAL UNIT RESET
        /// answered Function Complete.
        @Test(arguments: [
            RawTaskManagementFunction.logicalUnitReset, .abortTaskSet, .clearTaskSet, .abortTask, .queryTaskSet,
        ])
        func aFunctionForALogicalUnitThatDoesNotExist(_ function: RawTaskManagementFunction) async throws {
            try await withSession { _, client in
                // ABORT TASK names a command sent to that LUN (which the target answers itself).
                let referenced = function == .abortTask ? try client.sendCommand([0, 0, 0, 0, 0, 0], lun: 5) : nil
                let tag = try client.sendTaskManagement(function, lun: 5, referenced: referenced)
                var answer = try #require(try client.receivePDU(within: .seconds(10)))
                if answer.opcode == RawOpcode.scsiResponse {
                    answer = try #require(try client.receivePDU(within: .seconds(10)))
                }
                #expect(answer.opcode == RawOpcode.taskManagementResponse && answer.initiatorTaskTag == tag)
                // > RFC 7143 §11.6.1: 2 = Logical unit does not exist.
                #expect(answer.response == 2, "response \(answer.response)")
                // (After ABORT TASK, the aborted command's answer may still be on its way.)
                if function != .abortTask { #expect(try client.testUnitReady() == 0) }
            }
        }
    }
}

extension RawISCSIClient {
    /// An immediate READ(10) of `blocks` blocks at LBA 0 of LUN 0 (RFC 7143 §11.3: the I bit; CmdSN not advanced).
    fileprivate func sendImmediateRead(blocks: UInt16) throws -> UInt32 {
        let tag = nextTaskTag()
        var bytes = header(opcode: RawOpcode.scsiCommand, immediate: true, flags: 0x80 | 0x40 | 0x01, initiatorTaskTag: tag)
        bytes.replaceSubrange(8..<16, with: Self.lunField(0))
        Self.put(UInt32(blocks) * 512, into: &bytes, at: 20)
        let cdb = Self.read10(lba: 0, blocks: blocks)
        bytes.replaceSubrange(32..<32 + cdb.count, with: cdb)
        try send(encode(header: bytes))
        return tag
    }

    /// A Status SNACK (RFC 7143 §11.16: opcode 0x10, Type 1) asking for StatSN 0 again.
    fileprivate func sendSNACK() throws {
        var bytes = header(opcode: 0x10, flags: 0x80 | 0x01, initiatorTaskTag: 0xffff_ffff)
        // Bytes 24-31 of a SNACK: reserved, then ExpStatSN; BegRun and RunLength at 40-47.
        Self.put(0, into: &bytes, at: 24)
        Self.put(expStatSN, into: &bytes, at: 28)
        try send(encode(header: bytes))
    }
}
