import Dispatch
import FerrySync
import NIOCore

/// Waiting for a completion in a test: a semaphore with a deadline, the result passed under the house lock. Not a
/// continuation: ThreadSanitizer reports one resumed on another thread before its task has suspended as a data race
/// (swiftlang/swift#57803), which awaiting an already completed future does.
enum Completion {
    /// The value `future` succeeds with; nil when it fails or does not complete within `seconds`.
    static func value<Value: Sendable>(of future: EventLoopFuture<Value>, within seconds: Double = 30) -> Value? {
        let result = Locked<Value?>(nil)
        let done = DispatchSemaphore(value: 0)
        future.whenComplete { outcome in
            result.withLock { $0 = try? outcome.get() }
            done.signal()
        }
        guard done.wait(timeout: .now() + seconds) == .success else { return nil }
        return result.withLock { $0 }
    }

    /// Calls `start` with a callback and waits for it, at most `seconds`; false when it did not come.
    static func callback(within seconds: Double = 30, _ start: (@escaping @Sendable () -> Void) -> Void) -> Bool {
        let done = DispatchSemaphore(value: 0)
        start { done.signal() }
        return done.wait(timeout: .now() + seconds) == .success
    }
}
