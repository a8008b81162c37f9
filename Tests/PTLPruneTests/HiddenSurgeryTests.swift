import Foundation
import Testing
import PTLTestSupport
import PTLTensor
@testable import PTLModel
@testable import PTLPrune

@Suite struct HiddenSurgeryTests {
    /// A model whose channels `dead` never carry anything (their embedding columns and the rows
    /// of o_proj and down_proj that write them are zero, and no bias writes them).
    func modelWithDeadChannels(_ type: String, dead: [Int], untied: Bool = false) throws -> Model {
        var c = try config(type)
        if untied { c.tieWordEmbeddings = false }
        let m = randomModel(c, seed: 11)
        let p = m.parameters.pointer, H = c.hiddenSize
        for d in dead {
            for t in 0..<c.vocabSize { p[m.layout.embedding + t * H + d] = 0 }
            for o in m.layout.layers {
                for i in 0..<c.qDim { p[o.o + d * c.qDim + i] = 0 }
                for i in 0..<c.intermediateSize { p[o.down + d * c.intermediateSize + i] = 0 }
                if let b = o.oBias { p[b + d] = 0 }
                if let b = o.downBias { p[b + d] = 0 }
            }
        }
        m.parametersChanged()
        return m
    }

    func statistics(_ m: Model) -> ActivationStatistics {
        let tokens: [Int32] = [1, 5, 9, 2, 7, 3, 11, 4, 8, 6, 10, 12]
        let pass = TrainingPass(model: m, batch: 2, seq: 6)
        _ = pass.forward(tokens: tokens, targets: tokens.map { _ in 0 })
        return pass.statistics()
    }

    /// Channels that carry nothing score lowest, and removing them — with the norm gains rescaled
    /// by √(H/H′) for the smaller root mean square — leaves the logits as they were.
    @Test(arguments: [("llama", false), ("qwen2", false), ("qwen2", true)])
    func removingDeadChannelsKeepsTheLogits(type: String, untied: Bool) throws {
        let dead = [2, 7, 13]
        let m = try modelWithDeadChannels(type, dead: dead, untied: untied)
        let stats = statistics(m)
        #expect(stats.hidden == 16 && stats.channelSquareSum.count == 4 * 16)
        let scores = try HiddenSurgery.channelScores(stats, model: m)
        #expect(HiddenSurgery.lowestChannels(scores: scores, count: 3) == dead)
        let factors = try HiddenSurgery.normFactors(stats, remove: dead)
        #expect(factors.count == 7 && factors.allSatisfy { abs($0 - (16.0 / 13.0).squareRoot()) < 1e-6 })
        let hs = try HiddenSurgery(config: m.config, remove: dead, normFactors: factors)
        let pruned = try hs.apply(model: m)
        #expect(pruned.config.hiddenSize == 13 && pruned.config.headDim == 4 && pruned.config.qDim == 16)
        #expect(pruned.parameters.count == ParameterLayout(config: pruned.config).count)
        #expect(maxRelDiff(logits(m), logits(pruned)) < 1e-4)
        // Without the rescale the norms' outputs shrink and the logits move.
        let plain = try HiddenSurgery(config: m.config, remove: dead).apply(model: m)
        #expect(maxRelDiff(logits(m), logits(plain)) > 1e-3)
        // The pruned config round-trips through config.json with its head_dim.
        let back = try ModelConfig(data: pruned.config.jsonData(), source: "pruned")
        #expect(back.hiddenSize == 13 && back.headDim == 4 && ParameterLayout(config: back).count == pruned.parameters.count)
    }

