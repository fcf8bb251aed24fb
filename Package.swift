// swift-tools-version:6.0
import PackageDescription

// Dependencies point down: OCI values, then the network and storage layers, then the filesystem, then the CLI.
// Each C module is imported by exactly one Swift target; each target lists exactly the modules it imports
// (scripts/check-imports holds Package.swift to that).
let package = Package(
    name: "mcvfs",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "mcvfs", targets: ["mcvfs"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0")
    ],
    targets: [
        .systemLibrary(name: "CFuse", path: "CFuse", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "CArchive", pkgConfig: "libarchive", providers: [.apt(["libarchive-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),

        .systemLibrary(name: "CDigest", pkgConfig: "libcrypto", providers: [.apt(["libssl-dev"])]),

        .target(name: "OCI"),
        .target(name: "ContentHash", dependencies: ["OCI", "CDigest"]),
        .target(name: "GPU", dependencies: ["OCI"]),
        .target(name: "Registry", dependencies: ["OCI", "ContentHash"]),
        .target(name: "CurlTransport", dependencies: ["Registry", "CCurl"]),
        .target(name: "BlobCache", dependencies: ["OCI", "ContentHash"]),
        .target(name: "TarIndex", dependencies: ["OCI", "ContentHash", "BlobCache", "CArchive"]),
        .target(name: "CacheRepository", dependencies: ["OCI", "ContentHash", "Registry", "BlobCache", "TarIndex"]),
        .target(name: "Verification", dependencies: ["OCI", "ContentHash", "COpenSSL", "CSodium"]),
        .target(name: "Trust", dependencies: ["OCI", "Registry", "Verification"]),
        .target(name: "ImageFS", dependencies: ["OCI", "ContentHash", "TarIndex"]),
        .target(name: "FUSEBridge", dependencies: ["ImageFS", "CFuse"]),
        .target(name: "ImageBuilder", dependencies: ["OCI", "ContentHash", "GPU", "Registry", "TarIndex"]),
        .target(name: "NodeService", dependencies: ["OCI", "BlobCache", "TarIndex"]),
        .executableTarget(
            name: "mcvfs",
            dependencies: [
                "OCI", "ContentHash", "GPU", "Registry", "CurlTransport", "BlobCache", "TarIndex", "CacheRepository",
                "Verification", "Trust", "ImageFS", "FUSEBridge", "ImageBuilder", "NodeService",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // Helpers every test target may use: temporary directories, fixture paths, processes, tar builders.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "OCITests", dependencies: ["OCI"]),
        .testTarget(name: "GPUTests", dependencies: ["GPU", "OCI"], resources: [.copy("Fixtures")]),
        .testTarget(name: "RegistryTests", dependencies: ["Registry", "CurlTransport", "OCI", "ContentHash"]),
        .testTarget(name: "BlobCacheTests", dependencies: ["BlobCache", "OCI", "ContentHash", "TestSupport"]),
        .testTarget(
            name: "TarIndexTests", dependencies: ["TarIndex", "BlobCache", "OCI", "ContentHash", "TestSupport"]),
        .testTarget(
            name: "VerificationTests", dependencies: ["Verification", "OCI", "ContentHash"],
            resources: [.copy("Fixtures")]),
        .testTarget(name: "TrustTests", dependencies: ["Trust", "Verification", "OCI", "ContentHash"]),
        .testTarget(
            name: "ImageFSTests",
            dependencies: ["ImageFS", "ImageBuilder", "TarIndex", "BlobCache", "OCI", "ContentHash", "TestSupport"]),
        .testTarget(
            name: "ImageBuilderTests",
            dependencies: ["ImageBuilder", "TarIndex", "BlobCache", "OCI", "ContentHash", "TestSupport"]),
        .testTarget(name: "NodeServiceTests", dependencies: ["NodeService", "OCI", "BlobCache", "TarIndex"]),
        .testTarget(name: "FUSEBridgeTests", dependencies: ["FUSEBridge", "ImageFS"]),
    ]
)
