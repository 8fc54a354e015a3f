#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The time source of background media erasure: a clock and a blocking sleep. A sleep blocks
/// the calling thread, so it is only ever called on a backend's own I/O thread.
public protocol ErasureClock: Sendable {
    var now: ContinuousClock.Instant { get }
    func sleep(for duration: Duration)
}

/// The real clock: ``ContinuousClock`` and `nanosleep`.
public struct SystemErasureClock: ErasureClock {
    public init() {}

    public var now: ContinuousClock.Instant { ContinuousClock.now }

    public func sleep(for duration: Duration) {
        let (seconds, attoseconds) = duration.components
        guard seconds > 0 || attoseconds > 0 else { return }
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) == -1 && errno == EINTR { request = remaining }
    }
}

/// Holds media erasure (SANITIZE OVERWRITE) to a number of bytes per second, so that erasing one
/// logical unit leaves the storage's bandwidth to the others: after each chunk it sleeps until
/// the time at which the bytes written so far are due at that rate.
struct ErasurePacer {
    let bytesPerSecond: UInt64
    let clock: any ErasureClock
    let start: ContinuousClock.Instant
    private(set) var bytesWritten: UInt64 = 0

    init(bytesPerSecond: UInt64, clock: any ErasureClock) {
        self.bytesPerSecond = max(1, bytesPerSecond)
        self.clock = clock
        start = clock.now
    }

    /// Accounts for `count` more bytes written and sleeps until they are due.
    mutating func wrote(_ count: Int) {
        bytesWritten += UInt64(count)
        let (seconds, remainder) = bytesWritten.quotientAndRemainder(dividingBy: bytesPerSecond)
        let due =
            start + .seconds(Int64(clamping: seconds)) + .seconds(Double(remainder) / Double(bytesPerSecond))
        let now = clock.now
        if due > now { clock.sleep(for: now.duration(to: due)) }
    }
}
