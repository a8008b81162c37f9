import Foundation
import PTLModel
import PTLPrune

/// Tune budgets (each round's share of the fixed total, by damage or equal), the trial cuts that
/// estimate later rounds' damage, and the anneal schedule of doomed blocks.
extension PruneTuneLoop {
    /// The share of annealed blocks' removal that round `r` carries (their trial damage spread
    /// evenly over the rounds of their window).
    func annealShare(round r: Int) -> Double {
        state.doomed.filter { $0.windowStart <= r && r < $0.removeAtRound }
            .reduce(0) { $0 + $1.trialDamage / Double($1.removeAtRound - $1.windowStart) }
    }

    /// The damage a cut does by the probe (`--damage probe`): the rise of its error rate. A
    /// probe the model already fails (fewer than `floor` of its questions right) cannot see a
    /// cut, so a cut that raised the held-out loss there is not harmless: it gets the smallest
    /// positive damage, so that the budget splits the steps among such rounds instead of giving
    /// it none. (SmolLM2 at 30 %: after FFN 256 → 64 the probe stood at 6 %; cutting 6 blocks
    /// added 1.28 nats and lost no probe question, and the round got 0 steps.)
    public static func probeDamage(errorBefore: Double, errorAfter: Double, lossRise: Double, floor: Double = 0.1) -> Double {
        let d = errorAfter - errorBefore
        if d <= 0 && 1 - errorBefore < floor && lossRise > 0 { return 1e-6 }
        return d
    }

    /// This round's share of the fixed total.
    func budget(round r: Int, damage: Double, currentLoss: Double) throws -> Int {
        let s = settings, R = rounds
        let used = state.rows.compactMap { $0.phase == .tune ? $0.tuneSteps : nil }.reduce(0, +)
        let remaining = state.totalSteps - used
        if s.budget == .equal || R == 1 { return Budget.equalShare(total: state.totalSteps, rounds: R, round: r - 1) }
        // Damage this round carries: its cut plus its share of any annealed layer's removal.
        let own = max(0, damage) + annealShare(round: r)
        let floor = min(s.minRoundSteps, state.totalSteps / R)
        // A cut the probe does not see gets no steps (Budget.damageShare): no trial cuts needed.
        if s.damage == .probe && own <= 0 && r < R {
            return Budget.damageShare(remaining: remaining, roundsLeft: R - r + 1, damage: own, expectedLater: [], floor: floor,
                                      harmlessGetsNone: true)
        }
        // Damage expected of later rounds, from what this kind of cut did so far (or a trial now);
        // an annealed block's removal is spread over the rounds of its window.
        var later: [Double] = []
        for j in r..<R {
            let p = state.plan.rounds[j], rr = j + 1
            var e = annealShare(round: rr)
            if p.sparsity != nil { e += (state.sparseDamagePerUnit ?? 0) * (try sparseIncrement(round: rr)) }
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
        let reserve = Int((s.finalReserve * Double(state.totalSteps)).rounded())
        return Budget.damageShare(remaining: remaining, roundsLeft: R - r + 1, damage: own, expectedLater: later, floor: floor,
                                  finalReserve: min(reserve, remaining), harmlessGetsNone: s.damage == .probe)
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
        return max(0, try damageMeasure(trial.apply(model: model), scale: scale) - current)
    }

    /// The quantity the damage budget follows, of `m`: held-out loss, or with `--damage probe`
    /// the error rate on held-out questions (`probeLines`, disjoint from the calibration set the
    /// reconstruction fits) answered greedily (branch scales folded).
    func damageMeasure(_ m: Model, scale: [Float]?) throws -> Double {
        switch settings.damage {
        case .loss: return try heldOutLoss(m, scale: scale)
        case .probe:
            let counts = try backend.evaluate(model: m.foldingBranchScales(scale), jsonlLines: data.probeLines, shards: max(settings.shards, 2),
                                              maxNewTokens: settings.evalMaxNewTokens, batchSize: settings.evalBatchSize, key: measurementKey())
            return 1 - counts.accuracy
        }
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
}
