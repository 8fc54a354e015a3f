@testable import FerryTarget
import Glibc
import NIOCore
import Testing

@Suite struct AcceptBackoffTests {
    @Test func aShortageOfDescriptorsOrMemoryPausesAcceptingAndIsLoggedOncePerRun() {
        var backoff = AcceptBackoff()
        #expect(backoff.acceptFailed(errnoCode: EMFILE) == .pauseAccepting(.milliseconds(250), log: true))
        for errnoCode in [EMFILE, ENFILE, ENOBUFS, ENOMEM] {
            #expect(backoff.acceptFailed(errnoCode: errnoCode) == .pauseAccepting(.milliseconds(250), log: false))
        }
        #expect(backoff.accepted() == 5, "the run's end reports its failures")
        #expect(backoff.accepted() == nil)
        #expect(backoff.acceptFailed(errnoCode: ENFILE) == .pauseAccepting(.milliseconds(250), log: true))
    }

    @Test func otherFailuresArePassedOn() {
        var backoff = AcceptBackoff()
        #expect(backoff.acceptFailed(errnoCode: ECONNABORTED) == .passOn)
        #expect(backoff.accepted() == nil)
    }
}
