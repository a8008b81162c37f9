import ArgumentParser
import Foundation
import Logging
import PTLModel
import PTLData
import PTLFormats
import PTLLoop
import PTLPrune
import PTLTensor

/// What a job does: the Prune–Tune Loop, one of its baselines, or (ptl-coordinator only) plain
/// continual pre-training.
public enum JobMethod: String, Codable, Sendable, CaseIterable, ExpressibleByArgument {
    case ptl
    case pruneOnce = "prune-once"
    case shortgpt
    case train

    /// The loop's method; nil for `train`.
    public var pruneMethod: PruneMethod? { PruneMethod(rawValue: rawValue) }
}

extension PruneOrder: ExpressibleByArgument {}
extension NeuronScore: ExpressibleByArgument {}
extension LayerScore: ExpressibleByArgument {}
extension BudgetKind: ExpressibleByArgument {}
extension LayerRemoval: ExpressibleByArgument {}
extension OptimizerCarry: ExpressibleByArgument {}
extension CalibrationSource: ExpressibleByArgument {}
extension Precision: ExpressibleByArgument {}
extension RecoveryLoss: ExpressibleByArgument {}
extension ReconstructKind: ExpressibleByArgument {}
extension CalibrationKind: ExpressibleByArgument {}
extension DamageMeasure: ExpressibleByArgument {}
extension TuneKind: ExpressibleByArgument {}

/// What a round removes: neurons and blocks (a smaller dense model), or weights (SparseGPT).
public enum PruneKind: String, Codable, Sendable, CaseIterable, ExpressibleByArgument {
    case structured, sparse
}

/// The loop's options, shared by `ptl prune`, `ptl-coordinator` and `ptl compare`.
public struct LoopOptions: ParsableArguments {
    public init() {}

    @Option(help: "The job: the Prune–Tune Loop, a baseline with the same data, total tune steps and target, or (ptl-coordinator) plain training.")
    public var method: JobMethod = .ptl

    @Option(help: "Fraction of the original parameters to end at or below.")
    public var targetParams: Double = 0.5

    @Option(help: "structured: rounds remove FFN neurons and blocks (the model gets smaller and faster); sparse: rounds raise every linear layer's sparsity with SparseGPT (RAC's reconstruction, calibrated as --calibration says) up to --sparsity, PTL by --step a round (n:m one weight of every m a round), and tuning keeps the pruned weights at zero (same shape, same speed).")
    public var prune: PruneKind = .structured

    @Option(help: "With --prune sparse (and ptl sparsify): a fraction of every linear layer's weights (0.5), or n:m (2:4, 4:8).")
    public var sparsity: String = "0.5"

    @Option(help: "With --prune sparse and an unstructured target: linear (the sparsity rises by --step a round) or cubic (the same number of rounds spaced as gradual magnitude pruning does: big steps first, small ones near the target).")
    public var sparsitySchedule: String = "linear"

    @Option(help: "SparseGPT's damping: this fraction of the mean of diag(H) is added to its diagonal.")
    public var percdamp: Double = 0.01

    @Option(help: "Columns per SparseGPT lazy batch update (a multiple of m for n:m).")
    public var sparseBlockSize: Int = 128

    @Option(help: "Blocks PTL and Prune-Once delete (the FFN width shrinks until the target is met).")
    public var removeLayers: Int = 1

    @Option(help: "Fraction of the original FFN width removed per neuron round.")
    public var step: Double = 0.05

    @Option(help: "The FFN width stays a multiple of this.")
    public var widthMultiple: Int = 32

    @Option(help: "Blocks removed per layer round.")
    public var layersPerRound: Int = 1

    @Option(help: "Prune hidden (embedding) channels down to this hidden size, with the neuron rounds (PTL: in proportion to their neurons; Prune-Once: at once); channels scored by their normalised magnitude into every norm, the norm gains rescaled for the channels removed, head_dim kept. Default: the hidden size stays.")
    public var hiddenSize: Int?

