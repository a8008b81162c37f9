import PTLTensor
import Foundation

/// How the next token is chosen from logits.
public struct SamplingSettings: Sendable, Equatable {
    /// 0 means greedy (argmax).
    public var temperature: Float = 0
    /// Keep only the k most likely tokens (0 = off).
    public var topK: Int = 0
    /// Keep the smallest set of tokens whose probability reaches p (1 = off).
    public var topP: Float = 1
    public init(temperature: Float = 0, topK: Int = 0, topP: Float = 1) {
        self.temperature = temperature; self.topK = topK; self.topP = topP
    }
}

/// Picks tokens from logits: greedy, or temperature / top-k / top-p sampling from a seeded
/// generator, so the same seed gives the same tokens.
public struct Sampler: Sendable {
    public var settings: SamplingSettings
    var rng: SplitMix64
    private var order: [Int] = []
    private var probs: [Float] = []

    public init(settings: SamplingSettings, seed: UInt64) {
        self.settings = settings
        rng = SplitMix64(seed: seed)
    }

    /// The index of the largest logit (the first one on ties, like torch.argmax).
    public static func argmax(_ logits: UnsafeMutableBufferPointer<Float>) -> Int {
        var best = 0
        var bestValue = -Float.infinity
        for i in 0..<logits.count where logits[i] > bestValue {
            bestValue = logits[i]
            best = i
        }
        return best
    }

    /// Chooses the next token.
    public mutating func sample(_ logits: UnsafeMutableBufferPointer<Float>) -> Int {
        if settings.temperature <= 0 { return Sampler.argmax(logits) }
        let V = logits.count
        if probs.count != V { probs = [Float](repeating: 0, count: V); order = Array(0..<V) }
        var m = -Float.infinity
        for i in 0..<V where logits[i] > m { m = logits[i] }
        var sum: Float = 0
        for i in 0..<V {
            let e = Foundation.exp((logits[i] - m) / settings.temperature)
            probs[i] = e
            sum += e
        }
        for i in 0..<V { probs[i] /= sum }
        var candidates = V
        if settings.topK > 0 || settings.topP < 1 {
            for i in 0..<V { order[i] = i }
            let p = probs
            order.sort { p[$0] != p[$1] ? p[$0] > p[$1] : $0 < $1 }
            if settings.topK > 0 { candidates = min(candidates, settings.topK) }
            if settings.topP < 1 {
                var cum: Float = 0
                var keep = 0
                while keep < candidates {
                    cum += probs[order[keep]]
                    keep += 1
                    if cum >= settings.topP { break }
                }
                candidates = max(1, keep)
            }
            var mass: Float = 0
            for j in 0..<candidates { mass += probs[order[j]] }
            let u = rng.nextUniform() * mass
            var acc: Float = 0
            for j in 0..<candidates {
                acc += probs[order[j]]
                if u < acc { return order[j] }
            }
            return order[candidates - 1]
        }
        let u = rng.nextUniform()
        var acc: Float = 0
        for i in 0..<V {
            acc += probs[i]
            if u < acc { return i }
        }
        return Sampler.argmax(logits)
    }
}
