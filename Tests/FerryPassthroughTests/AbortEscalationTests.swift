import SCSI
import NIOCore
import Testing

@testable import FerryPassthrough

/// The abort deadline, driven by a clock of the test's own.
@Suite struct AbortEscalationTests {
    let start = NIODeadline.uptimeNanoseconds(1_000_000_000)
    let a = BackendTaskTag(1)
    let b = BackendTaskTag(2)

    func at(milliseconds: Int64) -> NIODeadline { start + .milliseconds(milliseconds) }

    @Test func aTaskReturnedBeforeItsDeadlineNeedsNoReset() {
        var escalation = AbortEscalation(deadline: .seconds(5))
        #expect(escalation.terminationRequested(a, at: start) == .armTimer(at(milliseconds: 5_000)))
        escalation.taskReturned(a)
        #expect(escalation.timerFired(at: at(milliseconds: 5_000), inDevice: { _ in true }) == nil)
        #expect(escalation.waiting.isEmpty)
    }

    @Test func aTaskStillInTheDevicePastItsDeadlineResetsTheDeviceOnce() {
        var escalation = AbortEscalation(deadline: .seconds(5))
        _ = escalation.terminationRequested(a, at: start)
        #expect(escalation.timerFired(at: at(milliseconds: 5_000), inDevice: { _ in true }) == .resetDevice(overdue: [a]))
        escalation.resetStarted()
        #expect(escalation.resetFinished() == nil, "the reset covers the task: no second deadline")
        // A second function terminating the same task does not start a new deadline.
        #expect(escalation.terminationRequested(a, at: at(milliseconds: 6_000)) == nil)
        #expect(escalation.timerFired(at: at(milliseconds: 20_000), inDevice: { _ in true }) == nil)
        escalation.taskReturned(a)
        #expect(escalation.covered.isEmpty)
    }

    @Test func theTimerFollowsTheEarliestDeadline() {
        var escalation = AbortEscalation(deadline: .seconds(5))
        #expect(escalation.terminationRequested(a, at: start) == .armTimer(at(milliseconds: 5_000)))
        #expect(escalation.terminationRequested(b, at: at(milliseconds: 2_000)) == nil, "an earlier timer is armed")
        escalation.taskReturned(a)
        // The timer fires for a, which left: it re-arms for b.
        #expect(escalation.timerFired(at: at(milliseconds: 5_000), inDevice: { _ in true }) == .armTimer(at(milliseconds: 7_000)))
        #expect(escalation.timerFired(at: at(milliseconds: 7_000), inDevice: { _ in true }) == .resetDevice(overdue: [b]))
    }

    @Test func aTaskThatLeftWithoutAReportIsForgotten() {
        var escalation = AbortEscalation(deadline: .milliseconds(100))
        _ = escalation.terminationRequested(a, at: start)
        // a completed just before it was terminated: the channel no longer holds it.
        #expect(escalation.timerFired(at: at(milliseconds: 100), inDevice: { _ in false }) == nil)
        #expect(escalation.waiting.isEmpty)
    }

    @Test func aResetFunctionCoversTheTasksTerminatedBeforeIt() {
        var escalation = AbortEscalation(deadline: .seconds(5))
        _ = escalation.terminationRequested(a, at: start)
        escalation.resetStarted()  // LOGICAL UNIT RESET
        #expect(escalation.timerFired(at: at(milliseconds: 5_000), inDevice: { _ in true }) == nil)
        // A task terminated while the reset runs gets its deadline when the reset is over.
        #expect(escalation.terminationRequested(b, at: at(milliseconds: 1_000)) == nil)
        #expect(escalation.resetFinished() == .armTimer(at(milliseconds: 6_000)))
        #expect(escalation.timerFired(at: at(milliseconds: 6_000), inDevice: { _ in true }) == .resetDevice(overdue: [b]))
    }
}