    @Option(help: "Which kind of round comes first.")
    public var order: PruneOrder = .neuronsFirst

    @Option(help: "Neuron score (act-norm = E|a|·‖W_down[:,j]‖).")
    public var score: NeuronScore = .magnitude

    @Option(help: "Layer score: relative-change (E‖Δh‖/E‖h‖) or block-influence (ShortGPT).")
    public var layerScore: LayerScore = .relativeChange

    @Option(help: "damage: each round's tune steps follow its held-out loss increase; equal: the same every round.")
    public var budget: BudgetKind = .damage

    @Option(help: "With --budget damage: the fewest tune steps a round gets (with --damage probe, a round whose cut loses no probe question gets none — unless the model already failed 90 % of the probe and the cut raised the held-out loss).")
    public var minRoundSteps: Int = 1

    @Option(help: "With --budget damage: what a cut's damage is measured by — loss (held-out loss on dataset text) or probe (the error rate on held-out questions — as many as --calibration-lines, never the calibration ones — answered greedily).")
    public var damage: DamageMeasure = .probe

    @Option(help: "With --budget damage: the fraction of the total tune steps kept for the final round, whatever the estimates say.")
    public var finalReserve: Double = 0.3

    @Option(help: "cut: a block is deleted at once; anneal: a doomed block's branches fall to 0 while tuning, then it is deleted.")
    public var layerRemoval: LayerRemoval = .cut

    @Option(help: "Rounds over which a doomed block is annealed.")
    public var annealRounds: Int = 3

    @Option(help: "carry: one AdamW state across rounds, sliced with the weights; reset: a new one every round.")
    public var optimizer: OptimizerCarry = .reset

    @Option(help: "Tune steps per PTL round; every method gets this × the PTL round count in total.")
    public var tuneSteps: Int = 20

    @Option(help: "The tune phase's loss: ce (next-token cross-entropy), kd (logit distillation from the unpruned starting model or --teacher: forward KL on the full vocabulary) or kd+ce (weighted by --kd-weight).")
    public var recover: RecoveryLoss = .kd

    @Option(help: "Distillation temperature T (the loss is T² · KL at T).")
    public var kdTemperature: Float = 1

    @Option(help: "With --recover kd+ce: the weight w of w · T² · KL + (1 − w) · CE.")
    public var kdWeight: Float = 0.5

    @Option(help: "After each neuron cut: none, or ffn (refit the kept columns of down_proj by least squares so each block's FFN output on the calibration tokens matches the unpruned block's).")
    public var reconstruct: ReconstructKind = .ffn

    @Option(help: "What the stats phase (scores, reconstruction) runs on: dataset (the calibration lines: question + the dataset's chain of thought, see --calibrate-on), prompts (the questions alone) or on-policy (the questions with the current model's own greedy chain of thought, generated by the workers every round).")
    public var calibration: CalibrationKind = .onPolicy

    @Option(help: "Damping of the reconstruction: λ = this × the mean diagonal of the kept neurons' Gram matrix.")
    public var reconstructDamping: Double = 0.01

    @Option(help: "What the tune phase trains with: cpt (next-token loss, --recover says which), grpo (GRPO on the tuning questions: sampled answers rewarded by --rewards, a clipped objective with a KL to the round's starting model), or cpt+grpo (the first half of a round's steps one, the second half the other).")
    public var tune: TuneKind = .cpt

    @Option(help: "GRPO: training questions per step.")
    public var promptsPerStep: Int = 8

    @Option(help: "GRPO: completions sampled per question (the group its rewards are normalised in).")
    public var rolloutsPerPrompt: Int = 8

    @Option(help: "GRPO: sampling temperature.")
    public var temperature: Float = 1

    @Option(help: "GRPO: nucleus sampling's p.")
    public var topP: Float = 1

    @Option(help: "GRPO: weight β of the KL (k3) to the round's starting model; 0: none.")
    public var klBeta: Float = 0.04

    @Option(help: "GRPO: the ratio's clip, 1 − clip-low …")
    public var clipLow: Float = 0.2

