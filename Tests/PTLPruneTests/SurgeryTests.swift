import Foundation
import Testing
import PTLTestSupport
import PTLTensor
@testable import PTLModel
@testable import PTLPrune

func config(_ type: String, layers: Int = 3, width: Int = 24) throws -> ModelConfig {
    try ModelConfig(modelType: type, vocabSize: 29, hiddenSize: 16, intermediateSize: width, numHiddenLayers: layers,
                    numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 4, rmsNormEps: 1e-5, ropeTheta: 10000,
                    maxPositionEmbeddings: 64, tieWordEmbeddings: type == "qwen2")
}


func logits(_ m: Model, scale: [Float]? = nil) -> [Float] {
    let tokens: [Int32] = [1, 5, 9, 2, 7, 3, 11, 4, 8, 6, 10, 12]
    let pass = TrainingPass(model: m, batch: 2, seq: 6)
    pass.branchScale = scale
    _ = pass.forward(tokens: tokens, targets: tokens.map { _ in 0 })
    return pass.logits.array()
}

func maxRelDiff(_ a: [Float], _ b: [Float]) -> Float {
    let scale = max(1e-6, a.map(abs).max()!)
    return zip(a, b).map { abs($0 - $1) }.max()! / scale
}

@Suite struct SurgeryTests {
    /// Removing neuron j is exactly zeroing column j of down_proj; removing a block is zeroing its
    /// o_proj and down_proj (and their biases): the pruned model must compute the same logits.
    @Test(arguments: ["llama", "qwen2"])
    func prunedModelComputesWhatTheMaskedOriginalComputes(type: String) throws {
        let c = try config(type)
        let m = randomModel(c, seed: 3)
        let remove = [[0, 5, 23, 7], [1, 2, 3, 4], [20, 9, 10, 11]]
        let surgery = try Surgery(config: c, removeNeurons: remove, removeLayers: [1])
        let pruned = surgery.apply(model: m)
        #expect(pruned.config.intermediateSize == 20 && pruned.config.numHiddenLayers == 2)
        let masked = Model(config: c, parameters: FloatBuffer(m.parameters.array()))
        for (l, o) in masked.layout.layers.enumerated() {
            for h in 0..<c.hiddenSize { for j in remove[l] { masked.parameters.pointer[o.down + h * c.intermediateSize + j] = 0 } }
            if l == 1 {
                for i in 0..<(c.hiddenSize * c.qDim) { masked.parameters.pointer[o.o + i] = 0 }
                for i in 0..<(c.hiddenSize * c.intermediateSize) { masked.parameters.pointer[o.down + i] = 0 }
            }
        }
        #expect(maxRelDiff(logits(masked), logits(pruned)) < 1e-5)
    }

    @Test func momentsAreGatheredLikeTheWeights() throws {
        let c = try config("llama")
        let m = randomModel(c, seed: 4)
        let surgery = try Surgery(config: c, removeNeurons: [[1, 2], [3, 4], [5, 6]], removeLayers: [0])
        let opt = AdamW(layout: m.layout, m: FloatBuffer(m.parameters.array()), v: FloatBuffer(m.parameters.array().map { $0 * 2 }), step: 7)
        let sliced = surgery.apply(optimizer: opt)
        let weights = surgery.apply(m.parameters).array()
        #expect(sliced.m.array() == weights)
        #expect(sliced.v.array() == weights.map { $0 * 2 })
        #expect(sliced.step == 7 && sliced.layout.count == ParameterLayout(config: surgery.newConfig).count)
        #expect(surgery.apply(perLayer: [0.5, 0.25, 1.0] as [Float]) == [0.25, 1.0])
    }

    @Test func prunedModelSavesAsPlainHFAndLoadsBack() throws {
        let c = try config("qwen2")
        let m = randomModel(c, seed: 5)
        let pruned = try Surgery(config: c, removeNeurons: [[0], [1], [2]], removeLayers: [2]).apply(model: m)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-surgery-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try HFModel.save(pruned, to: dir)
        let back = try HFModel.load(directory: dir)
        #expect(back.config.intermediateSize == 23 && back.config.numHiddenLayers == 2)
        #expect(back.parameters.array() == pruned.parameters.array())
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/config.json"))) as! [String: Any]
        #expect(json["intermediate_size"] as? Int == 23 && json["num_hidden_layers"] as? Int == 2)
    }

    @Test func badSurgeryIsRefusedWithAReason() throws {
        let c = try config("llama")
        #expect(throws: ModelError.self) { try Surgery(config: c, removeNeurons: [[0], [1, 2], [3]], removeLayers: []) }
        #expect(throws: ModelError.self) { try Surgery(config: c, removeNeurons: [[0], [1], [99]], removeLayers: []) }
        #expect(throws: ModelError.self) { try Surgery(config: c, removeNeurons: [[], [], []], removeLayers: [0, 1, 2]) }
    }

    /// Branch scales folded into o_proj/down_proj give the same function as the training mask.
    @Test func foldedBranchScalesMatchTheMask() throws {
        let c = try config("qwen2")
        let m = randomModel(c, seed: 6)
        let scale: [Float] = [1, 0.3, 0.7]
        #expect(maxRelDiff(logits(m, scale: scale), logits(m.foldingBranchScales(scale))) < 1e-5)
    }

    @Test func selectionTakesTheLowestScoresOfEveryBlock() {
        let scores: [Double] = [5, 1, 3, 2, /* block 1 */ 0, 9, 0, 4]
        #expect(Selection.lowestNeurons(scores: scores, layers: 2, intermediate: 4, count: 2) == [[1, 3], [0, 2]])
        #expect(Selection.lowestLayers(scores: [0.3, 0.1, 0.2, 0.9], count: 2) == [1, 2])
        #expect(Selection.lowestLayers(scores: [0.3, 0.1, 0.2, 0.9], count: 2, excluding: [1]) == [0, 2])
    }
}

