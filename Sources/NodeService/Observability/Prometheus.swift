import Foundation

/// One metric family in the Prometheus text exposition format (version 0.0.4): a `# HELP` and `# TYPE` line,
/// then its samples. https://prometheus.io/docs/instrumenting/exposition_formats/
public struct MetricFamily: Sendable, Equatable {
    public enum Kind: String, Sendable {
        case counter, gauge, histogram
    }

    public struct Sample: Sendable, Equatable {
        /// Appended to the family name: `_bucket`, `_sum`, `_count` for histograms, else empty.
        public var suffix: String
        public var labels: [(name: String, value: String)]
        public var value: Double

        public init(suffix: String = "", labels: [(name: String, value: String)] = [], value: Double) {
            self.suffix = suffix
            self.labels = labels
            self.value = value
        }

        public static func == (lhs: Sample, rhs: Sample) -> Bool {
            lhs.suffix == rhs.suffix && lhs.value == rhs.value
                && lhs.labels.map(\.name) == rhs.labels.map(\.name)
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

    /// A histogram from upper bounds and per-bucket (not cumulative) counts; the last count is the `+Inf`
    /// bucket, so `counts.count == bounds.count + 1`.
    public static func histogram(
        _ name: String, help: String, bounds: [Double], counts: [Int], sum: Double
    ) -> MetricFamily {
        precondition(counts.count == bounds.count + 1, "one count per bound plus +Inf")
        var samples: [Sample] = []
        var cumulative = 0
        for (i, count) in counts.enumerated() {
            cumulative += count
            let bound = i < bounds.count ? PrometheusText.format(bounds[i]) : "+Inf"
            samples.append(Sample(suffix: "_bucket", labels: [("le", bound)], value: Double(cumulative)))
        }
        samples.append(Sample(suffix: "_sum", value: sum))
        samples.append(Sample(suffix: "_count", value: Double(cumulative)))
        return MetricFamily(name: name, help: help, kind: .histogram, samples: samples)
    }
}

public enum PrometheusText {
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    public static func render(_ families: [MetricFamily]) -> String {
        var out = ""
        for family in families {
            out += "# HELP \(family.name) \(escapeHelp(family.help))\n"
            out += "# TYPE \(family.name) \(family.kind.rawValue)\n"
            for sample in family.samples {
                out += family.name + sample.suffix
                if !sample.labels.isEmpty {
                    out +=
                        "{" + sample.labels.map { "\($0.name)=\"\(escapeLabel($0.value))\"" }.joined(separator: ",")
                        + "}"
                }
                out += " \(format(sample.value))\n"
            }
        }
        return out
    }

    /// Integers without a fraction, `+Inf`/`-Inf`/`NaN` spelled as the format wants.
    public static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    static func escapeHelp(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func escapeLabel(_ text: String) -> String {
        escapeHelp(text).replacingOccurrences(of: "\"", with: "\\\"")
    }
}