    @Option(help: "GRPO: … 1 + clip-high (DAPO's clip-higher).")
    public var clipHigh: Float = 0.28

    @Option(help: "GRPO: reward functions and weights (accuracy: the extracted answer equals the gold one; format: one final answer as #### N or \\boxed{N}).")
    public var rewards: String = "accuracy:0.9,format:0.1"

    @Option(help: "GRPO: peak learning rate of the GRPO steps.")
    public var grpoLr: Float = 1e-5

    @Option(help: "Peak learning rate (per round, with a warm-up and cosine decay).")
    public var lr: Float = 3e-4

    @Option(help: "Lines per step.")
    public var batchSize: Int = 16

    @Option(help: "Shards (micro-batches) per step and per measurement: fixed by the job, not by the worker count.")
    public var shards: Int = 4

    @Option(help: "Seed of the line order (and of which tuning lines each step sees).")
    public var seed: UInt64 = 0

    @Option(help: "Write a checkpoint every K tune steps.")
    public var checkpointEvery: Int = 10

    @Option(help: "Largest answer length in tokens at eval.")
    public var maxNewTokens: Int = 160

    @Option(help: "Eval problems of the rounds in between (the original and the final model get --eval-count).")
    public var roundEvalCount: Int = 200

    @Option(help: "Matmul arithmetic of every phase: bf16 (oneDNN, fp32 accumulation; fp32 master weights, norms, softmax, loss and AdamW) or fp32 (OpenBLAS). Default: bf16 where the CPU has AVX512-BF16 or AMX, else fp32; bf16 on a CPU without them runs fp32 and says so.")
    public var precision: Precision = .machineDefault

    public func validate() throws {
        if shards < 1 || shards > batchSize { throw ValidationError("--shards must be between 1 and --batch-size") }
        if batchSize < 1 || batchSize > 1 << 16 { throw ValidationError("--batch-size must be between 1 and 65536") }
        if checkpointEvery < 1 { throw ValidationError("--checkpoint-every must be at least 1") }
        if !(targetParams > 0 && targetParams < 1) { throw ValidationError("--target-params must be between 0 and 1") }
        if !(step > 0 && step < 1) { throw ValidationError("--step must be between 0 and 1") }
        if tuneSteps < 1 || tuneSteps > 1 << 24 { throw ValidationError("--tune-steps must be between 1 and 16777216") }
        if removeLayers < 0 || layersPerRound < 1 || widthMultiple < 1 || annealRounds < 1 || minRoundSteps < 0 {
            throw ValidationError("--remove-layers must be ≥ 0; --layers-per-round, --width-multiple and --anneal-rounds ≥ 1; --min-round-steps ≥ 0")
        }
        if !(lr > 0 && lr.isFinite) { throw ValidationError("--lr must be a positive number") }
        if maxNewTokens < 1 || maxNewTokens > 65536 { throw ValidationError("--max-new-tokens must be between 1 and 65536") }
        if roundEvalCount < 1 { throw ValidationError("--round-eval-count must be at least 1") }
        if !(kdTemperature > 0 && kdTemperature <= 100) { throw ValidationError("--kd-temperature must be in (0, 100]") }
        if !(kdWeight > 0 && kdWeight <= 1) { throw ValidationError("--kd-weight must be in (0, 1]") }
        if !(finalReserve >= 0 && finalReserve < 1) { throw ValidationError("--final-reserve must be in [0, 1)") }
        if !(reconstructDamping >= 0 && reconstructDamping <= 1e6) { throw ValidationError("--reconstruct-damping must be in [0, 1e6]") }
        do { _ = try SparsityPattern(parsing: sparsity) } catch { throw ValidationError("--\(error)") }
        if !["linear", "cubic"].contains(sparsitySchedule) { throw ValidationError("--sparsity-schedule must be linear or cubic") }
        if !(percdamp >= 0 && percdamp <= 1) { throw ValidationError("--percdamp must be between 0 and 1") }
        if sparseBlockSize < 1 || sparseBlockSize > 65536 { throw ValidationError("--sparse-block-size must be between 1 and 65536") }
        do { _ = try RewardSpec(parsing: rewards) } catch { throw ValidationError("\(error)") }
        if let g = try grpoSettings() {
            do { try g.check(shards: shards) } catch { throw ValidationError("\(error)") }
        }
    }

