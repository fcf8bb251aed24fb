import Prometheus
import Synchronization

/// The text a scrape returns, in the Prometheus text format (version 0.0.4), emitted by swift-prometheus's
/// `PrometheusCollectorRegistry`. Histograms are observed as events happen; counters and gauges are set at each
/// scrape from the families it passes (a snapshot of the node's own counters), and a series that a snapshot no
/// longer names (an image that left the `failed` state) leaves the registry.
/// https://prometheus.io/docs/instrumenting/exposition_formats/
public final class Exposition: Sendable {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    let registry = PrometheusCollectorRegistry()
    /// The series the last scrape set, held while a scrape updates the registry and emits it: concurrent scrapes
    /// never interleave one's counter reset with another's increment. A leaf lock (the registry's own are inside).
    private let mirrored = Mutex<[SeriesKey: Series]>([:])

    private struct SeriesKey: Hashable {
        var name: String
        var labels: [String]
    }

    private enum Series {
        case counter(Counter)
        case gauge(Gauge)
    }

    public init() {}

    /// A full metric name (mcvfs's names carry their unit already) and its help, as the registry takes them.
    static func name(_ name: String, help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    /// A histogram in the registry.
    /// - Returns: the function that records one observation (callable from any thread).
    public func histogram(_ name: String, help: String, buckets: [Double]) -> @Sendable (Double) -> Void {
        let histogram = registry.makeValueHistogram(
            descriptor: Self.name(name, help: help), labels: [], buckets: buckets)
        return { histogram.record($0) }
    }

    /// Sets the registry's counters and gauges to `families`, drops the series they no longer name, and emits
    /// everything the registry holds.
    public func render(_ families: [MetricFamily]) -> [UInt8] {
        mirrored.withLock { mirrored in
            var current: [SeriesKey: Series] = [:]
            for family in families {
                let descriptor = Self.name(family.name, help: family.help)
                for sample in family.samples {
                    let labels = sample.labels.map { ($0.name, $0.value) }
                    let key = SeriesKey(name: family.name, labels: sample.labels.flatMap { [$0.name, $0.value] })
                    switch family.kind {
                    case .counter:
                        let counter = registry.makeCounter(descriptor: descriptor, labels: labels)
                        counter.reset()
                        let value = max(sample.value, 0)
                        if value == value.rounded(), value < 0x1p62 {
                            counter.increment(by: Int64(value))  // printed as an integer
                        } else {
                            counter.increment(by: value)
                        }
                        current[key] = .counter(counter)
                    case .gauge:
                        let gauge = registry.makeGauge(descriptor: descriptor, labels: labels)
                        gauge.set(to: sample.value)
                        current[key] = .gauge(gauge)
                    }
                }
            }
            for (key, series) in mirrored where current[key] == nil {
                switch series {
                case .counter(let counter): registry.unregisterCounter(counter)
                case .gauge(let gauge): registry.unregisterGauge(gauge)
                }
            }
            mirrored = current
            return registry.emitToBuffer()
        }
    }
}
