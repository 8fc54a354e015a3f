/// How many connections are in the login phase, in all and from each IP address, and whether one more may begin.
/// Pure: the target context runs it under a lock. A connection beyond a cap is closed as soon as it is accepted, so
/// that a flood of connections that never finish their login holds at most the caps' worth of descriptors and
/// timers, however long `login_timeout` is. Refusals are meant to be logged once: the first one says so, and the
/// next line comes no sooner than `quietPeriod` later, with the count of those refused in between.
struct LoginsInProgress: Sendable {
    struct Limits: Sendable, Hashable {
        var total: Int
        var perAddress: Int
    }

    /// Which cap refused a connection; `description` names the `[limits]` key.
    enum Refusal: Hashable, CustomStringConvertible {
        case total(Int)
        case perAddress(Int)

        var description: String {
            switch self {
            case .total(let limit): "max_logins_in_progress (\(limit)) logins in progress"
            case .perAddress(let limit): "max_logins_in_progress_per_address (\(limit)) logins in progress from the address"
            }
        }
    }

    enum Decision: Hashable {
        case begin
        /// `log`: this refusal should be logged, with `refusedSilently` others since the last line.
        case refuse(Refusal, log: Bool, refusedSilently: Int)
    }

    static let quietPeriod: Duration = .seconds(60)

    private(set) var total = 0
    private var perAddress: [String: Int] = [:]
    /// One line per `quietPeriod` for refusals.
    private var refusalLines = LogThrottle(burst: 1, period: quietPeriod)

    /// A connection from `address` was accepted at `now`.
    mutating func connectionAccepted(from address: String, limits: Limits, now: ContinuousClock.Instant) -> Decision {
        let fromAddress = perAddress[address, default: 0]
        let refusal: Refusal
        if total >= limits.total {
            refusal = .total(limits.total)
        } else if fromAddress >= limits.perAddress {
            refusal = .perAddress(limits.perAddress)
        } else {
            total += 1
            perAddress[address] = fromAddress + 1
            return .begin
        }
        let (log, refusedSilently) = refusalLines.admit(now: now)
        return .refuse(refusal, log: log, refusedSilently: refusedSilently)
    }

    /// A connection that began its login from `address` left the login phase (logged in, or closed).
    mutating func loginEnded(from address: String) {
        guard let fromAddress = perAddress[address] else { return }
        total -= 1
        perAddress[address] = fromAddress > 1 ? fromAddress - 1 : nil
    }
}
