public import FerryBackends
import Dispatch
import FerrySync
import Foundation
import NIOCore
public import SCSI
import Synchronization

/// Task management on the device: terminating a task the device holds, its abort deadline and the escalation to a
/// device reset, and resets themselves, during which new commands wait (``PassthroughBackend/ParkedCommand``).
extension PassthroughBackend {
    /// Terminates a task: one waiting for a reset to end is dropped at once; one the device runs is
    /// marked (its data and status are discarded when it returns) and gets its abort deadline.
    public func terminate(_ tag: BackendTaskTag) {
        let dropped = parked.withLock { parked in
            parked.firstIndex { $0.tag == tag }.map { parked.remove(at: $0) }
        }
        if let dropped {
            dropped.completion(.terminated)
            return
        }
        channel.terminate(tag)
        guard channel.holds(tag) else { return }
        let action = escalation.withLock { $0.terminationRequested(tag, at: .now()) }
        if let action { carryOut(action) }
    }

    public func resetDevice(
        _ reset: DeviceReset, siblings: [any LogicalUnitBackend], completion: @escaping @Sendable () -> Void
    ) {
        guard configuration.resetsDevice else {
            logger.info("not resetting the device (reset_device = false)", metadata: ["scope": "\(reset)"])
            completion()
            return
        }
        let siblings = siblings.compactMap { $0 as? PassthroughBackend }.filter { $0 !== self }
        let scope: DeviceResetScope = reset == .target ? .target : .logicalUnit
        taskManagementQueue.async { [self] in
            performReset(scope, reason: reset == .target ? "TARGET RESET" : "LOGICAL UNIT RESET", siblings: siblings)
            completion()
        }
    }

    private func carryOut(_ action: AbortEscalation.Action) {
        switch action {
        case .armTimer(let instant):
            let delay = max(0, (instant - .now()).nanoseconds)
            taskManagementQueue.asyncAfter(deadline: .now() + .nanoseconds(Int(delay))) { [self] in
                abortDeadlinePassed()
            }
        case .resetDevice(let overdue):
            taskManagementQueue.async { [self] in escalate(overdue) }
        }
    }

    /// On ``taskManagementQueue``.
    private func abortDeadlinePassed() {
        let action = escalation.withLock { $0.timerFired(at: .now(), inDevice: channel.holds) }
        switch action {
        case .resetDevice(let overdue): escalate(overdue)
        case .armTimer?: carryOut(action!)
        case nil: break
        }
    }

    /// The abort deadline passed with terminated tasks still in the device: reset it. On
    /// ``taskManagementQueue``.
    private func escalate(_ overdue: [BackendTaskTag]) {
        logger.warning(
            "terminated commands are still in the device after the abort deadline; resetting the device",
            metadata: ["tags": "\(overdue)", "abortDeadline": "\(configuration.abortDeadline)"])
        performReset(.logicalUnit, reason: "abort deadline", siblings: []) {
            // > SAM-5 §6.3.3: the reset may have ended other initiators' commands: every I_T nexus
            // > learns of it, as after a LOGICAL UNIT RESET.
            unitAttentions.apply(.logicalUnitReset)
        }
    }

    /// Resets the device (or its SCSI target) with NO_ESCALATE: new commands to this logical unit
    /// and to `siblings` wait; after the reset the device's own unit attention is cleared on each
    /// with TEST UNIT READY, `beforeResuming` runs, and the waiting commands go on. Blocks; on
    /// ``taskManagementQueue``. The tasks in the device come back as the driver decides.
    private func performReset(
        _ scope: DeviceResetScope, reason: String, siblings: [PassthroughBackend],
        beforeResuming: () -> Void = {}
    ) {
        let start = NIODeadline.now()
        let units = [self] + siblings
        for unit in units { unit.hold() }
        let result = channel.reset(scope)
        var absorbed: [String] = []
        for unit in units { absorbed += unit.absorbUnitAttentions() }
        beforeResuming()
        let outcome: String
        switch result {
        case .success: outcome = "done"
        case .failure(let error): outcome = "failed: \(error)"
        }
        logger.notice(
            "device reset",
            metadata: [
                "scope": "\(scope)", "reason": "\(reason)", "outcome": "\(outcome)",
                "milliseconds": "\((NIODeadline.now() - start).nanoseconds / 1_000_000)",
                "absorbedUnitAttentions": "\(absorbed)", "siblings": "\(siblings.map(\.device.node))",
            ])
        for unit in units { unit.resume() }
    }

