import FerryConfig
import FerryTarget
import Logging
import Metrics
import Prometheus

/// The Prometheus side of Ferry's metrics: one registry behind swift-metrics, served as text.
enum TargetMetrics {
    /// Storage latency buckets: 50 µs to 10 s.
    static let latencyBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1),
        .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(5),
        .seconds(10),
    ]

    /// Makes swift-metrics report into a Prometheus registry and returns the endpoint that serves
    /// it. Call once, before anything creates a metric.
    static func bootstrap(address: ListenAddress, limits: Limits, logger: Logger) -> MetricsHTTPServer {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = latencyBuckets
        MetricsSystem.bootstrap(factory)
        return MetricsHTTPServer(
            host: address.host, port: address.port, requestTimeout: .seconds(limits.metricsRequestTimeout),
            maximumConnections: limits.maxMetricsConnections, logger: logger
        ) { registry.emitToString() }
    }
}
