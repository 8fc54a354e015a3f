import Foundation
public import Logging
import NIOCore
import NIOPosix
public import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A Unix stream socket, mode 0600, that answers every line it receives with one line: the
/// transport of ferryctl's control protocol. The socket file is removed when the service stops.
public struct LineSocketServer: Service {
    public let path: String
    private let maximumLineLength: Int
    private let logger: Logger
    private let respond: @Sendable (String) async -> String

    /// - Parameter respond: the answer to one line (both without the newline).
    public init(
        path: String, maximumLineLength: Int, logger: Logger, respond: @escaping @Sendable (String) async -> String
    ) {
        self.path = path
        self.maximumLineLength = maximumLineLength
        self.logger = logger
        self.respond = respond
    }

    public func run() async throws {
        let maximumLineLength = self.maximumLineLength
        // The socket is created 0600 (not chmod-ed after the fact, when others could connect).
        let previousMask = umask(0o177)
        let server: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
        do {
            defer { umask(previousMask) }
            server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true) { child in
                    child.eventLoop.makeCompletedFuture {
                        try child.pipeline.syncOperations.addHandler(
                            ByteToMessageHandler(LineFrameDecoder(maximumLineLength: maximumLineLength)))
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                    }
                }
        }
        logger.info("control socket listening", metadata: ["path": "\(path)"])
        let respond = self.respond
        let logger = self.logger
        try await withGracefulShutdownHandler {
            try await server.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in connections {
                        group.addTask {
                            do {
                                try await connection.executeThenClose { lines, output in
                                    for try await line in lines {
                                        let answer = await respond(String(buffer: line))
                                        try await output.write(ByteBuffer(string: answer + "\n"))
                                    }
                                }
                            } catch {
                                logger.debug("control connection ended", metadata: ["error": "\(error)"])
                            }
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
        unlink(path)
    }
}

/// Splits a byte stream at `\n` (dropping it), and fails on a line longer than the limit.
struct LineFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    let maximumLineLength: Int

    struct LineTooLong: Error {}

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > maximumLineLength { throw LineTooLong() }
            return .needMoreData
        }
        let line = buffer.readSlice(length: newline - buffer.readerIndex)!
        buffer.moveReaderIndex(forwardBy: 1)
        context.fireChannelRead(wrapInboundOut(line))
        return .continue
    }
}