    /// New commands wait until ``resume()``; the terminated tasks in the device are covered by the reset.
    private func hold() {
        parked.withLock { _ in holding.store(true, ordering: .releasing) }
        resetGeneration.add(1, ordering: .acquiringAndReleasing)
        escalation.withLock { $0.resetStarted() }
    }

    private func resume() {
        let waiting = parked.withLock { parked in
            holding.store(false, ordering: .releasing)
            defer { parked.removeAll() }
            return parked
        }
        for command in waiting { submit(command.request, tag: command.tag, completion: command.completion) }
        if let action = escalation.withLock({ $0.resetFinished() }) { carryOut(action) }
    }

    /// Parks a command while the device is held; false when the hold has just ended.
    func park(_ command: ParkedCommand) -> Bool {
        parked.withLock { parked in
            guard holding.load(ordering: .acquiring) else { return false }
            parked.append(command)
            return true
        }
    }

    /// Clears the unit attention the device raised for the reset, so that it never fails an
    /// initiator's command: TEST UNIT READY until the device stops reporting one (at most four
    /// times; a condition other than a unit attention, such as NOT READY, is the device's to report).
    /// Returns the conditions cleared, as "ASC/ASCQ". Blocks.
    private func absorbUnitAttentions() -> [String] {
        var absorbed: [String] = []
        for _ in 0..<4 {
            let done = DispatchSemaphore(value: 0)
            let answer = Locked<SGCommand.Completion?>(nil)
            var cdb = ByteBufferAllocator().buffer(capacity: 6)
            cdb.writeRepeatingByte(0, count: 6)  // TEST UNIT READY
            let tag = BackendTaskTag(ownTags.subtract(1, ordering: .relaxed).newValue)
            channel.start(
                SGCommand(tag: tag, cdb: cdb, direction: .none, timeoutMilliseconds: 5_000, atTail: false) {
                    completion in
                    answer.withLock { $0 = completion }
                    done.signal()
                })
            done.wait()
            guard case .finished(let outcome, _)? = answer.withLock({ $0 }),
                let code = Self.unitAttention(in: outcome)
            else { break }
            absorbed.append(String(format: "%02X/%02X", code.asc, code.ascq))
        }
        return absorbed
    }

    /// The ASC and ASCQ of a CHECK CONDITION with sense key UNIT ATTENTION, fixed or descriptor format.
    static func unitAttention(in outcome: SGOutcome) -> (asc: UInt8, ascq: UInt8)? {
        let sense = outcome.sense
        guard outcome.status == SCSIStatus.checkCondition.rawValue, sense.count >= 4 else { return nil }
        switch sense[0] & 0x7f {
        case 0x70, 0x71:
            guard sense.count >= 14, sense[2] & 0x0f == SenseKey.unitAttention.rawValue else { return nil }
            return (sense[12], sense[13])
        case 0x72, 0x73:
            guard sense[1] & 0x0f == SenseKey.unitAttention.rawValue else { return nil }
            return (sense[2], sense[3])
        default:
            return nil
        }
    }

    /// A unit attention of the power on, reset or bus device reset class (29h).
    static func isResetUnitAttention(_ outcome: SGOutcome) -> Bool {
        unitAttention(in: outcome)?.asc == 0x29
    }
}
