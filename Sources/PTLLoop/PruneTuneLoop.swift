import Foundation
import Logging
import PTLData
import PTLEval
import PTLFormats
import PTLModel
import PTLPrune
import PTLTensor
import PTLTokenizer

/// The Prune–Tune Loop (and its baselines) over a compute backend — this process
/// (`LocalBackend`, `ptl prune`) or a cluster's workers (`ptl-coordinator`): round 0 measures the
/// original model; every round then runs stats → prune → tune → eval and checkpoints, until the
/// plan's final shape. Stopping the process and starting it again resumes from the last
/// checkpoint and gives the same final model bit for bit, on either backend.
public final class PruneTuneLoop {
    public let backend: ComputeBackend
    public let out: String
    let data: LoopData
    let tokenizerSource: String?
    var model: Model
    var optimizer: AdamW
    var state: LoopState
    var grads: FloatBuffer
    let original: ModelCost
    let originalModel: Model
    let order: EpochOrder
    public var logger = Logger.silent
    /// Encodes on-policy calibration traces (needed for `--calibration on-policy`).
    let tokenizer: Tokenizer?
    /// The calibration sequences of a round (on-policy traces are generated once per round).
    var roundCalibration: (round: Int, sequences: [[Int]], detail: String, accuracy: Double)?
    /// `--prune sparse`: every linear layer's mask (true = pruned, kept at zero), in
    /// `SparsePruning.linears` order; empty before the first sparse round.
    var masks: [SparsePruning.Layer] = []
    /// `--tune grpo`: the tuning records' gold answers, and the round's starting model (the KL's
    /// reference; checkpointed while the round tunes).
    var grpoGolds: [String] = []
    var roundReference: Model?
    /// Progress: (round, rounds, phase, fraction of the phase done).
    public var progress: (Int, Int, String, Double) -> Void = { _, _, _, _ in }
    public var run = "ptl"

    var checkpointDir: String { (out as NSString).appendingPathComponent("checkpoint") }
    public var settings: LoopSettings { state.settings }
    public var rounds: Int { state.plan.rounds.count }