    /// The GRPO settings of `--tune grpo|cpt+grpo` (nil for cpt): built here and nowhere else.
    public func grpoSettings() throws -> GRPOTuneSettings? {
        guard tune != .cpt else { return nil }
        var g = GRPOTuneSettings()
        g.tune = tune
        g.promptsPerStep = promptsPerStep
        g.rolloutsPerPrompt = rolloutsPerPrompt
        g.temperature = temperature
        g.topP = topP
        g.beta = klBeta
        g.clipLow = clipLow
        g.clipHigh = clipHigh
        g.rewards = try RewardSpec(parsing: rewards)
        g.learningRate = grpoLr
        return g
    }

    /// The loop's settings: built here and nowhere else.
    public func settings() throws -> LoopSettings {
        guard let m = method.pruneMethod else { throw ValidationError("--method \(method.rawValue) is not a pruning method") }
        var ls = LoopSettings()
        ls.method = m
        ls.target = targetParams
        ls.removeLayers = removeLayers
        ls.step = step
        ls.widthMultiple = widthMultiple
        if let hiddenSize {
            // Its range (1 … the model's hidden size − 1) is checked with the plan, against the model.
            guard prune == .structured else { throw ValidationError("--hidden-size removes channels; --prune sparse keeps every shape") }
            ls.hiddenSize = hiddenSize
        }
        ls.layersPerRound = layersPerRound
        ls.order = order
        ls.neuronScore = score
        ls.layerScore = layerScore
        ls.budget = budget
        ls.layerRemoval = layerRemoval
        ls.minRoundSteps = minRoundSteps
        ls.annealRounds = annealRounds
        ls.optimizer = optimizer
        ls.tuneSteps = tuneSteps
        ls.learningRate = lr
        ls.batchSize = batchSize
        ls.shards = shards
        ls.seed = seed
        ls.checkpointEvery = checkpointEvery
        ls.evalMaxNewTokens = maxNewTokens
        ls.roundEvalCount = roundEvalCount
        ls.precision = precision
        ls.recover = recover
        ls.kdTemperature = kdTemperature
        ls.kdWeight = kdWeight
        ls.reconstruct = reconstruct
        ls.reconstructDamping = reconstructDamping
        ls.calibration = calibration
        ls.damage = damage
        ls.finalReserve = finalReserve
        if prune == .sparse {
            ls.sparse = SparseSettings(sparsity: sparsity, percentDamp: percdamp, blockSize: sparseBlockSize)
            // linear stays nil: checkpoints of runs before the option resume unchanged.
            if sparsitySchedule != "linear" { ls.sparse?.schedule = sparsitySchedule }
        }
        ls.grpo = try grpoSettings()
        return ls
    }
}

/// The model and data options of a loop run.
public struct LoopDataOptions: ParsableArguments {
    public init() {}

    @Option(help: "The model to compress (HF directory or .gguf).")
    public var model: String = "models/demo"

    @Option(help: "The teacher of --recover kd / kd+ce (HF directory or .gguf; default: the unpruned starting model).")
    public var teacher: String?

    @Option(help: "JSONL training data (default: the arithmetic task, seed 0, generated in memory).")
    public var data: String?

    @Option(help: "JSONL eval set (default: the task's test split / the end of --data).")
    public var evalData: String?

    @Option(help: "Calibration lines for the stats phase.")
    public var calibrationLines: Int = 128

    @Option(help: "Calibrate on full lines (question + chain of thought) or the answer alone.")
    public var calibrateOn: CalibrationSource = .full

    @Option(help: "Held-out lines for the loss (damage) measurement.")
    public var heldoutLines: Int = 128

