import Foundation
import Logging
import PTLData
import PTLEval
import PTLModel
import PTLPrune
import PTLTensor

/// How a doomed layer leaves: at once, or with its branches annealed to zero while tuning first.
public enum LayerRemoval: String, Codable, Sendable, CaseIterable { case anneal, cut }
/// Whether one AdamW state (sliced with the weights) lives across rounds.
public enum OptimizerCarry: String, Codable, Sendable, CaseIterable { case carry, reset }

/// Every setting of a loop run (stored in the checkpoint: a resumed run keeps its own).
public struct LoopSettings: Codable, Sendable, Equatable {
    public var method: PruneMethod = .ptl
    public var target = 0.5
    public var removeLayers = 1
    public var step = 0.05
    public var widthMultiple = 32
    public var layersPerRound = 1
    public var order: PruneOrder = .neuronsFirst
    public var neuronScore: NeuronScore = .magnitude
    public var layerScore: LayerScore = .relativeChange
    public var budget: BudgetKind = .damage
    /// With the damage budget: the fewest tune steps a round gets.
    public var minRoundSteps = 1
    public var layerRemoval: LayerRemoval = .cut
    /// Rounds over which a doomed layer's branches fall to zero before it is deleted.
    public var annealRounds = 3
    public var optimizer: OptimizerCarry = .reset
    /// Tune steps per PTL round; every method gets tuneSteps × (PTL rounds) in total.
    public var tuneSteps = 20
    public var learningRate: Float = 3e-4
    public var minLearningRateRatio: Float = 0.1
    public var warmup = 2
    public var weightDecay: Float = 0.1
    public var clip: Float = 1
    public var batchSize = 16
    public var shards = 4
    public var seed: UInt64 = 0
    public var checkpointEvery = 10
    public var evalMaxNewTokens = 160
    public var evalBatchSize = 16
    public var decodePromptTokens = 32
    public var decodeNewTokens = 96
    /// Eval problems of the rounds in between (the original and the final model get all of them).
    public var roundEvalCount = 200
    public init() {}
}

/// The data of a run, already tokenized: tuning lines (consumed in a seeded order, each line
/// once), calibration lines (stats), held-out lines (loss), and eval records as JSONL lines.
public struct LoopData: Sendable {
    public var tune: [[Int]]
    public var calibration: [[Int]]
    public var heldOut: [[Int]]
    public var evalLines: [String]
    public var tokenizerJSON: String
    public init(tune: [[Int]], calibration: [[Int]], heldOut: [[Int]], evalLines: [String], tokenizerJSON: String) {
        self.tune = tune; self.calibration = calibration; self.heldOut = heldOut; self.evalLines = evalLines; self.tokenizerJSON = tokenizerJSON
    }
}

/// One line of OUT/metrics.jsonl: a phase of a round.
public struct PhaseRow: Codable, Sendable, Equatable {
    public var round: Int
    public var phase: String
    public var layers: Int
    public var intermediate: Int
    public var params: Int
    public var paramsFraction: Double
    public var flopsPerToken: Int
    public var accuracy: Double?
    public var loss: Double?
    public var decodeTokensPerSecond: Double?
    public var tuneSteps: Int?
    public var seconds: Double
    public var detail: String?
}

/// What a round removed, with the scores that chose it.
public struct RemovalRecord: Codable, Sendable, Equatable {
    public var round: Int
    /// Per block (numbered as the block was before this round): removed neuron → score.
    public var neurons: [[ScoredIndex]]
    /// Removed blocks (numbered before this round) with their layer scores.
    public var layers: [ScoredIndex]
    public var how: String
}

public struct ScoredIndex: Codable, Sendable, Equatable {
    public var index: Int
    public var score: Double
}

/// A layer chosen early for annealed removal.
struct DoomedLayers: Codable, Sendable, Equatable {
    var removeAtRound: Int
    var windowStart: Int
    var layers: [Int]            // current block numbering
    var scores: [Double]
    var trialDamage: Double      // held-out loss increase of cutting them when chosen
}

