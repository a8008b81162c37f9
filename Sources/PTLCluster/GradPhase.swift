import CPTLKernels
import Foundation
import PTLData
import PTLModel
import PTLTensor
import PTLTune
import PTLTokenizer

/// The `grad` phase: data-parallel continual pre-training. Each optimizer step's batch (the same
/// lines, in the same order, as single-process `ptl train`) is split into `shards` contiguous
/// micro-batches; workers return Σ-loss gradients scaled by 1/(tokens in the whole batch); the
/// coordinator adds them in shard order in Double, so the update is bit-identical for any number
/// of workers and any failures.
public enum GradPhase {
    /// Token sequences of a shard as two I32 frames: lengths and the concatenated ids.
    public static func encode(_ sequences: [[Int]]) -> [WireTensor] {
        let lengths = sequences.map { Int32($0.count) }
        let ids = sequences.flatMap { $0.map { Int32($0) } }
        return [WireTensor(name: "lengths", dtype: .i32, shape: [lengths.count], bytes: lengths.withUnsafeBytes { Array($0) }),
                WireTensor(name: "ids", dtype: .i32, shape: [ids.count], bytes: ids.withUnsafeBytes { Array($0) })]
    }

    static func decodeSequences(_ inputs: [WireTensor]) throws -> [[Int]] {
        guard let l = inputs.first(where: { $0.name == "lengths" }), let i = inputs.first(where: { $0.name == "ids" }),
              l.dtype == .i32, i.dtype == .i32 else { throw WireError(kind: .descriptorMismatch, message: "grad task needs I32 lengths and ids") }
        let lengths = l.values(Int32.self).map { Int($0) }
        let ids = i.values(Int32.self).map { Int($0) }
        guard lengths.allSatisfy({ $0 >= 0 }), lengths.reduce(0, +) == ids.count else {
            throw WireError(kind: .descriptorMismatch, message: "grad task: lengths do not add up to the ids")
        }
        var out: [[Int]] = []
        var at = 0
        for n in lengths { out.append(Array(ids[at..<(at + n)])); at += n }
        return out
    }

    /// The worker side: runs `grad` and `stats` tasks; caches the model of the last version.
    public static func handler() -> TaskHandler {
        let cache = ModelCache()
        return { key, spec, inputs, model in
            let m = try cache.model(hash: spec.modelHash, config: model.config, weights: model.weights)
            if key.phase == .eval { return try EvalPhase.compute(model: m, version: model, spec: spec, tokenizers: cache) }
            let sequences = try decodeSequences(inputs)
            let batch = TokenBatch(sequences: sequences, multiple: 8)
            let pass = cache.pass(model: m, batch: batch.batch, seq: batch.seq, seqLen: Int(spec.seqLen))
            pass.branchScale = nil
            if let scale = inputs.first(where: { $0.name == "branch_scale" })?.floats {
                guard scale.count == m.config.numHiddenLayers, scale.allSatisfy({ $0.isFinite }) else {
                    throw WireError(kind: .descriptorMismatch, message: "branch_scale needs one finite value per block")
                }
                pass.branchScale = scale
            }
            let t0 = Date()
            let (sum, count) = pass.forward(tokens: batch.tokens, targets: batch.targets)
            if key.phase == .stats {
                var r = Ptl_V1_Result()
                r.lossSum = sum
                r.tokenCount = UInt64(count)
                r.examples = UInt64(sequences.count)
                r.seconds = Date().timeIntervalSince(t0)
                return (r, StatsPhase.encode(pass.statistics()))
            }
            guard key.phase == .grad else { throw WireError(kind: .unknownType, message: "phase \(key.phase) is not run by this worker") }
            let grads = cache.gradients(count: m.layout.count)
            pass.backward(into: grads, scale: Float(spec.lossScale))
            var r = Ptl_V1_Result()
            r.lossSum = sum
            r.tokenCount = UInt64(count)
            r.examples = UInt64(sequences.count)
            r.seconds = Date().timeIntervalSince(t0)
            return (r, [WireTensor(name: "grad", buffer: grads)])   // sent from the buffer itself
        }
    }

    /// The worker's model of the current version and its gradient buffer, kept across tasks
    /// (tasks run one at a time): a new version of the same shape is copied into the same
    /// parameter buffer, so a tuning step allocates (and page-faults) nothing model-sized.
    final class ModelCache: @unchecked Sendable {
        let lock = NSLock()
        var current: (hash: String, config: String, model: Model)?
        var tokenizer: (source: String, tokenizer: Tokenizer)?
        var grads: FloatBuffer?

        var trainingPass: TrainingPass?

