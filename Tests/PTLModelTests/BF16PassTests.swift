import Foundation
import PTLTensor
import PTLTestSupport
import Testing
@testable import PTLModel

/// A model big enough that every bf16 product is split into several column blocks.
func mediumConfig(type: String = "llama") throws -> ModelConfig {
    try ModelConfig(modelType: type, vocabSize: 1024, hiddenSize: 128, intermediateSize: 384, numHiddenLayers: 2,
                    numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 32, rmsNormEps: 1e-5, ropeTheta: 10000,
                    ropeScaling: nil, maxPositionEmbeddings: 256, tieWordEmbeddings: type == "qwen2")
}

func gradient(_ model: Model, precision: Precision, batch: Int, seq: Int, seed: UInt64) -> (loss: Double, grads: [Float], logits: [Float]) {
    var rng = SplitMix64(seed: seed)
    let V = UInt64(model.config.vocabSize)
    let tokens = (0..<(batch * seq)).map { _ in Int32(rng.next() % V) }
    let targets = (0..<(batch * seq)).map { i in i % seq == seq - 1 ? -1 : Int32(rng.next() % V) }
    let pass = TrainingPass(model: model, batch: batch, seq: seq)
    pass.precision = precision
    let (sum, n) = pass.forward(tokens: tokens, targets: targets)
    let logits = pass.logits.array(0..<(batch * seq * model.config.vocabSize))
    let g = FloatBuffer(count: model.layout.count)
    pass.backward(into: g, scale: 1 / Float(n))
    return (sum / Double(n), g.array(), logits)
}

/// ‖a − b‖ / ‖b‖.
func normRelativeError(_ a: ArraySlice<Float>, _ b: ArraySlice<Float>) -> Double {
    var d = 0.0, s = 0.0
    for (x, y) in zip(a, b) { d += Double(x - y) * Double(x - y); s += Double(y) * Double(y) }
    return (d / max(s, 1e-300)).squareRoot()
}

@Suite(.enabled(if: BF16Support.available, "needs AVX512-BF16 or AMX"))
struct BF16PassTests {
    /// The step's gradients are the same bits at 1, 2 and 3 threads: a worker's result does not
    /// depend on how many threads it runs.
    @Test(arguments: ["llama", "qwen2"])
    func gradientsDoNotDependOnThreadCount(type: String) throws {
        let model = randomModel(try mediumConfig(type: type), seed: 21, std: 0.05)
        let saved = ComputeThreads.count
        defer { ComputeThreads.set(saved) }
        var results: [[Float]] = []
        for threads in [1, 2, 3] {
            ComputeThreads.set(threads)
            results.append(gradient(model, precision: .bf16, batch: 4, seq: 64, seed: 5).grads)
        }
        #expect(results[0] == results[1] && results[1] == results[2])
    }

    /// bf16 matmuls against the fp32 pass on the same model: bf16 rounds each matmul input to 8
    /// significant bits (relative 2⁻⁹ ≈ 0.2 %), so logits and the loss agree to well under 1 %
    /// and every gradient tensor to a few percent (the measured worst is printed).
    @Test(arguments: ["llama", "qwen2"])
    func staysCloseToTheFP32Pass(type: String) throws {
        let model = randomModel(try mediumConfig(type: type), seed: 22, std: 0.05)
        let half = gradient(model, precision: .bf16, batch: 2, seq: 48, seed: 6)
        let full = gradient(model, precision: .fp32, batch: 2, seq: 48, seed: 6)
        let lossError = abs(half.loss - full.loss) / full.loss
        let logitsError = normRelativeError(half.logits[...], full.logits[...])
        var worst = (name: "", error: 0.0)
        for e in model.layout.entries {
            let err = normRelativeError(half.grads[e.range], full.grads[e.range])
            if err > worst.error { worst = (e.name, err) }
        }
        print("bf16 vs fp32 (\(type)): loss \(lossError), logits \(logitsError), worst gradient \(worst.error) (\(worst.name))")
        #expect(lossError < 2e-3)
        #expect(logitsError < 1e-2)
        #expect(worst.error < 5e-2)
    }

    /// The bf16 copy of the weights is made once per model version and again after a change.
    @Test func weightCopyFollowsTheModelVersion() throws {
        let model = randomModel(try mediumConfig(), seed: 23, std: 0.05)
        let a = model.bf16Parameters()
        let old = a.floats(0..<64)
        #expect(model.bf16Parameters() === a && model.bf16Parameters().floats(0..<64) == old)
        let before = gradient(model, precision: .bf16, batch: 1, seq: 16, seed: 7).loss
        for i in 0..<model.parameters.count { model.parameters.pointer[i] *= 0.5 }
        model.parametersChanged()
        let b = model.bf16Parameters()   // the same buffer, written again
        // A power-of-two scale commutes with rounding to bf16: the new copy is exactly half the old.
        #expect(b.floats(0..<64) == old.map { $0 * 0.5 })
        let after = gradient(model, precision: .bf16, batch: 1, seq: 16, seed: 7).loss
        #expect(before != after)
    }

    /// The bf16 decoder (oneDNN for the prompt and batches, the VDPBF16PS matvec at batch 1)
    /// against the fp32 one, step by step, and batched against single.
    @Test(arguments: ["llama", "qwen2"])
    func decoderStaysCloseToFP32AndBatchesAgree(type: String) throws {
        let model = randomModel(try mediumConfig(type: type), seed: 24, std: 0.05)
        let prompts: [[Int32]] = [(0..<40).map { Int32($0 * 7 % 1024) }, (0..<40).map { Int32($0 * 13 % 1024) }]
        func run(_ precision: Precision, batch: Int) -> [[Float]] {
            let d = Decoder(model: model, batch: batch, capacity: 64, maxChunk: 64, precision: precision)
            d.step(tokens: Array(prompts[0..<batch].joined()))
            var out: [[Float]] = [Array(d.logits(of: 0))]
            for step in 0..<4 {
                d.step(tokens: (0..<batch).map { Int32(($0 + 1) * (step + 3)) })
                out.append(Array(d.logits(of: 0)))
            }
            return out
        }
        let half = run(.bf16, batch: 1), full = run(.fp32, batch: 1), batched = run(.bf16, batch: 2)
        for i in half.indices {
            let e = normRelativeError(half[i][...], full[i][...]), eb = normRelativeError(batched[i][...], half[i][...])
            #expect(e < 1e-2, "step \(i): bf16 logits \(e) from fp32")
            #expect(eb < 1e-2, "step \(i): batch 2 \(eb) from batch 1")
        }
    }
}
