public import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
public import ServiceLifecycle

/// The Prometheus endpoint: `GET /metrics` (and `HEAD`) in the text exposition format over HTTP/1.1, parsed and
/// encoded by NIOHTTP1, one request per connection. What a client can hold is bounded: a connection has
/// `requestTimeout` to send its whole request and at most ``maximumRequestBytes``, else it is closed, and the
/// endpoint holds `maximumConnections` connections at once, closing more as they are accepted.
public struct MetricsHTTPServer: Service {
    public let host: String
    public let port: Int
    private let requestTimeout: Duration
    private let maximumConnections: Int
    private let logger: Logger
    private let document: @Sendable () -> String

    /// Bytes a connection may send: a scraper's request line and headers take a few hundred.
    public static let maximumRequestBytes = 8_192

    public init(
        host: String, port: Int, requestTimeout: Duration, maximumConnections: Int, logger: Logger,
        document: @escaping @Sendable () -> String
    ) {
        self.host = host
        self.port = port
        self.requestTimeout = requestTimeout
        self.maximumConnections = maximumConnections
        self.logger = logger
        self.document = document
    }

    public func run() async throws {
        let logger = self.logger
        let maximumConnections = self.maximumConnections
        let requestTimeout = TimeAmount.nanoseconds(Int64(requestTimeout / .nanoseconds(1)))
        let document = self.document
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AcceptPauseHandler(logger: logger))
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectionCap(maximum: maximumConnections, logger: logger))
                }
            }
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    try pipeline.addHandler(RequestSizeLimit(maximumBytes: Self.maximumRequestBytes))
                    try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: false, withErrorHandling: true)
                    try pipeline.addHandler(MetricsRequestHandler(requestTimeout: requestTimeout, document: document))
                }
            }
            .bind(host: host, port: port)
            .get()
        logger.info("metrics endpoint listening", metadata: ["address": "http://\(host):\(port)/metrics"])
        await withGracefulShutdownHandler {
            try? await server.closeFuture.get()
        } onGracefulShutdown: {
            server.close(promise: nil)
        }
    }

    /// The answer to a request: the document for `GET /metrics` (`HEAD` leaves the body out), else 404 or 405.
    static func answer(method: HTTPMethod, uri: String, document: () -> String) -> (HTTPResponseStatus, String) {
        guard method == .GET || method == .HEAD else { return (.methodNotAllowed, "only GET\n") }
        guard uri.prefix(while: { $0 != "?" }) == "/metrics" else {
            return (.notFound, "the metrics are at /metrics\n")
        }
        return (.ok, document())
    }
}

/// On the listening channel: passes on accepted connections while fewer than `maximum` are open, and closes the
/// others at once (logged once per run of refusals).
private final class ConnectionCap: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    private let maximum: Int
    private let logger: Logger
    private var open = 0
    private var refusing = false

    init(maximum: Int, logger: Logger) {
        self.maximum = maximum
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let connection = unwrapInboundIn(data)
        guard open < maximum else {
            if !refusing {
                refusing = true
                logger.warning(
                    "metrics endpoint: \(maximum) connections open (max_metrics_connections); closing new ones")
            }
            connection.close(promise: nil)
            return
        }
        refusing = false
        open += 1
        let cap = NIOLoopBound(self, eventLoop: context.eventLoop)
        connection.closeFuture.hop(to: context.eventLoop).whenComplete { _ in cap.value.open -= 1 }
        context.fireChannelRead(data)
    }
}

/// Closes a connection that sends more than `maximumBytes` (the endpoint reads one request per connection).
private final class RequestSizeLimit: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let maximumBytes: Int
    private var received = 0

    init(maximumBytes: Int) {
        self.maximumBytes = maximumBytes
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytes
        guard received <= maximumBytes else {
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
    }
}

/// Answers one request and closes the connection; closes it too when the request is not complete within
/// `requestTimeout` of the connection's start.
private final class MetricsRequestHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let requestTimeout: TimeAmount
    private let document: @Sendable () -> String
    private var head: HTTPRequestHead?
    private var deadline: Scheduled<Void>?

    init(requestTimeout: TimeAmount, document: @escaping @Sendable () -> String) {
        self.requestTimeout = requestTimeout
        self.document = document
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let channel = context.channel
        deadline = context.eventLoop.scheduleTask(in: requestTimeout) { channel.close(promise: nil) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
        case .body:
            break
        case .end:
            guard let head, deadline != nil else { return }
            deadline?.cancel()
            deadline = nil
            respond(to: head, context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func respond(to request: HTTPRequestHead, context: ChannelHandlerContext) {
        let (status, body) = MetricsHTTPServer.answer(method: request.method, uri: request.uri, document: document)
        var headers = HTTPHeaders([
            (
                "Content-Type",
                status == .ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8"
            ),
            ("Content-Length", "\(body.utf8.count)"),
            ("Connection", "close"),
        ])
        if status == .methodNotAllowed { headers.add(name: "Allow", value: "GET, HEAD") }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if request.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
