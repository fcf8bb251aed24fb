// swift-tools-version:6.0
import PackageDescription

// Dependencies point down: OCI values, then the network and storage layers, then the filesystem, then the CLI.
// Each C library is imported by exactly one Swift target.
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

        .target(name: "OCI"),
        .target(name: "GPU", dependencies: ["OCI"]),
        .target(name: "Verification", dependencies: ["OCI", "COpenSSL", "CSodium"]),
        .target(name: "Registry", dependencies: ["OCI", "Verification"]),
        .target(name: "CurlTransport", dependencies: ["Registry", "CCurl"]),
        .target(name: "BlobCache", dependencies: ["OCI", "Verification"]),
        .target(name: "TarIndex", dependencies: ["OCI", "BlobCache", "Verification", "CArchive"]),
        .target(name: "CacheRepository", dependencies: ["OCI", "GPU", "Registry", "BlobCache", "TarIndex", "Verification"]),
        .target(name: "Trust", dependencies: ["OCI", "Registry", "Verification", "CacheRepository"]),
        .target(name: "ImageFS", dependencies: ["OCI", "GPU", "BlobCache", "TarIndex"]),
        .target(name: "FUSEBridge", dependencies: ["ImageFS", "CFuse"]),
        .target(name: "ImageBuilder", dependencies: ["OCI", "GPU", "Registry", "Verification", "TarIndex", "ImageFS"]),
        .target(name: "NodeService", dependencies: ["OCI", "BlobCache", "TarIndex"]),
        .executableTarget(
            name: "mcvfs",
            dependencies: [
                "OCI", "GPU", "Registry", "CurlTransport", "BlobCache", "TarIndex", "CacheRepository", "ImageFS",
                "FUSEBridge", "ImageBuilder", "NodeService", "Verification", "Trust",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        .testTarget(name: "OCITests", dependencies: ["OCI"]),
        .testTarget(name: "GPUTests", dependencies: ["GPU"], resources: [.copy("Fixtures")]),
        .testTarget(name: "VerificationTests", dependencies: ["Verification"], resources: [.copy("Fixtures")]),
        .testTarget(name: "TrustTests", dependencies: ["Trust", "Verification", "CacheRepository", "OCI"]),
        .testTarget(name: "RegistryTests", dependencies: ["Registry", "CurlTransport"]),
        .testTarget(name: "BlobCacheTests", dependencies: ["BlobCache", "Verification", "TarIndex"]),
        .testTarget(name: "ImageFSTests", dependencies: ["ImageFS", "TarIndex", "BlobCache"]),
        .testTarget(
            name: "ImageBuilderTests", dependencies: ["ImageBuilder", "TarIndex", "OCI", "BlobCache", "Verification"]),
        .testTarget(name: "NodeServiceTests", dependencies: ["NodeService", "OCI", "BlobCache", "TarIndex"]),
    ]
)
