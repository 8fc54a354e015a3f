import FerryBackends
import FerrySync
import Logging
import NIOCore
import Dispatch
import Foundation
import SCSI
import Testing

@testable import FerryPassthrough

/// The backend above the device, driven with a channel that records commands instead of sending
/// them: what Ferry answers itself, what reaches the device, and what comes back.
@Suite struct PassthroughBackendTests {
    final class RecordingChannel: SGChannel {
        let started = Locked<[SGCommand]>([])
        let terminated = Locked<[BackendTaskTag]>([])
        let returned = Locked<Set<BackendTaskTag>>([])
        let resets = Locked<[DeviceResetScope]>([])
        /// What TEST UNIT READY answers after a reset, in turn; then GOOD.
        let testUnitReadyAnswers = Locked<[SGOutcome]>([])
        /// Blocks SG_SCSI_RESET until signalled, when set.
        let resetGate = Locked<DispatchSemaphore?>(nil)
        /// SG_SCSI_RESET calls begun (the backend holds new commands by then).
        let resetsBegun = Locked(0)

        func start(_ command: SGCommand) {
            // Ferry's own TEST UNIT READY after a reset (its tags count down from the top) is answered here.
            guard command.tag.rawValue > UInt64.max - 1_000 else {
                started.withLock { $0.append(command) }
                return
            }
            let answer = testUnitReadyAnswers.withLock { $0.isEmpty ? SGOutcome(status: 0) : $0.removeFirst() }
            command.completion(.finished(answer, dataIn: ByteBuffer()))
        }
        func terminate(_ tag: BackendTaskTag) { terminated.withLock { $0.append(tag) } }
        func holds(_ tag: BackendTaskTag) -> Bool {
            started.withLock { $0.contains { $0.tag == tag } } && !returned.withLock { $0.contains(tag) }
        }
        func reset(_ scope: DeviceResetScope) -> Result<Void, SGSystemCallError> {
            resetsBegun.withLock { $0 += 1 }
            resetGate.withLock { $0 }?.wait()
            resets.withLock { $0.append(scope) }
            return .success(())
        }
        func shutdown() {}

        var commands: [SGCommand] { started.withLock { $0 } }

        /// The `index`th command started; throws, failing the test rather than the process, when the backend
        /// started fewer.
        func command(_ index: Int) throws -> SGCommand {
            let commands = self.commands
            guard commands.indices.contains(index) else {
                throw MissingCommand(index: index, started: commands.map(\.tag))
            }
            return commands[index]
        }

        /// The device returns the `index`th command started.
        func finish(_ index: Int, _ completion: SGCommand.Completion) throws {
            let command = try command(index)
            returned.withLock { _ = $0.insert(command.tag) }
            command.completion(completion)
        }
    }

    struct MissingCommand: Error, CustomStringConvertible {
        let index: Int
        let started: [BackendTaskTag]
        var description: String { "no command \(index) reached the device; it has \(started)" }
    }

    final class Completions: Sendable {
        private let received = Locked<[BackendTaskTag: SCSIResult?]>([:])

        func callback(_ tag: BackendTaskTag) -> @Sendable (BackendCompletion) -> Void {
            { completion in
                self.received.withLock {
                    switch completion {
                    case .completed(let result): $0[tag] = .some(result)
                    case .terminated: $0[tag] = .some(nil)
                    }
                }
            }
        }

        /// The result of `tag`: nil while it has not completed, .some(nil) when terminated.
        subscript(_ tag: BackendTaskTag) -> SCSIResult?? { received.withLock { $0[tag] } }

        func terminated(_ tag: BackendTaskTag) -> Bool {
            received.withLock { entry in
                guard case .some(.none) = entry[tag] else { return false }
                return true
            }
        }
    }

    let channel = RecordingChannel()
    let completions = Completions()
    let backend: PassthroughBackend
    let first = ITNexus(
        initiatorPortName: "iqn.a,i,0x1", targetPortName: "iqn.t,t,0x1", relativeTargetPortIdentifier: 1)
    let second = ITNexus(
        initiatorPortName: "iqn.b,i,0x1", targetPortName: "iqn.t,t,0x1", relativeTargetPortIdentifier: 1)
    private var nextTag = 0

    init() {
        self.init(abortDeadline: .seconds(5))
    }

