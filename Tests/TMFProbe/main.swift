import Foundation
import RawISCSI

#if canImport(Glibc)
import Glibc
#endif

// TMFProbe: task management scenarios against ferryd's sg backend on scsi_debug, run inside the VM test bed by
// Tests/VMTests/guest/tmf.sh. It slows the device itself (scsi_debug's `delay`, in jiffies), drives exact PDU
// sequences with RawISCSIClient, records every PDU with its arrival time, and checks what the Tests section of
// issue 4 asks for. It prints one line per PDU, `measured:` lines, `FAIL:` lines, and exits 1 on any failure.
//
//   TMFProbe SCENARIO --target IQN [--hz 250] [--abort-deadline-ms N] [--command-timeout-ms N]
//
// Scenarios: abort-in-device, abort-deadline, logical-unit-reset.

/// The command line.
struct Options {
    var scenario = ""
    var target = ""
    var hz = 250
    var abortDeadline = Duration.seconds(5)
    var commandTimeout = Duration.seconds(30)

    init(_ arguments: [String]) {
        var rest = arguments[...]
        scenario = rest.popFirst() ?? ""
        while let key = rest.popFirst() {
            guard let value = rest.popFirst() else { Self.usage("\(key) needs a value") }
            switch key {
            case "--target": target = value
            case "--hz": hz = Int(value) ?? 250
            case "--abort-deadline-ms": abortDeadline = .milliseconds(Int(value) ?? 5000)
            case "--command-timeout-ms": commandTimeout = .milliseconds(Int(value) ?? 30000)
            default: Self.usage("unknown option \(key)")
            }
        }
        if target.isEmpty { Self.usage("--target is required") }
    }

    static func usage(_ problem: String) -> Never {
        print("TMFProbe: \(problem)\nusage: TMFProbe abort-in-device|abort-deadline|logical-unit-reset --target IQN"
            + " [--hz 250] [--abort-deadline-ms N] [--command-timeout-ms N]")
        exit(2)
    }
}

/// One logged-in session and every PDU it received, with arrival times.
final class Session {
    let name: String
    let client: RawISCSIClient
    private(set) var arrivals: [(pdu: RawPDU, at: ContinuousClock.Instant)] = []

    init(name: String, client: RawISCSIClient) {
        self.name = name
        self.client = client
    }

    func record(_ pdu: RawPDU, at instant: ContinuousClock.Instant) { arrivals.append((pdu, instant)) }

    /// The PDUs that carry `tag`.
    func pdus(for tag: UInt32) -> [(pdu: RawPDU, at: ContinuousClock.Instant)] {
        arrivals.filter { $0.pdu.initiatorTaskTag == tag }
    }

    /// The PDU that ended the command or function `tag`: SCSI Response, Data-In with status, or TMF Response.
    func completion(of tag: UInt32) -> (pdu: RawPDU, at: ContinuousClock.Instant)? {
        pdus(for: tag).first {
            $0.pdu.scsiStatus != nil || $0.pdu.opcode == RawOpcode.taskManagementResponse
        }
    }
}

/// The scenarios, their clock and their verdicts.
final class Probe {
    let options: Options
    let start = ContinuousClock.now
    private(set) var failures: [String] = []
    static let delayFile = "/sys/bus/pseudo/drivers/scsi_debug/delay"

    init(options: Options) { self.options = options }

    // MARK: Reporting

    func seconds(_ duration: Duration) -> String {
        String(format: "%.3f s", Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18)
    }

    func log(_ text: String) { print("[+\(seconds(ContinuousClock.now - start))] \(text)") }

    func expect(_ condition: Bool, _ message: @autoclosure () -> String) {
        guard !condition else { return }
        failures.append(message())
        print("FAIL: \(message())")
    }

    func measured(_ text: String) { print("measured: \(text)") }

    static func describe(_ pdu: RawPDU) -> String {
        let tag = String(format: "itt=0x%08x", pdu.initiatorTaskTag)
        switch pdu.opcode {
        case RawOpcode.scsiResponse:
            let sense = pdu.sense.map { String(format: " sense %x/%02x/%02x", $0.key, $0.asc, $0.ascq) } ?? ""
            return "SCSI Response \(tag) response=\(pdu.response) status=0x\(String(pdu.header[3], radix: 16))\(sense)"
        case RawOpcode.dataIn:
            let status = pdu.scsiStatus.map { " status=0x\(String($0, radix: 16))" } ?? ""
            return "Data-In \(tag) \(pdu.data.count) bytes\(status)"
        case RawOpcode.taskManagementResponse: return "Task Management Response \(tag) response=\(pdu.response)"
        case RawOpcode.readyToTransfer: return "R2T \(tag)"
        case RawOpcode.nopIn: return "NOP-In \(tag)"
        case RawOpcode.asyncMessage: return "Asynchronous Message event=\(pdu.header[36])"
        case RawOpcode.reject: return "Reject reason=0x\(String(pdu.rejectReason, radix: 16))"
        default: return "opcode 0x\(String(pdu.opcode, radix: 16)) \(tag)"
        }
    }

