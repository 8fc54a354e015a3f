import Logging
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// How a listening socket meets a failing accept(2). When the process or the system is out of descriptors
/// (EMFILE, ENFILE) or memory (ENOBUFS, ENOMEM), the pending connection stays in the backlog and the socket stays
/// readable: trying again at once fails again. NIO does exactly that (its read stays pending, so the socket stays in
/// epoll), and ferryd kept a core at 100 % for as long as descriptors were exhausted. Accepting pauses for ``pause``
/// instead, and a run of failures is logged once, with its end.
struct AcceptBackoff {
    /// How long accepting pauses after such a failure: short enough that logins resume quickly once descriptors
    /// are freed, long enough that retrying costs nothing.
    static let pause: TimeAmount = .milliseconds(250)

    enum Action: Equatable {
        /// Stop accepting for the given time; `log` for the first failure of a run.
        case pauseAccepting(TimeAmount, log: Bool)
        /// Not a shortage: pass the error on.
        case passOn
    }

    /// Failed accepts since the last one that succeeded.
    private(set) var failures = 0

    /// An accept failed with `errnoCode`.
    mutating func acceptFailed(errnoCode: Int32) -> Action {
        guard [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(errnoCode) else { return .passOn }
        failures += 1
        return .pauseAccepting(Self.pause, log: failures == 1)
    }

    /// A connection was accepted; the number of failures in the run it ends (to be logged), or nil.
    mutating func accepted() -> Int? {
        defer { failures = 0 }
        return failures > 0 ? failures : nil
    }
}

/// On a listening channel: turns `autoRead` off for ``AcceptBackoff/pause`` when accept(2) fails for want of
/// descriptors or memory (this takes the socket out of epoll), and logs the run of failures.
final class AcceptPauseHandler: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    private var backoff = AcceptBackoff()
    private var resume: Scheduled<Void>?
    private let logger: Logger

    init(logger: Logger) {
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if let failures = backoff.accepted() {
            logger.notice("accepting connections again", metadata: ["failedAccepts": "\(failures)"])
        }
        context.fireChannelRead(data)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let ioError = error as? IOError,
            case .pauseAccepting(let pause, let log) = backoff.acceptFailed(errnoCode: ioError.errnoCode)
        else {
            context.fireErrorCaught(error)
            return
        }
        if log {
            logger.error(
                "cannot accept connections; retrying every \(pause.nanoseconds / 1_000_000) ms",
                metadata: ["error": "\(ioError)", "hint": "raise LimitNOFILE if descriptors run out"])
        }
        guard resume == nil, (try? context.channel.syncOptions?.setOption(.autoRead, value: false)) != nil else {
            return
        }
        let handler = NIOLoopBound(self, eventLoop: context.eventLoop)
        let channel = context.channel
        resume = context.eventLoop.scheduleTask(in: pause) {
            handler.value.resume = nil
            channel.setOption(.autoRead, value: true).whenFailure { _ in }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        resume?.cancel()
    }
}
