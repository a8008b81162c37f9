import Foundation
import PTLData
import PTLModel
import PTLTensor

/// Settings of a continual pre-training run.
public struct TrainingSettings: Sendable {
    public var steps: Int
    public var batchSize: Int
    public var learningRate: Float
    public var warmup: Int = 0
    public var schedule: LearningRateSchedule.Kind = .cosine
    public var minLearningRateRatio: Float = 0.1
    /// Global gradient-norm clip; 0 disables.
    public var clip: Float = 1
    public var adamW = AdamWSettings()
    public var seed: UInt64 = 0
    /// Matmul arithmetic of the passes (bf16: oneDNN with fp32 accumulation; AdamW stays fp32).
    public var precision: Precision = .fp32
    public init(steps: Int, batchSize: Int, learningRate: Float) {
        self.steps = steps; self.batchSize = batchSize; self.learningRate = learningRate
    }
}

/// What one optimizer step did.
public struct StepRecord: Sendable {
    public let step: Int
    public let loss: Double
    public let learningRate: Float
    public let gradNorm: Double
    public let tokens: Int
    public let seconds: Double
    public var tokensPerSecond: Double { Double(tokens) / max(seconds, 1e-9) }
}

/// Continual pre-training on tokenized lines: seeded batches, mean next-token loss, clipping,
/// AdamW with a warm-up + cosine/constant schedule.
public final class Trainer {
    public let model: Model
    public let settings: TrainingSettings
    public let optimizer: AdamW
    public let grads: FloatBuffer
    let sequences: [[Int]]
    let order: EpochOrder
    let schedule: LearningRateSchedule
    var passes: PassCache
    public private(set) var step = 0

    public init(model: Model, sequences: [[Int]], settings: TrainingSettings) throws {
        let usable = sequences.filter { $0.count >= 2 }
        guard !usable.isEmpty else { throw DataError("no training line has two or more tokens") }
        self.model = model
        self.settings = settings
        self.sequences = usable
        optimizer = AdamW(layout: model.layout, settings: settings.adamW)
        grads = FloatBuffer(count: model.layout.count)
        order = EpochOrder(count: usable.count, seed: settings.seed)
        schedule = LearningRateSchedule(kind: settings.schedule, peak: settings.learningRate, warmup: settings.warmup,
                                        total: settings.steps, minRatio: settings.minLearningRateRatio)
        passes = PassCache(model: model, precision: settings.precision)
    }

    /// Runs one step; throws if the loss or gradient is not finite (the weights are left as they were).
    public func runStep() throws -> StepRecord {
        let started = DispatchTime.now().uptimeNanoseconds
        let batchIndices = order.indices(step: step, batchSize: settings.batchSize)
        let batch = TokenBatch(sequences: batchIndices.map { sequences[$0] }, multiple: 8)
        let pass = passes.pass(batch: batch.batch, seq: batch.seq)
        let (sum, count) = pass.forward(tokens: batch.tokens, targets: batch.targets)
        grads.zero()
        pass.backward(into: grads, scale: 1 / Float(count))
        let lr = schedule.rate(at: step)
        let norm = GradientClipping.clip(grads, maxNorm: settings.clip)
        let loss = sum / Double(count)
        guard loss.isFinite, norm.isFinite else {
            throw DataError("step \(step + 1): non-finite \(loss.isFinite ? "gradient norm" : "loss") (\(loss), \(norm)); lower the learning rate")
        }
        optimizer.update(params: model.parameters, grads: grads, lr: lr)
        model.parametersChanged()
        step += 1
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        return StepRecord(step: step, loss: loss, learningRate: lr, gradNorm: norm, tokens: count, seconds: seconds)
    }
}