    // MARK: Sessions and PDUs

    func login(_ name: String, initiator: String) throws -> Session {
        let client = try RawISCSIClient(port: 3260, timeout: .seconds(60))
        let result = try client.login(initiatorName: initiator, targetName: options.target)
        guard result.succeeded else {
            throw RawISCSIFailure("login of \(initiator) failed: status \(result.response.loginStatus)")
        }
        guard result.value("ImmediateData") == "Yes" else {
            throw RawISCSIFailure("the target refused ImmediateData; the WRITEs here need it")
        }
        log("\(name): logged in as \(initiator)")
        return Session(name: name, client: client)
    }

    /// Receives from every session until `deadline`, or until `done` holds; answers the target's NOP-In pings.
    func pump(_ sessions: [Session], until deadline: ContinuousClock.Instant, done: () -> Bool = { false }) throws {
        while ContinuousClock.now < deadline && !done() {
            for session in sessions {
                guard let pdu = try session.client.receivePDU(within: .milliseconds(sessions.count > 1 ? 5 : 20))
                else { continue }
                let now = ContinuousClock.now
                session.record(pdu, at: now)
                log("\(session.name) <- \(Self.describe(pdu))")
                if pdu.opcode == RawOpcode.nopIn, RawPDU.uint32(pdu.header, at: 20) != 0xffff_ffff {
                    var bytes = session.client.header(
                        opcode: RawOpcode.nopOut, immediate: true, flags: 0x80, initiatorTaskTag: 0xffff_ffff)
                    bytes.replaceSubrange(8..<24, with: pdu.header[8..<24])
                    RawISCSIClient.put(0xffff_ffff, into: &bytes, at: 16)
                    try session.client.send(session.client.encode(header: bytes))
                }
            }
        }
    }

    /// Sends a command and waits (up to `timeout`) for its end; returns the ending PDU and the Data-In data.
    func execute(
        _ session: Session, _ cdb: [UInt8], readLength: Int = 0, write: [UInt8] = [], timeout: Duration = .seconds(30)
    ) throws -> (end: RawPDU, data: [UInt8]) {
        let sent = try session.client.sendCommand(cdb, readLength: readLength, write: write)
        let tag = sent.initiatorTaskTag
        try pump([session], until: .now + timeout) { session.completion(of: tag) != nil }
        guard let end = session.completion(of: tag) else {
            throw RawISCSIFailure("\(session.name): no status for itt 0x\(String(tag, radix: 16)) in \(timeout)")
        }
        let data = session.pdus(for: tag).filter { $0.pdu.opcode == RawOpcode.dataIn }.flatMap(\.pdu.data)
        return (end.pdu, data)
    }

    /// TEST UNIT READY until GOOD; returns the unit attentions (ASC, ASCQ) met on the way.
    @discardableResult
    func unitAttentions(_ session: Session) throws -> [(asc: UInt8, ascq: UInt8)] {
        var seen: [(asc: UInt8, ascq: UInt8)] = []
        for _ in 0..<5 {
            let end = try execute(session, [0, 0, 0, 0, 0, 0]).end
            if end.scsiStatus == 0 { return seen }
            guard end.scsiStatus == 0x02, let sense = end.sense, sense.key == 6 else {
                throw RawISCSIFailure("\(session.name): TEST UNIT READY ended \(Self.describe(end))")
            }
            seen.append((sense.asc, sense.ascq))
        }
        throw RawISCSIFailure("\(session.name): TEST UNIT READY still reports unit attentions: \(seen)")
    }

