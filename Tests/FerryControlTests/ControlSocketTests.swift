import FerryControl
import Foundation
import Testing

@Test func defaultSocketLivesUnderRun() {
    #expect(defaultControlSocketPath.hasPrefix("/run/"))
}

@Suite struct ControlRequestTests {
    static let every: [ControlRequest] = [
        .targets, .luns(target: nil), .luns(target: "iqn.2026-11.dev.ferry:a"), .sessions, .reload, .saveConfig,
        .logout(tsih: 7),
        .addLUN(
            target: "iqn.2026-11.dev.ferry:a",
            LUNDefinition(lun: 3, path: "/srv/a3.img", size: 1 << 30, blockSize: 4096, readOnly: true)),
        .addLUN(target: "iqn.2026-11.dev.ferry:a", LUNDefinition(lun: 4, path: "/dev/sdb")),
        .removeLUN(target: "iqn.2026-11.dev.ferry:a", lun: 3),
        .addInitiator(target: "iqn.2026-11.dev.ferry:a", initiator: "iqn.1993-08.org.debian:01:abc"),
        .removeInitiator(target: "iqn.2026-11.dev.ferry:a", initiator: "iqn.1993-08.org.debian:01:abc"),
        .device(DeviceEvent(action: .added, name: "sg3")), .device(DeviceEvent(action: .removed)),
    ]

    @Test(arguments: every) func everyRequestSurvivesALine(_ request: ControlRequest) throws {
        let line = try ControlCodec.line(request)
        #expect(line.last == UInt8(ascii: "\n"))
        #expect(!line.dropLast().contains(UInt8(ascii: "\n")), "a request is exactly one line")
        #expect(try ControlCodec.decode(ControlRequest.self, from: line.dropLast()) == request)
    }

    @Test func theWireFormIsAFlatObjectNamedByCommand() throws {
        let line = try ControlCodec.line(ControlRequest.removeLUN(target: "iqn.2026-11.dev.ferry:a", lun: 3))
        #expect(
            String(decoding: line, as: UTF8.self)
                == #"{"command":"lun-remove","lun":3,"target":"iqn.2026-11.dev.ferry:a"}"#
                + "\n")
        let typed = #"{"command": "luns", "target": "iqn.2026-11.dev.ferry:b"}"#
        #expect(
            try ControlCodec.decode(ControlRequest.self, from: Data(typed.utf8))
                == .luns(target: "iqn.2026-11.dev.ferry:b"))
    }

    @Test func badRequestsSayWhatIsWrong() {
        #expect(throws: ControlFailure(message: "the request lacks \"tsih\"")) {
            try ControlCodec.decode(ControlRequest.self, from: Data(#"{"command":"logout"}"#.utf8))
        }
        let notJSON = #expect(throws: ControlFailure.self) {
            try ControlCodec.decode(ControlRequest.self, from: Data("targets".utf8))
        }
        #expect(notJSON?.message.hasPrefix("the request is not JSON") == true)
        let wrongType = #expect(throws: ControlFailure.self) {
            try ControlCodec.decode(ControlRequest.self, from: Data(#"{"command":"logout","tsih":"x"}"#.utf8))
        }
        #expect(wrongType?.message.contains("wrong value at \"tsih\"") == true, "\(String(describing: wrongType))")
        #expect(throws: ControlFailure.self) {
            try ControlCodec.decode(ControlRequest.self, from: Data(#"{"command":"shutdown"}"#.utf8))
        }
    }
}

@Suite struct ControlResponseTests {
    @Test func responsesRoundTrip() throws {
        let response = ControlResponse(
            sessions: [
                SessionInfo(
                    tsih: 1, isid: "0x800000000001", initiator: "iqn.2026-11.dev.ferry.test:x",
                    target: "iqn.2026-11.dev.ferry:a", type: "Normal",
                    connections: [.init(cid: 0, address: "127.0.0.1:50000")],
                    parameters: ["MaxBurstLength": "262144"], expCmdSN: 10, maxCmdSN: 137, tasks: 2)
            ])
        let line = try ControlCodec.line(response)
        #expect(try ControlCodec.decode(ControlResponse.self, from: line.dropLast()) == response)
        let failure = ControlResponse.failure("no session with TSIH 9", hint: "ferryctl sessions lists them")
        #expect(
            try ControlCodec.decode(ControlResponse.self, from: try ControlCodec.line(failure).dropLast()) == failure)
        #expect(failure.error?.description == "no session with TSIH 9\nferryctl sessions lists them")
    }
}

