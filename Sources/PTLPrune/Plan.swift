import Foundation
import PTLModel

/// Which pruning method a run follows (DESIGN.md §1.1–1.2).
public enum PruneMethod: String, Codable, Sendable, CaseIterable {
    /// The Prune–Tune Loop: small rounds of pruning, each followed by tuning.
    case ptl
    /// The same scores, all pruning in round 1, then the whole tune budget.
    case pruneOnce = "prune-once"
    /// The lowest Block-Influence layers removed at once, then the whole tune budget.
    case shortgpt
}

public enum PruneOrder: String, Codable, Sendable, CaseIterable {
    case neuronsFirst = "neurons-first", layersFirst = "layers-first", alternate
}

/// The neuron score (DESIGN.md §1.1): E|a|·‖W_down[:,j]‖ (default), E|a|, max|a|, E[a²].
public enum NeuronScore: String, Codable, Sendable, CaseIterable {
    case magnitude = "act-norm", meanAbs = "mean-abs", maxAbs = "max-abs", meanSquare = "mean-square"
}

/// The layer score: normalised residual change (the paper's Eq. 5) or ShortGPT's Block Influence.
public enum LayerScore: String, Codable, Sendable, CaseIterable {
    case relativeChange = "relative-change", blockInfluence = "block-influence"
}

/// What one round removes.
public struct RoundPlan: Codable, Sendable, Equatable {
    /// Neurons removed from every block this round.
    public var neurons: Int
    /// Blocks removed this round.
    public var layers: Int
    /// With `--prune sparse`: the sparsity pattern every linear layer has after this round
    /// ("0.3", "2:4"); the masks only grow from round to round.
    public var sparsity: String?
    /// Hidden (embedding) channels removed this round (nil: none), with the round's neurons.
    public var hidden: Int?
    public init(neurons: Int, layers: Int, sparsity: String? = nil, hidden: Int? = nil) {
        self.neurons = neurons; self.layers = layers; self.sparsity = sparsity; self.hidden = hidden
    }
    /// Hidden channels removed this round.
    public var hiddenChannels: Int { hidden ?? 0 }
}

/// The rounds of a run, fixed at its start from the original shape and the target.
public struct PrunePlan: Codable, Sendable, Equatable {
    public var rounds: [RoundPlan]
    public var finalLayers: Int
    public var finalIntermediate: Int
    public var finalParameters: Int
    public var originalParameters: Int
    /// The final hidden size when the plan prunes hidden channels (nil: unchanged).
    public var finalHidden: Int?

    /// Parameters of `config` with `layers` blocks of FFN width `width` (and hidden size `hidden`).
    public static func parameters(_ config: ModelConfig, layers: Int, width: Int, hidden: Int? = nil) -> Int {
        var c = config
        c.numHiddenLayers = layers
        c.intermediateSize = width
        if let hidden { c.hiddenSize = hidden }   // qDim and kvDim keep the config's head_dim
        return ParameterLayout(config: c).count
    }

