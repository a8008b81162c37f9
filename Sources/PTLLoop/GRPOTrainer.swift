import Foundation
import Logging
import PTLData
import PTLModel
import PTLPrune
import PTLTensor

/// The machines GRPO runs on: rollouts (sampled completions) and GRPO gradients, sharded and
/// reduced like every other phase.
public protocol GRPOBackend: ComputeBackend {
    func rollouts(model: Model, jsonlLines: [String], samples: Int, seeds: [UInt64], shards: Int, sampling: SamplingSettings,
                  maxNewTokens: Int, batchSize: Int, key: WorkKey) throws -> [Rollout]
    func grpoGradients(model: Model, batch: GRPOBatch, shards: Int, settings: GRPOSettings, reference: Teacher?, key: WorkKey,
                       into grads: FloatBuffer) throws -> GRPOGradientResult
}

extension LocalBackend: GRPOBackend {}

/// GRPO's settings as a run of its own (`ptl grpo`; stored in the checkpoint: a resumed run keeps
/// its own): the GRPO step's settings the loop's `--tune grpo` shares, and the run's.
public struct GRPOConfig: Codable, Sendable, Equatable {
    public var grpo = GRPOTuneSettings()
    public var steps = 100
    public var maxNewTokens = 96
    public var warmup = 0
    public var weightDecay: Float = 0
    public var clip: Float = 1
    public var shards = 2
    public var seed: UInt64 = 0
    public var evalEvery = 25
    public var evalBatchSize = 16
    public var checkpointEvery = 5
    public var precision: Precision = .fp32
    public init() {}

    public func check() throws {
        try grpo.check(shards: shards)
        guard steps >= 1, steps <= 1 << 24 else { throw LoopError("--steps must be between 1 and 16777216") }
        guard (1...65536).contains(maxNewTokens) else { throw LoopError("--max-new-tokens must be between 1 and 65536") }
        guard warmup >= 0, evalEvery >= 1, checkpointEvery >= 1, evalBatchSize >= 1 else { throw LoopError("--warmup ≥ 0, --eval-every, --checkpoint-every ≥ 1") }
    }
}

/// One step's figures (a line of OUT/metrics.jsonl).
public struct GRPOStepRow: Codable, Sendable, Equatable {
    public var step: Int
    /// In the loop: the round the step tuned.
    public var round: Int?
    public var meanReward: Double
    public var accuracy: Double
    public var formatRate: Double
    public var meanResponseTokens: Double
    public var kl: Double
    public var clipFraction: Double
    public var loss: Double
    public var learningRate: Double
    public var seconds: Double
    /// Held-out greedy accuracy, measured every `evalEvery` steps (and before step 1: step 0).
    public var evalAccuracy: Double?
    public var evalMeanTokens: Double?
}

struct GRPOState: Codable {
    var config: GRPOConfig
    var step = 0
    var rows: [GRPOStepRow] = []
}

/// GRPO (DeepSeekMath) as a tune phase: every step samples `rolloutsPerPrompt` completions of
/// `promptsPerStep` training questions with the current policy (seeded per step, prompt and
/// sample, so a retried shard samples the same), scores them (`RewardSpec`), normalises the
/// rewards within each prompt's group, and takes one AdamW step on the token-mean clipped
/// objective with a k3 KL to the reference model (the starting model). Checkpointed every
/// `checkpointEvery` steps; a stopped run resumes to the same bits.
public final class GRPOTrainer {
    public let backend: GRPOBackend
    let out: String
    let trainLines: [String]
    let golds: [String]
    let evalLines: [String]
    let tokenizerSource: String?
    var model: Model
    var optimizer: AdamW
    var state: GRPOState
    let reference: Teacher?
    let grads: FloatBuffer
    public var logger = Logger.silent
    public var run = "grpo"

    var checkpointDir: String { (out as NSString).appendingPathComponent("checkpoint") }

