// swift-tools-version:6.0
import PackageDescription

// Dependencies point down: OCI values, then the network and storage layers, then the filesystem, then the node
// service and the fleet (publishing), then the CLI. docs/architecture.md draws the layers and the read path.
// Each C module is imported by exactly one Swift target; each target lists exactly the modules it imports
// (scripts/check-imports holds Package.swift to that).
let package = Package(
    name: "mcvfs",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "mcvfs", targets: ["mcvfs"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        .systemLibrary(name: "CFuse", path: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),

        .systemLibrary(name: "CDigest", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),

        // Generic single flight (one run of a piece of work per key at a time), below everything that gates work.
        .target(name: "SingleFlight"),
        .target(name: "OCI"),
        .target(name: "TimeBudget"),
        .target(name: "ContentHash", dependencies: ["OCI", "CDigest"]),
        .target(name: "GPU", dependencies: ["OCI"]),
        .target(name: "Registry", dependencies: ["OCI", "ContentHash", "TimeBudget"]),
        .target(name: "CurlTransport", dependencies: ["Registry", "CCurl"]),
        .target(name: "BlobCache", dependencies: ["OCI", "ContentHash", "TimeBudget"]),
        .target(name: "LayerArchive", dependencies: ["OCI", "ContentHash", "BlobCache", "CArchive"]),
        .target(
            name: "RemoteLayers",
            dependencies: ["SingleFlight", "OCI", "ContentHash", "Registry", "BlobCache", "LayerArchive", "TimeBudget"]),
        .target(name: "Verification", dependencies: ["OCI", "ContentHash", "COpenSSL", "CSodium"]),
        .target(name: "Trust", dependencies: ["OCI", "ContentHash", "Registry", "BlobCache", "Verification"]),
        .target(
            name: "ImageFS",
            dependencies: ["SingleFlight", "OCI", "ContentHash", "BlobCache", "LayerArchive", "TimeBudget"]),
        .target(name: "FUSEBridge", dependencies: ["ImageFS", "TimeBudget", "CFuse"]),
        // Linux's mount API (a C target: its syscalls have no glibc 2.36 wrappers), and FUSE mounts made with it.
        .target(name: "CMount"),
        .target(name: "FUSEMount", dependencies: ["CMount"]),
        // The Prometheus endpoint: SwiftNIO's HTTP/1 server (concurrent, each connection bounded) and
        // swift-prometheus's registry for the text format. Its own target, so NIO stays out of the node's code.
        .target(
            name: "MetricsEndpoint",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]),
        // Node policy above the filesystem and the fetcher: catalogs (offline, mirror, recorded), leases and the
        // leased layer provider, eviction, mount placement, metrics, status, systemd. MountService builds mounts on it.
        .target(
            name: "NodeService",
            dependencies: [
                "OCI", "ContentHash", "GPU", "Registry", "BlobCache", "LayerArchive", "RemoteLayers", "ImageFS",
                "FUSEMount", "MetricsEndpoint",
            ]
        ),
        .target(name: "ImageBuilder", dependencies: ["OCI", "ContentHash", "GPU", "Registry", "LayerArchive"]),
        // Compile once per fleet: harvesting uppers, publishing fleet images, compacting them, the daemon's
        // periodic publish. Above the node service, whose catalogs and leased layers it reads.
        .target(
            name: "Publishing",
            dependencies: [
                "OCI", "ContentHash", "Registry", "BlobCache", "LayerArchive", "RemoteLayers", "Verification", "Trust",
                "ImageFS", "MetricsEndpoint", "NodeService", "ImageBuilder",
            ]),
        // A mount as a node service: its configuration (what the flags say, and what follows from it), built
        // into the filesystems, refresh, publishing and the FUSE session, and served until unmount.
        .target(
            name: "MountService",
            dependencies: [
                "OCI", "GPU", "Registry", "BlobCache", "ImageFS", "FUSEBridge", "FUSEMount", "MetricsEndpoint",
                "NodeService", "Publishing",
            ]),
        .executableTarget(
            name: "mcvfs",
            dependencies: [
                "OCI", "ContentHash", "GPU", "Registry", "CurlTransport", "BlobCache", "LayerArchive", "Verification",
                "Trust", "ImageFS", "ImageBuilder", "MetricsEndpoint", "NodeService", "Publishing", "MountService",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // Helpers every test target may use: temporary directories, fixture paths, processes, tar builders, and the
        // one registry fake (InMemoryRegistry: manifests, blobs and ranges, with scripted faults and replies).
        .target(
            name: "TestSupport", dependencies: ["OCI", "ContentHash", "Registry", "LayerArchive"],
            path: "Tests/TestSupport"
        ),
        .testTarget(name: "SingleFlightTests", dependencies: ["SingleFlight", "TestSupport"]),
        .testTarget(name: "OCITests", dependencies: ["OCI"]),
        .testTarget(name: "GPUTests", dependencies: ["GPU", "OCI"], resources: [.copy("Fixtures")]),
        .testTarget(
            name: "RegistryTests",
            dependencies: ["Registry", "CurlTransport", "OCI", "ContentHash", "TimeBudget", "TestSupport"]),
        .testTarget(
            name: "BlobCacheTests", dependencies: ["BlobCache", "OCI", "ContentHash", "TimeBudget", "TestSupport"]),
        .testTarget(
            name: "LayerArchiveTests", dependencies: ["LayerArchive", "BlobCache", "OCI", "ContentHash", "TestSupport"]),
        .testTarget(
            name: "VerificationTests", dependencies: ["Verification", "OCI", "ContentHash"],
            resources: [.copy("Fixtures")]),
        .testTarget(
            name: "TrustTests",
            dependencies: ["Trust", "Verification", "Registry", "BlobCache", "OCI", "ContentHash", "TestSupport"]),
        .testTarget(
            name: "ImageFSTests",
            dependencies: [
                "ImageFS", "ImageBuilder", "LayerArchive", "BlobCache", "OCI", "ContentHash", "TimeBudget",
                "TestSupport",
            ]),
        .testTarget(
            name: "ImageBuilderTests",
            dependencies: [
                "ImageBuilder", "Registry", "LayerArchive", "BlobCache", "OCI", "ContentHash", "TestSupport",
            ]),
        .testTarget(
            name: "RemoteLayersTests",
            dependencies: [
                "RemoteLayers", "OCI", "ContentHash", "Registry", "BlobCache", "LayerArchive", "TestSupport",
            ]),
        .testTarget(
            name: "PublishingTests",
            dependencies: [
                "Publishing", "NodeService", "MetricsEndpoint", "OCI", "ContentHash", "BlobCache", "LayerArchive",
                "TestSupport",
            ]),
        .testTarget(
            name: "NodeServiceTests",
            dependencies: [
                "NodeService", "MetricsEndpoint", "OCI", "ContentHash", "GPU", "Registry", "BlobCache", "LayerArchive",
                "ImageFS", "TestSupport",
            ]),
        .testTarget(
            name: "MountServiceTests",
            dependencies: [
                "MountService", "NodeService", "Publishing", "GPU", "OCI", "Registry", "BlobCache", "TestSupport",
            ]),
        .testTarget(name: "MetricsEndpointTests", dependencies: ["MetricsEndpoint"]),
        .testTarget(name: "FUSEMountTests", dependencies: ["FUSEMount", "NodeService"]),
        .testTarget(name: "FUSEBridgeTests", dependencies: ["FUSEBridge", "ImageFS"]),
    ]
)