    /// Writes scsi_debug's `delay` (jiffies); the device refuses it (EBUSY) while it holds commands, so this
    /// retries for up to `within`.
    func setDelay(_ delay: Duration, within: Duration = .seconds(30)) throws {
        let jiffies = Int(delay.components.seconds) * options.hz
            + Int(delay.components.attoseconds / 1_000_000_000_000_000) * options.hz / 1000
        let deadline = ContinuousClock.now + within
        while true {
            let descriptor = open(Self.delayFile, O_WRONLY)
            guard descriptor >= 0 else { throw RawISCSIFailure("cannot open \(Self.delayFile): errno \(errno)") }
            let text = Array("\(jiffies)\n".utf8)
            let written = text.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
            let error = errno
            close(descriptor)
            if written == text.count {
                log("scsi_debug delay = \(jiffies) jiffies (\(delay))")
                return
            }
            guard error == EBUSY, ContinuousClock.now < deadline else {
                throw RawISCSIFailure("writing \(jiffies) to \(Self.delayFile): errno \(error)")
            }
            pause(.milliseconds(50))
        }
    }

    func pause(_ duration: Duration) {
        var time = timespec(
            tv_sec: Int(duration.components.seconds),
            tv_nsec: Int(duration.components.attoseconds / 1_000_000_000))
        nanosleep(&time, nil)
    }

    /// One block of the test pattern: the LBA in its first four bytes, then `fill`.
    static func block(lba: UInt32, fill: UInt8) -> [UInt8] {
        var bytes = [UInt8](repeating: fill, count: 512)
        RawISCSIClient.put(lba, into: &bytes, at: 0)
        return bytes
    }

    static func blocks(lba: UInt32, count: Int, fill: UInt8) -> [UInt8] {
        (0..<UInt32(count)).flatMap { block(lba: lba + $0, fill: fill) }
    }

    /// Checks that every PDU for `tags` that `session` received is in `allowed`.
    func expectNothing(for tags: [UInt32], on session: Session, _ why: String) {
        for tag in tags {
            for arrival in session.pdus(for: tag) {
                expect(
                    false,
                    "\(session.name): \(Self.describe(arrival.pdu)) at +\(seconds(arrival.at - start)) for an aborted "
                        + "task (\(why))")
            }
        }
    }

    // MARK: Scenarios

    /// Test 1: a READ and a WRITE in flight at the slowed device, then ABORT TASK for each. Each TMF response
    /// leaves only when the device has returned the command; nothing of the aborted commands comes back; the
    /// WRITE's blocks are each old or new.
    func abortInDevice() throws {
        let delay = Duration.seconds(5)
        let session = try login("A", initiator: "iqn.2026-11.dev.ferry:probe-a")
        try unitAttentions(session)
        let writeLBA: UInt32 = 1000
        let readLBA: UInt32 = 2000
        let old = Self.blocks(lba: writeLBA, count: 8, fill: 0x11)
        let new = Self.blocks(lba: writeLBA, count: 8, fill: 0x22)
        let written = try execute(session, RawISCSIClient.write10(lba: writeLBA, blocks: 8), write: old).end
        expect(written.scsiStatus == 0, "the first WRITE ended \(Self.describe(written))")

        try setDelay(delay)
        let sentAt = ContinuousClock.now
        let read = try session.client.sendCommand(RawISCSIClient.read10(lba: readLBA, blocks: 8), readLength: 4096)
        let write = try session.client.sendCommand(RawISCSIClient.write10(lba: writeLBA, blocks: 8), write: new)
        log("A -> READ itt=0x\(String(read.initiatorTaskTag, radix: 16)), WRITE itt=0x\(String(write.initiatorTaskTag, radix: 16))")
        try pump([session], until: sentAt + .seconds(1))
        expectNothing(for: [read.initiatorTaskTag, write.initiatorTaskTag], on: session, "before the abort")

        var aborts: [(what: String, tag: UInt32, at: ContinuousClock.Instant)] = []
        for (what, command) in [("READ", read), ("WRITE", write)] {
            let tag = try session.client.sendTaskManagement(.abortTask, referenced: command)
            aborts.append((what, tag, .now))
            log("A -> ABORT TASK itt=0x\(String(tag, radix: 16)) for the \(what)")
        }
        try pump([session], until: sentAt + delay + .seconds(20)) {
            aborts.allSatisfy { session.completion(of: $0.tag) != nil }
        }
        try pump([session], until: .now + .seconds(2))
        for abort in aborts {
            guard let response = session.completion(of: abort.tag) else {
                expect(false, "no Task Management Response for the ABORT TASK of the \(abort.what)")
                continue
            }
            let held = response.at - abort.at
            let remaining = delay - (abort.at - sentAt)
            measured(
                "ABORT TASK of the \(abort.what): response \(response.pdu.response) after \(seconds(held)); the "
                    + "device still had \(seconds(remaining)) to go")
            expect(response.pdu.response == 0, "ABORT TASK of the \(abort.what) answered \(response.pdu.response)")
            expect(
                held >= remaining - .milliseconds(500),
                "ABORT TASK of the \(abort.what) answered after \(seconds(held)), before the device returned the "
                    + "command (\(seconds(remaining)) to go)")
            expect(
                held <= remaining + .seconds(3),
                "ABORT TASK of the \(abort.what) answered \(seconds(held - remaining)) after the device returned it")
        }
        expectNothing(for: [read.initiatorTaskTag, write.initiatorTaskTag], on: session, "after ABORT TASK")

        try setDelay(.zero)
        let (end, data) = try execute(session, RawISCSIClient.read10(lba: writeLBA, blocks: 8), readLength: 4096)
        expect(end.scsiStatus == 0, "the READ after the aborts ended \(Self.describe(end))")
        expect(data.count == 4096, "the READ after the aborts returned \(data.count) bytes")
        var kinds: [String] = []
        for index in 0..<min(8, data.count / 512) {
            let block = Array(data[index * 512..<(index + 1) * 512])
            if block == Array(old[index * 512..<(index + 1) * 512]) {
                kinds.append("old")
            } else if block == Array(new[index * 512..<(index + 1) * 512]) {
                kinds.append("new")
            } else {
                kinds.append("TORN")
                expect(false, "block \(writeLBA + UInt32(index)) is neither the old nor the new data")
            }
        }
        measured("the aborted WRITE's blocks read back as \(kinds.joined(separator: " "))")
        let after = try unitAttentions(session)
        expect(after.isEmpty, "unit attentions after ABORT TASK without a reset: \(after)")
    }

