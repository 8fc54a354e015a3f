import ISCSIProtocol

/// Which new sessions the `[limits]` let in, and the TSIH each gets. Pure: the registry runs it under the one lock
/// that also guards its sessions, so that the check, the TSIH and the registration are one step and logins admitted
/// at the same time on different event loops never exceed a limit.
///
/// Normal and discovery sessions are counted apart (`max_sessions`, `max_discovery_sessions`), so that discovery
/// logins, which need no target and by default no CHAP, cannot take the places of normal sessions; and each
/// initiator name holds at most `max_sessions_per_initiator` sessions of each type, so that one host cannot take
/// every place.
struct SessionAdmission: Sendable {
    struct Limits: Sendable, Hashable {
        var maxSessions: Int
        var maxDiscoverySessions: Int
        var maxSessionsPerInitiator: Int
    }

    /// Why a session was not admitted; `description` names the `[limits]` key.
    enum Refusal: Error, Hashable, CustomStringConvertible {
        case maxSessions(Int)
        case maxDiscoverySessions(Int)
        case maxSessionsPerInitiator(Int)
        case noTSIH

        var description: String {
            switch self {
            case .maxSessions(let limit): "the target holds max_sessions (\(limit)) normal sessions"
            case .maxDiscoverySessions(let limit): "the target holds max_discovery_sessions (\(limit)) discovery sessions"
            case .maxSessionsPerInitiator(let limit):
                "the initiator holds max_sessions_per_initiator (\(limit)) sessions of this type"
            case .noTSIH: "no TSIH left"
            }
        }
    }

    /// Whose each admitted session is.
    private struct Holder: Hashable {
        var initiatorName: String
        var sessionType: SessionType
    }

    private var holders: [UInt16: Holder] = [:]
    private var sessionsPerHolder: [Holder: Int] = [:]
    private(set) var normalSessions = 0
    private(set) var discoverySessions = 0
    private var lastTSIH: UInt16 = 0

    /// Admits a new session of `sessionType` for `initiatorName` and returns its TSIH (never 0, none in use), or
    /// says which limit refuses it.
    mutating func admit(_ sessionType: SessionType, initiatorName: String, limits: Limits) -> Result<UInt16, Refusal> {
        switch sessionType {
        case .normal where normalSessions >= limits.maxSessions:
            return .failure(.maxSessions(limits.maxSessions))
        case .discovery where discoverySessions >= limits.maxDiscoverySessions:
            return .failure(.maxDiscoverySessions(limits.maxDiscoverySessions))
        default:
            break
        }
        let holder = Holder(initiatorName: initiatorName, sessionType: sessionType)
        guard sessionsPerHolder[holder, default: 0] < limits.maxSessionsPerInitiator else {
            return .failure(.maxSessionsPerInitiator(limits.maxSessionsPerInitiator))
        }
        guard let tsih = freeTSIH() else { return .failure(.noTSIH) }
        lastTSIH = tsih
        holders[tsih] = holder
        sessionsPerHolder[holder, default: 0] += 1
        switch sessionType {
        case .normal: normalSessions += 1
        case .discovery: discoverySessions += 1
        }
        return .success(tsih)
    }

    /// The session of `tsih` ended: its places are free again. A TSIH not admitted is ignored.
    mutating func release(tsih: UInt16) {
        guard let holder = holders.removeValue(forKey: tsih) else { return }
        let remaining = sessionsPerHolder[holder, default: 1] - 1
        sessionsPerHolder[holder] = remaining > 0 ? remaining : nil
        switch holder.sessionType {
        case .normal: normalSessions -= 1
        case .discovery: discoverySessions -= 1
        }
    }

    /// The next TSIH after the last one given that no session holds (never 0).
    private func freeTSIH() -> UInt16? {
        var candidate = lastTSIH
        for _ in 0..<Int(UInt16.max) {
            candidate = candidate == UInt16.max ? 1 : candidate + 1
            if holders[candidate] == nil { return candidate }
        }
        return nil
    }
}
