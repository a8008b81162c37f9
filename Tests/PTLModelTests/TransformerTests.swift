import Foundation
import Testing
import PTLTestSupport
import PTLTensor
@testable import PTLModel

func tinyConfig(type: String = "llama", tied: Bool = false, scaling: Bool = false) throws -> ModelConfig {
    var c = try ModelConfig(modelType: type, vocabSize: 23, hiddenSize: 16, intermediateSize: 24, numHiddenLayers: 2,
                            numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 6, rmsNormEps: 1e-5,
                            ropeTheta: 10000,
                            ropeScaling: scaling ? RopeScaling(type: "llama3", factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 4) : nil,
                            maxPositionEmbeddings: 64, tieWordEmbeddings: tied)
    c.raw["note"] = .string("kept")
    return c
}


@Suite struct TransformerTests {
    @Test(arguments: ["llama", "qwen2", "tied", "llama3-rope"])
    func everyGradientMatchesFiniteDifferences(variant: String) throws {
        let config = try tinyConfig(type: variant == "qwen2" ? "qwen2" : "llama", tied: variant == "tied" || variant == "qwen2",
                                    scaling: variant == "llama3-rope")
        let model = randomModel(config, seed: 7)
        let B = 2, T = 5
        let tokens: [Int32] = (0..<(B * T)).map { Int32(($0 * 7 + 3) % config.vocabSize) }
        var targets: [Int32] = (0..<(B * T)).map { Int32(($0 * 5 + 1) % config.vocabSize) }
        targets[3] = -1
        targets[9] = -1
        let pass = TrainingPass(model: model, batch: B, seq: T)
        let (_, count) = pass.forward(tokens: tokens, targets: targets)
        #expect(count == 8)
        let grads = FloatBuffer(count: model.layout.count)
        pass.backward(into: grads, scale: 1 / Float(count))
        func loss() -> Double {
            let (s, n) = pass.forward(tokens: tokens, targets: targets)
            return s / Double(n)
        }
        // Check a spread of coordinates in every tensor.
        let h: Float = 1e-2
        var checked = 0
        for e in model.layout.entries {
            for j in stride(from: 0, to: e.count, by: max(1, e.count / 3)) {
                let i = e.offset + j
                let saved = model.parameters.pointer[i]
                model.parameters.pointer[i] = saved + h
                let up = loss()
                model.parameters.pointer[i] = saved - h
                let down = loss()
                model.parameters.pointer[i] = saved
                let fd = (up - down) / Double(2 * h)
                let an = Double(grads.pointer[i])
                #expect(abs(fd - an) < 2e-4 + 5e-3 * abs(fd), "\(e.name)[\(j)]: finite difference \(fd), analytic \(an)")
                checked += 1
            }
        }
        #expect(checked > 40)
    }

    @Test func decoderMatchesTrainingForward() throws {
        let config = try tinyConfig(type: "qwen2", tied: true, scaling: false)
        let model = randomModel(config, seed: 3)
        let T = 9
        let tokens: [Int32] = (0..<T).map { Int32(($0 * 11 + 2) % config.vocabSize) }
        let pass = TrainingPass(model: model, batch: 1, seq: T)
        pass.forward(tokens: tokens, targets: [Int32](repeating: -1, count: T))
        let V = config.vocabSize
        let decoder = Decoder(model: model, batch: 1, capacity: T, maxChunk: 4)
        decoder.step(tokens: Array(tokens[0..<5]))      // chunks of 4 + 1
        var worst: Float = 0
        func compare(_ t: Int) {
            for i in 0..<V { worst = max(worst, abs(decoder.logits.pointer[i] - pass.logits.pointer[t * V + i])) }
        }
        compare(4)
        for t in 5..<T {
            decoder.step(tokens: [tokens[t]])
            compare(t)
        }
        #expect(worst < 1e-4, "largest logit difference \(worst)")
    }

    @Test func batchedDecoderMatchesSingleSequences() throws {
        let config = try tinyConfig()
        let model = randomModel(config, seed: 5)
        let prompts: [[Int32]] = [[1, 2, 3, 4], [5, 6, 7, 8]]
        let batched = Decoder(model: model, batch: 2, capacity: 8)
        batched.step(tokens: prompts[0] + prompts[1])
        batched.step(tokens: [9, 10])
        for b in 0..<2 {
            let single = Decoder(model: model, batch: 1, capacity: 8)
            single.step(tokens: prompts[b])
            single.step(tokens: [b == 0 ? 9 : 10])
            let x = Array(batched.logits(of: b)), y = Array(single.logits(of: 0))
            #expect(zip(x, y).allSatisfy { abs($0 - $1) < 1e-5 })
        }
    }

    @Test func gradientsDoNotDependOnThreadCount() throws {
        let config = try tinyConfig()
        let model = randomModel(config, seed: 9)
        let tokens: [Int32] = (0..<16).map { Int32($0 % config.vocabSize) }
        let targets: [Int32] = (0..<16).map { Int32(($0 + 1) % config.vocabSize) }
        var results: [[Float]] = []
        let saved = ComputeThreads.count
        for threads in [1, 2] {
            ComputeThreads.set(threads)
            let pass = TrainingPass(model: model, batch: 2, seq: 8)
            let (_, n) = pass.forward(tokens: tokens, targets: targets)
            let g = FloatBuffer(count: model.layout.count)
            pass.backward(into: g, scale: 1 / Float(n))
            results.append(g.array())
        }
        ComputeThreads.set(saved)
        #expect(results[0] == results[1])
    }
}