/// The resumable state of a run (written with every checkpoint).
struct LoopState: Codable, Sendable {
    enum Stage: String, Codable { case original, prune, tune, eval, done }
    var settings: LoopSettings
    var plan: PrunePlan
    var totalSteps: Int
    var round = 0
    var stage: Stage = .original
    var roundSteps = 0
    var stepInRound = 0
    var stepsUsed = 0
    var alpha: [Float]
    var doomed: [DoomedLayers] = []
    var lossBefore = 0.0
    var neuronDamagePerNeuron: Double?
    var layerDamagePerLayer: Double?
    var tuneLossSum = 0.0
    var tuneSeconds = 0.0
    var workerSeconds = 0.0
    var rows: [PhaseRow] = []
    var removals: [RemovalRecord] = []
}

/// The Prune–Tune Loop (and its baselines) run by the coordinator over its workers:
/// round 0 measures the original model; every round then runs stats → prune → tune → eval and
/// checkpoints, until the plan's final shape. Killing the coordinator and starting it again
/// resumes from the last checkpoint and gives the same final model bit for bit.
public final class PruneTuneLoop {
    public let coordinator: Coordinator
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
    /// The coordinator's logger unless set otherwise.
    public var logger = Logger.silent
    /// Progress: (round, rounds, phase, fraction of the phase done).
    public var progress: (Int, Int, String, Double) -> Void = { _, _, _, _ in }
    public var run = "ptl"

    var checkpointDir: String { (out as NSString).appendingPathComponent("checkpoint") }
    public var settings: LoopSettings { state.settings }
    public var rounds: Int { state.plan.rounds.count }

