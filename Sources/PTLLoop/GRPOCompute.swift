import Foundation
import PTLData
import PTLEval
import PTLModel
import PTLTensor
import PTLTokenizer

/// One sampled completion of a rollout: the prompt's and the completion's token ids (the EOS
/// included when it ended the answer) and the completion's text as the evaluator cuts it.
public struct Rollout: Sendable, Equatable {
    public var promptIds: [Int]
    public var completionIds: [Int]
    public var text: String
    public init(promptIds: [Int], completionIds: [Int], text: String) {
        self.promptIds = promptIds; self.completionIds = completionIds; self.text = text
    }
}

/// A GRPO gradient's inputs for a set of completions: each sequence is prompt + completion, only
/// the completion's tokens are scored, each with its completion's advantage.
public struct GRPOBatch: Sendable, Equatable {
    public var sequences: [[Int]]
    public var promptLengths: [Int]
    public var advantages: [Float]
    public init(sequences: [[Int]], promptLengths: [Int], advantages: [Float]) {
        self.sequences = sequences; self.promptLengths = promptLengths; self.advantages = advantages
    }

    /// Completion tokens scored (what the token-mean divides by).
    public var completionTokens: Int { zip(sequences, promptLengths).reduce(0) { $0 + max(0, $1.0.count - $1.1) } }

    /// Checks the batch fills `shards` and scores a token; returns the tokens scored.
    public func checkedTokens(shards: Int, key: WorkKey) throws -> Int {
        try Shards.check(shards, items: sequences.count, what: "GRPO gradients of \(key)")
        guard completionTokens > 0 else { throw LoopError("GRPO gradients of \(key): no completion token to score") }
        return completionTokens
    }

    /// The batch of shard `s` of `shards` (whole completions; `Shards.range`).
    public func shard(_ s: Int, of shards: Int) -> GRPOBatch {
        let r = Shards.range(s, of: sequences.count, shards: shards)
        return GRPOBatch(sequences: Array(sequences[r]), promptLengths: Array(promptLengths[r]), advantages: Array(advantages[r]))
    }
}

/// What a GRPO gradient returns besides the gradient: the token sums of its loss, clipped ratios and KL.
public struct GRPOGradientResult: Sendable, Equatable {
    public var sums: GRPOSums
    public var computeSeconds: Double
    public init(sums: GRPOSums, computeSeconds: Double) { self.sums = sums; self.computeSeconds = computeSeconds }
}

extension ShardCompute {
    /// Samples `samples` completions of every record of `jsonl` (question/answer lines), the
    /// j-th completion of record i drawn from `seeds[i · samples + j]` — a retried shard samples
    /// the same tokens wherever it runs. Returned in that order.
    public static func rollouts(model: Model, tokenizer: Tokenizer, jsonl: String, samples: Int, seeds: [UInt64],
                                sampling: SamplingSettings, maxNewTokens: Int, batchSize: Int, precision: Precision) throws -> [Rollout] {
        guard (1...65536).contains(maxNewTokens), (1...4096).contains(batchSize) else {
            throw LoopError("rollout shard: max_new_tokens \(maxNewTokens) or batch size \(batchSize) out of range")
        }
        guard (1...1024).contains(samples) else { throw LoopError("rollout shard: \(samples) samples per prompt (1…1024)") }
        guard sampling.temperature.isFinite, sampling.temperature >= 0, sampling.temperature <= 100,
              sampling.topP.isFinite, sampling.topP > 0, sampling.topP <= 1, sampling.topK >= 0 else {
            throw LoopError("rollout shard: sampling settings out of range (temperature \(sampling.temperature), top-p \(sampling.topP), top-k \(sampling.topK))")
        }
        let records = try Corpus.parse(Data(jsonl.utf8), source: "rollout shard").records
        guard seeds.count == records.count * samples else {
            throw LoopError("rollout shard: \(seeds.count) seeds for \(records.count) prompts × \(samples) samples")
        }
        try tokenizer.validate(modelVocabularySize: model.config.vocabSize)
        var settings = EvalSettings()
        settings.maxNewTokens = maxNewTokens
        settings.batchSize = batchSize
        settings.precision = precision
        settings.sampling = sampling
        let repeated = records.flatMap { [CorpusRecord](repeating: $0, count: samples) }
        let (_, predictions) = Evaluator.run(model: model, tokenizer: tokenizer, records: repeated, settings: settings, seeds: seeds)
        return predictions.map { Rollout(promptIds: $0.promptIds, completionIds: $0.generatedIds, text: $0.generated) }
    }

