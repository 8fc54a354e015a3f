import Testing

@testable import FerryTarget

@Suite struct LogThrottleTests {
    @Test func aBurstIsLoggedThenSilenceUntilThePeriodEndsAndTheNextLineCountsTheRest() {
        var throttle = LogThrottle(burst: 3, period: .seconds(60))
        let start = ContinuousClock.now
        let first = (0..<3).map { throttle.admit(now: start + .seconds($0)) }
        #expect(first.map(\.log) == [true, true, true])
        #expect(first.map(\.suppressed) == [0, 0, 0])
        for n in 0..<1000 { #expect(!throttle.admit(now: start + .milliseconds(3000 + n)).log) }
        let next = throttle.admit(now: start + .seconds(61))
        #expect(next.log && next.suppressed == 1000)
        let after = throttle.admit(now: start + .seconds(62))
        #expect(after.log && after.suppressed == 0)
    }
}
