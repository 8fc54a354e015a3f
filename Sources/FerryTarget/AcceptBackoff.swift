import Logging
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// How a listening socket meets a failing accept(2). When the process or the system is out of descriptors
/// (EMFILE, ENFILE) or memory (ENOBUFS, ENOMEM), the pending connection stays in the backlog and the socket stays
/// readable: trying again at once fails again, and a loop that does so keeps a core busy for as long as the shortage
/// lasts. Accepting pauses for ``pause`` instead, and a run of failures is logged once, with its end.
struct AcceptBackoff {
    /// How long accepting pauses after such a failure: short enough that logins resume quickly once descriptors
    /// are freed, long enough that retrying costs nothing.
    static let pause: TimeAmount = .milliseconds(250)

    /// The pause after an accept that failed with `errnoCode`, or nil for failures that a retry does not repeat.
    static func pause(after errnoCode: Int32) -> TimeAmount? {
        [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(errnoCode) ? pause : nil
    }

    /// Failed accepts since the last one that succeeded.
    private(set) var failures = 0

    /// An accept failed with a pausing error; true for the first failure of a run (to be logged).
    mutating func acceptFailed() -> Bool {
        failures += 1
        return failures == 1
    }

    /// A connection was accepted; the number of failures in the run it ends (to be logged), or nil.
    mutating func accepted() -> Int? {
        defer { failures = 0 }
        return failures > 0 ? failures : nil
    }
}

/// Logs a listening socket's accept failures (one line when a run starts, one when it ends), behind NIO's
/// `AcceptBackoffHandler`, which holds off reading for ``AcceptBackoff/pause(after:)``.
final class AcceptFailureLogger: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    private var backoff = AcceptBackoff()
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
        guard let ioError = error as? IOError, AcceptBackoff.pause(after: ioError.errnoCode) != nil else {
            context.fireErrorCaught(error)
            return
        }
        if backoff.acceptFailed() {
            logger.error(
                "cannot accept connections; retrying every \(AcceptBackoff.pause.nanoseconds / 1_000_000) ms",
                metadata: ["error": "\(ioError)", "hint": "raise LimitNOFILE if descriptors run out"])
        }
    }
}

extension ChannelPipeline.SynchronousOperations {
    /// Adds accept backoff to a listening channel's pipeline: ``AcceptBackoff`` and its ``AcceptFailureLogger``.
    func addAcceptBackoff(logger: Logger) throws {
        try addHandler(
            AcceptBackoffHandler(shouldForwardIOErrorCaught: true) { AcceptBackoff.pause(after: $0.errnoCode) })
        try addHandler(AcceptFailureLogger(logger: logger))
    }
}
