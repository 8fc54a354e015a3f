import Dispatch
import FerryBackends
import FerryConfig
import FerrySync
@testable import FerryTarget
import Foundation
import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Completions instead of sleeps: retired backends are shut down when their sessions have ended, and a graceful
/// shutdown waits for sessions through the same completion, bounded by its deadline.
@Suite struct BackendRetirementTests {
    @Test func aRetiredBackendIsShutDownOnceItsReleaseComesAndOnlyOnce() {
        let retirement = BackendRetirement()
        let backend = StubBackend()
        let release = retirement.retire([backend])
        #expect(backend.shutdownCount == 0)
        #expect(retirement.waiting == 1)
        #expect(Completion.callback { done in
            release()
            // The retirement thread runs releases in order: once this empty one is done, the one above is.
            retirement.retire([], done: done)()
        })
        #expect(backend.shutdownCount == 1)
        #expect(retirement.waiting == 0)
        retirement.shutdown()
        #expect(backend.shutdownCount == 1, "the target's shutdown does not shut it down again")
    }

    @Test func theTargetsShutdownShutsDownWhatWasNeverReleased() {
        let retirement = BackendRetirement()
        let backend = StubBackend()
        let release = retirement.retire([backend])
        retirement.shutdown()
        #expect(backend.shutdownCount == 1)
        // A release after the target stopped shuts nothing down again, and the retirement thread is gone: it runs
        // at once.
        let done = Locked(false)
        release()
        retirement.retire([], done: { done.withLock { $0 = true } })()
        #expect(done.withLock { $0 })
        #expect(backend.shutdownCount == 1)
    }

    @Test func backendShutdownsRunOffTheCallersThread() {
        let retirement = BackendRetirement()
        defer { retirement.shutdown() }
        let caller = pthread_self()
        let sameThread = Locked<Bool?>(nil)
        let backend = StubBackend(onShutdown: { sameThread.withLock { $0 = pthread_equal(pthread_self(), caller) != 0 } })
        let done = DispatchSemaphore(value: 0)
        retirement.retire([backend], done: { done.signal() })()
        #expect(done.wait(timeout: .now() + 10) == .success)
        #expect(sameThread.withLock { $0 } == false)
    }
}

@Suite struct AdmittedConnectionsTests {
    static func node(_ name: String) -> TargetNode {
        TargetNode(configuration: Target(name: name, luns: []), portalGroupTag: 1, logicalUnits: [:])
    }

    @Test func withoutConnectionsTheCallbackComesAtOnce() {
        let connections = AdmittedConnections()
        let called = Locked(false)
        connections.whenClosed { called.withLock { $0 = true } }
        #expect(called.withLock { $0 })
    }

    @Test func theCallbackWaitsForEveryConnectionOfTheNodesAskedFor() throws {
        let connections = AdmittedConnections()
        let a = Self.node("iqn.2026-11.dev.ferry:a")
        let b = Self.node("iqn.2026-11.dev.ferry:b")
        let loop = EmbeddedEventLoop()
        let first = EmbeddedChannel(loop: loop)
        let second = EmbeddedChannel(loop: loop)
        let other = EmbeddedChannel(loop: loop)
        connections.admitted(first, node: a, sessionLoop: loop)
        connections.admitted(second, node: a, sessionLoop: loop)
        connections.admitted(other, node: b, sessionLoop: loop)
        #expect(connections.count(of: [a]) == 2)
        let called = Locked(0)
        connections.whenClosed(of: [a]) { called.withLock { $0 += 1 } }
        try first.close().wait()
        loop.run()
        #expect(called.withLock { $0 } == 0)
        try other.close().wait()
        loop.run()
        #expect(called.withLock { $0 } == 0, "another node's connection does not count")
        try second.close().wait()
        loop.run()
        #expect(called.withLock { $0 } == 1)
        #expect(connections.count() == 0)
        // A connection admitted after the call is not waited for, and a later call sees only what is open.
        let later = EmbeddedChannel(loop: loop)
        connections.admitted(later, node: a, sessionLoop: loop)
        #expect(connections.count(of: [a]) == 1)
        _ = try? later.close().wait()
    }

    /// A connection on another loop than its session's: the session's loop runs what the connection queued there
    /// before the close (the session's removal) before the callback.
    @Test func theCallbackComesAfterTheSessionLoopRanWhatWasQueuedBeforeIt() throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        defer { try? group.syncShutdownGracefully() }
        let sessionLoop = group.next()
        let connections = AdmittedConnections()
        let node = Self.node("iqn.2026-11.dev.ferry:a")
        let channelLoop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: channelLoop)
        connections.admitted(channel, node: node, sessionLoop: sessionLoop)
        let order = Locked<[String]>([])
        let held = DispatchSemaphore(value: 0)
        let called = DispatchSemaphore(value: 0)
        connections.whenClosed {
            order.withLock { $0.append("callback") }
            called.signal()
        }
        // The session's loop is busy with the connection's removal when the channel's close completes.
        sessionLoop.execute {
            held.wait()
            order.withLock { $0.append("removal") }
        }
        try channel.close().wait()
        channelLoop.run()
        held.signal()
        #expect(called.wait(timeout: .now() + 10) == .success)
        #expect(order.withLock { $0 } == ["removal", "callback"])
    }
}