    /// Adds `lossScale ×` the gradient of GRPO's summed per-token loss over `batch` into `grads`
    /// (on-policy: the sampling version is `model`, so ρ = 1 and the clip cannot bind; with β > 0
    /// the KL is to `reference`, whose logits are computed here for the shard).
    public func grpoGradient(model: Model, batch: GRPOBatch, seqLen: Int, lossScale: Float, settings: GRPOSettings,
                             reference: Teacher?, precision: Precision, into grads: FloatBuffer) throws -> (ShardOutput, GRPOSums) {
        lock.lock(); defer { lock.unlock() }
        guard grads.count == model.layout.count else { throw LoopError("gradient buffer of \(grads.count) floats for \(model.layout.count) parameters") }
        guard lossScale.isFinite, lossScale >= 0 else { throw LoopError("loss scale \(lossScale) is not finite") }
        guard batch.promptLengths.count == batch.sequences.count, batch.advantages.count == batch.sequences.count else {
            throw LoopError("GRPO shard: \(batch.sequences.count) sequences, \(batch.promptLengths.count) prompt lengths, \(batch.advantages.count) advantages")
        }
        for (i, (s, n)) in zip(batch.sequences, batch.promptLengths).enumerated() where n < 1 || n > s.count {
            throw LoopError("GRPO shard: sequence \(i) has \(s.count) tokens and a prompt of \(n)")
        }
        guard batch.advantages.allSatisfy({ $0.isFinite }) else { throw LoopError("GRPO shard: an advantage is not finite") }
        guard settings.clipLow.isFinite, settings.clipHigh.isFinite, settings.beta.isFinite,
              settings.clipLow >= 0, settings.clipLow < 1, settings.clipHigh >= 0, settings.beta >= 0 else {
            throw LoopError("GRPO shard: clip \(settings.clipLow)/\(settings.clipHigh) or β \(settings.beta) out of range")
        }
        try Self.validate(batch.sequences, model: model, seqLen: seqLen)
        if settings.beta > 0 {
            guard let reference else { throw LoopError("GRPO shard: β \(settings.beta) needs the reference model") }
            try reference.check(student: model)
        }
        let t0 = Date()
        var tb = TokenBatch(sequences: batch.sequences, multiple: 8)
        var rowAdvantages = [Float](repeating: 0, count: tb.batch * tb.seq)
        for (b, n) in batch.promptLengths.enumerated() {
            for t in 0..<min(n - 1, tb.seq) { tb.targets[b * tb.seq + t] = -1 }
            for t in 0..<tb.seq { rowAdvantages[b * tb.seq + t] = batch.advantages[b] }
        }
        var refLogp: [Float]? = nil
        if settings.beta > 0, let reference {
            let logits = teacherLogits(reference, batch: tb, seqLen: seqLen, precision: precision)
            var out = [Float](repeating: 0, count: tb.batch * tb.seq)
            tb.targets.withUnsafeBufferPointer { t in
                targetLogProbabilities(&out, logits: logits.pointer, targets: t.baseAddress!, rows: tb.batch * tb.seq, vocab: model.config.vocabSize)
            }
            refLogp = out
        }
        let p = pass(model: model, batch: tb.batch, seq: tb.seq, seqLen: seqLen)
        p.branchScale = nil
        p.precision = precision
        p.distillation = nil
        p.stopAfterBlock = nil
        p.grpo = GRPORows(oldLogp: nil, refLogp: refLogp, advantages: rowAdvantages, settings: settings)
        defer { p.grpo = nil }
        let (sum, count) = p.forward(tokens: tb.tokens, targets: tb.targets)
        let sums = p.grpoSums
        p.backward(into: grads, scale: lossScale)
        return (ShardOutput(lossSum: sum, tokens: count, examples: batch.sequences.count, seconds: Date().timeIntervalSince(t0)), sums)
    }
}

extension LocalBackend {
    public func rollouts(model: Model, jsonlLines: [String], samples: Int, seeds: [UInt64], shards: Int, sampling: SamplingSettings,
                         maxNewTokens: Int, batchSize: Int, key: WorkKey) throws -> [Rollout] {
        try Shards.check(shards, items: jsonlLines.count, what: "rollouts of \(key)")
        guard seeds.count == jsonlLines.count * samples else { throw LoopError("rollouts of \(key): \(seeds.count) seeds for \(jsonlLines.count) × \(samples)") }
        var out: [Rollout] = []
        for s in 0..<shards {
            let r = Shards.range(s, of: jsonlLines.count, shards: shards)
            out += try ShardCompute.rollouts(model: model, tokenizer: tokenizer, jsonl: jsonlLines[r].joined(separator: "\n"), samples: samples,
                                             seeds: Array(seeds[(r.lowerBound * samples)..<(r.upperBound * samples)]), sampling: sampling,
                                             maxNewTokens: maxNewTokens, batchSize: batchSize, precision: computed)
        }
        return out
    }

    public func grpoGradients(model: Model, batch: GRPOBatch, shards: Int, settings: GRPOSettings, reference: Teacher?, key: WorkKey,
                              into grads: FloatBuffer) throws -> GRPOGradientResult {
        let tokens = try batch.checkedTokens(shards: shards, key: key)
        let n = model.layout.count
        if shardGrads.count != shards || shardGrads.first?.count != n {
            shardGrads = []
            shardGrads = (0..<shards).map { _ in FloatBuffer(count: n) }
        }
        let longest = Self.seqLen(batch.sequences)
        var sums = GRPOSums(), seconds = 0.0
        for s in 0..<shards {
            let g = shardGrads[s]
            g.zero()
            let (out, part) = try compute.grpoGradient(model: model, batch: batch.shard(s, of: shards), seqLen: longest, lossScale: 1 / Float(tokens),
                                                       settings: settings, reference: reference, precision: computed, into: g)
            sums.loss += part.loss; sums.count += part.count; sums.clipped += part.clipped; sums.kl += part.kl; sums.ratio += part.ratio
            seconds += out.seconds
        }
        try ShardReduce.sum(shardGrads.map { UnsafeRawPointer($0.pointer) }, into: grads, what: "GRPO step \(key.step)")
        return GRPOGradientResult(sums: sums, computeSeconds: seconds)
    }
}
