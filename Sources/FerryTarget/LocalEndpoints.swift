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

/// A minimal HTTP/1.1 endpoint that serves one text document at `/metrics` (the Prometheus
/// text exposition format) and closes each connection after its answer.
public struct MetricsHTTPServer: Service {
    public let host: String
    public let port: Int
    private let logger: Logger
    private let document: @Sendable () -> String

    public init(host: String, port: Int, logger: Logger, document: @escaping @Sendable () -> String) {
        self.host = host
        self.port = port
        self.logger = logger
        self.document = document
    }

    public func run() async throws {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: host, port: port) { child in
                child.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                }
            }
        logger.info("metrics endpoint listening", metadata: ["address": "http://\(host):\(port)/metrics"])
        let document = self.document
        try await withGracefulShutdownHandler {
            try await server.executeThenClose { connections in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in connections {
                        group.addTask {
                            try? await connection.executeThenClose { input, output in
                                var request = ByteBuffer()
                                for try await chunk in input {
                                    request.writeImmutableBuffer(chunk)
                                    if request.readableBytesView.contains(subsequence: Self.endOfHeader) { break }
                                    if request.readableBytes > 16_384 { return }
                                }
                                try await output.write(ByteBuffer(string: Self.answer(to: request, document: document)))
                            }
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
        }
    }

    private static let endOfHeader = Array("\r\n\r\n".utf8)

    /// The response to a request header: the document for `GET /metrics`, else 404 or 405.
    static func answer(to request: ByteBuffer, document: () -> String) -> String {
        let requestLine = String(buffer: request).prefix { !$0.isNewline }
        let parts = requestLine.split(separator: " ")
        let status: String
        var body: String
        var contentType = "text/plain; charset=utf-8"
        if parts.count != 3 || !parts[2].hasPrefix("HTTP/1.") {
            status = "400 Bad Request"
            body = "bad request\n"
        } else if parts[0] != "GET" && parts[0] != "HEAD" {
            status = "405 Method Not Allowed"
            body = "only GET\n"
        } else if parts[1] != "/metrics" {
            status = "404 Not Found"
            body = "the metrics are at /metrics\n"
        } else {
            status = "200 OK"
            body = document()
            contentType = "text/plain; version=0.0.4; charset=utf-8"
        }
        let header =
            "HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\n"
            + "Connection: close\r\n\r\n"
        return parts.first == "HEAD" ? header : header + body
    }
}

extension ByteBufferView {
    fileprivate func contains(subsequence: [UInt8]) -> Bool {
        guard count >= subsequence.count else { return false }
        var index = startIndex
        while index <= endIndex - subsequence.count {
            if self[index..<(index + subsequence.count)].elementsEqual(subsequence) { return true }
            index += 1
        }
        return false
    }
}
