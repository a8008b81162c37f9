import Foundation
import PTLModel
import PTLTensor

/// Which piece of work a backend call belongs to. A cluster turns it into its task keys (a late
/// result of one measurement can never answer another); this process ignores it.
public struct WorkKey: Sendable, Equatable, CustomStringConvertible {
    /// The run's name (`ptl`, `prune-once`, … or `train`).
    public var run: String
    public var round: Int
    /// The optimizer step (tuning), or 0.
    public var step: Int
    /// Which measurement within the process (held-out loss, statistics, a trial cut), or 0 for
    /// tuning steps: unique per process.
    public var measurement: UInt64

    public init(run: String, round: Int = 0, step: Int = 0, measurement: UInt64 = 0) {
        self.run = run; self.round = round; self.step = step; self.measurement = measurement
    }

    public var description: String { "\(run) round \(round) step \(step) measurement \(measurement)" }
}

/// Gradient of a batch, reduced in shard order (`grads` holds it).
public struct GradientResult: Sendable {
    /// Σ of the per-token losses over the batch and the scored tokens.
    public var lossSum: Double
    public var tokens: Int
    /// Compute seconds spent on the shards (summed over workers or shards).
    public var computeSeconds: Double
    public var meanLoss: Double { lossSum / Double(max(1, tokens)) }

    public init(lossSum: Double, tokens: Int, computeSeconds: Double) {
        self.lossSum = lossSum; self.tokens = tokens; self.computeSeconds = computeSeconds
    }
}

/// The teacher of distillation: a model with the student's vocabulary, and the loss's knobs.
/// Gradients computed while a backend holds one are of `distillationForwardBackward`'s loss.
public struct Teacher: @unchecked Sendable {
    public let model: Model
    public let temperature: Float
    /// 1: distillation alone; below 1: w · T² · KL + (1 − w) · CE.
    public let kdWeight: Float

    /// Checks the knobs: 0 < T ≤ 100 and 0 < w ≤ 1, finite.
    public init(model: Model, temperature: Float, kdWeight: Float) throws {
        try Teacher.check(temperature: temperature, kdWeight: kdWeight)
        self.model = model; self.temperature = temperature; self.kdWeight = kdWeight
    }

    public static func check(temperature: Float, kdWeight: Float) throws {
        guard temperature.isFinite, temperature > 0, temperature <= 100 else {
            throw LoopError("distillation temperature \(temperature) is outside (0, 100]")
        }
        guard kdWeight.isFinite, kdWeight > 0, kdWeight <= 1 else { throw LoopError("distillation weight \(kdWeight) is outside (0, 1]") }
    }

    /// The teacher for a student: the same vocabulary, or a thrown error naming both.
    public func check(student: Model) throws {
        guard model.config.vocabSize == student.config.vocabSize else {
            throw LoopError("the teacher's vocabulary (\(model.config.vocabSize)) differs from the student's (\(student.config.vocabSize))")
        }
    }
}

/// Greedy evaluation of a set of problems.
public struct EvalCounts: Sendable, Equatable {
    public var correct: Int
    public var total: Int
    public var generatedTokens: Int
    /// Per problem, in the order given.
    public var perExample: [Bool]
    public var accuracy: Double { Double(correct) / Double(max(1, total)) }

    public init(correct: Int = 0, total: Int = 0, generatedTokens: Int = 0, perExample: [Bool] = []) {
        self.correct = correct; self.total = total; self.generatedTokens = generatedTokens; self.perExample = perExample
    }

    public mutating func add(_ o: EvalCounts) {
        correct += o.correct; total += o.total; generatedTokens += o.generatedTokens; perExample += o.perExample
    }
}

/// What the loop asks of the machines that compute: gradients of a batch, activation
/// statistics and held-out loss, greedy evaluation, decode speed. Work is cut into `shards`
/// contiguous shards (`Shards.range`) that do not depend on who computes them, and results are
/// added in shard order, so every backend gives the same bits for the same inputs.
public protocol ComputeBackend: AnyObject {
    /// The job's matmul arithmetic, which every phase follows (the loop sets it from its
    /// settings); a machine without bf16 products computes fp32 and says so.
    var precision: Precision { get set }

