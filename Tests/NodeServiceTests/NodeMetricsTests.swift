import Foundation
import Glibc
import Testing

@testable import NodeService

/// The metric families a mount serves, from one sample of its counters.
@Suite struct NodeMetricsTests {
    func families(_ sample: NodeMetrics.Sample) -> [String: MetricFamily] {
        Dictionary(uniqueKeysWithValues: NodeMetrics.families(sample).map { ($0.name, $0) })
    }

    @Test func everyCounterCarriesItsSampleValue() {
        var sample = NodeMetrics.Sample()
        sample.fetch.bytesFetched = 4096
        sample.fetch.blobsFetched = 2
        sample.fetch.rangeRequests = 3
        sample.fetch.layerCacheHits = 4
        sample.fetch.layerCacheMisses = 5
        sample.fetch.verificationFailures = 6
        sample.fetch.fetchErrors = 7
        sample.mirrorFallbacks = 8
        sample.evictedBytes = 9
        sample.keyConflicts = 10
        let byName = families(sample)
        let expected: [String: Double] = [
            "mcvfs_fetched_bytes_total": 4096, "mcvfs_fetched_blobs_total": 2, "mcvfs_range_requests_total": 3,
            "mcvfs_layer_cache_hits_total": 4, "mcvfs_layer_cache_misses_total": 5,
            "mcvfs_verification_failures_total": 6, "mcvfs_registry_errors_total": 7,
            "mcvfs_mirror_fallbacks_total": 8, "mcvfs_evicted_bytes_total": 9, "mcvfs_key_conflicts_total": 10,
        ]
        for (name, value) in expected {
            #expect(byName[name]?.kind == .counter, "\(name)")
            #expect(byName[name]?.samples.map(\.value) == [value], "\(name)")
        }
    }

    @Test func fetchLatencyIsAHistogramOfTheFetches() {
        var sample = NodeMetrics.Sample()
        sample.fetch.fetchSeconds.observe(0.07)
        sample.fetch.fetchSeconds.observe(400)
        let histogram = families(sample)["mcvfs_layer_fetch_seconds"]
        #expect(histogram?.kind == .histogram)
        #expect(histogram?.samples.last?.suffix == "_count" && histogram?.samples.last?.value == 2)
        let text = PrometheusText.render([histogram!])
        #expect(text.contains(#"mcvfs_layer_fetch_seconds_bucket{le="0.1"} 1"#))
        #expect(text.contains(#"mcvfs_layer_fetch_seconds_bucket{le="+Inf"} 2"#))
    }

    @Test func fuseErrorsAreLabelledByOperationAndErrnoInOrder() {
        var sample = NodeMetrics.Sample()
        sample.fuseErrors = [
            FUSEErrorCounter.Key(operation: "read", errno: EIO): 1,
            FUSEErrorCounter.Key(operation: "lookup", errno: ENOENT): 5,
        ]
        let errors = families(sample)["mcvfs_fuse_errors_total"]?.samples ?? []
        #expect(errors.map { $0.labels.map(\.value) } == [["lookup", "ENOENT"], ["read", "EIO"]])
        #expect(errors.map(\.value) == [5, 1])
    }

    @Test func imagesAndCacheGaugesAppearWhenKnown() {
        var sample = NodeMetrics.Sample()
        sample.imagesUsed = 1
        sample.imagesSkipped = 2
        var byName = families(sample)
        #expect(byName["mcvfs_images"]?.samples.map(\.value) == [1, 2])
        #expect(byName["mcvfs_cache_bytes"] == nil && byName["mcvfs_cache_max_bytes"] == nil)
        sample.cacheSize = 100
        sample.cacheMaxSize = 200
        byName = families(sample)
        #expect(byName["mcvfs_cache_bytes"]?.samples.map(\.value) == [100])
        #expect(byName["mcvfs_cache_max_bytes"]?.kind == .gauge)
    }
}
