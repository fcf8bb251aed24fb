import Testing

@testable import NodeService

@Suite struct PrometheusTests {
    @Test func rendersCountersGaugesAndLabels() {
        let text = PrometheusText.render([
            .single("mcvfs_bytes_fetched_total", help: "Bytes downloaded.", kind: .counter, value: 1234),
            MetricFamily(
                name: "mcvfs_fuse_errors_total", help: "FUSE replies with an error\nby operation.", kind: .counter,
                samples: [
                    .init(labels: [("op", "lookup"), ("errno", "2")], value: 3),
                    .init(labels: [("op", "we\"ird\\")], value: 0.5),
                ]),
        ])
        #expect(
            text == """
                # HELP mcvfs_bytes_fetched_total Bytes downloaded.
                # TYPE mcvfs_bytes_fetched_total counter
                mcvfs_bytes_fetched_total 1234
                # HELP mcvfs_fuse_errors_total FUSE replies with an error\\nby operation.
                # TYPE mcvfs_fuse_errors_total counter
                mcvfs_fuse_errors_total{op="lookup",errno="2"} 3
                mcvfs_fuse_errors_total{op="we\\"ird\\\\"} 0.5

                """)
    }

    @Test func histogramBucketsAreCumulativeWithInf() {
        let family = MetricFamily.histogram(
            "mcvfs_fetch_seconds", help: "Layer download time.", bounds: [0.1, 1, 10], counts: [2, 0, 1, 4], sum: 99.5)
        #expect(
            PrometheusText.render([family]) == """
                # HELP mcvfs_fetch_seconds Layer download time.
                # TYPE mcvfs_fetch_seconds histogram
                mcvfs_fetch_seconds_bucket{le="0.1"} 2
                mcvfs_fetch_seconds_bucket{le="1"} 2
                mcvfs_fetch_seconds_bucket{le="10"} 3
                mcvfs_fetch_seconds_bucket{le="+Inf"} 7
                mcvfs_fetch_seconds_sum 99.5
                mcvfs_fetch_seconds_count 7

                """)
    }

    @Test func numberFormatting() {
        #expect(PrometheusText.format(0) == "0")
        #expect(PrometheusText.format(0.25) == "0.25")
        #expect(PrometheusText.format(.infinity) == "+Inf")
        #expect(PrometheusText.format(-.infinity) == "-Inf")
        #expect(PrometheusText.format(.nan) == "NaN")
    }

    @Test func httpRouting() {
        func respond(_ request: String) -> String {
            MetricsServer.respond(to: Array(request.utf8), render: { "m 1\n" }).0
        }
        #expect(respond("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == "200 OK")
        #expect(respond("GET /metrics?x=1 HTTP/1.0\r\n\r\n") == "200 OK")
        #expect(respond("GET / HTTP/1.1\r\n\r\n") == "404 Not Found")
        #expect(respond("POST /metrics HTTP/1.1\r\n\r\n") == "405 Method Not Allowed")
        #expect(respond("garbage\r\n\r\n") == "400 Bad Request")
        #expect(MetricsServer.headersComplete(Array("GET / HTTP/1.1\r\n\r\n".utf8)))
        #expect(!MetricsServer.headersComplete(Array("GET / HTTP/1.1\r\n".utf8)))
    }

    @Test func listenAddresses() throws {
        #expect(try MetricsServer.Address(parsing: "127.0.0.1:9400") == .init(parsing: "localhost:9400"))
        #expect(try MetricsServer.Address(parsing: ":9400").host == "0.0.0.0")
        for bad in ["9400", "127.0.0.1", "127.0.0.1:99999", "example.com:80", "[::1]:80"] {
            #expect(throws: ServiceError.invalidListenAddress(bad)) { try MetricsServer.Address(parsing: bad) }
        }
    }
}
