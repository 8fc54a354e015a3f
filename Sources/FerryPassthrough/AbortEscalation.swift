import SCSI
import NIOCore

/// The abort deadline of one passthrough logical unit, as a pure state machine.
///
/// Linux gives user space no way to abort one SCSI command (task-management-on-sg.md): a task that
/// the engine terminated while the device runs it stays in the device until the device returns it.
/// The engine holds the ABORT TASK response until then. The deadline bounds that wait: a terminated
/// task still in the device when its deadline passes makes Ferry reset the device
/// (SG_SCSI_RESET DEVICE with NO_ESCALATE), which is the device's own task-management path. A
/// task covered by a reset never causes a second one; if the device still keeps it, the kernel's
/// command timeout (`command_timeout`) ends it.
///
/// Events carry the time, so tests drive it with a clock of their own.
struct AbortEscalation {
    enum Action: Hashable {
        /// Call ``timerFired(at:inDevice:)`` at this instant.
        case armTimer(NIODeadline)
        /// Reset the device: these terminated tasks are still in it past their deadline. Call
        /// ``resetStarted()`` and, when the reset is over, ``resetFinished()``.
        case resetDevice(overdue: [BackendTaskTag])
    }

    /// How long a terminated task may stay in the device before the device is reset.
    let deadline: TimeAmount
    /// Terminated tasks the device still held when they were terminated, with their deadlines.
    private(set) var waiting: [BackendTaskTag: NIODeadline] = [:]
    /// Terminated tasks that a device reset has already covered.
    private(set) var covered: Set<BackendTaskTag> = []
    /// The instant of the timer that is armed, if one is.
    private var armedFor: NIODeadline?
    private(set) var resetting = false

    init(deadline: TimeAmount) {
        self.deadline = deadline
    }

    /// The engine terminated `tag` while the device runs it.
    mutating func terminationRequested(_ tag: BackendTaskTag, at now: NIODeadline) -> Action? {
        guard waiting[tag] == nil, !covered.contains(tag) else { return nil }
        waiting[tag] = now + deadline
        return arm()
    }

    /// The device returned a terminated task.
    mutating func taskReturned(_ tag: BackendTaskTag) {
        waiting[tag] = nil
        covered.remove(tag)
    }

    /// The timer armed by ``Action/armTimer(_:)`` fired. `inDevice` tells whether the device still
    /// holds a task: one that left it without a termination report (it completed just before it was
    /// terminated) is forgotten here.
    mutating func timerFired(at now: NIODeadline, inDevice: (BackendTaskTag) -> Bool) -> Action? {
        armedFor = nil
        guard !resetting else { return nil }
        for tag in waiting.keys where !inDevice(tag) { waiting[tag] = nil }
        covered = covered.filter(inDevice)
        let overdue = waiting.filter { $0.value <= now }.keys.sorted { $0.rawValue < $1.rawValue }
        guard overdue.isEmpty else { return .resetDevice(overdue: overdue) }
        return arm()
    }

    /// A device reset begins (an escalation, or a reset function): every terminated task in the
    /// device is covered by it, and no deadline fires until it is over.
    mutating func resetStarted() {
        resetting = true
        covered.formUnion(waiting.keys)
        waiting.removeAll()
        armedFor = nil
    }

    /// The device reset is over; tasks terminated during it get their deadlines.
    mutating func resetFinished() -> Action? {
        resetting = false
        return arm()
    }

    private mutating func arm() -> Action? {
        guard !resetting, let earliest = waiting.values.min() else { return nil }
        if let armedFor, armedFor <= earliest { return nil }
        armedFor = earliest
        return .armTimer(earliest)
    }
}