    /// `trainLines` and `evalLines`: `{"question","answer"}` records (the answer may be only `#### N`).
    public init(backend: GRPOBackend, model start: Model, trainLines: [String], evalLines: [String], config: GRPOConfig, out: String,
                tokenizerSource: String?, fresh: Bool, logger: Logger = .silent) throws {
        try config.check()
        self.backend = backend
        self.out = out
        self.evalLines = evalLines
        self.tokenizerSource = tokenizerSource
        self.logger = logger
        backend.precision = config.precision
        backend.teacher = nil
        let golds = try GRPOStep.golds(trainLines, source: "GRPO training data")
        guard golds.count >= config.grpo.promptsPerStep else { throw LoopError("GRPO: \(golds.count) training questions, fewer than --prompts-per-step \(config.grpo.promptsPerStep)") }
        guard evalLines.count >= 2 else { throw LoopError("GRPO: the eval set needs at least 2 questions") }
        self.trainLines = trainLines
        self.golds = golds
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        var adam = AdamWSettings()
        adam.weightDecay = config.weightDecay
        if !fresh, let found = try Checkpoint.newest((out as NSString).appendingPathComponent("checkpoint"), logger: logger) {
            (model, optimizer, _) = try Checkpoint.load(from: found, settings: adam)
            let file = (found as NSString).appendingPathComponent("grpo.json")
            let s: GRPOState
            do { s = try JSONDecoder().decode(GRPOState.self, from: Data(contentsOf: URL(fileURLWithPath: file))) } catch {
                throw LoopError("\(file) cannot be read as this version's GRPO state (\(error)); pass --fresh to start over")
            }
            guard s.config == config else { throw LoopError("\(out)/checkpoint was written by a GRPO run with other settings; pass --fresh, or the same options") }
            guard s.step >= 0, s.step <= config.steps, s.rows.count == s.step + 1 || (s.step == 0 && s.rows.count <= 1) else {
                throw LoopError("\(file): step \(s.step) with \(s.rows.count) rows; pass --fresh to start over")
            }
            guard model.layout.count == start.layout.count, model.config.numHiddenLayers == start.config.numHiddenLayers else { throw LoopError("\(found): the checkpoint's model is not the starting model's shape; pass --fresh") }
            state = s
        } else {
            model = Model(config: start.config, parameters: FloatBuffer(start.parameters.array()))
            optimizer = AdamW(layout: model.layout, settings: adam)
            state = GRPOState(config: config)
        }
        // The reference of the KL: the starting model, as given (not the checkpoint's).
        reference = config.grpo.beta > 0 ? try Teacher(model: start, temperature: 1, kdWeight: 1) : nil
        grads = FloatBuffer(count: model.layout.count)
    }

    public var rows: [GRPOStepRow] { state.rows }
    public var currentModel: Model { model }

    func evaluate() throws -> (Double, Double) {
        let c = try backend.evaluate(model: model, jsonlLines: evalLines, shards: min(state.config.shards, evalLines.count),
                                     maxNewTokens: state.config.maxNewTokens, batchSize: state.config.evalBatchSize,
                                     key: WorkKey(run: run, step: state.step, measurement: 1))
        return (c.accuracy, Double(c.generatedTokens) / Double(max(1, c.total)))
    }

    /// Runs to the last step or until `stop()` (after a checkpoint). Returns true when done.
    public func train(stop: () -> Bool = { false }) throws -> Bool {
        let c = state.config
        let order = EpochOrder(count: trainLines.count, seed: c.seed)
        let schedule = LearningRateSchedule(kind: .constant, peak: c.grpo.learningRate, warmup: c.warmup, total: c.steps)
        let settings = GRPOSettings(clipLow: c.grpo.clipLow, clipHigh: c.grpo.clipHigh, beta: c.grpo.beta)
        let sampling = SamplingSettings(temperature: c.grpo.temperature, topK: 0, topP: c.grpo.topP)
        if state.rows.isEmpty {
            let (acc, tokens) = try evaluate()
            state.rows.append(GRPOStepRow(step: 0, round: nil, meanReward: 0, accuracy: 0, formatRate: 0, meanResponseTokens: 0, kl: 0, clipFraction: 0,
                                          loss: 0, learningRate: 0, seconds: 0, evalAccuracy: acc, evalMeanTokens: tokens))
            logger.info("\(String(format: "step 0: held-out accuracy %.1f%% (%d problems), %.1f tokens per answer", acc * 100, evalLines.count, tokens))")
            try checkpoint()
        }
        while state.step < c.steps {
            if stop() { try checkpoint(); return false }
            let t0 = Date()
            let k = state.step
            let picked = order.indices(step: k, batchSize: c.grpo.promptsPerStep)
            var row = try GRPOStep.run(backend: backend, model: model, optimizer: optimizer, grads: grads, lines: picked.map { trainLines[$0] },
                                       golds: picked.map { golds[$0] },
                                       seeds: GRPOStep.seeds(base: c.seed, step: k, prompts: picked, samples: c.grpo.rolloutsPerPrompt),
                                       rolloutsPerPrompt: c.grpo.rolloutsPerPrompt, sampling: sampling, maxNewTokens: c.maxNewTokens,
                                       batchSize: c.evalBatchSize, rewards: c.grpo.rewards, settings: settings, reference: reference,
                                       shards: c.shards, lr: schedule.rate(at: k), clip: c.clip, key: WorkKey(run: run, step: k + 1))
            row.step = k + 1
            state.step = k + 1
            if state.step % c.evalEvery == 0 || state.step == c.steps {
                let (acc, tokens) = try evaluate()
                row.evalAccuracy = acc
                row.evalMeanTokens = tokens
            }
            row.seconds = Date().timeIntervalSince(t0)
            state.rows.append(row)
            logger.info("\(String(format: "step %d: reward %.3f, accuracy %.1f%%, format %.1f%%, %.1f tokens, KL %.4f, clipped %.3f%@", row.step, row.meanReward, row.accuracy * 100, row.formatRate * 100, row.meanResponseTokens, row.kl, row.clipFraction, row.evalAccuracy.map { String(format: "; held-out accuracy %.1f%%", $0 * 100) } ?? ""))")
            if state.step % c.checkpointEvery == 0 || state.step == c.steps { try checkpoint() }
        }
        try HFModel.save(model, to: (out as NSString).appendingPathComponent("final"), copyFrom: tokenizerSource)
        return true
    }

