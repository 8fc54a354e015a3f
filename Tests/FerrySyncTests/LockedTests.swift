import FerrySync
import Foundation
import Testing

@Suite struct LockedTests {
    /// Threads that update one value under the lock lose no update. Under `scripts/tsan` this also shows that
    /// ThreadSanitizer sees the lock: with `Synchronization.Mutex` in place of `Locked`, the same test gets a
    /// "Swift access race" report for every pair of threads, because TSan does not see `Mutex` on Linux.
    @Test func updatesFromManyThreadsAreSerialized() {
        let counts = Locked((total: 0, perThread: [Int: Int]()))
        let threads = 4
        let rounds = 5_000
        let done = DispatchGroup()
        for thread in 0..<threads {
            done.enter()
            Thread {
                for _ in 0..<rounds {
                    counts.withLock { counts in
                        counts.total += 1
                        counts.perThread[thread, default: 0] += 1
                    }
                }
                done.leave()
            }.start()
        }
        done.wait()
        counts.withLock { counts in
            #expect(counts.total == threads * rounds)
            #expect(counts.perThread == Dictionary(uniqueKeysWithValues: (0..<threads).map { ($0, rounds) }))
        }
    }

    struct Refused: Error, Equatable {}

    /// `withLock` keeps the body's error type, as `Mutex.withLock` does, and lets go of the lock when it throws.
    @Test func typedErrorsPassThroughAndReleaseTheLock() {
        let value = Locked(1)
        #expect(throws: Refused.self) {
            try value.withLock { (_: inout Int) throws(Refused) in throw Refused() }
        }
        let result: Result<Int, Refused> = Result { () throws(Refused) -> Int in
            try value.withLock { (value: inout Int) throws(Refused) -> Int in
                value += 1
                return value
            }
        }
        #expect(result == .success(2))
    }
}