    init(abortDeadline: TimeAmount, resetsDevice: Bool = true) {
        backend = PassthroughBackend(
            configuration: .init(
                path: "/dev/sg0", commandTimeoutMilliseconds: 3_000, abortDeadline: abortDeadline,
                resetsDevice: resetsDevice),
            device: PassthroughDevice(node: "/dev/sg0", access: .generic, blockDeviceName: "sda", genericName: "sg0"),
            identity: DeviceIdentity(
                peripheralDeviceType: 0, vendor: "Linux", product: "scsi_debug", revision: "0191", blockSize: 512,
                blockCount: 131_072, notReadyReason: nil),
            maximumTransferLength: 512 * 1024, channel: channel, logger: Logger(label: "test"))
    }

    /// Submits `cdb` from `nexus`; returns its tag.
    private mutating func submit(
        _ cdb: [UInt8], from nexus: ITNexus, expected: Int = 0, dataOut: [UInt8] = [],
        attribute: SCSITaskAttribute = .simple
    ) -> BackendTaskTag {
        nextTag += 1
        let tag = BackendTaskTag(UInt64(nextTag))
        var padded = cdb
        padded += [UInt8](repeating: 0, count: max(0, 16 - cdb.count))
        let request = SCSIRequest(
            cdb: ByteBuffer(bytes: padded), lun: 0, nexus: nexus, attribute: attribute,
            expectedDataTransferLength: expected, dataOut: ByteBuffer(bytes: dataOut))
        backend.submit(request, tag: tag, completion: completions.callback(tag))
        return tag
    }

    private let read10: [UInt8] = [0x28, 0, 0, 0, 0, 0x10, 0, 0, 8, 0]

    @Test mutating func reservationsAreKeptPerNexusAboveTheDevice() throws {
        let reserve = submit([0x16, 0, 0, 0, 0, 0], from: first)
        #expect(completions[reserve]??.status == .good)
        let conflicting = submit(read10, from: second, expected: 4096)
        #expect(completions[conflicting]??.status == .reservationConflict)
        #expect(channel.commands.isEmpty)
        let holder = submit(read10, from: first, expected: 4096)
        #expect(completions[holder] == nil)
        #expect(channel.commands.map(\.tag) == [holder])
        guard case .fromDevice(4096) = channel.commands.first?.direction else {
            Issue.record("READ(10) of 8 blocks should ask the device for 4096 bytes")
            return
        }
        let command = try channel.command(0)
        #expect(Array(command.cdb.readableBytesView) == read10)
        #expect(command.atTail)
        #expect(command.timeoutMilliseconds == 3_000)
    }

    @Test mutating func persistentReservationsAreFerrys() {
        var register = [UInt8](repeating: 0, count: 24)
        register[15] = 0xa1  // SERVICE ACTION RESERVATION KEY
        let registered = submit([0x5f, 0x00, 0, 0, 0, 0, 0, 0, 24, 0], from: first, expected: 24, dataOut: register)
        #expect(completions[registered]??.status == .good)
        let keys = submit([0x5e, 0x00, 0, 0, 0, 0, 0, 0x01, 0x00, 0], from: second, expected: 256)
        #expect(completions[keys]??.dataIn.getInteger(at: 8, as: UInt64.self) == 0xa1)
        #expect(channel.commands.isEmpty)
    }

    @Test mutating func ferrysUnitAttentionsComeFirst() {
        _ = submit([0, 0, 0, 0, 0, 0], from: first)
        backend.apply(.logicalUnitReset)
        #expect(backend.pendingUnitAttention(for: first)?.code == .busDeviceResetFunctionOccurred)
        let inquiry = submit([0x12, 0, 0, 0, 96, 0], from: first, expected: 96)
        #expect(completions[inquiry] == nil)
        let read = submit(read10, from: first, expected: 4096)
        #expect(completions[read]??.sense == SenseData(.unitAttention, .busDeviceResetFunctionOccurred))
        let again = submit(read10, from: first, expected: 4096)
        #expect(completions[again] == nil)
        #expect(channel.commands.map(\.tag) == [BackendTaskTag(1), inquiry, again])
    }

