import Foundation
import NIOCore
import Testing

@testable import FerryTarget
@testable import ISCSIProtocol

/// The session shell (``Session``) over a real connection pipeline: what it carries out for the session core is what
/// the initiator sees on the wire.
@Suite struct SessionShellTests {
    /// RFC 7143 §3.2.2.1-2: a command answered on the connection takes the next StatSN, and the response carries the
    /// window its CmdSN opened: ExpCmdSN past the command, MaxCmdSN one further. TEST UNIT READY and INQUIRY run on
    /// the emulated device; REPORT LUNS is answered by the target itself.
    @Test func aCommandIsAnsweredWithTheNextStatSNAndTheWindowItAdvanced() throws {
        let target = try EmbeddedTarget(luns: [0, 1])
        let initiator = try target.connect()
        let login = try #require(try initiator.logIn())
        #expect(login.statusClass == 0 && login.tsih != 0)

        let unitReady = initiator.command(testUnitReady)
        #expect(unitReady.cmdSN == login.sequence.expCmdSN)
        let ready = try #require(try initiator.run(unitReady))
        #expect(ready.status == good)
        #expect(ready.sequence.statSN == login.sequence.statSN &+ 1)
        #expect(ready.sequence.expCmdSN == unitReady.cmdSN &+ 1)
        #expect(ready.sequence.maxCmdSN == login.sequence.maxCmdSN &+ 1)

        let inquiry = try #require(try initiator.run(initiator.command([0x12, 0, 0, 0, 36, 0], length: 36)))
        #expect(inquiry.status == good)
        #expect(inquiry.sequence.statSN == login.sequence.statSN &+ 2)
        #expect(inquiry.sequence.expCmdSN == unitReady.cmdSN &+ 2)
        #expect(String(decoding: inquiry.dataIn.readableBytesView.dropFirst(8).prefix(8), as: UTF8.self) == "FERRY   ")

        let report = try #require(try initiator.run(initiator.command(reportLUNs, length: 256)))
        #expect(report.status == good)
        #expect(reportedLUNs(report.dataIn) == [0, 1])
        #expect(report.sequence.statSN == login.sequence.statSN &+ 3)
        #expect(report.sequence.maxCmdSN == login.sequence.maxCmdSN &+ 3)
        #expect(target.relay.pending == 0)
    }

    /// RFC 7143 §11.19: a NOP-Out with a valid Initiator Task Tag is a ping; the NOP-In answers it with the same tag,
    /// the reserved Target Transfer Tag and the ping data returned.
    @Test func aPingIsAnsweredWithItsData() throws {
        let target = try EmbeddedTarget()
        let initiator = try target.connect()
        let login = try #require(try initiator.logIn())
        let ping = NOPOut(
            immediate: true, initiatorTaskTag: initiator.tag(), cmdSN: initiator.cmdSN,
            expStatSN: initiator.expStatSN, pingData: ByteBuffer(string: "are you there?"))
        try initiator.send(.nopOut(ping))
        let answers = try initiator.receive()
        #expect(answers.count == 1)
        guard case .nopIn(let nop)? = answers.first else {
            Issue.record("no NOP-In: \(answers)")
            return
        }
        #expect(nop.initiatorTaskTag == ping.initiatorTaskTag)
        #expect(nop.targetTransferTag == reservedTag)
        #expect(nop.pingData == ping.pingData)
        #expect(nop.sequence.statSN == login.sequence.statSN &+ 1)
        // An immediate NOP-Out does not take a CmdSN.
        #expect(nop.sequence.expCmdSN == login.sequence.expCmdSN)
    }

    /// RFC 7143 §11.14: Logout closing the session is answered, the connection closes, and the session leaves the
    /// registry: its place is free and its TSIH names nothing.
    @Test func aLogoutClosesTheSessionAndRemovesItFromTheRegistry() throws {
        let target = try EmbeddedTarget()
        let initiator = try target.connect()
        let login = try #require(try initiator.logIn())
        #expect(target.context.registry.session(tsih: login.tsih) != nil)
        let logout = LogoutRequest(
            immediate: true, reasonCode: .closeSession, initiatorTaskTag: initiator.tag(), cid: 0,
            cmdSN: initiator.cmdSN, expStatSN: initiator.expStatSN)
        try initiator.send(.logoutRequest(logout))
        let answers = try initiator.receive()
        guard case .logoutResponse(let response)? = answers.first else {
            Issue.record("no Logout Response: \(answers)")
            return
        }
        #expect(response.response == .closedSuccessfully)
        #expect(response.initiatorTaskTag == logout.initiatorTaskTag)
        #expect(response.sequence.statSN == login.sequence.statSN &+ 1)
        #expect(!initiator.channel.isActive)
        #expect(target.context.registry.count == 0)
        #expect(target.context.registry.session(tsih: login.tsih) == nil)
    }

    /// RFC 7143 §4.3: a discovery session may send Text, Logout and NOP-Out only; a SCSI Command is rejected with
    /// its header, reaches no logical unit, and the session goes on.
    @Test func aDiscoverySessionRejectsASCSICommand() throws {
        let target = try EmbeddedTarget()
        let initiator = try target.connect()
        let login = try #require(try initiator.logIn(discovery: true))
        #expect(login.statusClass == 0)
        let command = initiator.command(testUnitReady)
        try initiator.send(.scsiCommand(command))
        let answers = try initiator.receive()
        #expect(answers.count == 1)
        guard case .reject(let reject)? = answers.first else {
            Issue.record("no Reject: \(answers)")
            return
        }
        #expect(reject.reason == .protocolError)
        #expect(reject.data == initiator.encoded(.scsiCommand(command)).getSlice(at: 0, length: 48))
        #expect(target.relay.pending == 0)
        #expect(initiator.channel.isActive)
        #expect(target.context.registry.count == 1)
    }
}