    /// - target: fraction of the original parameters to end at or below.
    /// - removeLayers: blocks the PTL and Prune-Once plans delete (the FFN width then shrinks until
    ///   the target is met); ShortGPT deletes as many blocks as the target needs and no neurons.
    /// - step: fraction of the original FFN width removed per neuron round (rounded to `widthMultiple`).
    /// - hiddenSize: the final hidden size (PTL and Prune-Once; nil: unchanged). PTL removes the
    ///   channels with its neuron rounds, in proportion to their neurons (multiples of
    ///   `widthMultiple` where the amount allows); the FFN width then shrinks until the target is met.
    public static func make(config: ModelConfig, method: PruneMethod, target: Double, removeLayers: Int, step: Double,
                            widthMultiple: Int, layersPerRound: Int, order: PruneOrder, hiddenSize: Int? = nil) throws -> PrunePlan {
        let L = config.numHiddenLayers, I = config.intermediateSize, H = config.hiddenSize
        let original = ParameterLayout(config: config).count
        if let h = hiddenSize {
            guard method != .shortgpt else { throw ModelError("ShortGPT deletes blocks only; --hidden-size needs --method ptl or prune-once") }
            guard h >= 1, h < H else { throw ModelError("--hidden-size must be between 1 and the model's hidden size \(H) − 1 (got \(h))") }
        }
        let finalH = hiddenSize
        // Checked here as well as on the command line: a resumed checkpoint's settings reach here too.
        guard target > 0, target < 1 else { throw ModelError("--target-params must be between 0 and 1 (got \(target))") }
        guard step > 0, step < 1 else { throw ModelError("--step must be between 0 and 1 (got \(step))") }
        guard widthMultiple >= 1, widthMultiple <= I else { throw ModelError("--width-multiple must be between 1 and the FFN width \(I) (got \(widthMultiple))") }
        let budget = Int((target * Double(original)).rounded(.down))
        if method == .shortgpt {
            guard let k = (1..<L).first(where: { parameters(config, layers: L - $0, width: I) <= budget }) else {
                throw ModelError("ShortGPT cannot reach \(target) of the parameters by deleting blocks of this \(L)-block model")
            }
            return PrunePlan(rounds: [RoundPlan(neurons: 0, layers: k)], finalLayers: L - k, finalIntermediate: I,
                             finalParameters: parameters(config, layers: L - k, width: I), originalParameters: original)
        }
        guard removeLayers >= 0, removeLayers < L else { throw ModelError("--remove-layers must be between 0 and \(L - 1)") }
        let finalL = L - removeLayers
        var width = (I / widthMultiple) * widthMultiple
        while width > 0 && parameters(config, layers: finalL, width: width, hidden: finalH) > budget { width -= widthMultiple }
        guard width > 0 else {
            throw ModelError("\(target) of the parameters is out of reach with \(finalL) blocks\(finalH.map { ", hidden size \($0)" } ?? "") and an FFN width that is a multiple of \(widthMultiple); remove more layers\(finalH == nil ? "" : " or hidden channels")")
        }
        let hiddenCut = finalH.map { H - $0 } ?? 0
        let final = PrunePlan(rounds: [], finalLayers: finalL, finalIntermediate: width,
                              finalParameters: parameters(config, layers: finalL, width: width, hidden: finalH), originalParameters: original,
                              finalHidden: finalH)
        if method == .pruneOnce {
            var p = final
            p.rounds = [RoundPlan(neurons: I - width, layers: removeLayers, hidden: hiddenCut > 0 ? hiddenCut : nil)]
            return p
        }
        // Neuron rounds: step·I rounded to the width multiple (at least one multiple) each.
        let chunk = max(widthMultiple, Int((step * Double(I) / Double(widthMultiple)).rounded()) * widthMultiple)
        var neuronRounds: [Int] = []
        var w = I
        while w > width {
            let next = max(width, ((w - chunk) / widthMultiple) * widthMultiple)
            neuronRounds.append(w - next)
            w = next
        }
        let per = max(1, layersPerRound)
        var layerRounds: [Int] = []
        var left = removeLayers
        while left > 0 { layerRounds.append(min(per, left)); left -= min(per, left) }
        var rounds: [RoundPlan] = []
        switch order {
        case .neuronsFirst:
            rounds = neuronRounds.map { RoundPlan(neurons: $0, layers: 0) } + layerRounds.map { RoundPlan(neurons: 0, layers: $0) }
        case .layersFirst:
            rounds = layerRounds.map { RoundPlan(neurons: 0, layers: $0) } + neuronRounds.map { RoundPlan(neurons: $0, layers: 0) }
        case .alternate:
            // Spread the layer rounds evenly among the neuron rounds.
            let n = neuronRounds.count, m = layerRounds.count
            var li = 0
            for (i, k) in neuronRounds.enumerated() {
                rounds.append(RoundPlan(neurons: k, layers: 0))
                while li < m && (li + 1) * n <= (i + 1) * m { rounds.append(RoundPlan(neurons: 0, layers: layerRounds[li])); li += 1 }
            }
            while li < m { rounds.append(RoundPlan(neurons: 0, layers: layerRounds[li])); li += 1 }
        }
        var p = final
        p.rounds = rounds
        if hiddenCut > 0 {
            // The channels go with the neuron rounds, in proportion to their neurons (rounded to
            // the width multiple where the cut allows, the remainder in the last of them).
            let neuronRoundIndices = p.rounds.indices.filter { p.rounds[$0].neurons > 0 }
            guard let last = neuronRoundIndices.last else {
                throw ModelError("--hidden-size: the plan has no neuron round to remove hidden channels with (the FFN keeps its width)")
            }
            let totalNeurons = neuronRoundIndices.reduce(0) { $0 + p.rounds[$1].neurons }
            let unit = hiddenCut >= widthMultiple * neuronRoundIndices.count ? widthMultiple : 1
            var done = 0, neuronsSoFar = 0
            for i in neuronRoundIndices {
                neuronsSoFar += p.rounds[i].neurons
                let upTo = i == last ? hiddenCut : Int((Double(hiddenCut) * Double(neuronsSoFar) / Double(totalNeurons) / Double(unit)).rounded()) * unit
                let k = max(0, min(hiddenCut, upTo) - done)
                p.rounds[i].hidden = k > 0 ? k : nil
                done += k
            }
        }
        return p
    }
}