    func checkpoint() throws {
        try Checkpoint.save(model: model, optimizer: optimizer, state: Checkpoint.State(step: state.step, optimizerStep: optimizer.step, run: run),
                            to: checkpointDir, copyTokenizerFrom: tokenizerSource, extraFiles: ["grpo.json": try JSONEncoder().encode(state)])
        try report()
    }

    /// OUT/metrics.jsonl, OUT/report.md and OUT/reward.png (mean reward and held-out accuracy per step).
    func report() throws {
        try LoopReport.writeJSONLines(state.rows, to: (out as NSString).appendingPathComponent("metrics.jsonl"))
        let steps = state.rows.filter { $0.step > 0 }
        let reward = PlotSeries(label: "mean reward × 100", points: steps.map { PlotPoint(x: Double($0.step), y: $0.meanReward * 100) }, color: PlotColor.palette[0])
        let evals = PlotSeries(label: "held-out accuracy %", points: state.rows.compactMap { r in r.evalAccuracy.map { PlotPoint(x: Double(r.step), y: $0 * 100) } },
                               color: PlotColor.palette[1])
        let png = LinePlot.png(title: "GRPO: reward and held-out accuracy", xLabel: "step", yLabel: "%", series: [reward, evals],
                               xRange: nil, yRange: 0...100, invertX: false)
        try LoopReport.atomicWrite(Data(png), to: (out as NSString).appendingPathComponent("reward.png"))
        let c = state.config
        var md = "# GRPO run\n\n"
        md += "\(c.steps) steps of \(c.grpo.promptsPerStep) prompts × \(c.grpo.rolloutsPerPrompt) completions (temperature \(c.grpo.temperature), top-p \(c.grpo.topP), ≤ \(c.maxNewTokens) tokens); "
        md += "rewards \(c.grpo.rewards); lr \(c.grpo.learningRate), KL β \(c.grpo.beta) to the starting model, clip \(c.grpo.clipLow)/\(c.grpo.clipHigh), token-mean loss, one update per batch (on-policy); seed \(c.seed).\n\n"
        md += "| step | mean reward | accuracy (samples) | format | tokens/answer | KL | clipped | held-out accuracy | held-out tokens/answer | s |\n|---|---|---|---|---|---|---|---|---|---|\n"
        for r in state.rows {
            md += String(format: "| %d | %.3f | %.1f%% | %.1f%% | %.1f | %.4f | %.3f | %@ | %@ | %.1f |\n", r.step, r.meanReward, r.accuracy * 100, r.formatRate * 100,
                         r.meanResponseTokens, r.kl, r.clipFraction, r.evalAccuracy.map { String(format: "%.1f%%", $0 * 100) } ?? "",
                         r.evalMeanTokens.map { String(format: "%.1f", $0) } ?? "", r.seconds)
        }
        try LoopReport.atomicWrite(Data(md.utf8), to: (out as NSString).appendingPathComponent("report.md"))
    }
}

