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
        let lengths = l.bytes.withUnsafeBytes { r in (0..<(l.bytes.count / 4)).map { Int(r.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) } }
        let ids = i.bytes.withUnsafeBytes { r in (0..<(i.bytes.count / 4)).map { Int(r.loadUnaligned(fromByteOffset: 4 * $0, as: Int32.self)) } }
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
            let pass = TrainingPass(model: m, batch: batch.batch, seq: batch.seq)
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
            let grads = FloatBuffer(count: m.layout.count)
            pass.backward(into: grads, scale: Float(spec.lossScale))
            var r = Ptl_V1_Result()
            r.lossSum = sum
            r.tokenCount = UInt64(count)
            r.examples = UInt64(sequences.count)
            r.seconds = Date().timeIntervalSince(t0)
            return (r, [WireTensor(name: "grad", shape: [grads.count], floats: grads.array())])
        }
    }

    final class ModelCache: @unchecked Sendable {
        let lock = NSLock()
        var current: (hash: String, model: Model)?
        var tokenizer: (source: String, tokenizer: Tokenizer)?

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
            let cfg = try ModelConfig(data: Data(config.utf8), source: "model \(hash)")
            let m = Model(config: cfg, parameters: FloatBuffer(weights))
            current = (hash, m)
            return m
        }
    }
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
    var accumulator: [Double] = []
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
                                   accumulator: &accumulator, batch: indices.map { sequences[$0] }, shards: shards, key: key,
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
    /// Publishes `model` as the only version the coordinator serves and returns its hash.
    public static func publish(_ model: Model, on coordinator: Coordinator) -> String {
        let config = String(decoding: model.config.jsonData(), as: UTF8.self)
        let weights = model.parameters.array()
        let hash = weights.withUnsafeBufferPointer { modelHash(configJSON: config, weights: $0) }
        coordinator.models = [hash: (config, weights)]
        return hash
    }

    /// One data-parallel optimizer step: `batch` split into `shards` contiguous micro-batches
    /// (tasks keyed by `key` with phase grad and the shard index), gradients reduced in shard
    /// order in Double (into `accumulator`, resized to the model and reused across steps),
    /// clipped, and applied by `optimizer`. `branchScale` travels with the tasks.
    public static func step(coordinator: Coordinator, model: Model, optimizer: AdamW, grads: FloatBuffer,
                            accumulator acc: inout [Double], batch: [[Int]],
                            shards: Int, key base: Ptl_V1_TaskKey, lr: Float, clip: Float,
                            branchScale: [Float]? = nil) throws -> (loss: Double, gradNorm: Double, tokens: Int, workerSeconds: Double) {
        let hash = publish(model, on: coordinator)
        let total = batch.reduce(0) { $0 + $1.count - 1 }
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
            tasks.append((key, spec, GradPhase.encode(part) + extra))
        }
        let results = try coordinator.runPhase(tasks)
        // Reduce in shard order with Double accumulators, reading each frame in place.
        let n = grads.count
        if acc.count != n { acc = [Double](repeating: 0, count: n) } else { acc.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
        var lossSum = 0.0, workerSeconds = 0.0
        var tokens = 0
        for (_, message) in results {
            workerSeconds += message.envelope.result.seconds
            guard let g = message.tensor("grad"), g.dtype == .f32, g.bytes.count == 4 * n else {
                throw WireError(kind: .descriptorMismatch, message: "a grad result without a full gradient")
            }
            acc.withUnsafeMutableBufferPointer { a in
                g.bytes.withUnsafeBytes { raw in
                    for i in 0..<n { a[i] += Double(raw.loadUnaligned(fromByteOffset: 4 * i, as: Float.self)) }
                }
            }
            lossSum += message.envelope.result.lossSum
            tokens += Int(message.envelope.result.tokenCount)
        }
        var finite = true
        acc.withUnsafeBufferPointer { a in
            for i in 0..<n { let v = Float(a[i]); grads.pointer[i] = v; finite = finite && v.isFinite }
        }
        guard finite else {
            throw WireError(kind: .descriptorMismatch, message: "the reduced gradient has a NaN or infinite entry (step \(base.step)); the weights were not updated")
        }
        let norm = GradientClipping.clip(grads, maxNorm: clip)
        optimizer.update(params: model.parameters, grads: grads, lr: lr)
        return (lossSum / Double(tokens), norm, tokens, workerSeconds)
    }
}
