import Foundation
import PTLData
import PTLLoop
import PTLModel
import PTLTensor
import PTLTune

/// Where a data-parallel step's wall time went on the coordinator.
public struct StepTiming: Sendable {
    /// Hashing and copying out the new weights.
    public var publish = 0.0
    /// The grad phase: leasing, sending, waiting for and checking results.
    public var phase = 0.0
    /// Of `phase`, the time spent idle in poll (waiting for workers).
    public var idle = 0.0
    /// The shard-order reduce in Double, and clipping + AdamW.
    public var reduce = 0.0, update = 0.0
    /// Compute seconds the workers reported, summed over the shards.
    public var workerCompute = 0.0

    public var total: Double { publish + phase + reduce + update }
    /// Seconds the coordinator was working (messaging, checking, reducing, updating), not waiting.
    public var coordinatorBusy: Double { total - idle }
}

/// One applied result: which worker's answer to which attempt of (step, shard) went into the weights.
public struct LedgerEntry: Codable, Sendable, Equatable {
    public var step: Int
    public var shard: Int
    public var worker: String
    public var attempt: UInt32

    /// JSON lines, one entry each.
    public static func jsonl(_ entries: [LedgerEntry]) -> Data {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        var out = Data()
        for e in entries { out += (try? enc.encode(e)) ?? Data(); out += Data("\n".utf8) }
        return out
    }

    public static func parse(_ data: Data) throws -> [LedgerEntry] {
        try data.split(separator: UInt8(ascii: "\n")).map { try JSONDecoder().decode(LedgerEntry.self, from: Data($0)) }
    }
}

/// The coordinator side of data-parallel training over the cluster.
public final class DistributedTrainer {
    public let coordinator: Coordinator
    let backend: ClusterBackend
    public let model: Model
    public let settings: TrainingSettings
    public let shards: Int
    public let run: String
    public private(set) var optimizer: AdamW
    let sequences: [[Int]]
    let order: EpochOrder
    let schedule: LearningRateSchedule
    let grads: FloatBuffer
    public private(set) var step = 0
    /// Every (step, shard) gradient applied to the weights, with the worker and attempt token
    /// whose result was used: checkpointed with the weights, so it lists exactly what the
    /// current weights contain.
    public private(set) var ledger: [LedgerEntry] = []

    /// Continues from a checkpoint: the optimizer's moments, the step count and the ledger.
    public func resume(optimizer: AdamW, step: Int, ledger: [LedgerEntry] = []) {
        self.optimizer = optimizer
        self.step = step
        self.ledger = ledger
    }

    public init(coordinator: Coordinator, model: Model, sequences: [[Int]], settings: TrainingSettings, shards: Int, run: String = "run") throws {
        let usable = sequences.filter { $0.count >= 2 }
        guard !usable.isEmpty else { throw DataError("no training line has two or more tokens") }
        guard shards >= 1, shards <= settings.batchSize else { throw DataError("shards must be between 1 and the batch size") }
        self.coordinator = coordinator
        backend = ClusterBackend(coordinator: coordinator)
        backend.precision = settings.precision
        self.model = model
        self.settings = settings
        self.shards = shards
        self.run = run
        self.sequences = usable
        optimizer = AdamW(layout: model.layout, settings: settings.adamW)
        order = EpochOrder(count: usable.count, seed: settings.seed)
        schedule = LearningRateSchedule(kind: settings.schedule, peak: settings.learningRate, warmup: settings.warmup,
                                        total: settings.steps, minRatio: settings.minLearningRateRatio)
        grads = FloatBuffer(count: model.layout.count)
    }

    /// One optimizer step over the cluster; returns (mean loss, grad norm, tokens).
    public func runStep() throws -> (loss: Double, gradNorm: Double, tokens: Int) {
        let indices = order.indices(step: step, batchSize: settings.batchSize)
        let key = WorkKey(run: run, step: step)
        let r = try backend.gradients(model: model, batch: indices.map { sequences[$0] }, shards: shards, branchScale: nil, key: key, into: grads)
        let t0 = SystemClock().now()
        let norm = OptimizerStep.apply(model: model, optimizer: optimizer, grads: grads, lr: schedule.rate(at: step), clip: settings.clip)
        coordinator.lastStepTiming.update = SystemClock().now() - t0
        for s in 0..<shards {
            let from = coordinator.scheduler.acceptedFrom[TaskID(ClusterBackend.taskKey(key, phase: .grad, shard: s))]
            ledger.append(LedgerEntry(step: step, shard: s, worker: from?.worker ?? "", attempt: from?.attempt ?? 0))
        }
        step += 1
        return (r.meanLoss, norm, r.tokens)
    }
}