    /// Moments are gathered like the weights, without the norm rescale.
    @Test func momentsAreGatheredWithoutTheNormFactors() throws {
        let c = try config("llama")
        let m = randomModel(c, seed: 5)
        let factors = [Float](repeating: 2, count: 7)
        let hs = try HiddenSurgery(config: c, remove: [0, 15], normFactors: factors)
        let opt = AdamW(layout: m.layout, m: FloatBuffer(m.parameters.array()), v: FloatBuffer(m.parameters.array()), step: 3)
        let sliced = try hs.apply(optimizer: opt)
        #expect(sliced.m.array() == (try hs.apply(m.parameters, scaleNorms: false)).array())
        #expect(sliced.step == 3)
        let w = try hs.apply(model: m)
        let n = w.layout.layers[1].postNorm, o = m.layout.layers[1].postNorm
        #expect(w.parameters.pointer[n] == 2 * m.parameters.pointer[o + 1])
        #expect(sliced.m.pointer[n] == m.parameters.pointer[o + 1])
    }

    @Test func badRequestsThrow() throws {
        let c = try config("llama")
        #expect(throws: ModelError.self) { try HiddenSurgery(config: c, remove: [3, 3]) }
        #expect(throws: ModelError.self) { try HiddenSurgery(config: c, remove: [16]) }
        #expect(throws: ModelError.self) { try HiddenSurgery(config: c, remove: Array(0..<16)) }
        #expect(throws: ModelError.self) { try HiddenSurgery(config: c, remove: [1], normFactors: [1, 1]) }
        #expect(throws: ModelError.self) { try HiddenSurgery(config: c, remove: [1], normFactors: [Float](repeating: .nan, count: 7)) }
        let hs = try HiddenSurgery(config: c, remove: [1])
        #expect(throws: ModelError.self) { try hs.apply(FloatBuffer(count: 3), scaleNorms: true) }
    }

    /// PTL spreads the channels over its neuron rounds in proportion to their neurons; Prune-Once
    /// removes them at once; the parameter count follows the smaller hidden size.
    @Test func plansCarryTheHiddenCut() throws {
        let c = try config("llama", layers: 4, width: 64)
        let ptl = try PrunePlan.make(config: c, method: .ptl, target: 0.3, removeLayers: 1, step: 0.25, widthMultiple: 4,
                                     layersPerRound: 1, order: .neuronsFirst, hiddenSize: 8)
        #expect(ptl.finalHidden == 8)
        #expect(ptl.rounds.reduce(0) { $0 + $1.hiddenChannels } == 8)
        #expect(ptl.rounds.allSatisfy { $0.neurons > 0 || $0.hiddenChannels == 0 })
        #expect(ptl.finalParameters == PrunePlan.parameters(c, layers: 3, width: ptl.finalIntermediate, hidden: 8))
        #expect(ptl.finalParameters <= Int(0.3 * Double(ptl.originalParameters)))
        let once = try PrunePlan.make(config: c, method: .pruneOnce, target: 0.3, removeLayers: 1, step: 0.25, widthMultiple: 4,
                                      layersPerRound: 1, order: .neuronsFirst, hiddenSize: 8)
        #expect(once.rounds == [RoundPlan(neurons: 64 - ptl.finalIntermediate, layers: 1, hidden: 8)])
        // A smaller hidden size leaves a wider FFN at the same target.
        let noHidden = try PrunePlan.make(config: c, method: .ptl, target: 0.3, removeLayers: 1, step: 0.25, widthMultiple: 4,
                                          layersPerRound: 1, order: .neuronsFirst)
        #expect(ptl.finalIntermediate > noHidden.finalIntermediate && noHidden.finalHidden == nil)
        #expect(throws: ModelError.self) {
            try PrunePlan.make(config: c, method: .shortgpt, target: 0.3, removeLayers: 1, step: 0.25, widthMultiple: 4,
                               layersPerRound: 1, order: .neuronsFirst, hiddenSize: 8)
        }
        #expect(throws: ModelError.self) {
            try PrunePlan.make(config: c, method: .ptl, target: 0.3, removeLayers: 1, step: 0.25, widthMultiple: 4,
                               layersPerRound: 1, order: .neuronsFirst, hiddenSize: 16)
        }
    }
}