extension PrunePlan {
    /// The rounds of `--prune sparse`: no block or neuron leaves; every linear layer's sparsity
    /// rises to `target`. PTL: unstructured by `step` a round (0.1, 0.2, … 0.5), n:m one more
    /// weight of every m a round (1:4, 2:4); Prune-Once: all of it in round 1. `cubic` spaces an
    /// unstructured target's ⌈target/step⌉ rounds as gradual magnitude pruning does (Zhu & Gupta
    /// 2017: s_k = s·(1 − (1 − k/R)³)) — big steps while the model is robust, small ones near the
    /// target, where the damage of a step grows fastest.
    public static func sparse(config: ModelConfig, method: PruneMethod, target: SparsityPattern, step: Double,
                              cubic: Bool = false) throws -> PrunePlan {
        let original = ParameterLayout(config: config).count
        var plan = PrunePlan(rounds: [], finalLayers: config.numHiddenLayers, finalIntermediate: config.intermediateSize,
                             finalParameters: original, originalParameters: original)
        switch method {
        case .shortgpt: throw ModelError("ShortGPT deletes blocks; --prune sparse runs with --method ptl or prune-once")
        case .pruneOnce: plan.rounds = [RoundPlan(neurons: 0, layers: 0, sparsity: "\(target)")]
        case .ptl:
            switch target {
            case .unstructured(let f):
                guard f > 0 else { throw ModelError("--sparsity \(f): the loop needs a sparsity above 0") }
                guard step > 0, step < 1 else { throw ModelError("--step must be between 0 and 1 (got \(step))") }
                var levels: [Double] = []
                var k = 1
                while levels.count < 1000 {
                    // Rounded to 1e-6 so the levels print (and parse back) as the user wrote them.
                    let x = (Double(k) * step * 1e6).rounded() / 1e6
                    if x >= f - 1e-9 { break }
                    levels.append(x)
                    k += 1
                }
                guard levels.count < 1000 else { throw ModelError("--step \(step) gives more than 1000 rounds to sparsity \(f)") }
                if cubic {
                    let R = Double(levels.count + 1)
                    levels = (1..<(levels.count + 1)).map { k in
                        (f * (1 - Foundation.pow(1 - Double(k) / R, 3)) * 1e6).rounded() / 1e6
                    }
                }
                plan.rounds = (levels + [f]).map { RoundPlan(neurons: 0, layers: 0, sparsity: "\(SparsityPattern.unstructured($0))") }
            case .nOfM(let n, let m):
                plan.rounds = (1...n).map { RoundPlan(neurons: 0, layers: 0, sparsity: "\(SparsityPattern.nOfM(n: $0, m: m))") }
            }
        }
        return plan
    }
}

