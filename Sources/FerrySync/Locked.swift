#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A value behind a `pthread_mutex_t`: the same contract and API as the standard library's
/// `Synchronization.Mutex` (`withLock` with typed throws, `sending` values), for every lock in Ferry.
///
/// Why not `Mutex` itself: on Linux `Mutex` locks with atomics and futex calls inside
/// `libswiftSynchronization.so`, which is not built with ThreadSanitizer, so TSan never sees the lock
/// and reports every access it guards as a data race (seen with Swift 6.3.1: a counter that threads
/// update under `Mutex` is exact, and TSan reports it). `pthread_mutex_lock` is intercepted by TSan, so a lock taken here is a
/// happens-before edge and `scripts/tsan` reports only real races. The cost is one allocation per
/// lock and an uncontended `pthread_mutex_lock`, which is what `NIOLock` does too.
public final class Locked<Value>: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let value: UnsafeMutablePointer<Value>

    public init(_ initialValue: consuming sending Value) {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let created = pthread_mutex_init(mutex, nil)
        precondition(created == 0, "pthread_mutex_init failed: \(created)")
        value = .allocate(capacity: 1)
        value.initialize(to: initialValue)
    }

    deinit {
        value.deinitialize(count: 1)
        value.deallocate()
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        mutex.deallocate()
    }

    /// Runs `body` with the value while holding the lock. Not reentrant: calling it again from `body`
    /// deadlocks, as with `Mutex`.
    public func withLock<Result, E: Error>(
        _ body: (inout sending Value) throws(E) -> sending Result
    ) throws(E) -> sending Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value.pointee)
    }
}