@Suite struct OptimizerTests {
    @Test func adamWMatchesTheReferenceFormula() throws {
        let config = try tinyConfig()
        let layout = ParameterLayout(config: config)
        let params = FloatBuffer(count: layout.count), grads = FloatBuffer(count: layout.count)
        var rng = SplitMix64(seed: 1)
        for i in 0..<layout.count { params.pointer[i] = rng.nextGaussian(); grads.pointer[i] = rng.nextGaussian() }
        let p0 = params.array(), g = grads.array()
        let s = AdamWSettings(beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1)
        let opt = AdamW(layout: layout, settings: s)
        let lrs: [Float] = [1e-3, 5e-4]
        for lr in lrs { opt.update(params: params, grads: grads, lr: lr) }
        // Reference in Double, the torch.optim.AdamW recipe.
        let normIndex = layout.entry("model.norm.weight")!.offset
        let matIndex = layout.entry("model.layers.0.mlp.up_proj.weight")!.offset + 3
        for i in [normIndex, matIndex] {
            var p = Double(p0[i]), m = 0.0, v = 0.0
            let decays = i == matIndex
            for (t, lr) in lrs.enumerated() {
                let step = Double(t + 1)
                if decays { p *= 1 - Double(lr) * 0.1 }
                m = 0.9 * m + 0.1 * Double(g[i])
                v = 0.95 * v + 0.05 * Double(g[i]) * Double(g[i])
                let denom = (v.squareRoot() / (1 - pow(0.95, step)).squareRoot()) + 1e-8
                p -= Double(lr) / (1 - pow(0.9, step)) * m / denom
            }
            #expect(abs(p - Double(params.pointer[i])) < 1e-6)
        }
        #expect(opt.step == 2)
    }

    @Test func clippingScalesLikeTorch() {
        let g = FloatBuffer([3, 4])
        let norm = GradientClipping.clip(g, maxNorm: 1)
        #expect(norm == 5)
        #expect(abs(g.pointer[0] - Float(3 / (5 + 1e-6))) < 1e-7)
        let h = FloatBuffer([0.3, 0.4])
        GradientClipping.clip(h, maxNorm: 1)
        #expect(h.array() == [0.3, 0.4])
    }

    @Test func scheduleWarmsUpThenDecays() {
        let s = LearningRateSchedule(kind: .cosine, peak: 1e-3, warmup: 2, total: 8, minRatio: 0.1)
        #expect(s.rate(at: 0) == 5e-4)
        #expect(s.rate(at: 1) == 1e-3)
        #expect(abs(s.rate(at: 2) - 1e-3) < 1e-9)
        #expect(abs(s.rate(at: 8) - 1e-4) < 1e-9)
        let c = LearningRateSchedule(kind: .constant, peak: 2, warmup: 4, total: 10)
        #expect(c.rate(at: 1) == 1 && c.rate(at: 9) == 2)
    }

    @Test func samplerIsSeededAndGreedyIsArgmax() {
        var logits: [Float] = [0.1, 2, 0.5, 1.9, -1]
        logits.withUnsafeMutableBufferPointer { l in
            var greedy = Sampler(settings: SamplingSettings(), seed: 0)
            #expect(greedy.sample(l) == 1)
            var a = Sampler(settings: SamplingSettings(temperature: 1, topK: 3, topP: 0.9), seed: 42)
            var b = Sampler(settings: SamplingSettings(temperature: 1, topK: 3, topP: 0.9), seed: 42)
            let xs = (0..<50).map { _ in a.sample(l) }, ys = (0..<50).map { _ in b.sample(l) }
            #expect(xs == ys)
            #expect(Set(xs).isSubset(of: [1, 3, 2]))
            var top1 = Sampler(settings: SamplingSettings(temperature: 1, topK: 1), seed: 3)
            #expect((0..<20).allSatisfy { _ in top1.sample(l) == 1 })
        }
    }
}

@Suite struct ConfigTests {
    @Test func rejectsUnsupportedModelTypeAndBadValues() {
        #expect(throws: ModelError.self) { try ModelConfig(data: Data(#"{"model_type":"gpt2"}"#.utf8), source: "x/config.json") }
        #expect(thrownMessage { _ = try ModelConfig(data: Data(#"{"model_type":"gpt2"}"#.utf8), source: "x/config.json") }?.contains("unsupported model_type \"gpt2\"") == true)
        #expect(thrownMessage { _ = try ModelConfig(data: Data("{not json".utf8), source: "x/config.json") }?.contains("x/config.json: not valid JSON") == true)
        let missing = #"{"model_type":"llama","vocab_size":10,"hidden_size":8,"num_hidden_layers":1,"num_attention_heads":2}"#
        #expect(thrownMessage { _ = try ModelConfig(data: Data(missing.utf8), source: "c.json") }?.contains("missing \"intermediate_size\"") == true)
    }

    @Test func roundTripsUnknownKeysAndRopeParameters() throws {
        let json = #"""
        {"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":12,"num_hidden_layers":2,
         "num_attention_heads":2,"num_key_value_heads":1,"custom_key":[1,2,{"a":true}],
         "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":32.0,"low_freq_factor":1.0,
         "high_freq_factor":4.0,"original_max_position_embeddings":8192}}
        """#
        let c = try ModelConfig(data: Data(json.utf8), source: "c.json")
        #expect(c.ropeTheta == 500000)
        #expect(c.ropeScaling?.factor == 32)
        #expect(c.headDim == 4 && c.numKeyValueHeads == 1)
        let again = try ModelConfig(data: c.jsonData(), source: "again")
        #expect(again.raw["custom_key"] == c.raw["custom_key"])
    }
}

/// The description of the error `body` throws, or nil when it does not throw.
func thrownMessage(_ body: () throws -> Void) -> String? {
    do { try body(); return nil } catch { return "\(error)" }
}
