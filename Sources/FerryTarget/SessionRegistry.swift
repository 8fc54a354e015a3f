import ISCSIProtocol
import NIOCore
import SCSI
import Synchronization

/// Every session of the target: TSIH allocation, lookup for new connections and session
/// reinstatement (RFC 7143 §6.3.5), and fan-out of task-set functions across sessions.
final class SessionRegistry: Sendable {
    private struct State {
        var sessions: [UInt16: Session] = [:]
        var lastTSIH: UInt16 = 0
        var serial: UInt32 = 0
    }

    private let state = Mutex(State())

    /// The serial number of the next session; never reused in the process's lifetime.
    func nextSerial() -> UInt32 {
        state.withLock { state in
            state.serial &+= 1
            return state.serial
        }
    }

    /// Allocates a TSIH that no live session holds (never 0).
    func allocateTSIH() -> UInt16? {
        state.withLock { state in
            for _ in 0..<Int(UInt16.max) {
                state.lastTSIH = state.lastTSIH == UInt16.max ? 1 : state.lastTSIH + 1
                if state.sessions[state.lastTSIH] == nil { return state.lastTSIH }
            }
            return nil
        }
    }

    func add(_ session: Session) {
        let count = state.withLock { state in
            state.sessions[session.tsih] = session
            return state.sessions.values.filter { $0.node === session.node }.count
        }
        SessionMetrics.record(target: session.node.name, sessions: count)
    }

    /// Removes `session`; returns whether it was still registered, so that of session reinstatement and the
    /// session's own end exactly one acts on the session's end.
    @discardableResult
    func remove(_ session: Session) -> Bool {
        let (removed, count) = state.withLock { state in
            let removed = state.sessions[session.tsih] === session
            if removed { state.sessions[session.tsih] = nil }
            return (removed, state.sessions.values.filter { $0.node === session.node }.count)
        }
        SessionMetrics.record(target: session.node.name, sessions: count)
        return removed
    }

    func session(tsih: UInt16) -> Session? {
        state.withLock { $0.sessions[tsih] }
    }

    /// The session of the same I_T nexus (initiator name, ISID, target), for reinstatement.
    func session(initiatorName: String, isid: ISID, targetName: String) -> Session? {
        state.withLock { state in
            state.sessions.values.first {
                $0.isid == isid && $0.initiatorName == initiatorName && $0.node.name == targetName
            }
        }
    }

    var count: Int { state.withLock { $0.sessions.count } }

    var all: [Session] { state.withLock { Array($0.sessions.values) } }

    /// Carries a task-set function to every other session of `node`. Both futures complete on
    /// `origin`'s loop: `marked` once every other session has marked its affected tasks aborted,
    /// `terminated`, with the nexuses that had affected tasks, once none of them is still at a backend.
    func terminateInOtherSessions(
        of origin: Session, node: TargetNode, scope: TaskSetScope, tas: SessionStateMachine.TASPolicy
    ) -> (marked: EventLoopFuture<Void>, terminated: EventLoopFuture<Set<ITNexus>>) {
        let others = state.withLock { $0.sessions.values.filter { $0 !== origin && $0.node === node } }
        let externalID = nextSerial()
        var marks: [EventLoopFuture<Void>] = []
        let futures = others.map { other -> EventLoopFuture<ITNexus?> in
            let promise = origin.eventLoop.makePromise(of: ITNexus?.self)
            let marked = origin.eventLoop.makePromise(of: Void.self)
            marks.append(marked.futureResult)
            other.execute { session in
                session.terminate(scope, externalID: externalID, tas: tas) { hadTasks in
                    promise.succeed(hadTasks ? session.nexus : nil)
                }
                marked.succeed()
            }
            return promise.futureResult
        }
        return (
            EventLoopFuture.andAllSucceed(marks, on: origin.eventLoop),
            EventLoopFuture.whenAllSucceed(futures, on: origin.eventLoop).map { Set($0.compactMap { $0 }) }
        )
    }
}
