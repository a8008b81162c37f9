import Foundation
import PTLModel
import PTLPrune
import PTLTensor

extension PruneTuneLoop {
    /// stats → choose → surgery → damage → this round's tune budget.
    func prune() throws {
        let r = state.round, plan = state.plan.rounds[r - 1]
        let s = settings
        progress(r, rounds, LoopPhase.stats.rawValue, 0)
        let t0 = Date()
        let stats = try calibrationStatistics()
        let tStats = Date().timeIntervalSince(t0)
        state.rows.append(row(.stats, seconds: tStats, detail: "\(stats.tokens) calibration tokens"))
        progress(r, rounds, LoopPhase.prune.rawValue, 0)
        let t1 = Date()
        let c = model.config
        // Neurons: the lowest scores of every block.
        var removeNeurons = [[Int]](repeating: [], count: c.numHiddenLayers)
        var record = RemovalRecord(round: r, neurons: [], layers: [], how: nil)
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
                record.how = .annealed(from: d.windowStart, to: r - 1)
            } else {
                let reserved = Set(state.doomed.filter { $0.removeAtRound > r }.flatMap(\.layers))
                removeLayers = Selection.lowestLayers(scores: layerScores, count: plan.layers, excluding: reserved)
                record.layers = removeLayers.map { ScoredIndex(index: $0, score: layerScores[$0]) }
                record.how = .cut
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
        if plan.layers > 0 && record.how == .cut { state.layerDamagePerLayer = max(0, damage) / Double(plan.layers) }
        state.roundSteps = try budget(round: r, damage: damage, currentLoss: after)
        state.stepInRound = 0
        state.tuneLossSum = 0
        let shape = "\(model.config.numHiddenLayers) blocks × FFN \(model.config.intermediateSize)"
        state.rows.append(row(.prune, seconds: Date().timeIntervalSince(t1), loss: after, steps: state.roundSteps,
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
        let used = state.rows.compactMap { $0.phase == .tune ? $0.tuneSteps : nil }.reduce(0, +)
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

}