    @Test mutating func blockLimitsAreClampedOnTheWayBack() throws {
        let tag = submit([0x12, 0x01, 0xb0, 0x00, 0x40, 0], from: first, expected: 64)
        var page = ByteBuffer(bytes: [0x00, 0xb0, 0x00, 0x3c, 0, 0, 0, 0])
        page.writeInteger(UInt32(0xffff))
        page.writeInteger(UInt32(0xffff))
        page.writeBytes([UInt8](repeating: 0, count: 48))
        try channel.command(0).completion(.finished(SGOutcome(status: 0), dataIn: page))
        let result = completions[tag]??.dataIn
        #expect(result?.getInteger(at: 8, as: UInt32.self) == 1024)
        #expect(result?.getInteger(at: 12, as: UInt32.self) == 1024)
        #expect(backend.maximumTransferLength == 512 * 1024)
    }

    @Test mutating func statusSenseAndDataComeBackIntact() throws {
        let tag = submit(read10, from: first, expected: 4096)
        let sense: [UInt8] = [0xf0, 0, 0x03, 0, 0, 0x10, 0x02, 10, 0, 0, 0, 0, 0x11, 0x00, 0, 0, 0, 0]
        try channel.command(0).completion(
            .finished(SGOutcome(status: 0x02, driverStatus: 0x08, sense: sense), dataIn: ByteBuffer()))
        #expect(completions[tag]??.status == .checkCondition)
        #expect(completions[tag]??.sense?.bytes() == sense)
        let short = submit(read10, from: first, expected: 4096)
        try channel.command(1).completion(
            .finished(SGOutcome(status: 0, residual: 1024), dataIn: ByteBuffer(repeating: 7, count: 3072)))
        #expect(completions[short]??.dataIn.readableBytes == 3072)
        let timedOut = submit(read10, from: first, expected: 4096)
        try channel.command(2).completion(.finished(SGOutcome(status: 0, hostStatus: 0x03), dataIn: ByteBuffer()))
        #expect(completions[timedOut]??.sense == SenseData(.abortedCommand, AdditionalSenseCode(0x08, 0x01)))
        let refused = submit(read10, from: first, expected: 4096)
        try channel.command(3).completion(.refused(errno: SGErrno.noDevice))
        #expect(completions[refused]??.sense?.senseKey == .notReady)
    }

    @Test mutating func transfersBeyondTheQueueLimitAreRefused() {
        // READ(10) of 2048 blocks: 1 MiB, twice the 512 KiB limit.
        let tag = submit([0x28, 0, 0, 0, 0, 0, 0, 0x08, 0x00, 0], from: first, expected: 1 << 20)
        #expect(completions[tag]??.sense == .invalidFieldInCDB(byte: 7))
        #expect(channel.commands.isEmpty)
        // An allocation length beyond it is cut to it instead.
        _ = submit([0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], from: first, expected: 1 << 20)
        guard case .fromDevice(let length) = channel.commands.first?.direction else {
            Issue.record("GET LBA STATUS should reach the device")
            return
        }
        #expect(length == 512 * 1024)
    }

    @Test mutating func shortWritesWriteTheWholeBlocksReceived() throws {
        let tag = submit(
            [0x2a, 0, 0, 0, 0, 0x20, 0, 0, 8, 0], from: first, expected: 1536,
            dataOut: [UInt8](repeating: 1, count: 1536))
        #expect(completions[tag] == nil)
        let write = try channel.command(0)
        #expect(Array(write.cdb.readableBytesView) == [0x2a, 0, 0, 0, 0, 0x20, 0, 0, 3, 0])
        guard case .toDevice(let data) = write.direction else {
            Issue.record("WRITE(10) should send its Data-Out buffer")
            return
        }
        #expect(data.readableBytes == 1536)
        let nothing = submit(
            [0x2a, 0, 0, 0, 0, 0x20, 0, 0, 8, 0], from: first, expected: 100, dataOut: [UInt8](repeating: 1, count: 100)
        )
        #expect(completions[nothing]??.status == .good)
        #expect(channel.commands.count == 1)
        #expect(backend.dataOutLength(for: ByteBuffer(bytes: [0x2a, 0, 0, 0, 0, 0, 0, 0, 8, 0])) == 4096)
    }

