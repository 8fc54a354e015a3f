import FerryBackends
import FerrySync
import NIOCore
import SCSI
import Testing

/// A virtual clock: sleeping moves it on at once, and calls `duringSleep` first.
private final class VirtualClock: ErasureClock {
    private let origin = ContinuousClock.now
    private let state = Locked<(elapsed: Duration, sleeps: [Duration])>((.zero, []))
    let duringSleep = Locked<@Sendable () -> Void>({})

    var now: ContinuousClock.Instant { origin + state.withLock { $0.elapsed } }
    var elapsed: Duration { state.withLock { $0.elapsed } }
    var sleeps: [Duration] { state.withLock { $0.sleeps } }

    /// Moves the clock on without sleeping.
    func advance(by duration: Duration) {
        state.withLock { $0.elapsed += duration }
    }

    func sleep(for duration: Duration) {
        duringSleep.withLock { $0 }()
        state.withLock {
            $0.elapsed += duration
            $0.sleeps.append(duration)
        }
    }
}

@Suite struct SanitizePacingTests {
    /// 8 MiB: eight 1 MiB chunks of SANITIZE OVERWRITE per pass.
    static let byteCount = 8 << 20

    private let nexus = ITNexus(
        initiatorPortName: "iqn.2026-11.test:initiator,i,0x000000000001",
        targetPortName: "iqn.2026-11.test:target,t,0x0001", relativeTargetPortIdentifier: 1)

    private func device(rate: UInt64?, clock: VirtualClock) -> EmulatedBlockDevice {
        EmulatedBlockDevice(
            store: MemoryBlockStore(byteCount: Self.byteCount),
            configuration: .init(serial: "PACED", sanitizeRate: rate), copyTargets: CopyTargetDirectory(),
            erasureClock: clock)
    }

    private func run(_ device: EmulatedBlockDevice, _ cdb: [UInt8], data: [UInt8] = []) -> SCSIResult {
        device.execute(
            SCSIRequest(
                cdb: ByteBuffer(bytes: cdb + [UInt8](repeating: 0, count: 16 - cdb.count)), lun: 0, nexus: nexus,
                expectedDataTransferLength: data.isEmpty ? 255 : data.count, dataOut: ByteBuffer(bytes: data)))
    }

    /// SANITIZE OVERWRITE with `passes` passes of a 2-byte pattern.
    private func overwrite(_ device: EmulatedBlockDevice, passes: UInt8) -> SCSIResult {
        run(device, [0x48, 0x01, 0, 0, 0, 0, 0, 0, 6, 0], data: [passes, 0, 0, 2, 0xde, 0xad])
    }

    @Test func overwriteTakesItsBytesOverTheRate() {
        let clock = VirtualClock()
        let device = device(rate: 2 << 20, clock: clock)
        #expect(overwrite(device, passes: 2).status == .good)
        // 2 passes of 8 MiB at 2 MiB/s: 8 s, one sleep after each 1 MiB chunk.
        #expect(clock.elapsed == .seconds(8))
        #expect(clock.sleeps.count == 16)
        #expect(clock.sleeps.allSatisfy { $0 == .milliseconds(500) })
    }

    @Test func pacingCountsTimeSpentWriting() {
        // Writing each chunk after the first takes 300 ms (the clock moves on while the pacer
        // sleeps, before the next chunk): the pacer sleeps only the rest of each chunk's 500 ms.
        let clock = VirtualClock()
        let device = device(rate: 2 << 20, clock: clock)
        clock.duringSleep.withLock { $0 = { clock.advance(by: .milliseconds(300)) } }
        #expect(overwrite(device, passes: 1).status == .good)
        #expect(clock.sleeps == [.milliseconds(500)] + Array(repeating: .milliseconds(200), count: 7))
    }

    @Test func unlimitedOverwriteNeverSleeps() {
        let clock = VirtualClock()
        let device = device(rate: nil, clock: clock)
        #expect(overwrite(device, passes: 3).status == .good)
        #expect(clock.sleeps.isEmpty)
    }

    @Test func commandsDuringPacedOverwriteReportProgress() throws {
        let clock = VirtualClock()
        let device = device(rate: 4 << 20, clock: clock)
        let seen = Locked<[(requestSense: [UInt8], testUnitReady: SCSIResult)]>([])
        clock.duringSleep.withLock {
            $0 = {
                let sense = run(device, [0x03, 0, 0, 0, 18, 0])
                let ready = run(device, [0x00, 0, 0, 0, 0, 0])
                seen.withLock { $0.append((sense.bytes, ready)) }
            }
        }
        #expect(overwrite(device, passes: 1).status == .good)
        let readings = seen.withLock { $0 }
        #expect(readings.count == 8)
        for (chunk, reading) in readings.enumerated() {
            // NOT READY, SANITIZE IN PROGRESS; SKSV with PROGRESS INDICATION = done / 65536.
            let progress = UInt16((chunk + 1) * 65536 / 8 - (chunk == 7 ? 1 : 0))
            try #require(reading.requestSense.count >= 18, "REQUEST SENSE during chunk \(chunk)")
            #expect(reading.requestSense[2] & 0x0f == 0x02)
            #expect(Array(reading.requestSense[12...13]) == [0x04, 0x1b])
            #expect(Array(reading.requestSense[15...17]) == [0x80, UInt8(progress >> 8), UInt8(progress & 0xff)])
            reading.testUnitReady.expectSense(.notReady, .logicalUnitNotReadySanitizeInProgress)
        }
        #expect(run(device, [0x00, 0, 0, 0, 0, 0]).status == .good)
        let sense = run(device, [0x03, 0, 0, 0, 18, 0]).bytes
        try #require(sense.count >= 3)
        #expect(sense[2] & 0x0f == 0x00)
    }
}
