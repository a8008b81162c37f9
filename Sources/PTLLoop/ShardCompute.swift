import CPTLKernels
import Foundation
import PTLData
import PTLEval
import PTLModel
import PTLTensor
import PTLTokenizer

/// What one shard's computation returns besides its tensors.
public struct ShardOutput: Sendable {
    public var lossSum: Double
    public var tokens: Int
    public var examples: Int
    public var seconds: Double
}

/// The computation of one shard — a gradient, statistics, or greedy answers — the same code in
/// this process (`LocalBackend`) and on a worker, so both give the same bits. It keeps one
/// training pass and one gradient buffer across calls (a new shape of the same model reuses
/// them when it fits): a tuning step then allocates nothing model-sized.
///
/// Every input is checked before a kernel sees it (token ids against the vocabulary, lengths,
/// branch scales), with a thrown `LoopError` naming what is wrong: on a worker these come from
/// the network.
public final class ShardCompute: @unchecked Sendable {
    let lock = NSLock()
    var trainingPass: TrainingPass?
    /// The teacher's pass (distillation): its logits for the shard, kept across calls.
    var teacherPass: TrainingPass?
    var grads: FloatBuffer?

    /// The longest sequence a shard may hold (tokens).
    public static let maxSequenceLength = 1 << 16
    /// The most tokens a shard may hold.
    public static let maxShardTokens = 1 << 22

    public init() {}

    /// Checks a shard's sequences against `model`: non-empty, bounded, ids in the vocabulary.
    public static func validate(_ sequences: [[Int]], model: Model, seqLen: Int) throws {
        guard !sequences.isEmpty else { throw LoopError("a shard without sequences") }
        guard seqLen >= 0, seqLen <= maxSequenceLength else { throw LoopError("seq_len \(seqLen) is outside 0…\(maxSequenceLength)") }
        var total = 0
        let vocab = model.config.vocabSize
        for (i, s) in sequences.enumerated() {
            guard s.count <= maxSequenceLength else { throw LoopError("sequence \(i) has \(s.count) tokens (at most \(maxSequenceLength))") }
            total += s.count
            guard total <= maxShardTokens else { throw LoopError("the shard holds more than \(maxShardTokens) tokens") }
            try validateTokenIDs(s, vocabularySize: vocab, source: "sequence \(i) of the shard")
        }
    }

    /// Checks branch scales: one finite value per block.
    public static func validate(branchScale: [Float]?, model: Model) throws {
        guard let a = branchScale else { return }
        guard a.count == model.config.numHiddenLayers, a.allSatisfy({ $0.isFinite }) else {
            throw LoopError("branch_scale needs one finite value per block (\(model.config.numHiddenLayers)), got \(a.count)")
        }
    }

    /// A pass for a (batch, seq) shard on `model`: the kept one reshaped when it fits, else one
    /// with room for rows of the phase's longest sequence `seqLen` (rounded up as batches are).
    func pass(model: Model, batch: Int, seq: Int, seqLen: Int) -> TrainingPass {
        if let p = trainingPass, p.model === model, p.fits(batch: batch, seq: seq) {
            p.reshape(batch: batch, seq: seq)
            return p
        }
        trainingPass = nil   // free the old buffers before allocating new ones
        let p = TrainingPass(model: model, capacity: (batch, max(seq, (seqLen + 7) / 8 * 8)))
        p.reshape(batch: batch, seq: seq)
        trainingPass = p
        return p
    }

    /// A zeroed gradient buffer of `count` floats: the last one when nothing else holds it any
    /// more (a worker's socket keeps a result's buffer until it has been sent), else a new one.
    public func gradientBuffer(count: Int) -> FloatBuffer {
        lock.lock(); defer { lock.unlock() }
        if grads?.count == count, isKnownUniquelyReferenced(&grads!) { grads!.zero(); return grads! }
        let g = FloatBuffer(count: count)
        grads = g
        return g
    }