    @Option(help: "Eval problems (from --eval-data, else the task's test split / the end of --data).")
    public var evalCount: Int = 500

    @Option(help: "Tokens kept of each line.")
    public var seqLen: Int = 256

    public func validate() throws {
        if calibrationLines < 1 || heldoutLines < 1 || evalCount < 1 {
            throw ValidationError("--calibration-lines, --heldout-lines and --eval-count must be at least 1")
        }
        if seqLen < 2 || seqLen > ShardCompute.maxSequenceLength { throw ValidationError("--seq-len must be between 2 and \(ShardCompute.maxSequenceLength)") }
    }

    public var settings: DataSettings {
        var d = DataSettings()
        d.model = model
        d.teacher = teacher
        d.data = data
        d.evalData = evalData
        d.calibrationLines = calibrationLines
        d.calibrateOn = calibrateOn
        d.heldOutLines = heldoutLines
        d.evalCount = evalCount
        d.seqLen = seqLen
        return d
    }
}

/// Where a run writes, whether it starts over, and the recipe it came from.
public struct RunOptions: ParsableArguments {
    public init() {}

    @Option(help: "A YAML recipe: the long options as keys (e.g. `target-params: 0.5`); options on the command line override it. Every run writes the settings it used to OUT/config.yaml.")
    public var config: String?

    @Option(help: "Output directory.")
    public var out: String = "out/ptl"

    @Flag(help: "Ignore an existing checkpoint and start over.")
    public var fresh = false

    @Option(help: "Also write the final model as OUT/final/model-TYPE.gguf for llama.cpp: f32, f16, bf16, q8_0 or q4_k_m.")
    public var exportGguf: String?   // kebab: export-gguf (recipes name keys by it)

    public func validate() throws {
        if let t = exportGguf, GGUFExportType(rawValue: t) == nil {
            throw ValidationError("--export-gguf must be one of \(GGUFExportType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }
}

/// The GGUF export at the end of a run: OUT/final/model-TYPE.gguf, written from the final HF
/// directory (its tokenizer included); deterministic, so a finished run asked again rewrites
/// the same file.
public enum FinalExport {
    /// Writes the file and returns its path and size, or nil when no export was asked for.
    @discardableResult
    public static func gguf(_ type: String?, out: String, logger: Logger) throws -> (path: String, bytes: Int)? {
        guard let type else { return nil }
        guard let t = GGUFExportType(rawValue: type) else {
            throw ValidationError("--export-gguf must be one of \(GGUFExportType.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let final = (out as NSString).appendingPathComponent("final")
        let path = (final as NSString).appendingPathComponent("model-\(t.rawValue).gguf")
        let model = try HFModel.load(directory: final)
        let name = ((out as NSString).standardizingPath as NSString).lastPathComponent
        let (bytes, types) = try GGUFExport.write(model, tokenizerSource: final, to: path, type: t, name: name)
        let counts = Dictionary(grouping: types.values, by: \.name).sorted { $0.key < $1.key }.map { "\($0.value.count) \($0.key)" }.joined(separator: ", ")
        logger.info("wrote \(path) (\(String(format: "%.1f", Double(bytes) / 1e6)) MB; \(counts))")
        // The report names the file: a section of its own at the end, replaced when rewritten.
        let report = (out as NSString).appendingPathComponent("report.md")
        if var md = try? String(contentsOfFile: report, encoding: .utf8) {
            let heading = "\n## GGUF export\n"
            if let r = md.range(of: heading) { md = String(md[..<r.lowerBound]) }
            if !md.hasSuffix("\n") { md += "\n" }
            md += heading + "\n`final/model-\(t.rawValue).gguf`: \(bytes) bytes (\(String(format: "%.1f", Double(bytes) / 1e6)) MB), "
            md += "llama.cpp file type \(t.rawValue) (tensors: \(counts)). Load it with llama.cpp: `llama-cli -m \(path)`.\n"
            try Data(md.utf8).write(to: URL(fileURLWithPath: report), options: .atomic)
        }
        return (path, bytes)
    }
}
