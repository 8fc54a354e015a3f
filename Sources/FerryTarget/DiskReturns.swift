import FerryPassthrough
import FerrySync
import NIOCore
import NIOPosix

/// Brings offline passthrough logical units back when their disk returns, driven by udev's events
/// (``ISCSITarget/deviceAdded(name:)``), not by polling.
///
/// Every check runs on the reopener's own thread: resolving a path in sysfs and probing a disk block. The kernel
/// adds a disk's sg node before sd binds to it, and udev reports each (`ferryctl device added sgN`, then `sdX`).
/// When a logical unit's disk had an sd node (its request queue gives the transfer limit) and only sg is back, the
/// logical unit waits: for the next event, which checks it again, or for a deadline, a timer on an event loop, after
/// which it is opened without sd. ``shutdown()`` cancels the deadlines and waits for the check in progress.
final class DiskReturns: Sendable {
    enum Outcome: Sendable, Hashable {
        /// The logical unit serves its disk again.
        case online
        /// Its path names no disk now: it stays offline.
        case noDisk
        /// Its path names a disk that cannot be opened, or another disk: it stays offline.
        case refused
        /// It is no longer the offline logical unit of its LUN (another check brought it back, or a reload changed it).
        case superseded
        /// The target is stopping.
        case stopped
    }

    /// An offline logical unit to check.
    struct Candidate: Sendable {
        var node: TargetNode
        /// The LUN number (not a LUN field).
        var lun: UInt64
        var unit: OfflineLogicalUnit

        var isStillOffline: Bool { node.lunMap.logicalUnits[lun] === unit }
    }

    /// Opens the disk `found` for the candidate and swaps it into the LUN map; on the reopener's thread.
    typealias BringBack = @Sendable (_ candidate: Candidate, _ found: PassthroughDevice, _ trigger: String?) -> Outcome

    private struct Check: Sendable {
        var candidate: Candidate
        /// udev's name of the node whose event started the check (`%k`); nil for `ferryctl device added`.
        var trigger: String?
        var bringBack: BringBack
    }

    /// A logical unit waiting for sd, and every check waiting with it.
    private struct Waiting {
        var deadline: Scheduled<Void>
        var promises: [EventLoopPromise<Outcome>]
    }

    private struct State {
        var waiting: [ObjectIdentifier: Waiting] = [:]
        var stopped = false
    }

    /// How long a logical unit whose disk is back without its sd node waits for sd.
    let blockDeviceWait: TimeAmount
    /// One thread: checks run in the order of the events.
    private let thread: NIOThreadPool
    /// Keeps the deadlines, and completes the checks' futures.
    private let timers: any EventLoop
    private let state = Locked(State())

    init(blockDeviceWait: TimeAmount = .seconds(5), timers: any EventLoop = MultiThreadedEventLoopGroup.singleton.next()) {
        self.blockDeviceWait = blockDeviceWait
        self.timers = timers
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
    }

    /// Checks `candidate` on the reopener's thread. The future says how the check ended, after the wait for sd if
    /// there is one.
    @discardableResult
    func check(_ candidate: Candidate, trigger: String?, bringBack: @escaping BringBack) -> EventLoopFuture<Outcome> {
        let promise = timers.makePromise(of: Outcome.self)
        let check = Check(candidate: candidate, trigger: trigger, bringBack: bringBack)
        thread.submit { [self] work in
            guard work == .active else { return promise.succeed(.stopped) }
            attempt(check, deadlinePassed: false, promise: promise)
        }
        return promise.futureResult
    }

    /// How many logical units wait for their sd node.
    var waitingForBlockDevice: Int { state.withLock { $0.waiting.count } }

    /// The target stops: no logical unit comes back from now on. Cancels the deadlines (their checks end as
    /// ``Outcome/stopped``) and waits for the check in progress, if any.
    func shutdown() {
        let waiting = state.withLock { state in
            state.stopped = true
            defer { state.waiting.removeAll() }
            return Array(state.waiting.values)
        }
        for entry in waiting {
            entry.deadline.cancel()
            for promise in entry.promises { promise.succeed(.stopped) }
        }
        try? thread.syncShutdownGracefully()
    }

    /// On the reopener's thread.
    private func attempt(_ check: Check, deadlinePassed: Bool, promise: EventLoopPromise<Outcome>?) {
        let unit = check.candidate.unit
        let id = ObjectIdentifier(unit)
        guard check.candidate.isStillOffline else { return finish(id, .superseded, promise) }
        guard let found = try? unit.device.topology.resolve(unit.configuration.path) else {
            return finish(id, .noDisk, promise)
        }
        if found.blockDeviceName == nil, unit.device.blockDeviceName != nil, !deadlinePassed {
            return wait(check, promise: promise)
        }
        finish(id, check.bringBack(check.candidate, found, check.trigger), promise)
    }

    /// The disk is back without sd: the logical unit waits for the next event or its deadline.
    private func wait(_ check: Check, promise: EventLoopPromise<Outcome>?) {
        let id = ObjectIdentifier(check.candidate.unit)
        let waits = state.withLock { state in
            guard !state.stopped else { return false }
            if state.waiting[id] == nil {
                let deadline = timers.scheduleTask(in: blockDeviceWait) { [self] in
                    thread.submit { work in
                        guard work == .active else { return self.finish(id, .stopped, nil) }
                        self.attempt(check, deadlinePassed: true, promise: nil)
                    }
                }
                state.waiting[id] = Waiting(deadline: deadline, promises: [])
            }
            if let promise { state.waiting[id]?.promises.append(promise) }
            return true
        }
        if !waits { promise?.succeed(.stopped) }
    }

    /// The check of the logical unit `id` ended: so do those waiting with it, and its deadline is cancelled.
    private func finish(_ id: ObjectIdentifier, _ outcome: Outcome, _ promise: EventLoopPromise<Outcome>?) {
        let waiting = state.withLock { $0.waiting.removeValue(forKey: id) }
        waiting?.deadline.cancel()
        promise?.succeed(outcome)
        for waiter in waiting?.promises ?? [] { waiter.succeed(outcome) }
    }
}