/// Choosing what to remove from scores.
public enum Selection {
    /// Per-neuron scores (layers × intermediate) of the chosen kind.
    public static func neuronScores(_ s: ActivationStatistics, model: Model, kind: NeuronScore) -> [Double] {
        let n = Double(max(1, s.tokens))
        switch kind {
        case .magnitude: return s.neuronScores(model: model)
        case .meanAbs: return s.absSum.map { $0 / n }
        case .maxAbs: return s.maxAbs.map(Double.init)
        case .meanSquare: return s.squareSum.map { $0 / n }
        }
    }

    /// The `k` lowest-scoring neurons of every block (ties by index), each list sorted.
    public static func lowestNeurons(scores: [Double], layers: Int, intermediate: Int, count k: Int) -> [[Int]] {
        (0..<layers).map { l in
            let row = Array(scores[(l * intermediate)..<((l + 1) * intermediate)])
            return row.indices.sorted { (row[$0], $0) < (row[$1], $1) }.prefix(k).sorted()
        }
    }

    public static func layerScores(_ s: ActivationStatistics, kind: LayerScore) -> [Double] {
        kind == .relativeChange ? s.relativeChange : s.blockInfluence
    }

    /// The `k` lowest-scoring blocks not in `excluding` (ties by index), sorted.
    public static func lowestLayers(scores: [Double], count k: Int, excluding: Set<Int> = []) -> [Int] {
        scores.indices.filter { !excluding.contains($0) }.sorted { (scores[$0], $0) < (scores[$1], $1) }.prefix(k).sorted()
    }
}

/// How a run's total tune steps are split over its rounds.
public enum BudgetKind: String, Codable, Sendable, CaseIterable {
    /// Each round's share follows the held-out loss increase its pruning caused.
    case damage
    /// The same steps every round (the paper's schedule).
    case equal
}

public enum Budget {
    /// Steps for the current round out of `remaining`, given this round's damage and the damage
    /// expected of the rounds still to come; `floor` steps at least while any remain for later rounds.
    /// `finalReserve`: steps kept for the last round whatever the damage estimates say (the last
    /// cut is the one nothing after it repairs).
    /// `harmlessGetsNone`: a round whose damage is 0 or less (with `--damage probe`: no held-out
    /// question lost) gets no steps — not a share computed against later rounds' estimates, which,
    /// extrapolated from this round's zero, would split the steps evenly, and not the floor. Both
    /// were measured on the SmolLM2 specialist after SparseGPT 1:4 (+0.0001 nats, probe 90.6 →
    /// 93.8 %): 12 distillation steps took it from 92.5 to 90.0 %, one step at the full rate (a
    /// round of fewer than 4 steps has no warm-up, so fresh AdamW's first step moves every weight
    /// by about the learning rate) to 77.0 %. The steps belong to the rounds that hurt.
    public static func damageShare(remaining: Int, roundsLeft: Int, damage: Double, expectedLater: [Double], floor: Int,
                                   finalReserve: Int = 0, harmlessGetsNone: Bool = false) -> Int {
        if roundsLeft <= 1 { return remaining }
        if harmlessGetsNone && damage <= 0 { return 0 }
        let d = max(damage, 1e-6)
        let later = expectedLater.reduce(0) { $0 + max($1, 1e-6) }
        let reserve = floor * (roundsLeft - 2) + max(floor, finalReserve)
        let share = Int((Double(remaining) * d / (d + later)).rounded())
        return min(max(share, floor), max(floor, remaining - reserve))
    }

    public static func equalShare(total: Int, rounds: Int, round: Int) -> Int {
        // Round r gets ⌊total·(r+1)/R⌋ − ⌊total·r/R⌋: equal up to one step, summing to total.
        total * (round + 1) / rounds - total * round / rounds
    }
}