/// One GRPO step on any backend: sample `rolloutsPerPrompt` completions of each of `lines` (from
/// `seeds`, one a completion), score them against `golds`, normalise within each prompt's group,
/// and — unless every advantage is 0 and there is no KL — take one AdamW step on the GRPO
/// gradient. Returns the step's figures (`step` left 0 for the caller).
public enum GRPOStep {
    /// The sampling seed of every completion of a step: sample j of training question p (its index
    /// in the data) at step k, from the run's seed — so a retried shard samples the same tokens.
    public static func seeds(base: UInt64, step k: Int, prompts: [Int], samples: Int) -> [UInt64] {
        prompts.flatMap { p in (0..<samples).map { j in
            SplitMix64.mix(base ^ SplitMix64.mix(UInt64(k) &* 0x9E37_79B9_7F4A_7C15 ^ SplitMix64.mix(UInt64(p) << 16 | UInt64(j))))
        } }
    }

    /// The gold answers of question/answer JSONL records; a record without a question and a final
    /// number is an error naming it.
    public static func golds(_ lines: [String], source: String) throws -> [String] {
        let records = try Corpus.parse(Data(lines.joined(separator: "\n").utf8), source: source).records
        return try records.enumerated().map { i, r in
            guard case .qa(_, let a) = r, AnswerExtraction.extract(a) != nil else {
                throw LoopError("\(source), record \(i + 1): GRPO needs a question and an answer with a final number (e.g. \"#### 42\")")
            }
            return a
        }
    }

    public static func run(backend: GRPOBackend, model: Model, optimizer: AdamW, grads: FloatBuffer, lines: [String], golds: [String],
                           seeds: [UInt64], rolloutsPerPrompt: Int, sampling: SamplingSettings, maxNewTokens: Int, batchSize: Int,
                           rewards spec: RewardSpec, settings: GRPOSettings, reference: Teacher?, shards: Int, lr: Float, clip: Float,
                           key: WorkKey, maskGradients: ((FloatBuffer) -> Void)? = nil) throws -> GRPOStepRow {
        let t0 = Date()
        let rollouts = try backend.rollouts(model: model, jsonlLines: lines, samples: rolloutsPerPrompt, seeds: seeds, shards: shards,
                                            sampling: sampling, maxNewTokens: maxNewTokens, batchSize: batchSize, key: key)
        guard rollouts.count == seeds.count else { throw LoopError("internal: \(rollouts.count) rollouts for \(seeds.count) seeds") }
        var rewards: [Double] = [], accurate = 0, formatted = 0
        for (j, r) in rollouts.enumerated() {
            let s = spec.score(completion: r.text, gold: golds[j / rolloutsPerPrompt])
            rewards.append(s.total)
            accurate += s.accurate ? 1 : 0
            formatted += s.formatted ? 1 : 0
        }
        let advantages = GRPOAdvantages.compute(rewards: rewards, groupSize: rolloutsPerPrompt)
        let batch = GRPOBatch(sequences: rollouts.map { $0.promptIds + $0.completionIds }, promptLengths: rollouts.map(\.promptIds.count),
                              advantages: advantages.map { Float($0) })
        var row = GRPOStepRow(step: 0, round: nil, meanReward: rewards.reduce(0, +) / Double(rewards.count),
                              accuracy: Double(accurate) / Double(rollouts.count), formatRate: Double(formatted) / Double(rollouts.count),
                              meanResponseTokens: Double(batch.completionTokens) / Double(rollouts.count), kl: 0, clipFraction: 0,
                              loss: 0, learningRate: Double(lr), seconds: 0)
        if batch.completionTokens > 0 && (advantages.contains { $0 != 0 } || settings.beta > 0) {
            let g = try backend.grpoGradients(model: model, batch: batch, shards: shards, settings: settings, reference: reference, key: key, into: grads)
            let n = Double(max(1, g.sums.count))
            row.loss = g.sums.loss / n
            row.kl = g.sums.kl / n
            row.clipFraction = Double(g.sums.clipped) / n
            maskGradients?(grads)
            OptimizerStep.apply(model: model, optimizer: optimizer, grads: grads, lr: lr, clip: clip)
        }
        row.seconds = Date().timeIntervalSince(t0)
        return row
    }
}