@Suite struct ControlLineBufferTests {
    @Test func splitsLinesFedOneByteAtATime() throws {
        var buffer = ControlLineBuffer()
        var lines: [String] = []
        for byte in Array("first\nsecond\n\nthird".utf8) {
            buffer.append([byte])
            while let line = try buffer.nextLine() { lines.append(String(decoding: line, as: UTF8.self)) }
        }
        #expect(lines == ["first", "second", ""])
        #expect(buffer.pendingByteCount == 5)
        buffer.append(Array("\n".utf8))
        #expect(try buffer.nextLine().map { String(decoding: $0, as: UTF8.self) } == "third")
    }

    @Test func refusesALineOverTheLimit() throws {
        var buffer = ControlLineBuffer(maximumLineLength: 8)
        buffer.append(Array("12345678".utf8))
        #expect(try buffer.nextLine() == nil)
        buffer.append(Array("9".utf8))
        #expect(throws: ControlFailure.self) { try buffer.nextLine() }
    }
}

@Suite struct ControlTableTests {
    @Test func columnsAlignAndTheLastIsNotPadded() {
        let table = ControlTable(headers: ["A", "LONGER", "LAST"], rows: [["xxxx", "y", "z"], ["", "yyyyyyyy", ""]])
        #expect(
            table.render() == """
                A     LONGER    LAST
                xxxx  y         z
                      yyyyyyyy  \n
                """)
    }

    @Test func anEmptyTableSaysSo() {
        #expect(ControlTable(sessions: []).render().hasSuffix("\n(none)\n"))
    }

    @Test func targetsShowAuthenticationAndAccess() throws {
        let text = ControlTable(targets: [
            TargetInfo(
                name: "iqn.2026-11.dev.ferry:a", luns: 2, allowedInitiators: [], chap: true, mutualCHAP: false,
                sessions: 1),
            TargetInfo(
                name: "iqn.2026-11.dev.ferry:b", luns: 1, allowedInitiators: ["iqn.x:1", "iqn.x:2"], chap: true,
                mutualCHAP: true, sessions: 0),
        ]).render()
        let lines = text.split(separator: "\n")
        try #require(lines.count == 3, "a header and a line per target: \(text)")
        #expect(lines[0].hasPrefix("TARGET"))
        #expect(lines[1].contains("  CHAP  ") && lines[1].hasSuffix("any"), "\(text)")
        #expect(lines[2].contains("mutual CHAP") && lines[2].hasSuffix("iqn.x:1, iqn.x:2"), "\(text)")
    }

    @Test func lunSizesUseExactBinaryUnits() throws {
        let luns = [1 << 30, 3 << 20, 4096, 1000].enumerated().map { index, size in
            LUNInfo(
                target: "t", lun: UInt64(index), backend: "emulated", device: "file", path: "/p",
                sizeBytes: UInt64(size),
                blockSize: 512, readOnly: index == 3, state: "online")
        }
        let table = ControlTable(luns: luns)
        let rows = table.rows
        try #require(rows.allSatisfy { $0.count == table.headers.count }, "\(rows)")
        #expect(rows.map { $0[5] } == ["1 GiB", "3 MiB", "4 KiB", "1000 B"])
        #expect(rows.map { $0[7] } == ["rw", "rw", "rw", "ro"])
    }

    @Test func sessionsShowTheCmdSNWindowAndConnections() throws {
        let rows = ControlTable(sessions: [
            SessionInfo(
                tsih: 3, isid: "0x80", initiator: "iqn.i", target: "", type: "Discovery",
                connections: [.init(cid: 0, address: "[::1]:4000"), .init(cid: 1, address: "10.0.0.2:4001")],
                parameters: ["ImmediateData": "Yes"], expCmdSN: 5, maxCmdSN: 132, tasks: 0)
        ]).rows
        #expect(rows.count == 1)
        let row = try #require(rows.first)
        #expect(
            row == [
                "3", "iqn.i", "(discovery)", "0x80", "0@[::1]:4000, 1@10.0.0.2:4001", "5..132", "0",
                "ImmediateData=Yes",
            ])
    }

    @Test func changeSummariesListWarningsAndLogouts() {
        #expect(ChangeSummary(changes: []).text == "no changes\n")
        #expect(
            ChangeSummary(changes: ["removed target t"], warnings: ["restart"], sessionsLoggedOut: 2).text
                == "removed target t\nwarning: restart\n2 session(s) asked to log out\n")
    }
}