@Suite struct PlanTests {
    /// The shipped demo's shape: 8 blocks × FFN 512, hidden 128.
    func demo() throws -> ModelConfig {
        try ModelConfig(modelType: "llama", vocabSize: 400, hiddenSize: 128, intermediateSize: 512, numHiddenLayers: 8,
                        numAttentionHeads: 4, numKeyValueHeads: 2, rmsNormEps: 1e-5, ropeTheta: 10000,
                        maxPositionEmbeddings: 512, tieWordEmbeddings: true)
    }

    @Test(arguments: PruneOrder.allCases)
    func ptlPlanReachesTheTargetInSmallMultipleOfWidthSteps(order: PruneOrder) throws {
        let c = try demo()
        let p = try PrunePlan.make(config: c, method: .ptl, target: 0.5, removeLayers: 1, step: 0.05, widthMultiple: 32,
                                   layersPerRound: 1, order: order)
        #expect(p.finalParameters <= p.originalParameters / 2)
        #expect(p.finalIntermediate % 32 == 0 && p.finalLayers == 7)
        #expect(p.rounds.reduce(0) { $0 + $1.neurons } == 512 - p.finalIntermediate)
        #expect(p.rounds.reduce(0) { $0 + $1.layers } == 1)
        #expect(p.rounds.allSatisfy { $0.neurons % 32 == 0 && $0.neurons <= 32 })
        // The next wider FFN would miss the target.
        #expect(PrunePlan.parameters(c, layers: 7, width: p.finalIntermediate + 32) > p.originalParameters / 2)
        if order == .neuronsFirst { #expect(p.rounds.last!.layers == 1) }
        if order == .layersFirst { #expect(p.rounds.first!.layers == 1) }
    }

    @Test func baselinesPruneOnceAtTheSameTarget() throws {
        let c = try demo()
        let once = try PrunePlan.make(config: c, method: .pruneOnce, target: 0.5, removeLayers: 1, step: 0.05, widthMultiple: 32,
                                      layersPerRound: 1, order: .neuronsFirst)
        let ptl = try PrunePlan.make(config: c, method: .ptl, target: 0.5, removeLayers: 1, step: 0.05, widthMultiple: 32,
                                     layersPerRound: 1, order: .neuronsFirst)
        #expect(once.rounds.count == 1 && once.finalParameters == ptl.finalParameters)
        let short = try PrunePlan.make(config: c, method: .shortgpt, target: 0.5, removeLayers: 1, step: 0.05, widthMultiple: 32,
                                       layersPerRound: 1, order: .neuronsFirst)
        #expect(short.rounds == [RoundPlan(neurons: 0, layers: short.rounds[0].layers)] && short.finalParameters <= short.originalParameters / 2)
        #expect(throws: ModelError.self) {
            try PrunePlan.make(config: c, method: .ptl, target: 0.01, removeLayers: 0, step: 0.05, widthMultiple: 32, layersPerRound: 1, order: .alternate)
        }
    }

    @Test func budgetsSumToTheTotal() {
        #expect((0..<7).map { Budget.equalShare(total: 150, rounds: 7, round: $0) }.reduce(0, +) == 150)
        // A round that did all the damage takes most of what is left; later rounds keep their floor.
        let big = Budget.damageShare(remaining: 100, roundsLeft: 4, damage: 2.0, expectedLater: [0.01, 0.01, 0.01], floor: 5)
        #expect(big >= 80 && big <= 85)
        let small = Budget.damageShare(remaining: 100, roundsLeft: 4, damage: 0.01, expectedLater: [2, 0.01, 0.01], floor: 5)
        #expect(small == 5)
        #expect(Budget.damageShare(remaining: 37, roundsLeft: 1, damage: 0, expectedLater: [], floor: 5) == 37)
        // A final reserve: however much damage a round before the last did, 30 steps stay for the last
        // round (and the floor for each one between).
        let reserved = Budget.damageShare(remaining: 100, roundsLeft: 4, damage: 2.0, expectedLater: [0.01, 0.01, 0.01], floor: 5, finalReserve: 30)
        #expect(reserved == 100 - 5 - 5 - 30)
        // The last-but-one round with a reserve the estimate already respects: the estimate stands.
        #expect(Budget.damageShare(remaining: 100, roundsLeft: 2, damage: 1, expectedLater: [1], floor: 5, finalReserve: 30) == 50)
        // A harmless cut (the probe lost nothing) gets no steps, even when the later estimates,
        // extrapolated from it, are as small (without the rule the two split evenly) and whatever
        // the floor.
        #expect(Budget.damageShare(remaining: 24, roundsLeft: 2, damage: 0, expectedLater: [0], floor: 1, finalReserve: 7) == 12)
        #expect(Budget.damageShare(remaining: 24, roundsLeft: 2, damage: 0, expectedLater: [0], floor: 1, finalReserve: 7, harmlessGetsNone: true) == 0)
        #expect(Budget.damageShare(remaining: 24, roundsLeft: 3, damage: -0.03, expectedLater: [0.1, 0.1], floor: 2, harmlessGetsNone: true) == 0)
        // Any damage at all: the share as before; the last round: everything left.
        #expect(Budget.damageShare(remaining: 24, roundsLeft: 2, damage: 0.03, expectedLater: [0.03], floor: 1, finalReserve: 7, harmlessGetsNone: true) == 12)
        #expect(Budget.damageShare(remaining: 24, roundsLeft: 1, damage: 0, expectedLater: [], floor: 1, harmlessGetsNone: true) == 24)
    }
}
