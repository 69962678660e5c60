// swift-tools-version: 6.0
//
// kdcache — offline knowledge distillation over LMDB caches.
//
// Layers (each imports only the ones below it; see README "Architecture"):
//   CLMDB, CZlib   system-library shims (Debian liblmdb-dev, zlib1g-dev)
//   CPrefetch      a cache-prefetch hint Swift does not expose (one inline C function)
//   LMDB           a safe LMDB wrapper that knows nothing about distillation
//   KDStore        every byte layout: records, manifests, featurizers, both stores, npy / safetensors
//   KDTrain        students, losses, optimizers, group training, grids
//   KDTeachers     the built-in teacher, the external-teacher protocol, importers
//   KDProto        protobuf messages generated once by protoc-gen-swift and committed (TensorBoard events)
//   KDReport       aggregation, the verdict, results.jsonl / CSV / HTML, the sweep directory
//   KDJobs         the jobs the CLI runs (teach, import, sweep, collect, fidelity), usable without the CLI
//   kdcache        the command-line tool: one file per subcommand, no library logic
import PackageDescription

let package = Package(
    name: "kdcache",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "kdcache", targets: ["kdcache"]),
        .library(name: "KDJobs", targets: ["KDJobs"]),
        .library(name: "KDStore", targets: ["KDStore"]),
        .library(name: "LMDB", targets: ["LMDB"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-protobuf", exact: "1.39.0"),
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
        .target(name: "KDTrain", dependencies: ["KDStore", "LMDB", "CPrefetch"]),
        .target(name: "KDTeachers", dependencies: ["KDStore", "KDTrain"]),
        // Generated code only (tools/proto/tensorboard.sh regenerates Sources/KDProto/TensorBoard/).
        .target(name: "KDProto", dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]),
        .target(name: "KDReport", dependencies: ["KDStore", "KDTrain", "KDProto"]),
        .target(name: "KDJobs", dependencies: ["KDStore", "KDTrain", "KDTeachers", "KDReport"]),
        .executableTarget(name: "kdcache", dependencies: [
            "KDStore", "KDTrain", "KDTeachers", "KDReport", "KDJobs",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Yams", package: "Yams"),
        ]),
        .executableTarget(name: "kdcache-bench", dependencies: ["KDStore", "KDTrain", "KDTeachers", "KDReport", "KDJobs", "LMDB"],
                          path: "Sources/Benchmarks"),
        .target(name: "KDFuzz", dependencies: ["KDStore", "KDTrain", "KDTeachers", "LMDB", "CZlib"],
                swiftSettings: [.define("KDFUZZ_PAGE_VALIDATOR")]),
        .executableTarget(name: "kdcache-fuzz", dependencies: ["KDFuzz"], path: "tools/fuzz/driver"),
        // Fixtures and helpers shared by the test targets, one file per job (directories, stores,
        // bytes, threads, the CLI binary); no tests of its own. The test targets mirror the targets.
        .target(name: "KDTestSupport", dependencies: ["KDStore", "KDTrain"], path: "Tests/Support"),
        .testTarget(name: "LMDBTests", dependencies: ["LMDB", "KDTestSupport", "KDTrain"]),
        .testTarget(name: "KDStoreTests", dependencies: ["KDStore", "KDTestSupport", "KDTrain"]),
        .testTarget(name: "KDTrainTests", dependencies: ["KDTrain", "KDTestSupport"]),
        .testTarget(name: "KDTeachersTests", dependencies: ["KDTeachers", "KDTestSupport"]),
        .testTarget(name: "KDReportTests", dependencies: ["KDReport", "KDTrain", "KDTestSupport", "KDProto"]),
        .testTarget(name: "KDJobsTests", dependencies: ["KDJobs", "KDReport", "KDTestSupport"]),
        .testTarget(name: "CLITests", dependencies: ["KDStore", "KDTrain", "KDTestSupport"]),
        .testTarget(name: "KDFuzzTests", dependencies: ["KDFuzz"]),
    ],
    swiftLanguageModes: [.v6]
)
