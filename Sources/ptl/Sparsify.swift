import ArgumentParser
import Foundation
import PTLCommandLine
import PTLFormats
import PTLLoop
import PTLModel
import PTLPrune
import PTLTensor

/// `ptl sparsify`: RAC's system — SparseGPT on every linear layer, calibrated on the dataset's
/// text, on the prompts alone, or on the model's own chains of thought (`--calibration`).
struct Sparsify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prune every linear layer with SparseGPT (unstructured or n:m), calibrated as --calibration says.",
        discussion: """
        RAC (arXiv 2509.12464): SparseGPT's layer-wise reconstruction on calibration activations —
        the dataset's question and answer (dataset), the question alone (prompts), or the question
        with the model's own greedy chain of thought (on-policy). Blocks are pruned in order, each
        on Hessians measured with the earlier blocks already pruned. Measures accuracy, mean
        generated tokens per answer and held-out loss before and after; writes OUT/model (a dense
        HF directory whose pruned weights are exact zeros), OUT/masks.safetensors (1 = pruned, per
        layer), OUT/report.md and OUT/summary.json. No speed-up: ptl's kernels are dense.
        """)

    @OptionGroup(title: "Calibration, data and evaluation (the loop's options)") var loop: LoopOptions
    @OptionGroup(title: "Model and data") var data: LoopDataOptions
    @OptionGroup(title: "Logging") var log: LogOptions

    @Option(help: "Calibration token budget: sequences are taken in order until it is spent (RAC calibrates on long traces; 0: every calibration line).")
    var calibrationTokens: Int = 0
    @Option(help: "Output directory.")
    var out: String = "out/sparse"
    @Option(help: "Compute threads (default: all cores).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 || threads > 1024 { throw ValidationError("--threads must be between 1 and 1024") }
        if calibrationTokens < 0 { throw ValidationError("--calibration-tokens must be ≥ 0") }
    }

    struct Measure: Codable {
        var accuracy: Double
        var meanGeneratedTokens: Double
        var heldOutLoss: Double
        var problems: Int
    }

    struct Summary: Codable {
        var model: String
        var sparsity: String
        var calibration: String
        var calibrationSequences: Int
        var calibrationTokens: Int
        var linearSparsity: Double
        var parameterSparsity: Double
        var before: Measure
        var after: Measure
        var seconds: Double
        var layers: [String: Double]
    }

    func run() throws {
        ComputeThreads.set(threads ?? System.coreCount)
        let logger = log.logger("ptl")
        let pattern = try SparsityPattern(parsing: loop.sparsity)
        let percdamp = loop.percdamp, sparseBlockSize = loop.sparseBlockSize
        var serial: UInt64 = 0
        let settings = try loop.settings()
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let inputs = try LoopInputs.load(data.settings, loop: settings, out: out)
        let backend = LocalBackend(tokenizer: inputs.tokenizer, precision: settings.precision)
        let model = inputs.model
        let d = inputs.data
        func measure(_ what: String) throws -> Measure {
            let counts = try backend.evaluate(model: model, jsonlLines: d.evalLines, shards: 1, maxNewTokens: settings.evalMaxNewTokens,
                                              batchSize: settings.evalBatchSize, key: WorkKey(run: "sparsify"))
            let loss = try backend.statistics(model: model, sequences: d.heldOut, shards: settings.shards, branchScale: nil, key: WorkKey(run: "sparsify")).loss
            let m = Measure(accuracy: counts.accuracy, meanGeneratedTokens: Double(counts.generatedTokens) / Double(max(1, counts.total)),
                            heldOutLoss: loss, problems: counts.total)
            logger.info("\(String(format: "%@: accuracy %.1f%% of %d, %.1f generated tokens per answer, held-out loss %.4f", what, m.accuracy * 100, m.problems, m.meanGeneratedTokens, m.heldOutLoss))")
            return m
        }
        let before = try measure("dense")
        let t0 = Date()
        var sequences: [[Int]]
        switch settings.calibration {
        case .dataset: sequences = d.calibration
        case .prompts: sequences = d.calibrationPrompts
        case .onPolicy:
            let (s, _, detail) = try OnPolicyCalibration.sequences(model: model, backend: backend, lines: d.calibrationLines, tokenizer: inputs.tokenizer,
                                                                  shards: 1, maxNewTokens: settings.evalMaxNewTokens,
                                                                  batchSize: settings.evalBatchSize, key: WorkKey(run: "sparsify"))
            logger.info("\(detail)")
            sequences = s
        }
        if calibrationTokens > 0 {
            var spent = 0
            sequences = Array(sequences.prefix { s in defer { spent += max(0, s.count - 1) }; return spent < calibrationTokens })
        }
        guard sequences.count >= settings.shards else {
            throw ValidationError("\(sequences.count) calibration sequences cannot fill \(settings.shards) shards: raise --calibration-lines or --calibration-tokens, or lower --shards")
        }
        let tokens = sequences.reduce(0) { $0 + max(0, $1.count - 1) }
        logger.info("calibration: \(settings.calibration.rawValue), \(sequences.count) sequences, \(tokens) tokens; SparseGPT \(pattern)")
        let layers = try SparsePruning.run(model: model, backend: backend, sequences: sequences, shards: settings.shards, pattern: pattern,
                                           blockSize: sparseBlockSize, percentDamp: percdamp,
                                           key: { serial += 1; return WorkKey(run: "sparsify", measurement: serial) }) { logger.info("\($0)") }
        let seconds = Date().timeIntervalSince(t0)
        let after = try measure("pruned")

        let modelDir = (out as NSString).appendingPathComponent("model")
        try HFModel.save(model, to: modelDir, copyFrom: inputs.tokenizerSource)
        try SparseMasks.encode(layers, metadata: ["sparsity": "\(pattern)", "calibration": settings.calibration.rawValue])
            .write(to: URL(fileURLWithPath: (out as NSString).appendingPathComponent("masks.safetensors")), options: .atomic)
        let zeros = layers.reduce(0) { $0 + $1.zeros }, linear = layers.reduce(0) { $0 + $1.mask.count }
        let summary = Summary(model: data.settings.model, sparsity: "\(pattern)", calibration: settings.calibration.rawValue,
                              calibrationSequences: sequences.count, calibrationTokens: tokens,
                              linearSparsity: Double(zeros) / Double(max(1, linear)), parameterSparsity: Double(zeros) / Double(model.parameterCount),
                              before: before, after: after, seconds: seconds,
                              layers: Dictionary(uniqueKeysWithValues: layers.map { ($0.name, Double($0.zeros) / Double($0.mask.count)) }))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(summary).write(to: URL(fileURLWithPath: (out as NSString).appendingPathComponent("summary.json")))
        var md = "# SparseGPT \(pattern), calibrated on \(settings.calibration.rawValue)\n\n"
        md += "Model `\(data.settings.model)`; \(sequences.count) calibration sequences (\(tokens) tokens); damping \(percdamp), block \(sparseBlockSize); \(String(format: "%.1f", seconds)) s.\n\n"
        md += "| | accuracy | mean generated tokens | held-out loss |\n|---|---|---|---|\n"
        for (name, m) in [("dense", before), ("pruned", after)] {
            md += String(format: "| %@ | %.1f %% (%d problems) | %.1f | %.4f |\n", name, m.accuracy * 100, m.problems, m.meanGeneratedTokens, m.heldOutLoss)
        }
        md += String(format: "\nZeros: %.2f %% of the linear layers' weights, %.2f %% of all parameters (embeddings and norms are dense). ", summary.linearSparsity * 100, summary.parameterSparsity * 100)
        md += "The saved model is dense with exact zeros: ptl's (and most engines') kernels do the same work, so decode speed is unchanged; "
        md += "2:4 would need sparse tensor-core kernels (GPU) or a CPU kernel that skips the zeros.\n\n| layer | zeros |\n|---|---|\n"
        for l in layers { md += String(format: "| %@ | %.2f %% |\n", l.name, 100 * Double(l.zeros) / Double(l.mask.count)) }
        try Data(md.utf8).write(to: URL(fileURLWithPath: (out as NSString).appendingPathComponent("report.md")))
        logger.info("wrote \(modelDir), \(out)/masks.safetensors, \(out)/report.md")
    }
}