@Suite struct DrainTests {
    static func context(directory: URL) throws -> TargetContext {
        let configuration = FerryConfiguration(
            portals: [Portal(host: "127.0.0.1")], targets: [], stateDirectory: directory.path)
        return try TargetContext(configuration: configuration, logger: Logger(label: "test"))
    }

    /// A listening channel on the singleton loop group: a connection that nobody closes but the test.
    static func openChannel() throws -> any Channel {
        try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
    }

    static func close(_ channel: any Channel) throws {
        try channel.close().wait()
    }

    static func directory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("drain-\(UUID())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test func theDrainEndsWhenTheLastSessionConnectionClosesNotAtItsDeadline() async throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let context = try Self.context(directory: directory)
        defer { context.shutdown() }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let channel = try Self.openChannel()
        context.admittedConnections.admitted(channel, node: context.discoveryNode, sessionLoop: loop)
        let drained = Locked(false)
        let drain = Task {
            defer { drained.withLock { $0 = true } }
            return await context.drain(within: .seconds(60), on: loop)
        }
        #expect(!drained.withLock { $0 })
        try Self.close(channel)
        // The outcome, not the time taken: when unit tests run in parallel, CPU-bound suites can keep this task
        // from resuming for as long as the deadline (ThreadSanitizer, 2 cores). The deadline's own timer, on the
        // event loop, would make it `.deadlinePassed`.
        #expect(await drain.value == .allClosed, "the drain waited for its deadline")
    }

    @Test func theDrainEndsAtItsDeadlineWhenAConnectionStaysOpen() async throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let context = try Self.context(directory: directory)
        defer { context.shutdown() }
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let channel = try Self.openChannel()
        context.admittedConnections.admitted(channel, node: context.discoveryNode, sessionLoop: loop)
        let start = ContinuousClock.now
        #expect(await context.drain(within: .milliseconds(300), on: loop) == .deadlinePassed(sessions: 0))
        #expect(ContinuousClock.now - start >= .milliseconds(300))
        #expect(channel.isActive, "the drain closes sessions, not connections that have none")
        try Self.close(channel)
    }

    @Test func aDrainWithoutSessionsDoesNotWait() async throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let context = try Self.context(directory: directory)
        defer { context.shutdown() }
        #expect(await context.drain(within: .seconds(60), on: MultiThreadedEventLoopGroup.singleton.next()) == .allClosed)
    }
}

@Suite struct ReloadRetirementTests {
    static let target = "iqn.2026-11.dev.ferry:leaving"

    static func configuration(directory: URL, withTarget: Bool) -> FerryConfiguration {
        let lun = LogicalUnit(lun: 0, path: directory.appendingPathComponent("lun0.img").path, size: 1 << 20)
        return FerryConfiguration(
            portals: [Portal(host: "127.0.0.1")], targets: withTarget ? [Target(name: target, luns: [lun])] : [],
            stateDirectory: directory.path)
    }

    /// Waits until the retirement thread has run every release handed to it so far.
    static func settle(_ retirement: BackendRetirement) {
        #expect(Completion.callback { retirement.retire([], done: $0)() }, "the retirement thread did not answer")
    }

    @Test func theBackendsOfARemovedTargetWaitForItsSessionsToEnd() throws {
        let directory = try DrainTests.directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let context = try TargetContext(
            configuration: Self.configuration(directory: directory, withTarget: true), logger: Logger(label: "test"))
        defer { context.shutdown() }
        let node = try #require(context.nodes[Self.target])
        let loop = EmbeddedEventLoop()
        let channel = EmbeddedChannel(loop: loop)
        context.admittedConnections.admitted(channel, node: node, sessionLoop: loop)

        let report = try context.reload(Self.configuration(directory: directory, withTarget: false), logoutWithin: 5)
        #expect(report.changes.contains("removed target \(Self.target)"))
        Self.settle(context.retirement)
        #expect(context.retirement.waiting == 1, "shut down while a session of the target could still reach it")

        try channel.close().wait()
        loop.run()
        Self.settle(context.retirement)
        #expect(context.retirement.waiting == 0)
    }

    @Test func withoutSessionsTheyAreShutDownAtOnce() throws {
        let directory = try DrainTests.directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let context = try TargetContext(
            configuration: Self.configuration(directory: directory, withTarget: true), logger: Logger(label: "test"))
        defer { context.shutdown() }
        _ = try context.reload(Self.configuration(directory: directory, withTarget: false), logoutWithin: 5)
        Self.settle(context.retirement)
        #expect(context.retirement.waiting == 0)
    }
}
