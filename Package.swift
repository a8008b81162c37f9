// swift-tools-version:6.0
import PackageDescription

/// The numeric and parsing modules are optimised in debug builds too: the test suite runs real
/// models (SmolLM2-135M among them) and an unoptimised kernel is 20-50× slower. Release builds
/// use the default -O (checked): -Ounchecked would remove the preconditions and overflow checks
/// that back up the file parsers.
let optimizedAlways: [SwiftSetting] = [
    .unsafeFlags(["-O"], .when(configuration: .debug)),
]

/// The kernel module alone keeps -Ounchecked in release: its kernels already work on unsafe
/// pointers with sizes validated by their callers, and checked arithmetic costs the SIMD matvec
/// of decoding 12-18 % (bench --profile-decode b, 1 thread: 3072×576 154 → 174 µs). Everything
/// a kernel receives is checked before it gets there (config, tensors, token ids).
let uncheckedKernels: [SwiftSetting] = [
    .unsafeFlags(["-Ounchecked"], .when(configuration: .release)),
    .unsafeFlags(["-O"], .when(configuration: .debug)),
]

let package = Package(
    name: "ptl",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "ptl", targets: ["ptl"]),
        .executable(name: "ptl-coordinator", targets: ["ptl-coordinator"]),
        .executable(name: "ptl-worker", targets: ["ptl-worker"]),
        .library(name: "PTLModel", targets: ["PTLModel"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    ],
    targets: [
        // System libraries, found through pkg-config (Debian: libopenblas-dev, libzmq3-dev).
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZeroMQ", pkgConfig: "libzmq",
                       providers: [.apt(["libzmq3-dev"])]),

        // Byte kernels of the wire: CRC-32C (SSE4.2 when present), fp32 → fp64 accumulation, finiteness.
        .target(name: "CPTLKernels", cSettings: [.unsafeFlags(["-O2"])]),
        // bf16 products: oneDNN matmuls (Debian: libdnnl-dev; OpenMP runtime) with a shape-keyed
        // primitive cache, the batch-1 VDPBF16PS matrix-vector product, fp32 <-> bf16.
        .target(name: "CPTLBF16", cSettings: [.unsafeFlags(["-O2"])],
                linkerSettings: [.linkedLibrary("dnnl"), .linkedLibrary("gomp")]),
        // Kernels: forward/backward pairs over unsafe buffers and cblas_sgemm; a thread pool.
        .target(name: "PTLTensor", dependencies: ["COpenBLAS", "CPTLBF16"], swiftSettings: uncheckedKernels),
        // File formats: safetensors (read/write, strict), GGUF (read, dequantise).
        .target(name: "PTLFormats", dependencies: ["CPTLKernels"], swiftSettings: optimizedAlways),
        // Hugging Face tokenizer.json byte-level BPE.
        .target(name: "PTLTokenizer", swiftSettings: optimizedAlways),
        // Config, parameters, training pass, AdamW, schedule, KV-cached decoder, sampler.
        .target(name: "PTLModel", dependencies: ["PTLTensor", "PTLFormats", "PTLTokenizer", "COpenBLAS"], swiftSettings: optimizedAlways),
        // Corpus (JSONL), prompt template, batches.
        .target(name: "PTLData", dependencies: ["PTLTokenizer", "PTLTensor"]),
        // Continual pre-training (trainer loop) and loss evaluation over token sequences.
        .target(name: "PTLTune", dependencies: ["PTLModel", "PTLData"]),
        // Evaluation: batched greedy generation, answer extraction, accuracy and speed.
        .target(name: "PTLEval", dependencies: ["PTLModel", "PTLData", "PTLTokenizer"], swiftSettings: optimizedAlways),
        // Pruning: scores, plans, surgery on the flat layout (weights and optimizer moments), budgets, plots.
        .target(name: "PTLPrune", dependencies: ["PTLModel", "PTLTensor", "COpenBLAS"], swiftSettings: optimizedAlways),
        // The Prune–Tune Loop: settings, state, plans, budgets, anneal, report, checkpoints; the
        // ComputeBackend protocol, the per-shard computation and the shard-order reduce; LocalBackend.
        .target(name: "PTLLoop", dependencies: ["CPTLKernels", "PTLModel", "PTLData", "PTLTune", "PTLEval", "PTLTokenizer", "PTLPrune", "PTLFormats",
                                                .product(name: "Logging", package: "swift-log")]),
        // The ZeroMQ binding, the coordinator and worker, the wire, ClusterBackend.
        .target(name: "PTLCluster", dependencies: ["CZeroMQ", "CPTLKernels", "PTLLoop", "PTLFormats", "PTLModel", "PTLData", "PTLTune", "PTLEval", "PTLTokenizer", "PTLPrune",
                                                   .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                                                   .product(name: "Logging", package: "swift-log")]),

        // What the binaries share: option groups, recipe files (YAML), the loop run, local workers.
        .target(name: "PTLCommandLine", dependencies: ["PTLLoop", "PTLPrune", "PTLModel", "PTLFormats",
                                                       .product(name: "ArgumentParser", package: "swift-argument-parser"),
                                                       .product(name: "Logging", package: "swift-log"),
                                                       .product(name: "Yams", package: "Yams")]),

        .executableTarget(name: "ptl", dependencies: [
            "PTLModel", "PTLData", "PTLFormats", "PTLTokenizer", "PTLTune", "PTLEval", "PTLCluster", "PTLPrune", "PTLLoop", "PTLCommandLine",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "ptl-coordinator", dependencies: [
            "PTLCluster", "PTLModel", "PTLData", "PTLTune", "PTLTokenizer", "PTLPrune", "PTLLoop", "PTLCommandLine",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "ptl-worker", dependencies: [
            "PTLCluster", "PTLTensor", "PTLLoop", "PTLCommandLine",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "ptl-bench", dependencies: ["PTLModel", "PTLTensor", "PTLTokenizer", "COpenBLAS"],
                          path: "bench/Sources/ptl-bench"),

        // The fuzz targets: every decoder of untrusted bytes fed one input (Fuzz/ptl-fuzz drives
        // them under libFuzzer; PTLFuzzTests replays the seeds and every fixed finding).
        .target(name: "PTLFuzzTargets", dependencies: ["PTLCluster", "PTLCommandLine", "PTLData", "PTLFormats", "PTLLoop", "PTLModel", "PTLTokenizer",
                                                       .product(name: "ArgumentParser", package: "swift-argument-parser")]),

        // Test support (test targets only): a manual clock, random models, the package root.
        .target(name: "PTLTestSupport", dependencies: ["PTLCluster", "PTLModel", "PTLTensor"]),

        .testTarget(name: "PTLTensorTests", dependencies: ["PTLTensor"]),
        .testTarget(name: "PTLFormatsTests", dependencies: ["PTLFormats", "PTLTensor"]),
        .testTarget(name: "PTLTokenizerTests", dependencies: ["PTLTokenizer"]),
        .testTarget(name: "PTLModelTests", dependencies: ["PTLModel", "PTLData", "PTLTestSupport"]),
        .testTarget(name: "PTLDataTests", dependencies: ["PTLData"]),
        .testTarget(name: "PTLTuneTests", dependencies: ["PTLTune"]),
        .testTarget(name: "PTLEvalTests", dependencies: ["PTLEval"]),
        .testTarget(name: "PTLClusterTests", dependencies: ["PTLCluster", "PTLTestSupport", "PTLLoop", "PTLFormats", "CPTLKernels", .product(name: "Logging", package: "swift-log"), "PTLModel", "PTLTune", "PTLData", "PTLEval", "PTLTokenizer"]),
        .testTarget(name: "PTLPruneTests", dependencies: ["PTLPrune", "PTLModel", "PTLData", "PTLTestSupport"]),
        .testTarget(name: "PTLLoopTests", dependencies: ["PTLLoop", "PTLCommandLine", "PTLModel", "PTLPrune", "PTLData", "PTLTokenizer", "PTLTensor", "PTLTestSupport"]),
        .testTarget(name: "PTLCLITests", dependencies: ["PTLModel"]),
        .testTarget(name: "PTLFuzzTests", dependencies: ["PTLFuzzTargets"]),
    ]
)

// Fuzzing (scripts/fuzz.sh builds with PTL_FUZZ=1 in its own scratch directory, with
// `--sanitize fuzzer --sanitize address`): one libFuzzer binary over every decoder of untrusted
// bytes. Not part of normal builds: libFuzzer supplies `main`, so the harness has none.
if Context.environment["PTL_FUZZ"] == "1" {
    package.products.append(.executable(name: "ptl-fuzz", targets: ["ptl-fuzz"]))
    package.targets.append(.executableTarget(
        name: "ptl-fuzz",
        dependencies: ["PTLFuzzTargets", "PTLCluster", "PTLFormats", "PTLLoop", "PTLModel", "PTLPrune"],
        path: "Fuzz/ptl-fuzz",
        swiftSettings: [.unsafeFlags(["-parse-as-library"])]))
}