    /// Test 2: a READ that the device keeps past the abort deadline; ABORT TASK makes Ferry reset the device
    /// (tmf.sh checks the kernel log), the response is bounded, and the session keeps working with at most one
    /// unit attention of the 29h family (Ferry's own; the device's is absorbed).
    func abortDeadline() throws {
        let delay = options.commandTimeout + .seconds(20)
        let session = try login("A", initiator: "iqn.2026-11.dev.ferry:probe-a")
        try unitAttentions(session)
        try setDelay(delay)
        let sentAt = ContinuousClock.now
        let read = try session.client.sendCommand(RawISCSIClient.read10(lba: 3000, blocks: 8), readLength: 4096)
        try pump([session], until: sentAt + .seconds(1))
        let abortAt = ContinuousClock.now
        let abort = try session.client.sendTaskManagement(.abortTask, referenced: read)
        log("A -> ABORT TASK itt=0x\(String(abort, radix: 16)) for the READ itt=0x\(String(read.initiatorTaskTag, radix: 16))")
        let bound = options.commandTimeout + .seconds(5)
        try pump([session], until: sentAt + bound + .seconds(10)) { session.completion(of: abort) != nil }
        try pump([session], until: .now + .seconds(1))
        if let response = session.completion(of: abort) {
            let held = response.at - abortAt
            measured(
                "ABORT TASK past the abort deadline (\(options.abortDeadline)): response \(response.pdu.response) "
                    + "after \(seconds(held)), \(seconds(response.at - sentAt)) after the READ; command_timeout "
                    + "\(options.commandTimeout)")
            expect(response.pdu.response == 0, "ABORT TASK answered \(response.pdu.response)")
            expect(
                held >= options.abortDeadline - .milliseconds(300),
                "ABORT TASK answered after \(seconds(held)), before the abort deadline \(options.abortDeadline)")
            expect(
                response.at - sentAt <= bound,
                "ABORT TASK answered \(seconds(response.at - sentAt)) after the READ, beyond command_timeout + 5 s")
        } else {
            expect(false, "no Task Management Response for the ABORT TASK within \(bound + .seconds(10))")
        }
        expectNothing(for: [read.initiatorTaskTag], on: session, "after ABORT TASK")

        try setDelay(.zero)
        let attentions = try unitAttentions(session)
        measured("unit attentions after the escalated abort: \(attentions.map { String(format: "%02x/%02x", $0.asc, $0.ascq) })")
        expect(attentions.count <= 1, "more than one unit attention after the device reset: \(attentions)")
        expect(attentions.allSatisfy { $0.asc == 0x29 }, "a unit attention outside the 29h family: \(attentions)")
        let (end, data) = try execute(session, RawISCSIClient.read10(lba: 3000, blocks: 8), readLength: 4096)
        expect(end.scsiStatus == 0 && data.count == 4096, "the READ after the device reset ended \(Self.describe(end))")
    }