    @Test mutating func compareAndWriteSendsBothInstancesAndReturnsMiscompare() throws {
        var compareAndWrite = [UInt8](repeating: 0, count: 16)
        compareAndWrite[0] = 0x89
        compareAndWrite[13] = 2
        let tag = submit(compareAndWrite, from: first, expected: 2048, dataOut: [UInt8](repeating: 0x41, count: 2048))
        let command = try channel.command(0)
        guard case .toDevice(let data) = command.direction else {
            Issue.record("COMPARE AND WRITE should send its Data-Out buffer")
            return
        }
        #expect(data.readableBytes == 2048)
        #expect(Array(command.cdb.readableBytesView) == compareAndWrite)
        // MISCOMPARE, MISCOMPARE DURING VERIFY OPERATION (1D/00), offset 27 in INFORMATION.
        let sense: [UInt8] = [0xf0, 0, 0x0e, 0, 0, 0, 27, 10, 0, 0, 0, 0, 0x1d, 0x00, 0, 0, 0, 0]
        command.completion(
            .finished(SGOutcome(status: 0x02, driverStatus: 0x08, sense: sense), dataIn: ByteBuffer()))
        #expect(completions[tag]??.status == .checkCondition)
        #expect(completions[tag]??.sense?.bytes() == sense)
    }

    @Test mutating func dataOutBeyondWhatTheCDBAsksForStaysInFerry() throws {
        // VERIFY(16) of 4 blocks with BYTCHK 00b: no Data-Out buffer, whatever the initiator sent.
        var verify16 = [UInt8](repeating: 0, count: 16)
        verify16[0] = 0x8f
        verify16[13] = 4
        #expect(backend.dataOutLength(for: ByteBuffer(bytes: verify16)) == 0)
        let tag = submit(verify16, from: first, expected: 2048, dataOut: [UInt8](repeating: 0x41, count: 512))
        let command = try channel.command(0)
        guard case .none = command.direction else {
            Issue.record("VERIFY(16) with BYTCHK 00b should reach the device without Data-Out")
            return
        }
        command.completion(.finished(SGOutcome(status: 0), dataIn: ByteBuffer()))
        #expect(completions[tag]??.status == .good)
    }

    @Test mutating func headOfQueueGoesToTheHeadOfTheDeviceQueue() throws {
        _ = submit(read10, from: first, expected: 4096, attribute: .headOfQueue)
        #expect(try channel.command(0).atTail == false)
    }

