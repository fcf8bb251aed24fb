import Testing

@testable import MetricsEndpoint

/// The text a scrape returns, emitted by swift-prometheus's registry from families and live histograms.
@Suite struct ExpositionTests {
    /// The lines of one family, HELP and TYPE first (the registry emits families in no fixed order).
    func lines(of name: String, in text: String) -> [String] {
        text.split(separator: "\n").map(String.init).filter {
            $0.hasPrefix("# HELP \(name) ") || $0.hasPrefix("# TYPE \(name) ") || $0.hasPrefix(name + "{")
                || $0.hasPrefix(name + " ") || $0.hasPrefix(name + "_")
        }
    }

    @Test func countersAndGaugesCarryTheirTypeLabelsAndValues() {
        let exposition = Exposition()
        let text = String(
            decoding: exposition.render([
                .single("mcvfs_bytes_fetched_total", help: "Bytes downloaded.", kind: .counter, value: 1234),
                MetricFamily(
                    name: "mcvfs_fuse_errors_total", help: "FUSE replies with an error.", kind: .counter,
                    samples: [.init(labels: [("op", "lookup"), ("errno", "ENOENT")], value: 3)]),
                MetricFamily(
                    name: "mcvfs_image_last_error_info", help: "Why.", kind: .gauge,
                    samples: [.init(labels: [("error", "we\"ird\\\nline")], value: 1)]),
            ]), as: UTF8.self)
        #expect(text.hasSuffix("\n"))
        #expect(
            lines(of: "mcvfs_bytes_fetched_total", in: text) == [
                "# HELP mcvfs_bytes_fetched_total Bytes downloaded.", "# TYPE mcvfs_bytes_fetched_total counter",
                "mcvfs_bytes_fetched_total 1234",
            ])
        #expect(
            lines(of: "mcvfs_fuse_errors_total", in: text).last
                == #"mcvfs_fuse_errors_total{op="lookup",errno="ENOENT"} 3"#)
        #expect(lines(of: "mcvfs_image_last_error_info", in: text).contains("# TYPE mcvfs_image_last_error_info gauge"))
        #expect(
            lines(of: "mcvfs_image_last_error_info", in: text).last
                == #"mcvfs_image_last_error_info{error="we\"ird\\\nline"} 1.0"#)
    }

    @Test func eachScrapeSetsValuesAndDropsSeriesItNoLongerNames() {
        let exposition = Exposition()
        func state(_ phase: String, _ value: Double) -> MetricFamily {
            MetricFamily(
                name: "mcvfs_image_state", help: "State.", kind: .gauge,
                samples: [.init(labels: [("image", "a"), ("state", phase)], value: value)])
        }
        _ = exposition.render([state("failed", 1), .single("c_total", help: "C.", kind: .counter, value: 5)])
        let text = String(
            decoding: exposition.render([state("loaded", 1), .single("c_total", help: "C.", kind: .counter, value: 7)]),
            as: UTF8.self)
        #expect(lines(of: "mcvfs_image_state", in: text).last == #"mcvfs_image_state{image="a",state="loaded"} 1.0"#)
        #expect(!text.contains("failed"))
        #expect(lines(of: "c_total", in: text).last == "c_total 7")
        let empty = String(decoding: exposition.render([]), as: UTF8.self)
        #expect(!empty.contains("mcvfs_image_state") && !empty.contains("c_total"))
    }

    @Test func histogramsAreObservedLiveWithCumulativeBuckets() {
        let exposition = Exposition()
        let observe = exposition.histogram("mcvfs_fetch_seconds", help: "Download time.", buckets: [0.1, 1, 10])
        for seconds in [0.0625, 0.03125, 5, 400] { observe(seconds) }
        let text = String(decoding: exposition.render([]), as: UTF8.self)
        #expect(
            lines(of: "mcvfs_fetch_seconds", in: text) == [
                "# HELP mcvfs_fetch_seconds Download time.", "# TYPE mcvfs_fetch_seconds histogram",
                #"mcvfs_fetch_seconds_bucket{le="0.1"} 2"#, #"mcvfs_fetch_seconds_bucket{le="1.0"} 2"#,
                #"mcvfs_fetch_seconds_bucket{le="10.0"} 3"#, #"mcvfs_fetch_seconds_bucket{le="+Inf"} 4"#,
                "mcvfs_fetch_seconds_sum 405.09375", "mcvfs_fetch_seconds_count 4",
            ])
    }
}