    /// The teacher's logits for `batch`, from a pass kept for it (sized like the student's).
    func teacherLogits(_ teacher: Teacher, batch: TokenBatch, seqLen: Int, precision: Precision) -> FloatBuffer {
        let tp: TrainingPass
        if let p = teacherPass, p.model === teacher.model, p.fits(batch: batch.batch, seq: batch.seq) {
            tp = p
        } else {
            teacherPass = nil
            tp = TrainingPass(model: teacher.model, capacity: (batch.batch, max(batch.seq, (seqLen + 7) / 8 * 8)))
            teacherPass = tp
        }
        tp.reshape(batch: batch.batch, seq: batch.seq)
        tp.precision = precision
        _ = OpProfiler.time("teacher.fwd") { tp.forward(tokens: batch.tokens, targets: batch.targets) }
        return tp.logits
    }

    func forward(model: Model, sequences: [[Int]], seqLen: Int, branchScale: [Float]?, precision: Precision,
                 teacher: Teacher? = nil, stopAfterBlock: Int? = nil) throws -> (TrainingPass, ShardOutput) {
        try Self.validate(sequences, model: model, seqLen: seqLen)
        try Self.validate(branchScale: branchScale, model: model)
        try teacher?.check(student: model)
        let batch = TokenBatch(sequences: sequences, multiple: 8)
        let t0 = Date()
        let distillation = teacher.map {
            Distillation(teacherLogits: teacherLogits($0, batch: batch, seqLen: seqLen, precision: precision),
                         temperature: $0.temperature, kdWeight: $0.kdWeight)
        }
        let p = pass(model: model, batch: batch.batch, seq: batch.seq, seqLen: seqLen)
        p.branchScale = branchScale
        p.precision = precision
        p.distillation = distillation
        p.stopAfterBlock = stopAfterBlock
        p.grpo = nil
        let (sum, count) = p.forward(tokens: batch.tokens, targets: batch.targets)
        return (p, ShardOutput(lossSum: sum, tokens: count, examples: sequences.count, seconds: Date().timeIntervalSince(t0)))
    }

    /// Adds the gradient of `lossScale × Σ losses` of `sequences` into `grads` (zeroed by the
    /// caller): next-token cross-entropy, or with a `teacher` distillation's loss against the
    /// teacher's logits for the same positions.
    public func gradient(model: Model, sequences: [[Int]], seqLen: Int, lossScale: Float, branchScale: [Float]?,
                         precision: Precision, teacher: Teacher? = nil, into grads: FloatBuffer) throws -> ShardOutput {
        lock.lock(); defer { lock.unlock() }
        guard grads.count == model.layout.count else { throw LoopError("gradient buffer of \(grads.count) floats for \(model.layout.count) parameters") }
        guard lossScale.isFinite else { throw LoopError("loss scale \(lossScale) is not finite") }
        let t0 = Date()
        var (p, out) = try forward(model: model, sequences: sequences, seqLen: seqLen, branchScale: branchScale, precision: precision,
                                   teacher: teacher)
        p.backward(into: grads, scale: lossScale)
        out.seconds = Date().timeIntervalSince(t0)
        return out
    }

    /// Activation statistics and the loss sum of `sequences`.
    public func statistics(model: Model, sequences: [[Int]], seqLen: Int, branchScale: [Float]?, precision: Precision) throws
        -> (ShardOutput, ActivationStatistics) {
        lock.lock(); defer { lock.unlock() }
        let (p, out) = try forward(model: model, sequences: sequences, seqLen: seqLen, branchScale: branchScale, precision: precision)
        return (out, p.statistics())
    }

    /// FFN Gram matrices of `sequences` (least-squares reconstruction).
    public func ffnGram(model: Model, sequences: [[Int]], seqLen: Int, branchScale: [Float]?, precision: Precision) throws -> (ShardOutput, FFNGram) {
        lock.lock(); defer { lock.unlock() }
        let (p, out) = try forward(model: model, sequences: sequences, seqLen: seqLen, branchScale: branchScale, precision: precision)
        return (out, p.ffnGram())
    }

