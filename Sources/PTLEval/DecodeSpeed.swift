import PTLTensor
import Foundation
import PTLModel

/// Measured greedy decode speed: a random prompt, then `newTokens` KV-cached steps; the median
/// of `reps` timed runs after one warm-up run (or the fastest, `best`: steadier on a noisy machine
/// when comparing two models).
public enum DecodeSpeed {
    public static func tokensPerSecond(model: Model, batch b: Int = 1, promptTokens: Int = 64, newTokens: Int = 128,
                                       reps: Int = 3, seed: UInt64 = 1, best: Bool = false, precision: Precision = .fp32) -> Double {
        var rng = SplitMix64(seed: seed)
        let decoder = Decoder(model: model, batch: b, capacity: promptTokens + newTokens, maxChunk: promptTokens, precision: precision)
        let prompt = (0..<(b * promptTokens)).map { _ in Int32(rng.next() % UInt64(model.config.vocabSize)) }
        var next = [Int32](repeating: 0, count: b)
        var times: [Double] = []
        for _ in 0..<(reps + 1) {
            decoder.reset()
            decoder.step(tokens: prompt)
            let t0 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<newTokens {
                for r in 0..<b { next[r] = Int32(Sampler.argmax(decoder.logits(of: r))) }
                decoder.step(tokens: next)
            }
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        let sorted = times.dropFirst().sorted()
        return Double(b * newTokens) / (best ? sorted[0] : sorted[reps / 2])
    }
}