    /// Waits up to two seconds for `condition`, which the backend's task management queue makes true.
    private func eventually(_ condition: () -> Bool) -> Bool {
        for _ in 0..<200 {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    private static let resetUnitAttention = SGOutcome(
        status: 0x02, driverStatus: 0x08, sense: [0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x00])

    @Test mutating func aCommandKeptPastTheAbortDeadlineResetsTheDeviceAndRaisesUnitAttention() throws {
        var test = PassthroughBackendTests(abortDeadline: .milliseconds(50))
        let tag = test.submit(read10, from: first, expected: 4096)
        test.channel.testUnitReadyAnswers.withLock { $0 = [Self.resetUnitAttention] }
        test.backend.terminate(tag)
        #expect(test.eventually { test.channel.resets.withLock { $0 } == [.logicalUnit] })
        // A command sent now waits for the end of the reset (the hold began before the ioctl), then
        // meets Ferry's own unit attention for it, once, as every I_T nexus the logical unit knows.
        let next = test.submit(read10, from: first, expected: 4096)
        #expect(test.eventually { test.completions[next] != nil })
        #expect(test.completions[next]??.sense == SenseData(.unitAttention, .busDeviceResetFunctionOccurred))
        #expect(test.channel.testUnitReadyAnswers.withLock { $0.isEmpty }, "the device's unit attention was absorbed")
        #expect(test.completions[tag] == nil, "the task is still in the device")
        try test.channel.finish(0, .terminated)
        #expect(test.completions.terminated(tag))
        _ = test.submit(read10, from: first, expected: 4096)
        #expect(test.channel.commands.count == 2)
    }

    @Test mutating func aCommandReturnedBeforeTheAbortDeadlineNeedsNoReset() throws {
        var test = PassthroughBackendTests(abortDeadline: .milliseconds(50))
        let tag = test.submit(read10, from: first, expected: 4096)
        test.backend.terminate(tag)
        try test.channel.finish(0, .terminated)
        usleep(200_000)
        #expect(test.channel.resets.withLock { $0 }.isEmpty)
        #expect(test.completions.terminated(tag))
    }

    @Test mutating func commandsWaitWhileTheDeviceIsResetAndTheDevicesUnitAttentionNeverReachesThem() throws {
        let gate = DispatchSemaphore(value: 0)
        channel.resetGate.withLock { $0 = gate }
        channel.testUnitReadyAnswers.withLock { $0 = [Self.resetUnitAttention] }
        let inFlight = submit(read10, from: first, expected: 4096)
        let resetDone = DispatchSemaphore(value: 0)
        backend.resetDevice(.logicalUnit, siblings: []) { resetDone.signal() }
        #expect(eventually { channel.resetsBegun.withLock { $0 } == 1 })
        let waiting = submit(read10, from: second, expected: 4096)
        #expect(channel.commands.count == 1, "a command sent during the reset waits for its end")
        gate.signal()
        #expect(resetDone.wait(timeout: .now() + 2) == .success)
        #expect(channel.resets.withLock { $0 } == [.logicalUnit])
        #expect(channel.commands.map(\.tag) == [inFlight, waiting])
        // The command in the device met the device's own unit attention of the reset: it goes again.
        try channel.finish(0, .finished(Self.resetUnitAttention, dataIn: ByteBuffer()))
        #expect(channel.commands.map(\.tag) == [inFlight, waiting, inFlight])
        #expect(completions[inFlight] == nil)
        try channel.finish(2, .finished(SGOutcome(status: 0), dataIn: ByteBuffer(repeating: 1, count: 4096)))
        #expect(completions[inFlight]??.status == .good)
    }

    @Test mutating func aCommandTerminatedWhileParkedEndsAtOnce() {
        let gate = DispatchSemaphore(value: 0)
        channel.resetGate.withLock { $0 = gate }
        let resetDone = DispatchSemaphore(value: 0)
        backend.resetDevice(.logicalUnit, siblings: []) { resetDone.signal() }
        #expect(eventually { channel.resetsBegun.withLock { $0 } == 1 })
        let parked = submit(read10, from: first, expected: 4096)
        backend.terminate(parked)
        #expect(completions.terminated(parked))
        gate.signal()
        #expect(resetDone.wait(timeout: .now() + 2) == .success)
        #expect(channel.commands.isEmpty, "the terminated command never reaches the device")
    }

    @Test mutating func resetDeviceFalseLeavesTheDeviceAlone() {
        let test = PassthroughBackendTests(abortDeadline: .seconds(5), resetsDevice: false)
        let done = DispatchSemaphore(value: 0)
        test.backend.resetDevice(.logicalUnit, siblings: []) { done.signal() }
        #expect(done.wait(timeout: .now()) == .success, "answered at once")
        #expect(test.channel.resets.withLock { $0 }.isEmpty)
    }

    @Test mutating func terminationReachesTheChannel() throws {
        let tag = submit(read10, from: first, expected: 4096)
        backend.terminate(tag)
        #expect(channel.terminated.withLock { $0 } == [tag])
        try channel.command(0).completion(.terminated)
        #expect(completions.terminated(tag))
    }
}

extension PassthroughBackendTests {
    /// A backend whose device did not tell its maximum transfer length.
    init(unknownTransferLimit: Void) {
        backend = PassthroughBackend(
            configuration: .init(path: "/dev/sg0", commandTimeoutMilliseconds: 3_000),
            device: PassthroughDevice(node: "/dev/sg0", access: .generic, blockDeviceName: "sda", genericName: "sg0"),
            identity: DeviceIdentity(
                peripheralDeviceType: 0, vendor: "Linux", product: "scsi_debug", revision: "0191", blockSize: 4096,
                blockCount: 131_072, notReadyReason: nil),
            maximumTransferLength: nil, channel: channel, logger: Logger(label: "test"))
    }

    @Test func readsBeyondWhatSGCanDescribeAreRefusedWithoutAKnownLimit() {
        var test = PassthroughBackendTests(unknownTransferLimit: ())
        // READ(16) and READ(12) of 2^32-1 blocks of 4096 bytes: 16 TiB, past sg's 32-bit DXFER_LEN.
        let read16: [UInt8] = [0x88, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0]
        let read12: [UInt8] = [0xa8, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0]
        let sixteen = test.submit(read16, from: test.first, expected: 4096)
        let twelve = test.submit(read12, from: test.first, expected: 4096)
        #expect(test.completions[sixteen]??.sense == .invalidFieldInCDB(byte: 10))
        #expect(test.completions[twelve]??.sense == .invalidFieldInCDB(byte: 6))
        #expect(test.channel.commands.isEmpty)
        // The largest allocation length still fits, and the largest READ(10) goes to the device.
        _ = test.submit([0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0], from: test.first, expected: 64)
        _ = test.submit([0x28, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0], from: test.first, expected: 65535 * 4096)
        #expect(test.channel.commands.count == 2)
    }
}