    /// Starts a run, or resumes the one checkpointed in OUT/checkpoint (unless `fresh`).
    public init(backend: ComputeBackend, model start: Model, data: LoopData, settings: LoopSettings, out: String,
                tokenizerSource: String?, fresh: Bool, teacher: Model? = nil, tokenizer: Tokenizer? = nil, logger: Logger = .silent) throws {
        self.backend = backend
        self.tokenizer = tokenizer
        switch settings.calibration {
        case .dataset: break
        case .prompts:
            guard data.calibrationPrompts.count == data.calibration.count else { throw LoopError("--calibration prompts needs the calibration records' prompts") }
        case .onPolicy:
            guard tokenizer != nil, !data.calibrationLines.isEmpty else {
                throw LoopError("--calibration on-policy needs question/answer calibration records and the tokenizer")
            }
        }
        if settings.damage == .probe && data.probeLines.isEmpty {
            throw LoopError("--damage probe answers held-out questions (never the calibration ones, which reconstruction fits): the held-out records need a question and an answer")
        }
        guard settings.finalReserve >= 0 && settings.finalReserve < 1 else { throw LoopError("--final-reserve must be in [0, 1)") }
        if let sp = settings.sparse { try Self.check(sparse: sp, config: start.config) }
        if let g = settings.grpo {
            guard backend is GRPOBackend else { throw LoopError("--tune \(g.tune.rawValue): this backend does not run GRPO") }
            guard !data.tuneRecords.isEmpty else { throw LoopError("--tune \(g.tune.rawValue) needs question/answer tuning records") }
            try g.check(shards: settings.shards)
            grpoGolds = try GRPOStep.golds(data.tuneRecords, source: "tuning records")
        }
        backend.precision = settings.precision
        // Distillation's teacher: the unpruned starting model unless one is given.
        if let (t, w) = settings.distillationWeights {
            // A named teacher's vocabulary was checked by LoopInputs; every shard checks it again.
            let teacher = try Teacher(model: teacher ?? start, temperature: t, kdWeight: w)
            backend.teacher = teacher
            logger.info("recovery: \(settings.recover.rawValue), T \(t), weight \(w), teacher \(ModelCost(config: teacher.model.config).parameters) parameters")
        } else {
            backend.teacher = nil
        }
        self.logger = logger
        if let note = settings.precision.resolved().note { logger.warning("\(note)") }
        logger.info("precision \(settings.precision); here: \(BF16Support.summary)")
        self.out = out
        self.data = data
        self.tokenizerSource = tokenizerSource
        originalModel = start
        guard !data.tune.isEmpty, !data.calibration.isEmpty, !data.heldOut.isEmpty, !data.evalLines.isEmpty else {
            throw LoopError("the loop needs tuning, calibration, held-out and eval lines (one of them is empty)")
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        original = ModelCost(config: start.config)
        var adam = AdamWSettings()
        adam.weightDecay = settings.weightDecay
        let found = fresh ? nil : try Checkpoint.newest((out as NSString).appendingPathComponent("checkpoint"), logger: logger)
        if let found {
            let stateFile = (found as NSString).appendingPathComponent("loop.json")
            (model, optimizer, _) = try Checkpoint.load(from: found, settings: adam)
            let stateData: Data
            do { stateData = try Data(contentsOf: URL(fileURLWithPath: stateFile)) } catch {
                throw LoopError("\(stateFile) cannot be read (\(error.localizedDescription)); pass --fresh to start over")
            }
            let s = try LoopState.read(stateData, source: stateFile, start: start.config, current: model.config)
            guard s.settings == settings else {
                throw LoopError("\(out)/checkpoint was written by a run with other settings; pass --fresh to start over, or the same options to resume")
            }
            state = s
            // The masks of the sparse rounds done so far (checked against the model; the
            // manifest's CRC has already caught a damaged file).
            let maskFile = (found as NSString).appendingPathComponent("masks.safetensors")
            let sparseRoundsDone = settings.sparse == nil ? 0 : s.stage == .original ? 0 : s.stage == .prune ? s.round - 1 : s.round
            if sparseRoundsDone > 0 {
                guard FileManager.default.fileExists(atPath: maskFile) else {
                    throw LoopError("\(found): \(sparseRoundsDone) sparse round(s) done but no masks.safetensors; pass --fresh to start over")
                }
                masks = try SparseMasks.read(path: maskFile, model: model)
                for l in masks {
                    let w = model.parameters.at(l.offset)
                    guard l.mask.indices.allSatisfy({ !l.mask[$0] || w[$0] == 0 }) else {
                        throw LoopError("\(maskFile): \(l.name) has a nonzero weight where its mask says pruned; pass --fresh to start over")
                    }
                }
            }
            if s.stage == .tune, let g = settings.grpo, g.beta > 0 {
                roundReference = try Checkpoint.loadParameters((found as NSString).appendingPathComponent("reference.safetensors"), like: model)
            }
        } else {
            func plan(_ method: PruneMethod) throws -> PrunePlan { try settings.plan(config: start.config, method: method) }
            model = Model(config: start.config, parameters: FloatBuffer(start.parameters.array()))
            optimizer = AdamW(layout: model.layout, settings: adam)
            // Every method gets the PTL plan's total tune budget.
            state = LoopState(settings: settings, plan: try plan(settings.method), totalSteps: settings.tuneSteps * (try plan(.ptl)).rounds.count,
                              alpha: [Float](repeating: 1, count: start.config.numHiddenLayers))
        }
        grads = FloatBuffer(count: model.layout.count)
        order = EpochOrder(count: data.tune.count, seed: settings.seed)
        if state.totalSteps * settings.batchSize > data.tune.count {
            logger.info("note: \(state.totalSteps) steps × \(settings.batchSize) lines need more than the \(data.tune.count) tuning lines; later lines repeat")
        }
    }

    // MARK: - The run

    /// Runs until done or until `stop()` says so (after a checkpoint). Returns true when done.
    public func runLoop(stop: () -> Bool) throws -> Bool {
        while state.stage != .done {
            if stop() { try checkpoint(); return false }
            switch state.stage {
            case .original: try measureOriginal()
            case .prune: if settings.sparse != nil { try pruneSparse() } else { try prune() }
            case .tune: if try !tune(stop: stop) { return false }
            case .eval: try evaluate()
            case .done: break
            }
        }
        return true
    }

    /// The mean context of the decode measurement: FLOPs/token are reported at it.
    var decodeContext: Int { settings.decodePromptTokens + settings.decodeNewTokens / 2 }

    var scale: [Float]? { state.alpha.allSatisfy { $0 == 1 } ? nil : state.alpha }

    /// Keys of measurements: unique within the process (on a cluster, a late result of an
    /// earlier measurement can never answer a later one).
    var serial: UInt64 = 0
    func measurementKey() -> WorkKey { serial += 1; return WorkKey(run: run, round: state.round, measurement: serial) }

    func heldOutLoss(_ m: Model, scale: [Float]?) throws -> Double {
        try backend.statistics(model: m, sequences: data.heldOut, shards: settings.shards, branchScale: scale, key: measurementKey()).loss
    }

    func calibrationStatistics() throws -> ActivationStatistics {
        try backend.statistics(model: model, sequences: try calibrationSequences(), shards: settings.shards, branchScale: scale,
                               key: measurementKey()).statistics
    }

    /// What this round's stats phase runs on (`--calibration`): the dataset's lines, their
    /// prompts, or the prompts with the current model's own greedy chains of thought — generated
    /// once a round by the backend (a trace phase) and kept for the round's other measurements.
    func calibrationSequences() throws -> [[Int]] {
        switch settings.calibration {
        case .dataset: return data.calibration
        case .prompts: return data.calibrationPrompts
        case .onPolicy:
            if let c = roundCalibration, c.round == state.round { return c.sequences }
            guard let tokenizer else { throw LoopError("--calibration on-policy needs the tokenizer") }
            let (sequences, counts, detail) = try OnPolicyCalibration.sequences(
                model: model.foldingBranchScales(scale), backend: backend, lines: data.calibrationLines, tokenizer: tokenizer,
                shards: max(settings.shards, 2), maxNewTokens: settings.evalMaxNewTokens, batchSize: settings.evalBatchSize, key: measurementKey())
            logger.info("round \(state.round): \(detail)")
            roundCalibration = (state.round, sequences, detail, counts.accuracy)
            return sequences
        }
    }

    func row(_ phase: LoopPhase, seconds: Double, accuracy: Double? = nil, loss: Double? = nil, tps: Double? = nil,
             steps: Int? = nil, meanTokens: Double? = nil, detail: String? = nil) -> PhaseRow {
        let c = model.config, cost = ModelCost(config: c)
        var r = PhaseRow(round: state.round, phase: phase, layers: c.numHiddenLayers, intermediate: c.intermediateSize,
                         params: cost.parameters, paramsFraction: Double(cost.parameters) / Double(original.parameters),
                         flopsPerToken: cost.forwardFlopsPerToken(context: decodeContext), accuracy: accuracy, loss: loss, decodeTokensPerSecond: tps,
                         tuneSteps: steps, seconds: seconds, detail: detail)
        r.meanGeneratedTokens = meanTokens
        if settings.sparse != nil {
            let (z, n) = SparseMasks.count(masks)
            r.linearZeros = n > 0 ? Double(z) / Double(n) : 0
        }
        return r
    }

    func measureOriginal() throws {
        progress(0, rounds, LoopPhase.eval.rawValue, 0)
        let t0 = Date()
        state.lossBefore = try heldOutLoss(model, scale: nil)
        let (acc, tps, tokens) = try accuracyAndSpeed(model)
        state.rows.append(row(.eval, seconds: Date().timeIntervalSince(t0), accuracy: acc, loss: state.lossBefore, tps: tps,
                              meanTokens: tokens, detail: "original"))
        logger.info("\(String(format: "round 0 (original): accuracy %.1f%%, held-out loss %.4f, %.0f tokens/s", acc * 100, state.lossBefore, tps))",
                    metadata: ["round": "0", "accuracy": .stringConvertible(acc), "heldout_loss": .stringConvertible(state.lossBefore), "tokens_per_second": .stringConvertible(tps)])
        state.round = 1
        state.stage = .prune
        try checkpoint()
    }

    /// Accuracy on the eval set (all of it for the original and the final model, the first
    /// `roundEvalCount` problems in between) and decode speed. The final model's speed is measured
    /// interleaved with the original's, and the original's round-0 figure is replaced by that
    /// measurement, so the speed-up compares like with like on a noisy machine.
    func accuracyAndSpeed(_ m: Model) throws -> (accuracy: Double, tokensPerSecond: Double, meanGeneratedTokens: Double) {
        let folded = m.foldingBranchScales(scale)
        let full = state.round == 0 || state.round == rounds
        let lines = full ? data.evalLines : Array(data.evalLines.prefix(settings.roundEvalCount))
        let r = try backend.evaluate(model: folded, jsonlLines: lines, shards: max(settings.shards, 2), maxNewTokens: settings.evalMaxNewTokens,
                                     batchSize: settings.evalBatchSize, key: WorkKey(run: run, round: state.round))
        func speed(_ x: Model) throws -> Double {
            try backend.decodeTokensPerSecond(model: x, promptTokens: settings.decodePromptTokens, newTokens: settings.decodeNewTokens, reps: 5)
        }
        var tps = try speed(folded)
        if state.round == rounds, let i = state.rows.firstIndex(where: { $0.round == 0 && $0.phase == .eval }) {
            var a = [state.rows[i].decodeTokensPerSecond ?? 0], b = [tps]
            for _ in 0..<2 { a.append(try speed(originalModel)); b.append(try speed(folded)) }
            state.rows[i].decodeTokensPerSecond = a.max()
            state.rows[i].detail = "original; decode speed re-measured beside the final model"
            tps = b.max()!
        }
        return (r.accuracy, tps, Double(r.generatedTokens) / Double(max(1, r.total)))
    }

    func tune(stop: () -> Bool) throws -> Bool {
        let s = settings, r = state.round
        let n = state.roundSteps
        let schedule = LearningRateSchedule(kind: .cosine, peak: s.learningRate, warmup: min(s.warmup, n / 4), total: max(1, n),
                                            minRatio: s.minLearningRateRatio)
        while state.stepInRound < n {
            let i = state.stepInRound
            let a = alpha(atStep: i + 1)
            let t0 = Date()
            var meanLoss = 0.0, computeSeconds = 0.0
            if let g = s.grpo, g.tune == .grpo || (g.tune == .cptGRPO && i >= n / 2) {
                // A GRPO step (branch scales folded: sampling and the gradient see the same model).
                let row = try grpoStep(g, round: r, stepInRound: i, steps: n, alpha: a)
                meanLoss = row.loss
                computeSeconds = row.seconds
            } else {
                let batch = order.indices(step: state.stepsUsed, batchSize: s.batchSize).map { data.tune[$0] }
                let res = try backend.gradients(model: model, batch: batch, shards: s.shards, branchScale: a.allSatisfy { $0 == 1 } ? nil : a,
                                                key: WorkKey(run: run, round: r, step: state.stepsUsed), into: grads)
                // Pruned weights stay exactly zero: their gradients are zeroed before clipping (so the
                // norm is that of the weights that train), and the weights again after the step.
                if !masks.isEmpty { SparseMasks.zero(masks, in: grads) }
                OptimizerStep.apply(model: model, optimizer: optimizer, grads: grads, lr: schedule.rate(at: i), clip: s.clip)
                meanLoss = res.meanLoss
                computeSeconds = res.computeSeconds
            }
            if !masks.isEmpty { SparseMasks.zero(masks, in: model.parameters); model.parametersChanged() }
            state.alpha = a
            state.stepInRound += 1
            state.stepsUsed += 1
            state.tuneLossSum += meanLoss
            state.workerSeconds += computeSeconds
            state.tuneSeconds += Date().timeIntervalSince(t0)
            progress(r, rounds, String(format: "tune loss %.3f", meanLoss), Double(state.stepInRound) / Double(n))
            if state.stepInRound % s.checkpointEvery == 0 && state.stepInRound < n { try checkpoint(report: false) }
            if stop() { try checkpoint(report: false); return false }
        }
        // The round's end: annealed layers reach exactly their scheduled value even with 0 steps.
        state.alpha = alpha(atStep: max(1, n))
        let mean = n > 0 ? state.tuneLossSum / Double(n) : nil
        let seconds = state.tuneSeconds - state.rows.filter { $0.phase == .tune }.reduce(0) { $0 + $1.seconds }
        var detail = String(format: "compute %.1f s (summed over shards)", state.workerSeconds)
        if let a = scale { detail += "; branch scales \(a.map { String(format: "%.2f", $0) })" }
        state.workerSeconds = 0
        state.rows.append(row(.tune, seconds: seconds, loss: mean, steps: n, detail: detail))
        state.stage = .eval
        try checkpoint()
        return true
    }

    func evaluate() throws {
        let r = state.round
        progress(r, rounds, LoopPhase.eval.rawValue, 0)
        let t0 = Date()
        state.lossBefore = try heldOutLoss(model, scale: scale)
        let (acc, tps, tokens) = try accuracyAndSpeed(model)
        state.rows.append(row(.eval, seconds: Date().timeIntervalSince(t0), accuracy: acc, loss: state.lossBefore, tps: tps, meanTokens: tokens))
        logger.info("\(String(format: "round %d/%d: accuracy %.1f%%, held-out loss %.4f, %.0f tokens/s, %.1f%% of the parameters", r, rounds, acc * 100, state.lossBefore, tps, 100 * Double(model.parameterCount) / Double(original.parameters)))",
                    metadata: ["round": "\(r)", "accuracy": .stringConvertible(acc), "heldout_loss": .stringConvertible(state.lossBefore),
                               "tokens_per_second": .stringConvertible(tps), "parameters": "\(model.parameterCount)"])
        let roundDir = (out as NSString).appendingPathComponent(String(format: "rounds/round-%02d", r))
        try HFModel.save(model.foldingBranchScales(scale), to: roundDir, copyFrom: tokenizerSource)
        if r == rounds {
            guard scale == nil else { throw LoopError("internal: branch scales left at the end of the run: \(state.alpha)") }
            let final = (out as NSString).appendingPathComponent("final")
            try HFModel.save(model, to: final, copyFrom: tokenizerSource)
            if !masks.isEmpty {
                try SparseMasks.encode(masks, metadata: ["sparsity": settings.sparse?.sparsity ?? ""])
                    .write(to: URL(fileURLWithPath: (final as NSString).appendingPathComponent("masks.safetensors")), options: .atomic)
            }
            state.stage = .done
        } else {
            state.round += 1
            state.stage = .prune
        }
        try checkpoint()
    }

    /// One GRPO step of round `r`'s tuning: prompts of the tuning records in a seeded order,
    /// completions seeded per step, prompt and sample; the KL to the round's starting model.
    func grpoStep(_ g: GRPOTuneSettings, round r: Int, stepInRound i: Int, steps n: Int, alpha: [Float]) throws -> GRPOStepRow {
        guard let backend = backend as? GRPOBackend else { throw LoopError("this backend does not run GRPO") }
        let k = state.stepsUsed
        let order = EpochOrder(count: data.tuneRecords.count, seed: settings.seed ^ 0x4752_504F)
        let picked = order.indices(step: k, batchSize: g.promptsPerStep)
        let seeds = GRPOStep.seeds(base: settings.seed, step: k, prompts: picked, samples: g.rolloutsPerPrompt)
        let first = g.tune == .cptGRPO ? n / 2 : 0
        let schedule = LearningRateSchedule(kind: .cosine, peak: g.learningRate, warmup: min(settings.warmup, (n - first) / 4),
                                            total: max(1, n - first), minRatio: settings.minLearningRateRatio)
        if alpha.contains(where: { $0 != 1 }) {
            throw LoopError("--tune grpo with annealed blocks (--layer-removal anneal) is not supported: use --layer-removal cut")
        }
        let reference: Teacher? = g.beta > 0 ? try Teacher(model: roundReference ?? originalModel, temperature: 1, kdWeight: 1) : nil
        let masks = self.masks
        var row = try GRPOStep.run(backend: backend, model: model, optimizer: optimizer, grads: grads, lines: picked.map { data.tuneRecords[$0] },
                                   golds: picked.map { grpoGolds[$0] }, seeds: seeds, rolloutsPerPrompt: g.rolloutsPerPrompt,
                                   sampling: SamplingSettings(temperature: g.temperature, topK: 0, topP: g.topP), maxNewTokens: settings.evalMaxNewTokens,
                                   batchSize: settings.evalBatchSize, rewards: g.rewards,
                                   settings: GRPOSettings(clipLow: g.clipLow, clipHigh: g.clipHigh, beta: g.beta), reference: reference,
                                   shards: settings.shards, lr: schedule.rate(at: i - first), clip: settings.clip,
                                   key: WorkKey(run: run, round: r, step: k), maskGradients: masks.isEmpty ? nil : { SparseMasks.zero(masks, in: $0) })
        row.step = k + 1
        row.round = r
        state.grpoRows = (state.grpoRows ?? []) + [row]
        logger.info("\(String(format: "round %d GRPO step %d: reward %.3f, accuracy %.1f%%, format %.1f%%, %.1f tokens, KL %.4f", r, i + 1, row.meanReward, row.accuracy * 100, row.formatRate * 100, row.meanResponseTokens, row.kl))")
        return row
    }

    /// The round's starting model, kept as GRPO's reference while the round tunes.
    func captureReference() {
        guard let g = settings.grpo, g.beta > 0 else { roundReference = nil; return }
        roundReference = Model(config: model.config, parameters: FloatBuffer(model.parameters.array()))
    }

    /// The checks `--prune sparse` needs before any work: the pattern parses, n:m divides every
    /// linear layer's inputs and the SparseGPT block size, the damping and block size are sane.
    static func check(sparse sp: SparseSettings, config c: ModelConfig) throws {
        let pattern = try SparsityPattern(parsing: sp.sparsity)
        guard sp.percentDamp.isFinite, sp.percentDamp >= 0, sp.percentDamp <= 1 else { throw LoopError("--percdamp must be between 0 and 1") }
        guard sp.blockSize >= 1, sp.blockSize <= 65536 else { throw LoopError("--sparse-block-size must be between 1 and 65536") }
        if case .nOfM(_, let m) = pattern {
            for (what, d) in [("hidden size", c.hiddenSize), ("attention width", c.qDim), ("FFN width", c.intermediateSize), ("--sparse-block-size", sp.blockSize)] where d % m != 0 {
                throw LoopError("--sparsity \(pattern): the \(what) \(d) is not a multiple of \(m)")
            }
        }
    }

    // MARK: - Durable state

    /// Writes the resumable state; `report` also rewrites the report files (only phases add rows).
    func checkpoint(report: Bool = true) throws {
        let loop = try JSONEncoder().encode(state)
        var extra: [String: Data] = ["loop.json": loop]
        if !masks.isEmpty { extra["masks.safetensors"] = try SparseMasks.encode(masks) }
        if let rows = state.grpoRows {
            try LoopReport.writeJSONLines(rows, to: (out as NSString).appendingPathComponent("grpo.jsonl"))
        }
        try Checkpoint.save(model: model, optimizer: optimizer,
                            state: Checkpoint.State(step: state.stepsUsed, optimizerStep: optimizer.step, run: run),
                            to: checkpointDir, copyTokenizerFrom: tokenizerSource, extraFiles: extra,
                            extraModels: state.stage == .tune ? roundReference.map { ["reference.safetensors": $0] } ?? [:] : [:])
        guard report else { return }
        try LoopReport.write(rows: state.rows, removals: state.removals, settings: settings, plan: state.plan,
                             original: original, context: decodeContext, tuneSeconds: state.tuneSeconds, done: state.stage == .done, to: out,
                             layerZeros: masks.map { ($0.name, Double($0.zeros) / Double(max(1, $0.mask.count))) })
    }
}
