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
        // The probe before the cut.
        var probeBefore: Double? = nil
        if s.damage == .probe {
            // On the probe's own held-out questions, as after the cut: the on-policy traces' accuracy is
            // taken on the calibration questions, which the cut's refit is fitted to (a shortcut here
            // compared two different sets and read cheap cuts as gains: 93.8 % → 98.4 % on the demo).
            probeBefore = try damageMeasure(model, scale: scale)
        }
        let tStats = Date().timeIntervalSince(t0)
        let source = settings.calibration == .onPolicy ? roundCalibration.map { "; \($0.detail)" } ?? "" : ""
        state.rows.append(row(.stats, seconds: tStats, detail: "\(stats.tokens) calibration tokens (\(settings.calibration.rawValue))\(source)"))
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
        // Reconstruction needs the unpruned block's activations: Gram matrices before the cut.
        let gram = s.reconstruct == .ffn && plan.neurons > 0
            ? try backend.ffnGram(model: model, sequences: try calibrationSequences(), shards: s.shards, branchScale: scale, key: measurementKey()) : nil
        let surgery = try Surgery(config: c, removeNeurons: removeNeurons, removeLayers: Set(removeLayers))
        let unpruned = model
        model = surgery.apply(model: model)
        var reconstructed = ""
        if let gram {
            let sliced = try heldOutLoss(model, scale: scale.map { surgery.apply(perLayer: $0) })
            try Reconstruction.apply(to: model, surgery: surgery, original: unpruned, gram: gram, damping: s.reconstructDamping)
            reconstructed = String(format: "; down_proj refitted by least squares on %d tokens (held-out loss %.4f sliced)", gram.tokens, sliced)
        }
        // Hidden channels: scored on the unpruned model, removed after the neuron and block cut
        // (and its refit), the kept norms' gains rescaled for the energy that left.
        var hiddenSurgery: HiddenSurgery? = nil
        if plan.hiddenChannels > 0 {
            let scores = try HiddenSurgery.channelScores(stats, model: unpruned)
            let remove = HiddenSurgery.lowestChannels(scores: scores, count: plan.hiddenChannels)
            let f = try HiddenSurgery.normFactors(stats, remove: remove)
            let L0 = unpruned.config.numHiddenLayers
            let factors = surgery.keptLayers.flatMap { [f[2 * $0], f[2 * $0 + 1]] } + [f[2 * L0]]
            let hs = try HiddenSurgery(config: model.config, remove: remove, normFactors: factors)
            model = try hs.apply(model: model)
            record.channels = remove.map { ScoredIndex(index: $0, score: scores[$0]) }
            hiddenSurgery = hs
        }
        let adam = optimizer.settings
        if s.optimizer == .carry {
            optimizer = surgery.apply(optimizer: optimizer)
            if let hs = hiddenSurgery { optimizer = try hs.apply(optimizer: optimizer) }
        } else {
            optimizer = AdamW(layout: model.layout, settings: adam)
        }
        state.alpha = surgery.apply(perLayer: state.alpha)
        grads = FloatBuffer(count: model.layout.count)
        let newIndex = Dictionary(uniqueKeysWithValues: surgery.keptLayers.enumerated().map { ($1, $0) })
        state.doomed = state.doomed.filter { $0.removeAtRound != r }.map { d in
            var d = d; d.layers = d.layers.map { newIndex[$0]! }; return d
        }
        state.removals.append(record)
        // Damage: the held-out loss of the pruned model against the round's start (and with
        // --damage probe, the probe's error rate, which the budget then follows).
        let after = try heldOutLoss(model, scale: scale)
        var damage = after - state.lossBefore
        var measureAfter = after
        var probeDetail = ""
        if let before = probeBefore {
            measureAfter = try damageMeasure(model, scale: scale)
            damage = Self.probeDamage(errorBefore: before, errorAfter: measureAfter, lossRise: after - state.lossBefore)
            probeDetail = String(format: "; probe (held-out questions) accuracy %.1f%% → %.1f%%", (1 - before) * 100, (1 - measureAfter) * 100)
        }
        // Anneal: layers removed in a later round are chosen now when their window opens here.
        if s.layerRemoval == .anneal && s.method == .ptl {
            for (j, p) in state.plan.rounds.enumerated() where p.layers > 0 {
                let removeAt = j + 1
                let windowStart = max(1, removeAt - s.annealRounds)
                guard removeAt > r, windowStart <= r, !state.doomed.contains(where: { $0.removeAtRound == removeAt }) else { continue }
                let reserved = Set(state.doomed.flatMap(\.layers))
                let keptScores = surgery.keptLayers.map { layerScores[$0] }
                let chosen = Selection.lowestLayers(scores: keptScores, count: p.layers, excluding: reserved)
                let trial = try trialCutDamage(chosen, from: measureAfter)
                state.doomed.append(DoomedLayers(removeAtRound: removeAt, windowStart: r, layers: chosen,
                                                 scores: chosen.map { keptScores[$0] }, trialDamage: trial))
                logger.info("round \(r): layer(s) \(chosen) will be annealed to zero over rounds \(r)–\(removeAt - 1) (cutting them now would add \(String(format: "%.3f", trial)) to the loss)")
            }
        }
        if plan.neurons > 0 { state.neuronDamagePerNeuron = max(0, damage) / Double(plan.neurons) }
        if plan.layers > 0 && record.how == .cut { state.layerDamagePerLayer = max(0, damage) / Double(plan.layers) }
        state.roundSteps = try budget(round: r, damage: damage, currentLoss: measureAfter)
        state.stepInRound = 0
        state.tuneLossSum = 0
        let shape = "\(model.config.numHiddenLayers) blocks × FFN \(model.config.intermediateSize)"
            + (state.plan.finalHidden == nil ? "" : " × hidden \(model.config.hiddenSize)")
        state.rows.append(row(.prune, seconds: Date().timeIntervalSince(t1), loss: after, steps: state.roundSteps,
                              detail: "removed \(plan.neurons) neurons/block, \(plan.layers) block(s) \(removeLayers)\(plan.hiddenChannels > 0 ? ", \(plan.hiddenChannels) hidden channels" : "") → \(shape); loss +\(String(format: "%.4f", after - state.lossBefore))\(probeDetail)\(reconstructed)"))
        logger.info("\(String(format: "round %d: pruned to %@ (%.1f%% of the parameters); held-out loss %.4f → %.4f; %d tune steps", r, shape, 100 * Double(model.parameterCount) / Double(original.parameters), state.lossBefore, after, state.roundSteps))",
                    metadata: ["round": "\(r)", "parameters": "\(model.parameterCount)", "tune_steps": "\(state.roundSteps)"])
        state.stage = .tune
        captureReference()
        try checkpoint()
    }

    /// Held-out loss increase if `layers` were cut from the current model (whose loss is `current`) now.
    func trialCutDamage(_ layers: [Int], from current: Double) throws -> Double {
        let c = model.config
        let trial = try Surgery(config: c, removeNeurons: [[Int]](repeating: [], count: c.numHiddenLayers), removeLayers: Set(layers))
        return max(0, try damageMeasure(trial.apply(model: model), scale: scale.map { trial.apply(perLayer: $0) }) - current)
    }
}
