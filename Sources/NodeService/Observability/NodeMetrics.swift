import ImageFS
import MetricsEndpoint
import RemoteLayers

/// The metrics a mount exposes at `--metrics-listen`, all listed here but those of work defined above the node
/// (`MountActivity`: automatic publishing's are `AutoPublisher.Status.metricFamilies`): counters and gauges as a
/// pure function of one sample of the mount's counters (so names, types and values are tested without a server),
/// and the one histogram, which its source observes as each fetch happens. A new metric is a field of `Sample` and a
/// line in `families`.
public enum NodeMetrics {
    /// The layer download histogram, registered in `exposition`.
    /// - Returns: what `FetchMetrics` calls with each download's seconds.
    public static func layerFetchSeconds(in exposition: Exposition) -> @Sendable (Double) -> Void {
        exposition.histogram(
            "mcvfs_layer_fetch_seconds", help: "Time to download one layer blob from a registry.",
            buckets: FetchMetrics.LatencyHistogram.bounds)
    }

    /// The counters of one mount at one moment.
    public struct Sample: Sendable, Equatable {
        public var fetch = FetchMetrics.Snapshot()
        public var mirrorFallbacks = 0
        public var evictedBytes: Int64 = 0
        /// Error replies by FUSE operation and errno.
        public var fuseErrors: [FUSEErrorCounter.Key: Int] = [:]
        public var imagesUsed = 0
        public var imagesSkipped = 0
        /// Where each used image's load stands (empty before the filesystem exists).
        public var images: [ImageSet.Status] = []
        /// KEYs for which an image holds other bytes than the image served or a peer
        /// (`ImageTreeBuilder.Report.keyConflicts`).
        public var keyConflicts = 0
        /// Bytes of committed blobs; nil when the store could not be listed.
        public var cacheSize: Int64?
        public var cacheMaxSize: Int64?
        /// The families of work defined above the node (`MountActivity`: automatic publishing's counters).
        public var activities: [MetricFamily] = []
        /// Live refresh's counters; nil when the mount does not refresh.
        public var refresh: MountStatus.Refresh?
        /// The mount refreshes or publishes with no signature policy.
        public var signaturePolicyMissing = false

        public init() {}
    }

    public static func families(_ sample: Sample) -> [MetricFamily] {
        let fetch = sample.fetch
        var families: [MetricFamily] = []
        func counter(_ name: String, _ help: String, _ value: Double) {
            families.append(.single(name, help: help, kind: .counter, value: value))
        }
        func gauge(_ name: String, _ help: String, _ value: Double) {
            families.append(.single(name, help: help, kind: .gauge, value: value))
        }
        counter("mcvfs_fetched_bytes_total", "Bytes of layer blobs downloaded.", Double(fetch.bytesFetched))
        counter("mcvfs_fetched_blobs_total", "Layer blobs downloaded.", Double(fetch.blobsFetched))
        counter(
            "mcvfs_range_requests_total", "Range requests of eStargz layers (footer, TOC, file members).",
            Double(fetch.rangeRequests))
        counter(
            "mcvfs_layer_cache_hits_total", "Layer lookups served from the local index cache.",
            Double(fetch.layerCacheHits))
        counter(
            "mcvfs_layer_cache_misses_total", "Layer lookups that needed a download and indexing.",
            Double(fetch.layerCacheMisses))
        counter(
            "mcvfs_verification_failures_total", "Blobs or layers rejected by digest or content checks.",
            Double(fetch.verificationFailures))
        counter(
            "mcvfs_registry_errors_total", "Layer fetches that failed for another reason (network, registry).",
            Double(fetch.fetchErrors))
        counter(
            "mcvfs_mirror_fallbacks_total", "Reads the mirror failed and the origin served.",
            Double(sample.mirrorFallbacks))
        counter(
            "mcvfs_evicted_bytes_total", "Bytes this mount evicted to keep the cache bound.",
            Double(sample.evictedBytes))
        let errors = sample.fuseErrors.sorted { ($0.key.operation, $0.key.errno) < ($1.key.operation, $1.key.errno) }
        families.append(
            MetricFamily(
                name: "mcvfs_fuse_errors_total", help: "FUSE requests answered with an error, by operation and errno.",
                kind: .counter,
                samples: errors.map { key, count in
                    MetricFamily.Sample(
                        labels: [("op", key.operation), ("errno", FUSEErrorCounter.name(of: key.errno))],
                        value: Double(count))
                }))
        families.append(
            MetricFamily(
                name: "mcvfs_images", help: "Images of the reference, by whether this mount uses them.", kind: .gauge,
                samples: [
                    MetricFamily.Sample(labels: [("state", "used")], value: Double(sample.imagesUsed)),
                    MetricFamily.Sample(labels: [("state", "skipped")], value: Double(sample.imagesSkipped)),
                ]))
        if let size = sample.cacheSize {
            gauge("mcvfs_cache_bytes", "Bytes of committed blobs in the cache directory.", Double(size))
        }
        if let maxSize = sample.cacheMaxSize {
            gauge("mcvfs_cache_max_bytes", "The --cache-max-size bound.", Double(maxSize))
        }
        gauge(
            "mcvfs_signature_policy_missing",
            "1 when the mount refreshes or publishes with no signature policy (--key, --policy): anyone who can push "
                + "to the registry then reaches it.",
            sample.signaturePolicyMissing ? 1 : 0)
        if let refresh = sample.refresh { families += Self.refresh(refresh) }
        return families + sample.activities + ImageMetrics.families(sample.images, keyConflicts: sample.keyConflicts)
    }

    static func refresh(_ refresh: MountStatus.Refresh) -> [MetricFamily] {
        [
            .single(
                "mcvfs_refreshes_total", help: "Live refreshes of the repository's tags (--refresh-interval).",
                kind: .counter, value: Double(refresh.refreshes)),
            .single(
                "mcvfs_refresh_failures_total", help: "Live refreshes that failed (retried at the next interval).",
                kind: .counter, value: Double(refresh.failures)),
            .single(
                "mcvfs_refresh_added_images_total", help: "Images live refresh added to the served tree.",
                kind: .counter, value: Double(refresh.imagesAdded)),
        ]
    }
}
