/// One counter or gauge family of a scrape: its name, help, type and labelled samples, set from a snapshot of
/// what is counted elsewhere. `Exposition` turns families into swift-prometheus metrics; histograms are observed
/// live instead (`Exposition.histogram`), since a registry's buckets cannot be set from a snapshot.
public struct MetricFamily: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case counter, gauge
    }

    public struct Sample: Sendable, Equatable {
        public var labels: [(name: String, value: String)]
        public var value: Double

        public init(labels: [(name: String, value: String)] = [], value: Double) {
            self.labels = labels
            self.value = value
        }

        public static func == (lhs: Sample, rhs: Sample) -> Bool {
            lhs.value == rhs.value && lhs.labels.map(\.name) == rhs.labels.map(\.name)
                && lhs.labels.map(\.value) == rhs.labels.map(\.value)
        }
    }

    public var name: String
    public var help: String
    public var kind: Kind
    public var samples: [Sample]

    public init(name: String, help: String, kind: Kind, samples: [Sample]) {
        self.name = name
        self.help = help
        self.kind = kind
        self.samples = samples
    }

    /// A family of one unlabelled sample.
    public static func single(_ name: String, help: String, kind: Kind, value: Double) -> MetricFamily {
        MetricFamily(name: name, help: help, kind: kind, samples: [Sample(value: value)])
    }
}
