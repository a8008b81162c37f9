import Foundation
import PTLEval
import PTLModel
import PTLTensor
import PTLTokenizer

/// The loop's work in this process, on its compute threads: the same shards, the same
/// per-shard code (`ShardCompute`) and the same shard-order reduce as the cluster, so a run gives
/// the model a cluster run gives, bit for bit (the kernels' results do not depend on the thread
/// count).
public final class LocalBackend: ComputeBackend {
    let tokenizer: Tokenizer
    let compute = ShardCompute()
    /// One gradient buffer per shard, kept across steps.
    var shardGrads: [FloatBuffer] = []
    public var precision: Precision = .fp32
    public var teacher: Teacher?
    /// What this machine runs for `precision`.
    var computed: Precision { precision.resolved().precision }

    public init(tokenizer: Tokenizer, precision: Precision = .fp32) {
        self.tokenizer = tokenizer
        self.precision = precision
    }

    /// The longest sequence of a phase: every shard's pass is sized for it, as on workers.
    static func seqLen(_ sequences: [[Int]]) -> Int { sequences.map(\.count).max() ?? 0 }

    public func gradients(model: Model, batch: [[Int]], shards: Int, branchScale: [Float]?, key: WorkKey,
                          into grads: FloatBuffer) throws -> GradientResult {
        let lossScale = Float(try Shards.lossScale(batch, shards: shards, key: key))
        let n = model.layout.count
        if shardGrads.count != shards || shardGrads.first?.count != n {
            shardGrads = []   // free the old ones first
            shardGrads = (0..<shards).map { _ in FloatBuffer(count: n) }
        }
        let longest = Self.seqLen(batch)
        var lossSum = 0.0, tokens = 0, seconds = 0.0
        for s in 0..<shards {
            let g = shardGrads[s]
            g.zero()
            let out = try compute.gradient(model: model, sequences: Array(batch[Shards.range(s, of: batch.count, shards: shards)]),
                                           seqLen: longest, lossScale: lossScale, branchScale: branchScale,
                                           precision: computed, teacher: teacher, into: g)
            lossSum += out.lossSum
            tokens += out.tokens
            seconds += out.seconds
        }
        try ShardReduce.sum(shardGrads.map { UnsafeRawPointer($0.pointer) }, into: grads, what: "step \(key.step)")
        return GradientResult(lossSum: lossSum, tokens: tokens, computeSeconds: seconds)
    }

    public func statistics(model: Model, sequences: [[Int]], shards: Int, branchScale: [Float]?, key: WorkKey) throws
        -> (statistics: ActivationStatistics, loss: Double) {
        try Shards.check(shards, items: sequences.count, what: "statistics of \(key)")
        let c = model.config
        var total = ActivationStatistics(layers: c.numHiddenLayers, intermediate: c.intermediateSize, hidden: c.hiddenSize)
        var lossSum = 0.0
        let longest = Self.seqLen(sequences)
        for s in 0..<shards {
            var (out, stats) = try compute.statistics(model: model, sequences: Array(sequences[Shards.range(s, of: sequences.count, shards: shards)]),
                                                      seqLen: longest, branchScale: branchScale, precision: computed)
            stats.tokens = out.tokens
            total.add(stats)
            lossSum += out.lossSum
        }
        return (total, lossSum / Double(max(1, total.tokens)))
    }

    public func ffnGram(model: Model, sequences: [[Int]], shards: Int, branchScale: [Float]?, key: WorkKey) throws -> FFNGram {
        try Shards.check(shards, items: sequences.count, what: "FFN Gram matrices of \(key)")
        var total = FFNGram(layers: model.config.numHiddenLayers, intermediate: model.config.intermediateSize)
        let longest = Self.seqLen(sequences)
        for s in 0..<shards {
            let (_, g) = try compute.ffnGram(model: model, sequences: Array(sequences[Shards.range(s, of: sequences.count, shards: shards)]),
                                             seqLen: longest, branchScale: branchScale, precision: computed)
            try total.add(g)
        }
        return total
    }

    public func layerHessians(model: Model, sequences: [[Int]], shards: Int, block: Int, branchScale: [Float]?, key: WorkKey) throws
        -> LayerHessians {
        try Shards.check(shards, items: sequences.count, what: "layer Hessians of \(key)")
        var total = LayerHessians(block: block, config: model.config)
        let longest = Self.seqLen(sequences)
        for s in 0..<shards {
            let (_, h) = try compute.layerHessians(model: model, sequences: Array(sequences[Shards.range(s, of: sequences.count, shards: shards)]),
                                                   seqLen: longest, block: block, branchScale: branchScale, precision: computed)
            try total.add(h)
        }
        return total
    }

    public func traces(model: Model, jsonlLines: [String], shards: Int, maxNewTokens: Int, batchSize: Int, key: WorkKey) throws
        -> (texts: [String], counts: EvalCounts) {
        try Shards.check(shards, items: jsonlLines.count, what: "traces of \(key)")
        var counts = EvalCounts(), texts: [String] = []
        for s in 0..<shards {
            let part = jsonlLines[Shards.range(s, of: jsonlLines.count, shards: shards)]
            let (c, t, _) = try ShardCompute.answers(model: model, tokenizer: tokenizer, jsonl: part.joined(separator: "\n"),
                                                    maxNewTokens: maxNewTokens, batchSize: batchSize, precision: computed)
            counts.add(c)
            texts += t
        }
        return (texts, counts)
    }

    public func evaluate(model: Model, jsonlLines: [String], shards: Int, maxNewTokens: Int, batchSize: Int, key: WorkKey) throws
        -> EvalCounts {
        var counts = EvalCounts()
        for s in 0..<shards {
            let part = jsonlLines[Shards.range(s, of: jsonlLines.count, shards: shards)]
            counts.add(try ShardCompute.evaluate(model: model, tokenizer: tokenizer, jsonl: part.joined(separator: "\n"),
                                                 maxNewTokens: maxNewTokens, batchSize: batchSize, precision: computed).0)
        }
        return counts
    }
}

/// Decode speed as the report quotes it: greedy, batch 1, on one thread, the best of `reps`
/// runs. The thread count is the process's, so it is set for the measurement and restored.
public enum SpeedMeasurement {
    public static func decodeTokensPerSecond(model: Model, promptTokens: Int, newTokens: Int, reps: Int, precision: Precision = .fp32) -> Double {
        let threads = ComputeThreads.count
        ComputeThreads.set(1)
        defer { ComputeThreads.set(threads) }
        return DecodeSpeed.tokensPerSecond(model: model, batch: 1, promptTokens: promptTokens, newTokens: newTokens, reps: reps, best: true,
                                         precision: precision)
    }
}
