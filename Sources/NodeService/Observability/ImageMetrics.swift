import Foundation
import ImageFS
import MetricsEndpoint

/// The metrics that name each used image's load state: which image is failing, why, and when it is retried; and
/// how many KEYs two images hold with different bytes.
enum ImageMetrics {
    static func families(_ images: [ImageSet.Status], keyConflicts: Int = 0) -> [MetricFamily] {
        func samples(_ value: (ImageSet.Status) -> Double?) -> [MetricFamily.Sample] {
            images.compactMap { image in
                value(image).map { MetricFamily.Sample(labels: [("image", image.name)], value: $0) }
            }
        }
        return [
            MetricFamily(
                name: "mcvfs_image_state", help: "Used images by load state: 1 for the state each image is in.",
                kind: .gauge,
                samples: images.map {
                    MetricFamily.Sample(labels: [("image", $0.name), ("state", $0.phase.rawValue)], value: 1)
                }),
            MetricFamily(
                name: "mcvfs_image_load_failures_total", help: "Loads of each used image that failed.",
                kind: .counter, samples: samples { Double($0.failures) }),
            MetricFamily(
                name: "mcvfs_image_next_retry_timestamp_seconds",
                help: "When a failed image is tried again (Unix time), by the first access from then on.",
                kind: .gauge, samples: samples { $0.phase == .failed ? $0.nextRetry?.timeIntervalSince1970 : nil }),
            MetricFamily(
                name: "mcvfs_image_last_error_info",
                help: "Why a failing image's last load failed (the error, cut to 200 characters), as a label.",
                kind: .gauge,
                samples: images.compactMap { image in
                    guard image.phase == .failed, let error = image.lastError else { return nil }
                    return MetricFamily.Sample(
                        labels: [("image", image.name), ("error", String(error.prefix(200)))], value: 1)
                }),
            .single(
                "mcvfs_key_conflicts_total",
                help: "KEYs for which an image holds other bytes than the image served, or than an image of its "
                    + "rank (the KEY is then withheld): compromise or a compiler that is not deterministic; status "
                    + "lists them under tree.conflicts.",
                kind: .counter, value: Double(keyConflicts)),
        ]
    }
}
