import FerrySync
import ISCSIProtocol
import NIOCore
import SCSI

/// Every session of the target: admission (``SessionAdmission``), lookup for new connections and session
/// reinstatement (RFC 7143 §6.3.5), and fan-out of task-set functions across sessions.
final class SessionRegistry: Sendable {
    private struct State {
        var sessions: [UInt16: Session] = [:]
        var admission = SessionAdmission()
        var serial: UInt32 = 0
    }

    private let state = Locked(State())

    /// The serial number of the next session; never reused in the process's lifetime.
    func nextSerial() -> UInt32 {
        state.withLock { state in
            state.serial &+= 1
            return state.serial
        }
    }

    /// Admits and registers a new session in one step under the registry's lock: `replacing` (a session being
    /// reinstated) leaves first, if it is still registered, so that its place is free for its successor; then
    /// `limits` decide, and `make` builds the session with its TSIH. Returns the session and whether `replacing`
    /// was removed here (then its caller acts on its end), or the limit that refused it.
    func admit(
        _ sessionType: SessionType, initiatorName: String, limits: SessionAdmission.Limits, replacing old: Session?,
        make: (UInt16) -> Session
    ) -> (Result<Session, SessionAdmission.Refusal>, replacedOld: Bool) {
        let (result, replaced, counts) = state.withLock { state in
            var replaced = false
            if let old, state.sessions[old.tsih] === old {
                state.sessions[old.tsih] = nil
                state.admission.release(tsih: old.tsih)
                replaced = true
            }
            let result = state.admission.admit(sessionType, initiatorName: initiatorName, limits: limits).map { tsih in
                let session = make(tsih)
                state.sessions[tsih] = session
                return session
            }
            let nodes = [old?.node, try? result.get().node].compactMap { $0 }
            let counts = nodes.map { node in (node, state.sessions.values.filter { $0.node === node }.count) }
            return (result, replaced, counts)
        }
        for (node, count) in counts { SessionMetrics.record(target: node.name, sessions: count) }
        return (result, replaced)
    }

    /// Removes `session`; returns whether it was still registered, so that of session reinstatement and the
    /// session's own end exactly one acts on the session's end.
    @discardableResult
    func remove(_ session: Session) -> Bool {
        let (removed, count) = state.withLock { state in
            let removed = state.sessions[session.tsih] === session
            if removed {
                state.sessions[session.tsih] = nil
                state.admission.release(tsih: session.tsih)
            }
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

    /// Every other session of `origin`'s target node: those a task-set function of `origin` reaches.
    func otherSessions(of origin: Session) -> [Session] {
        state.withLock { $0.sessions.values.filter { $0 !== origin && $0.node === origin.node } }
    }

    /// The registered session with this serial, if it has not ended.
    func session(serial: UInt32) -> Session? {
        state.withLock { $0.sessions.values.first { $0.serial == serial } }
    }
}
