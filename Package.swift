// swift-tools-version: 6.0
//
// kdcache — offline knowledge distillation over LMDB caches.
//
// Layers (each imports only the ones below it; see README "Architecture"):
//   CLMDB, CZlib   system-library shims (Debian liblmdb-dev, zlib1g-dev)
//   CPrefetch      a cache-prefetch hint Swift does not expose (one inline C function)
//   LMDB           a safe LMDB wrapper that knows nothing about distillation
//   KDStore        record codecs, manifests, featurizers, the dataset and soft-label stores
//   KDTrain        students, losses, optimizers, sweeps, built-in teachers
//   kdcache        the command-line tool: one file per subcommand, no library logic
import PackageDescription

let package = Package(
    name: "kdcache",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "kdcache", targets: ["kdcache"]),
        .library(name: "KDStore", targets: ["KDStore"]),
        .library(name: "LMDB", targets: ["LMDB"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        .systemLibrary(name: "CLMDB", pkgConfig: "lmdb",
                       providers: [.apt(["liblmdb-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .target(name: "LMDB", dependencies: ["CLMDB"]),
        .target(name: "KDStore", dependencies: [
            "LMDB", "CZlib",
            .product(name: "Crypto", package: "swift-crypto"),
        ]),
        .target(name: "CPrefetch"),
        .target(name: "KDTrain", dependencies: ["KDStore", "CPrefetch"]),
        .executableTarget(name: "kdcache", dependencies: [
            "KDStore", "KDTrain",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Yams", package: "Yams"),
        ]),
        .executableTarget(name: "kdcache-bench", dependencies: ["KDStore", "KDTrain", "LMDB"],
                          path: "Sources/Benchmarks"),
        .target(name: "KDFuzz", dependencies: ["KDStore", "KDTrain", "LMDB", "CZlib"],
                swiftSettings: [.define("KDFUZZ_PAGE_VALIDATOR")]),
        .executableTarget(name: "kdcache-fuzz", dependencies: ["KDFuzz"], path: "tools/fuzz/driver"),
        .testTarget(name: "LMDBTests", dependencies: ["LMDB"]),
        .testTarget(name: "KDStoreTests", dependencies: ["KDStore"]),
        .testTarget(name: "KDTrainTests", dependencies: ["KDTrain"]),
        .testTarget(name: "CLITests", dependencies: ["KDStore"]),
        .testTarget(name: "KDFuzzTests", dependencies: ["KDFuzz"]),
    ],
    swiftLanguageModes: [.v6]
)
