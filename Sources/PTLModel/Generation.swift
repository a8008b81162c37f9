import PTLTensor

/// Generates tokens after a prompt with a KV-cached decoder.
public enum Generation {
    /// Returns up to `maxNewTokens` ids following `prompt`, stopping after any id in `stop`
    /// (the stop id is included). Deterministic for a given `seed`.
    public static func generate(model: Model, prompt: [Int], maxNewTokens: Int,
                                sampling: SamplingSettings = SamplingSettings(), seed: UInt64 = 0,
                                stop: Set<Int> = [], precision: Precision = .fp32) -> [Int] {
        precondition(!prompt.isEmpty, "the prompt needs at least one token")
        guard maxNewTokens > 0 else { return [] }
        let decoder = Decoder(model: model, batch: 1, capacity: prompt.count + maxNewTokens, precision: precision)
        var sampler = Sampler(settings: sampling, seed: seed)
        decoder.step(tokens: prompt.map { Int32($0) })
        var out: [Int] = []
        while true {
            let next = sampler.sample(decoder.logits(of: 0))
            out.append(next)
            if stop.contains(next) || out.count == maxNewTokens { break }
            decoder.step(tokens: [Int32(next)])
        }
        return out
    }
}
