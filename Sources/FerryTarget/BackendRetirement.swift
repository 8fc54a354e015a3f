import FerryBackends
import FerrySync
import NIOPosix

/// Shuts down the backends that left a LUN map (a reload, a runtime change, a disk that went away), each exactly
/// once and never on an event loop: `shutdown()` flushes and waits for the commands the device still holds, which
/// blocks. A retired backend is shut down when its owner says nothing reaches it any more, or at the target's
/// shutdown, whichever comes first.
final class BackendRetirement: Sendable {
    /// One thread: the shutdowns run in the order they were released.
    private let thread: NIOThreadPool
    /// Retired and not yet shut down.
    private let retired = Locked<[ObjectIdentifier: any LogicalUnitBackend]>([:])

    init() {
        thread = NIOThreadPool(numberOfThreads: 1)
        thread.start()
    }

    /// Takes `backends` out of service. Returns the release: calling it (once, from any thread) shuts them down on the
    /// retirement thread, then calls `done`; ``shutdown()`` shuts down those not yet released.
    func retire(
        _ backends: [any LogicalUnitBackend], done: @escaping @Sendable () -> Void = {}
    ) -> @Sendable () -> Void {
        retired.withLock { retired in
            for backend in backends { retired[ObjectIdentifier(backend)] = backend }
        }
        let ids = backends.map(ObjectIdentifier.init)
        return { [self] in
            // Run even when the pool is stopping (the work item is then called at once, as cancelled): a backend is
            // shut down here or by shutdown(), whichever takes it first.
            thread.submit { _ in
                for backend in self.take(ids) { backend.shutdown() }
                done()
            }
        }
    }

    /// How many retired backends wait for their release.
    var waiting: Int { retired.withLock { $0.count } }

    /// The target stops: every retired backend not yet shut down is shut down now, and a shutdown in progress on the
    /// retirement thread is waited for.
    func shutdown() {
        let remaining = retired.withLock { retired in
            defer { retired.removeAll() }
            return Array(retired.values)
        }
        for backend in remaining { backend.shutdown() }
        try? thread.syncShutdownGracefully()
    }

    private func take(_ ids: [ObjectIdentifier]) -> [any LogicalUnitBackend] {
        retired.withLock { retired in ids.compactMap { retired.removeValue(forKey: $0) } }
    }
}