    /// Test 3: LOGICAL UNIT RESET from session A while A and B each have commands in the slowed device. The
    /// response leaves after the device let go of them; A gets nothing for its tasks, B at most TASK ABORTED;
    /// each session then sees one unit attention 29/03.
    func logicalUnitReset() throws {
        let delay = Duration.seconds(5)
        let a = try login("A", initiator: "iqn.2026-11.dev.ferry:probe-a")
        let b = try login("B", initiator: "iqn.2026-11.dev.ferry:probe-b")
        try unitAttentions(a)
        try unitAttentions(b)
        try setDelay(delay)
        let sentAt = ContinuousClock.now
        let aTasks = [
            try a.client.sendCommand(RawISCSIClient.read10(lba: 4000, blocks: 8), readLength: 4096),
            try a.client.sendCommand(RawISCSIClient.read10(lba: 4100, blocks: 8), readLength: 4096),
            try a.client.sendCommand(
                RawISCSIClient.write10(lba: 4200, blocks: 8), write: Self.blocks(lba: 4200, count: 8, fill: 0x33)),
        ].map(\.initiatorTaskTag)
        let bTasks = [
            try b.client.sendCommand(RawISCSIClient.read10(lba: 5000, blocks: 8), readLength: 4096),
            try b.client.sendCommand(
                RawISCSIClient.write10(lba: 5100, blocks: 8), write: Self.blocks(lba: 5100, count: 8, fill: 0x44)),
        ].map(\.initiatorTaskTag)
        try pump([a, b], until: sentAt + .seconds(1))
        expectNothing(for: aTasks, on: a, "before the reset")
        expectNothing(for: bTasks, on: b, "before the reset")
        let resetAt = ContinuousClock.now
        let reset = try a.client.sendTaskManagement(.logicalUnitReset)
        log("A -> LOGICAL UNIT RESET itt=0x\(String(reset, radix: 16))")
        try pump([a, b], until: sentAt + options.commandTimeout + .seconds(15)) { a.completion(of: reset) != nil }
        try pump([a, b], until: .now + .seconds(2))
        if let response = a.completion(of: reset) {
            measured(
                "LOGICAL UNIT RESET: response \(response.pdu.response) after \(seconds(response.at - resetAt)), "
                    + "\(seconds(response.at - sentAt)) after the commands (device delay \(delay))")
            expect(response.pdu.response == 0, "LOGICAL UNIT RESET answered \(response.pdu.response)")
            expect(
                response.at - sentAt >= delay - .milliseconds(500),
                "LOGICAL UNIT RESET answered \(seconds(response.at - sentAt)) after the commands, before the "
                    + "device let go of them (delay \(delay))")
        } else {
            expect(false, "no Task Management Response for LOGICAL UNIT RESET")
        }
        expectNothing(for: aTasks, on: a, "the issuing session")
        for tag in bTasks {
            for arrival in b.pdus(for: tag) {
                expect(
                    arrival.pdu.opcode == RawOpcode.scsiResponse && arrival.pdu.scsiStatus == 0x40,
                    "B: \(Self.describe(arrival.pdu)) for a task the reset aborted (only TASK ABORTED may come)")
            }
        }
        measured("B's tasks ended: \(bTasks.map { b.completion(of: $0).map { Self.describe($0.pdu) } ?? "silently" })")

        try setDelay(.zero)
        for session in [a, b] {
            let attentions = try unitAttentions(session)
            measured("\(session.name): unit attentions after the reset: \(attentions.map { String(format: "%02x/%02x", $0.asc, $0.ascq) })")
            expect(
                attentions.count == 1 && attentions[0].asc == 0x29 && attentions[0].ascq == 0x03,
                "\(session.name): expected one unit attention 29/03, saw \(attentions)")
        }
    }
}

let probe = Probe(options: Options(Array(CommandLine.arguments.dropFirst())))
do {
    switch probe.options.scenario {
    case "abort-in-device": try probe.abortInDevice()
    case "abort-deadline": try probe.abortDeadline()
    case "logical-unit-reset": try probe.logicalUnitReset()
    default: Options.usage("unknown scenario \(probe.options.scenario)")
    }
} catch {
    probe.expect(false, "\(error)")
}
print(probe.failures.isEmpty ? "PASS: \(probe.options.scenario)" : "FAILED: \(probe.failures.count) checks")
exit(probe.failures.isEmpty ? 0 : 1)
