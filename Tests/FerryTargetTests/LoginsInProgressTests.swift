@testable import FerryTarget
import Testing

/// The caps on connections in the login phase, and how often their refusals are logged.
@Suite struct LoginsInProgressTests {
    static let limits = LoginsInProgress.Limits(total: 3, perAddress: 2)

    @Test func eachAddressAndAllTogetherAreCapped() {
        var logins = LoginsInProgress()
        let now = ContinuousClock.now
        #expect(logins.connectionAccepted(from: "a", limits: Self.limits, now: now) == .begin)
        #expect(logins.connectionAccepted(from: "a", limits: Self.limits, now: now) == .begin)
        #expect(
            logins.connectionAccepted(from: "a", limits: Self.limits, now: now)
                == .refuse(.perAddress(2), log: true, refusedSilently: 0))
        #expect(logins.connectionAccepted(from: "b", limits: Self.limits, now: now) == .begin)
        #expect(
            logins.connectionAccepted(from: "c", limits: Self.limits, now: now)
                == .refuse(.total(3), log: false, refusedSilently: 1))
        // A login that ends gives its place back; an address that never began one changes nothing.
        logins.loginEnded(from: "a")
        logins.loginEnded(from: "z")
        #expect(logins.total == 2)
        #expect(logins.connectionAccepted(from: "c", limits: Self.limits, now: now) == .begin)
    }

    @Test func refusalsAreLoggedOnceAMinuteAtMost() {
        var logins = LoginsInProgress()
        let start = ContinuousClock.now
        let limits = LoginsInProgress.Limits(total: 1, perAddress: 1)
        #expect(logins.connectionAccepted(from: "a", limits: limits, now: start) == .begin)
        #expect(logins.connectionAccepted(from: "a", limits: limits, now: start) == .refuse(.total(1), log: true, refusedSilently: 0))
        for second in 1..<60 {
            #expect(
                logins.connectionAccepted(from: "a", limits: limits, now: start + .seconds(second))
                    == .refuse(.total(1), log: false, refusedSilently: second))
        }
        #expect(
            logins.connectionAccepted(from: "a", limits: limits, now: start + .seconds(60))
                == .refuse(.total(1), log: true, refusedSilently: 59))
        #expect(
            logins.connectionAccepted(from: "a", limits: limits, now: start + .seconds(61))
                == .refuse(.total(1), log: false, refusedSilently: 1))
    }
}