        /// A pass for a (batch, seq) task on `model`: the kept one reshaped when it fits, else
        /// one with room for rows of the task's whole `seqLen` (rounded up as batches are).
        func pass(model: Model, batch: Int, seq: Int, seqLen: Int) -> TrainingPass {
            lock.lock(); defer { lock.unlock() }
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

        /// A zeroed gradient buffer of `count` floats: the last one when nothing else holds it
        /// any more (ZeroMQ keeps a result's buffer until it has been sent), else a new one.
        func gradients(count: Int) -> FloatBuffer {
            lock.lock(); defer { lock.unlock() }
            if grads?.count == count, isKnownUniquelyReferenced(&grads!) { grads!.zero(); return grads! }
            let g = FloatBuffer(count: count)
            grads = g
            return g
        }

        func tokenizer(json: String) throws -> Tokenizer {
            lock.lock(); defer { lock.unlock() }
            if let t = tokenizer, t.source == json { return t.tokenizer }
            guard !json.isEmpty else { throw WireError(kind: .descriptorMismatch, message: "the model version came without a tokenizer") }
            let t = try Tokenizer(data: Data(json.utf8), source: "tokenizer.json from the coordinator")
            tokenizer = (json, t)
            return t
        }
        func model(hash: String, config: String, weights: [Float]) throws -> Model {
            lock.lock(); defer { lock.unlock() }
            if let c = current, c.hash == hash { return c.model }
            if let c = current, c.config == config, c.model.parameters.count == weights.count {
                weights.withUnsafeBufferPointer { c.model.parameters.pointer.update(from: $0.baseAddress!, count: $0.count) }
                current = (hash, config, c.model)
                return c.model
            }
            let cfg = try ModelConfig(data: Data(config.utf8), source: "model \(hash)")
            let m = Model(config: cfg, parameters: FloatBuffer(weights))
            current = (hash, config, m)
            return m
        }
    }
}

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
        var key = Ptl_V1_TaskKey()
        key.run = run; key.step = UInt64(step)
        let r = try GradPhase.step(coordinator: coordinator, model: model, optimizer: optimizer, grads: grads,
                                   batch: indices.map { sequences[$0] }, shards: shards, key: key,
                                   lr: schedule.rate(at: step), clip: settings.clip)
        for s in 0..<shards {
            var k = key
            k.phase = .grad; k.shard = UInt32(s)
            let from = coordinator.scheduler.acceptedFrom[TaskID(k)]
            ledger.append(LedgerEntry(step: step, shard: s, worker: from?.worker ?? "", attempt: from?.attempt ?? 0))
        }
        step += 1
        return (r.loss, r.gradNorm, r.tokens)
    }
}

extension GradPhase {
    /// Publishes `model` as the version tasks run on (the previous one is kept, so workers
    /// holding it fetch an update) and returns its hash.
    public static func publish(_ model: Model, on coordinator: Coordinator) -> String {
        let config = String(decoding: model.config.jsonData(), as: UTF8.self)
        let n = model.parameters.count
        let hash = modelHash(configJSON: config, weights: UnsafeBufferPointer(start: model.parameters.pointer, count: n))
        coordinator.serve(hash, config: config, weights: UnsafeRawBufferPointer(start: model.parameters.pointer, count: 4 * n))
        return hash
    }

    /// One data-parallel optimizer step: `batch` split into `shards` contiguous micro-batches
    /// (tasks keyed by `key` with phase grad and the shard index), gradients reduced in shard
    /// order in Double (one pass over the result frames, rounded once),
    /// clipped, and applied by `optimizer`. `branchScale` travels with the tasks.
    public static func step(coordinator: Coordinator, model: Model, optimizer: AdamW, grads: FloatBuffer,
                            batch: [[Int]],
                            shards: Int, key base: Ptl_V1_TaskKey, lr: Float, clip: Float,
                            branchScale: [Float]? = nil) throws -> (loss: Double, gradNorm: Double, tokens: Int, workerSeconds: Double) {
        let clock = SystemClock()
        let t0 = clock.now(), wait0 = coordinator.waitSeconds
        let hash = publish(model, on: coordinator)
        let t1 = clock.now()
        let total = batch.reduce(0) { $0 + $1.count - 1 }
        let longest = batch.map(\.count).max() ?? 0
        var tasks: [(key: Ptl_V1_TaskKey, spec: Ptl_V1_Task, inputs: [WireTensor])] = []
        let extra = branchScale.map { [WireTensor(name: "branch_scale", shape: [$0.count], floats: $0)] } ?? []
        for s in 0..<shards {
            let part = Array(batch[(s * batch.count / shards)..<((s + 1) * batch.count / shards)])
            var key = base
            key.phase = .grad; key.shard = UInt32(s)
            var spec = Ptl_V1_Task()
            spec.modelHash = hash
            spec.lossScale = 1 / Double(total)
            spec.batchSize = UInt32(part.count)
            spec.seqLen = UInt32(longest)   // workers size one pass for every shard of the phase
            tasks.append((key, spec, GradPhase.encode(part) + extra))
        }
        let results = try coordinator.runPhase(tasks)
        let t2 = clock.now()
        // Reduce in shard order in Double, rounded once, in one pass over the frames in place.
        let n = grads.count
        var lossSum = 0.0, workerSeconds = 0.0
        var tokens = 0
        var frames: [Frame] = []
        for (_, message) in results {
            workerSeconds += message.envelope.result.seconds
            guard let g = message.tensor("grad"), g.dtype == .f32, g.byteCount == 4 * n else {
                throw WireError(kind: .descriptorMismatch, message: "a grad result without a full gradient")
            }
            frames.append(g.frame)
            lossSum += message.envelope.result.lossSum
            tokens += Int(message.envelope.result.tokenCount)
        }
        let bad = frames.map(\.base).withUnsafeBufferPointer { ptl_reduce_f32_shards(grads.pointer, $0.baseAddress, frames.count, n) }   // the frames hold their bytes
        guard bad == n else {
            throw WireError(kind: .descriptorMismatch, message: "the reduced gradient has a NaN or infinite entry (step \(base.step)); the weights were not updated")
        }
        let t3 = clock.now()
        let norm = GradientClipping.clip(grads, maxNorm: clip)
        optimizer.update(params: model.parameters, grads: grads, lr: lr)
        let t4 = clock.now()
        coordinator.lastStepTiming = StepTiming(publish: t1 - t0, phase: t2 - t1, idle: coordinator.waitSeconds - wait0,
                                                reduce: t3 - t2, update: t4 - t3, workerCompute: workerSeconds)
        return (lossSum / Double(tokens), norm, tokens, workerSeconds)
    }
}