    /// The teacher of distillation: while set, `gradients` are of the distillation loss against
    /// its logits (workers hold it and compute its logits for their own shards); nil is
    /// cross-entropy. Statistics and held-out loss stay cross-entropy.
    var teacher: Teacher? { get set }

    /// Σ-loss gradients of `batch` (cross-entropy, or distillation's loss with a `teacher`), each shard's scaled by 1/(tokens of the whole batch), added
    /// in shard order in Double and rounded once into `grads`. Throws when the sum is not finite.
    func gradients(model: Model, batch: [[Int]], shards: Int, branchScale: [Float]?, key: WorkKey,
                   into grads: FloatBuffer) throws -> GradientResult

    /// Activation statistics and mean next-token loss (nats/token) of `sequences`.
    func statistics(model: Model, sequences: [[Int]], shards: Int, branchScale: [Float]?, key: WorkKey) throws
        -> (statistics: ActivationStatistics, loss: Double)

    /// FFN Gram matrices Σ a aᵀ of every block over `sequences` (for least-squares reconstruction).
    func ffnGram(model: Model, sequences: [[Int]], shards: Int, branchScale: [Float]?, key: WorkKey) throws -> FFNGram

    /// SparseGPT's Hessians XᵀX of the inputs of block `block`'s linear layers over `sequences`,
    /// added in shard order in Double.
    func layerHessians(model: Model, sequences: [[Int]], shards: Int, block: Int, branchScale: [Float]?, key: WorkKey) throws
        -> LayerHessians

    /// The model's own greedy chains of thought for `jsonlLines` (one `{"question","answer"}`
    /// record a line): the generated text of each, in order, and how many were right.
    func traces(model: Model, jsonlLines: [String], shards: Int, maxNewTokens: Int, batchSize: Int, key: WorkKey) throws
        -> (texts: [String], counts: EvalCounts)

    /// Greedy answers to `jsonlLines` (one `{"question","answer"}` record a line), counted.
    func evaluate(model: Model, jsonlLines: [String], shards: Int, maxNewTokens: Int, batchSize: Int, key: WorkKey) throws
        -> EvalCounts

    /// Greedy decode tokens/s, batch 1 on one thread (the best of `reps` runs).
    func decodeTokensPerSecond(model: Model, promptTokens: Int, newTokens: Int, reps: Int) throws -> Double
}

extension ComputeBackend {
    /// Measured in this process (on a cluster: the coordinator's machine, while workers wait).
    public func decodeTokensPerSecond(model: Model, promptTokens: Int, newTokens: Int, reps: Int) throws -> Double {
        SpeedMeasurement.decodeTokensPerSecond(model: model, promptTokens: promptTokens, newTokens: newTokens, reps: reps,
                                               precision: precision.resolved().precision)
    }
}

/// The shard split every backend uses.
public enum Shards {
    /// Items `[s·n/S, (s+1)·n/S)` of `n` for shard `s` of `S`.
    public static func range(_ s: Int, of count: Int, shards: Int) -> Range<Int> {
        (s * count / shards)..<((s + 1) * count / shards)
    }

    /// Checks a shard count against the work: at least one shard, at most one per item.
    public static func check(_ shards: Int, items: Int, what: String) throws {
        guard shards >= 1 else { throw LoopError("\(what): \(shards) shards; at least 1 is needed") }
        guard items >= shards else { throw LoopError("\(what): \(items) items cannot fill \(shards) shards") }
    }

    /// The loss scale of a gradient batch: 1 / (tokens predicted in the whole batch), after
    /// checking the batch fills `shards` and predicts at least one token.
    public static func lossScale(_ batch: [[Int]], shards: Int, key: WorkKey) throws -> Double {
        try check(shards, items: batch.count, what: "gradients of \(key)")
        let total = batch.reduce(0) { $0 + max(0, $1.count - 1) }
        guard total > 0 else { throw LoopError("gradients of \(key): the batch has no token to predict") }
        return 1 / Double(total)
    }
}

/// A run of the loop that cannot go on: bad inputs, settings or state, named.
public struct LoopError: Error, CustomStringConvertible, Sendable, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Work abandoned because the process was asked to stop (a checkpoint is written, nothing is lost).
public struct Interrupted: Error, CustomStringConvertible, Sendable {
    public init() {}
    public var description: String { "interrupted" }
}