    /// Starts a run, or resumes the one checkpointed in OUT/checkpoint (unless `fresh`).
    public init(coordinator: Coordinator, model start: Model, data: LoopData, settings: LoopSettings, out: String,
                tokenizerSource: String?, fresh: Bool) throws {
        self.coordinator = coordinator
        logger = coordinator.logger
        self.out = out
        self.data = data
        self.tokenizerSource = tokenizerSource
        originalModel = start
        guard !data.tune.isEmpty, !data.calibration.isEmpty, !data.heldOut.isEmpty, !data.evalLines.isEmpty else {
            throw ModelError("the loop needs tuning, calibration, held-out and eval lines (one of them is empty)")
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        original = ModelCost(config: start.config)
        var adam = AdamWSettings()
        adam.weightDecay = settings.weightDecay
        let found = fresh ? nil : try Checkpoint.newest((out as NSString).appendingPathComponent("checkpoint"), logger: logger)
        if let found {
            let stateFile = (found as NSString).appendingPathComponent("loop.json")
            let s = try JSONDecoder().decode(LoopState.self, from: Data(contentsOf: URL(fileURLWithPath: stateFile)))
            guard s.settings == settings else {
                throw ModelError("\(out)/checkpoint was written by a run with other settings; pass --fresh to start over, or the same options to resume")
            }
            (model, optimizer, _) = try Checkpoint.load(from: found, settings: adam)
            state = s
        } else {
            func plan(_ method: PruneMethod) throws -> PrunePlan {
                try PrunePlan.make(config: start.config, method: method, target: settings.target, removeLayers: settings.removeLayers,
                                   step: settings.step, widthMultiple: settings.widthMultiple,
                                   layersPerRound: settings.layersPerRound, order: settings.order)
            }
            model = Model(config: start.config, parameters: FloatBuffer(start.parameters.array()))
            optimizer = AdamW(layout: model.layout, settings: adam)
            // Every method gets the PTL plan's total tune budget.
            state = LoopState(settings: settings, plan: try plan(settings.method), totalSteps: settings.tuneSteps * (try plan(.ptl)).rounds.count,
                              alpha: [Float](repeating: 1, count: start.config.numHiddenLayers))
        }
        coordinator.tokenizerJSON = data.tokenizerJSON
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
            case .prune: try prune()
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

    /// Task keys of measurements: unique within the process (a late result of an earlier
    /// measurement can never answer a later one).
    var serial: UInt64 = 0
    func nextSerial() -> UInt64 { serial += 1; return serial }

    func heldOutLoss(_ m: Model, scale: [Float]?) throws -> Double {
        try StatsPhase.measure(coordinator: coordinator, model: m, sequences: data.heldOut, shards: settings.shards,
                               run: run, round: UInt32(state.round), measurement: nextSerial(), branchScale: scale).loss
    }

    func calibrationStatistics() throws -> ActivationStatistics {
        try StatsPhase.measure(coordinator: coordinator, model: model, sequences: data.calibration, shards: settings.shards,
                               run: run, round: UInt32(state.round), measurement: nextSerial(), branchScale: scale).statistics
    }

    func row(_ phase: String, seconds: Double, accuracy: Double? = nil, loss: Double? = nil, tps: Double? = nil,
             steps: Int? = nil, detail: String? = nil) -> PhaseRow {
        let c = model.config, cost = ModelCost(config: c)
        return PhaseRow(round: state.round, phase: phase, layers: c.numHiddenLayers, intermediate: c.intermediateSize,
                        params: cost.parameters, paramsFraction: Double(cost.parameters) / Double(original.parameters),
                        flopsPerToken: cost.forwardFlopsPerToken(context: decodeContext), accuracy: accuracy, loss: loss, decodeTokensPerSecond: tps,
                        tuneSteps: steps, seconds: seconds, detail: detail)
    }

    func measureOriginal() throws {
        progress(0, rounds, "eval", 0)
        let t0 = Date()
        state.lossBefore = try heldOutLoss(model, scale: nil)
        let (acc, tps) = try accuracyAndSpeed(model)
        state.rows.append(row("eval", seconds: Date().timeIntervalSince(t0), accuracy: acc, loss: state.lossBefore, tps: tps,
                              detail: "original"))
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
    func accuracyAndSpeed(_ m: Model) throws -> (Double, Double) {
        let folded = m.foldingBranchScales(scale)
        let full = state.round == 0 || state.round == rounds
        let lines = full ? data.evalLines : Array(data.evalLines.prefix(settings.roundEvalCount))
        let r = try EvalPhase.run(coordinator: coordinator, model: folded, tokenizerJSON: data.tokenizerJSON, jsonlLines: lines,
                                  shards: max(settings.shards, 2), maxNewTokens: settings.evalMaxNewTokens,
                                  batchSize: settings.evalBatchSize, run: run, round: UInt32(state.round))
        // Speed is measured here while the workers wait: one thread, batch 1.
        let threads = ComputeThreads.count
        ComputeThreads.set(1)
        defer { ComputeThreads.set(threads) }
        func speed(_ x: Model) -> Double {
            DecodeSpeed.tokensPerSecond(model: x, batch: 1, promptTokens: settings.decodePromptTokens,
                                        newTokens: settings.decodeNewTokens, reps: 5, best: true)
        }
        var tps = speed(folded)
        if state.round == rounds, let i = state.rows.firstIndex(where: { $0.round == 0 && $0.phase == "eval" }) {
            var a = [state.rows[i].decodeTokensPerSecond ?? 0], b = [tps]
            for _ in 0..<2 { a.append(speed(originalModel)); b.append(speed(folded)) }
            state.rows[i].decodeTokensPerSecond = a.max()
            state.rows[i].detail = "original; decode speed re-measured beside the final model"
            tps = b.max()!
        }
        return (Double(r.correct) / Double(max(1, r.total)), tps)
    }

    /// stats → choose → surgery → damage → this round's tune budget.
    func prune() throws {
        let r = state.round, plan = state.plan.rounds[r - 1]
        let s = settings
        progress(r, rounds, "stats", 0)
        let t0 = Date()
        let stats = try calibrationStatistics()
        let tStats = Date().timeIntervalSince(t0)
        state.rows.append(row("stats", seconds: tStats, detail: "\(stats.tokens) calibration tokens"))
        progress(r, rounds, "prune", 0)
        let t1 = Date()
        let c = model.config
        // Neurons: the lowest scores of every block.
        var removeNeurons = [[Int]](repeating: [], count: c.numHiddenLayers)
        var record = RemovalRecord(round: r, neurons: [], layers: [], how: "")
        if plan.neurons > 0 {
            let scores = Selection.neuronScores(stats, model: model, kind: s.neuronScore)
            removeNeurons = Selection.lowestNeurons(scores: scores, layers: c.numHiddenLayers, intermediate: c.intermediateSize, count: plan.neurons)
            record.neurons = removeNeurons.enumerated().map { l, js in js.map { ScoredIndex(index: $0, score: scores[l * c.intermediateSize + $0]) } }
        }
        // Layers: annealed ones chosen earlier, else the lowest scores now.
        let layerKind: LayerScore = s.method == .shortgpt ? .blockInfluence : s.layerScore
        let layerScores = Selection.layerScores(stats, kind: layerKind)
        var removeLayers: [Int] = []
        if plan.layers > 0 {
            if let d = state.doomed.first(where: { $0.removeAtRound == r }) {
                removeLayers = d.layers
                record.layers = zip(d.layers, d.scores).map { ScoredIndex(index: $0, score: $1) }
                record.how = "annealed over rounds \(d.windowStart)–\(r - 1), then deleted"
            } else {
                let reserved = Set(state.doomed.filter { $0.removeAtRound > r }.flatMap(\.layers))
                removeLayers = Selection.lowestLayers(scores: layerScores, count: plan.layers, excluding: reserved)
                record.layers = removeLayers.map { ScoredIndex(index: $0, score: layerScores[$0]) }
                record.how = "cut"
            }
        }
        let surgery = try Surgery(config: c, removeNeurons: removeNeurons, removeLayers: Set(removeLayers))
        model = surgery.apply(model: model)
        let adam = optimizer.settings
        optimizer = s.optimizer == .carry ? surgery.apply(optimizer: optimizer) : AdamW(layout: model.layout, settings: adam)
        state.alpha = surgery.apply(perLayer: state.alpha)
        grads = FloatBuffer(count: model.layout.count)
        let newIndex = Dictionary(uniqueKeysWithValues: surgery.keptLayers.enumerated().map { ($1, $0) })
        state.doomed = state.doomed.filter { $0.removeAtRound != r }.map { d in
            var d = d; d.layers = d.layers.map { newIndex[$0]! }; return d
        }
        state.removals.append(record)
        // Damage: the held-out loss of the pruned model against the round's start.
        let after = try heldOutLoss(model, scale: scale)
        let damage = after - state.lossBefore
        // Anneal: layers removed in a later round are chosen now when their window opens here.
        if s.layerRemoval == .anneal && s.method == .ptl {
            for (j, p) in state.plan.rounds.enumerated() where p.layers > 0 {
                let removeAt = j + 1
                let windowStart = max(1, removeAt - s.annealRounds)
                guard removeAt > r, windowStart <= r, !state.doomed.contains(where: { $0.removeAtRound == removeAt }) else { continue }
                let reserved = Set(state.doomed.flatMap(\.layers))
                let keptScores = surgery.keptLayers.map { layerScores[$0] }
                let chosen = Selection.lowestLayers(scores: keptScores, count: p.layers, excluding: reserved)
                let trial = try trialCutDamage(chosen, from: after)
                state.doomed.append(DoomedLayers(removeAtRound: removeAt, windowStart: r, layers: chosen,
                                                 scores: chosen.map { keptScores[$0] }, trialDamage: trial))
                logger.info("round \(r): layer(s) \(chosen) will be annealed to zero over rounds \(r)–\(removeAt - 1) (cutting them now would add \(String(format: "%.3f", trial)) to the loss)")
            }
        }
        if plan.neurons > 0 { state.neuronDamagePerNeuron = max(0, damage) / Double(plan.neurons) }
        if plan.layers > 0 && record.how == "cut" { state.layerDamagePerLayer = max(0, damage) / Double(plan.layers) }
        state.roundSteps = try budget(round: r, damage: damage, currentLoss: after)
        state.stepInRound = 0
        state.tuneLossSum = 0
        let shape = "\(model.config.numHiddenLayers) blocks × FFN \(model.config.intermediateSize)"
        state.rows.append(row("prune", seconds: Date().timeIntervalSince(t1), loss: after, steps: state.roundSteps,
                              detail: "removed \(plan.neurons) neurons/block, \(plan.layers) block(s) \(removeLayers) → \(shape); loss +\(String(format: "%.4f", damage))"))
        logger.info("\(String(format: "round %d: pruned to %@ (%.1f%% of the parameters); held-out loss %.4f → %.4f; %d tune steps", r, shape, 100 * Double(model.parameterCount) / Double(original.parameters), state.lossBefore, after, state.roundSteps))",
                    metadata: ["round": "\(r)", "parameters": "\(model.parameterCount)", "tune_steps": "\(state.roundSteps)"])
        state.stage = .tune
        try checkpoint()
    }

    /// Held-out loss increase if `layers` were cut from the current model (whose loss is `current`) now.
    func trialCutDamage(_ layers: [Int], from current: Double) throws -> Double {
        let c = model.config
        let trial = try Surgery(config: c, removeNeurons: [[Int]](repeating: [], count: c.numHiddenLayers), removeLayers: Set(layers))
        return max(0, try heldOutLoss(trial.apply(model: model), scale: scale.map { trial.apply(perLayer: $0) }) - current)
    }

    /// The share of annealed blocks' removal that round `r` carries (their trial damage spread
    /// evenly over the rounds of their window).
    func annealShare(round r: Int) -> Double {
        state.doomed.filter { $0.windowStart <= r && r < $0.removeAtRound }
            .reduce(0) { $0 + $1.trialDamage / Double($1.removeAtRound - $1.windowStart) }
    }

    /// This round's share of the fixed total.
    func budget(round r: Int, damage: Double, currentLoss: Double) throws -> Int {
        let s = settings, R = rounds
        let used = state.rows.compactMap { $0.phase == "tune" ? $0.tuneSteps : nil }.reduce(0, +)
        let remaining = state.totalSteps - used
        if s.budget == .equal || R == 1 { return Budget.equalShare(total: state.totalSteps, rounds: R, round: r - 1) }
        // Damage this round carries: its cut plus its share of any annealed layer's removal.
        let own = max(0, damage) + annealShare(round: r)
        // Damage expected of later rounds, from what this kind of cut did so far (or a trial now);
        // an annealed block's removal is spread over the rounds of its window.
        var later: [Double] = []
        for j in r..<R {
            let p = state.plan.rounds[j], rr = j + 1
            var e = annealShare(round: rr)
            if p.neurons > 0 {
                if state.neuronDamagePerNeuron == nil {
                    state.neuronDamagePerNeuron = try trialNeuronDamage(p.neurons, from: currentLoss) / Double(p.neurons)
                }
                e += state.neuronDamagePerNeuron! * Double(p.neurons)
            }
            if p.layers > 0 && !state.doomed.contains(where: { $0.removeAtRound == rr }) {
                if state.layerDamagePerLayer == nil { state.layerDamagePerLayer = try trialLayerDamage(from: currentLoss) }
                e += state.layerDamagePerLayer! * Double(p.layers)
            }
            later.append(e)
        }
        let floor = min(s.minRoundSteps, state.totalSteps / R)
        return Budget.damageShare(remaining: remaining, roundsLeft: R - r + 1, damage: own, expectedLater: later, floor: floor)
    }

    /// Loss increase of cutting the current model's least useful block (by the layer score).
    func trialLayerDamage(from current: Double) throws -> Double {
        let stats = try calibrationStatistics()
        let scores = Selection.layerScores(stats, kind: settings.layerScore)
        let reserved = Set(state.doomed.flatMap(\.layers))
        return try trialCutDamage(Selection.lowestLayers(scores: scores, count: 1, excluding: reserved), from: current)
    }

    /// Loss increase of removing `k` more neurons per block from the current model.
    func trialNeuronDamage(_ k: Int, from current: Double) throws -> Double {
        let c = model.config
        let stats = try calibrationStatistics()
        let scores = Selection.neuronScores(stats, model: model, kind: settings.neuronScore)
        let pick = Selection.lowestNeurons(scores: scores, layers: c.numHiddenLayers, intermediate: c.intermediateSize, count: min(k, c.intermediateSize - 1))
        let trial = try Surgery(config: c, removeNeurons: pick, removeLayers: [])
        return max(0, try heldOutLoss(trial.apply(model: model), scale: scale) - current)
    }

    /// Branch scales during step `i` (1-based) of this round's tuning.
    func alpha(atStep i: Int) -> [Float] {
        var a = state.alpha
        let r = state.round
        for d in state.doomed where d.windowStart <= r && r < d.removeAtRound {
            let W = Double(d.removeAtRound - d.windowStart)
            let frac = state.roundSteps == 0 ? 1 : Double(i) / Double(state.roundSteps)
            let value = Float(max(0, 1 - (Double(r - d.windowStart) + frac) / W))
            for l in d.layers { a[l] = value }
        }
        return a
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
            let batch = order.indices(step: state.stepsUsed, batchSize: s.batchSize).map { data.tune[$0] }
            var tuneKey = Ptl_V1_TaskKey()
            tuneKey.run = run; tuneKey.round = UInt32(r); tuneKey.step = UInt64(state.stepsUsed)
            let res = try GradPhase.step(coordinator: coordinator, model: model, optimizer: optimizer, grads: grads,
                                         batch: batch,
                                         shards: s.shards, key: tuneKey, lr: schedule.rate(at: i), clip: s.clip,
                                         branchScale: a.allSatisfy { $0 == 1 } ? nil : a)
            state.alpha = a
            state.stepInRound += 1
            state.stepsUsed += 1
            state.tuneLossSum += res.loss
            state.workerSeconds += res.workerSeconds
            state.tuneSeconds += Date().timeIntervalSince(t0)
            progress(r, rounds, String(format: "tune loss %.3f", res.loss), Double(state.stepInRound) / Double(n))
            if state.stepInRound % s.checkpointEvery == 0 && state.stepInRound < n { try checkpoint(report: false) }
            if stop() { try checkpoint(report: false); return false }
        }
        // The round's end: annealed layers reach exactly their scheduled value even with 0 steps.
        state.alpha = alpha(atStep: max(1, n))
        let mean = n > 0 ? state.tuneLossSum / Double(n) : nil
        let seconds = state.tuneSeconds - state.rows.filter { $0.phase == "tune" }.reduce(0) { $0 + $1.seconds }
        var detail = String(format: "worker compute %.1f s (summed over workers)", state.workerSeconds)
        if let a = scale { detail += "; branch scales \(a.map { String(format: "%.2f", $0) })" }
        state.workerSeconds = 0
        state.rows.append(row("tune", seconds: seconds, loss: mean, steps: n, detail: detail))
        state.stage = .eval
        try checkpoint()
        return true
    }

    func evaluate() throws {
        let r = state.round
        progress(r, rounds, "eval", 0)
        let t0 = Date()
        state.lossBefore = try heldOutLoss(model, scale: scale)
        let (acc, tps) = try accuracyAndSpeed(model)
        state.rows.append(row("eval", seconds: Date().timeIntervalSince(t0), accuracy: acc, loss: state.lossBefore, tps: tps))
        logger.info("\(String(format: "round %d/%d: accuracy %.1f%%, held-out loss %.4f, %.0f tokens/s, %.1f%% of the parameters", r, rounds, acc * 100, state.lossBefore, tps, 100 * Double(model.parameterCount) / Double(original.parameters)))",
                    metadata: ["round": "\(r)", "accuracy": .stringConvertible(acc), "heldout_loss": .stringConvertible(state.lossBefore),
                               "tokens_per_second": .stringConvertible(tps), "parameters": "\(model.parameterCount)"])
        let roundDir = (out as NSString).appendingPathComponent(String(format: "rounds/round-%02d", r))
        try HFModel.save(model.foldingBranchScales(scale), to: roundDir, copyFrom: tokenizerSource)
        if r == rounds {
            guard scale == nil else { throw ModelError("internal: branch scales left at the end of the run: \(state.alpha)") }
            try HFModel.save(model, to: (out as NSString).appendingPathComponent("final"), copyFrom: tokenizerSource)
            state.stage = .done
        } else {
            state.round += 1
            state.stage = .prune
        }
        try checkpoint()
    }

    // MARK: - Durable state

    /// Writes the resumable state; `report` also rewrites the report files (only phases add rows).
    func checkpoint(report: Bool = true) throws {
        let loop = try JSONEncoder().encode(state)
        try Checkpoint.save(model: model, optimizer: optimizer,
                            state: Checkpoint.State(step: state.stepsUsed, optimizerStep: optimizer.step, run: run),
                            to: checkpointDir, copyTokenizerFrom: tokenizerSource, extraFiles: ["loop.json": loop])
        guard report else { return }
        try LoopReport.write(rows: state.rows, removals: state.removals, settings: settings, plan: state.plan,
                             original: original, context: decodeContext, tuneSeconds: state.tuneSeconds, done: state.stage == .done, to: out)
    }
}
