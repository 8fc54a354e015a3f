/// Bounds a log line that an initiator can provoke once per PDU (a Reject, a refused command, a task management
/// function): at most `burst` lines in a `period`, then silence until the period ends; the next line carries the
/// count of those left out. A flood of such PDUs then costs a few lines a minute, not one formatted line per PDU,
/// while an ordinary burst (an initiator's error handling aborting a few dozen tasks) is logged whole. Pure: one
/// per session or connection, on its event loop.
struct LogThrottle: Sendable {
    let burst: Int
    let period: Duration
    private var periodStart: ContinuousClock.Instant?
    private var linesInPeriod = 0
    private var suppressed = 0

    init(burst: Int = 16, period: Duration = .seconds(60)) {
        self.burst = max(1, burst)
        self.period = period
    }

    /// Whether the line for an event at `now` is to be logged, and how many were left out since the last one
    /// logged (to put in it).
    mutating func admit(now: ContinuousClock.Instant = .now) -> (log: Bool, suppressed: Int) {
        if let start = periodStart, now - start < period {
            guard linesInPeriod < burst else {
                suppressed += 1
                return (false, suppressed)
            }
        } else {
            periodStart = now
            linesInPeriod = 0
        }
        linesInPeriod += 1
        defer { suppressed = 0 }
        return (true, suppressed)
    }
}