    /// SparseGPT's Hessians of block `block`'s linear layers over `sequences`.
    public func layerHessians(model: Model, sequences: [[Int]], seqLen: Int, block: Int, branchScale: [Float]?,
                              precision: Precision) throws -> (ShardOutput, LayerHessians) {
        lock.lock(); defer { lock.unlock() }
        guard block >= 0, block < model.config.numHiddenLayers else {
            throw LoopError("layer Hessians: block \(block) of a \(model.config.numHiddenLayers)-block model")
        }
        // Blocks after `block` do not change its inputs: the pass stops after it (no logits).
        let (p, out) = try forward(model: model, sequences: sequences, seqLen: seqLen, branchScale: branchScale, precision: precision,
                                   stopAfterBlock: block)
        return (out, try p.layerHessians(block: block))
    }

    /// Greedy answers to a shard of eval records (JSONL), counted.
    public static func evaluate(model: Model, tokenizer: Tokenizer, jsonl: String, maxNewTokens: Int, batchSize: Int,
                                precision: Precision) throws -> (EvalCounts, seconds: Double) {
        let (counts, _, seconds) = try answers(model: model, tokenizer: tokenizer, jsonl: jsonl, maxNewTokens: maxNewTokens,
                                               batchSize: batchSize, precision: precision)
        return (counts, seconds)
    }

    /// Greedy answers to a shard of records (JSONL): counted, and the generated texts in order.
    public static func answers(model: Model, tokenizer: Tokenizer, jsonl: String, maxNewTokens: Int, batchSize: Int,
                               precision: Precision) throws -> (EvalCounts, texts: [String], seconds: Double) {
        guard (1...65536).contains(maxNewTokens), (1...4096).contains(batchSize) else {
            throw LoopError("eval shard: max_new_tokens \(maxNewTokens) or batch size \(batchSize) out of range")
        }
        try tokenizer.validate(modelVocabularySize: model.config.vocabSize)
        let records = try Corpus.parse(Data(jsonl.utf8), source: "eval shard").records
        var settings = EvalSettings()
        settings.maxNewTokens = maxNewTokens
        settings.batchSize = batchSize
        settings.precision = precision
        let t0 = Date()
        let (report, predictions) = Evaluator.run(model: model, tokenizer: tokenizer, records: records, settings: settings)
        return (EvalCounts(correct: report.correct, total: report.total, generatedTokens: report.generatedTokens,
                           perExample: predictions.map(\.correct)), predictions.map(\.generated), Date().timeIntervalSince(t0))
    }
}

/// The shard-order reduce every backend uses: Σ over shards in Double, rounded once.
public enum ShardReduce {
    /// `out[i] = Float(Σ_s shard_s[i])`, adding in shard order; each pointer holds `out.count`
    /// little-endian floats. Throws when an entry of the sum is not finite.
    public static func sum(_ shards: [UnsafeRawPointer?], into out: FloatBuffer, what: String) throws {
        let n = out.count
        guard !shards.isEmpty else { throw LoopError("\(what): nothing to reduce") }
        let bad = shards.withUnsafeBufferPointer { ptl_reduce_f32_shards(out.pointer, $0.baseAddress, shards.count, n) }
        guard bad == n else {
            throw LoopError("\(what): the reduced gradient has a NaN or infinite entry (index \(bad)); the weights were not updated")
        }
    }
}

/// One optimizer step on reduced gradients: clip to `clip`, then AdamW at `lr`.
public enum OptimizerStep {
    /// Returns the gradient norm before clipping.
    @discardableResult
    public static func apply(model: Model, optimizer: AdamW, grads: FloatBuffer, lr: Float, clip: Float) -> Double {
        let norm = GradientClipping.clip(grads, maxNorm: clip)
        optimizer.update(params: model.parameters, grads: grads, lr: lr)
        model.parametersChanged()
        return norm
    }
}
