import Foundation
import CPTLKernels
import PTLLoop
import PTLModel
import PTLTensor

/// The loop's work on a cluster: every call is a phase of tasks, one per shard, leased to the
/// coordinator's workers; results come back in shard order and are added as `LocalBackend` adds
/// its shards (`ShardReduce`), so both give the same bits. Decode speed is measured here, on
/// the coordinator's machine, while the workers wait.
public final class ClusterBackend: ComputeBackend {
    public let coordinator: Coordinator
    /// Sent with every task; workers follow it.
    public var precision: Precision = .fp32
    /// Pinned on the coordinator when set; grad tasks name it and workers fetch it once.
    public var teacher: Teacher? {
        didSet { teacherHash = teacher.map { TaskCoding.pin($0.model, on: coordinator) } }
    }
    var teacherHash: String?
    /// GRPO's reference model, pinned once (like a teacher) and named by its hash.
    var referenceHash: (model: Model, hash: String)?

    var wirePrecision: Ptl_V1_Precision { precision == .bf16 ? .bf16 : .fp32 }

    /// `tokenizerJSON` travels with every model version (workers need it to evaluate); nil keeps
    /// the coordinator's.
    public init(coordinator: Coordinator, tokenizerJSON: String? = nil) {
        self.coordinator = coordinator
        if let tokenizerJSON { coordinator.tokenizerJSON = tokenizerJSON }
    }

    /// Measured here, on the coordinator's machine, while the workers wait — and hear from the
    /// coordinator (`Coordinator.answeringWorkers`) instead of reconnecting.
    public func decodeTokensPerSecond(model: Model, promptTokens: Int, newTokens: Int, reps: Int) throws -> Double {
        coordinator.answeringWorkers {
            SpeedMeasurement.decodeTokensPerSecond(model: model, promptTokens: promptTokens, newTokens: newTokens, reps: reps,
                                                   precision: precision.resolved().precision)
        }
    }

    /// The task key of shard `shard` of a phase of `key`.
    static func taskKey(_ key: WorkKey, phase: Ptl_V1_Phase, shard: Int, measurement: UInt64? = nil) -> Ptl_V1_TaskKey {
        var k = Ptl_V1_TaskKey()
        k.run = key.run
        k.round = UInt32(truncatingIfNeeded: key.round)
        k.phase = phase
        k.step = UInt64(key.step)
        k.measurement = measurement ?? key.measurement
        k.shard = UInt32(shard)
        return k
    }

    /// Tasks over `sequences` cut into shards, each sized for the phase's longest sequence.
    func sequenceTasks(_ sequences: [[Int]], shards: Int, key: WorkKey, phase: Ptl_V1_Phase, hash: String, lossScale: Double?,
                       branchScale: [Float]?) -> [(key: Ptl_V1_TaskKey, spec: Ptl_V1_Task, inputs: [WireTensor])] {
        let longest = sequences.map(\.count).max() ?? 0
        let extra = branchScale.map { [WireTensor(name: "branch_scale", shape: [$0.count], floats: $0)] } ?? []
        return (0..<shards).map { s in
            let part = Array(sequences[Shards.range(s, of: sequences.count, shards: shards)])
            var spec = Ptl_V1_Task()
            spec.modelHash = hash
            if let lossScale { spec.lossScale = lossScale }
            spec.batchSize = UInt32(part.count)
            spec.seqLen = UInt32(longest)   // workers size one pass for every shard of the phase
            spec.precision = wirePrecision
            return (Self.taskKey(key, phase: phase, shard: s), spec, TaskCoding.encode(part) + extra)
        }
    }

    public func gradients(model: Model, batch: [[Int]], shards: Int, branchScale: [Float]?, key: WorkKey,
                          into grads: FloatBuffer) throws -> GradientResult {
        let lossScale = try Shards.lossScale(batch, shards: shards, key: key)
        let clock = SystemClock()
        let t0 = clock.now(), wait0 = coordinator.waitSeconds
        let hash = TaskCoding.publish(model, on: coordinator)
        let t1 = clock.now()
        var tasks = sequenceTasks(batch, shards: shards, key: key, phase: .grad, hash: hash, lossScale: lossScale, branchScale: branchScale)
        if let teacher, let teacherHash {
            try teacher.check(student: model)
            for i in tasks.indices {
                tasks[i].spec.teacherHash = teacherHash
                tasks[i].spec.kdTemperature = teacher.temperature
                tasks[i].spec.kdWeight = teacher.kdWeight
            }
        }
        let n = grads.count
        /// The result's gradient frame, checked (size, finite loss, plausible counts).
        func gradient(_ k: Ptl_V1_TaskKey, _ message: WireMessage) throws -> Frame {
            guard let g = message.tensor("grad"), g.dtype == .f32, g.byteCount == 4 * n else {
                throw WireError(kind: .descriptorMismatch, message: "the grad result of \(TaskID(k)) lacks a gradient of \(n) floats")
            }
            let r = message.envelope.result
            guard r.lossSum.isFinite, abs(r.lossSum) <= 1e100, r.tokenCount <= UInt64(ShardCompute.maxShardTokens), r.seconds.isFinite else {
                throw WireError(kind: .descriptorMismatch, message: "the grad result of \(TaskID(k)) has a non-finite or absurd loss or an absurd token count")
            }
            // Finite is not enough: two shards of ±3e38 overflow the sum and abort the step. No
            // honest loss-scaled gradient comes near this bound.
            let above = ptl_first_above_f32(g.frame.base, n, Self.maxGradientEntry)
            guard above == n else {
                throw WireError(kind: .nonFinite, message: "the grad result of \(TaskID(k)) has an entry above \(Self.maxGradientEntry) in magnitude at index \(above)")
            }
            return g.frame
        }
        let results = try coordinator.runPhase(tasks) { k, message in _ = try gradient(k, message) }
        let t2 = clock.now()
        var lossSum = 0.0, workerSeconds = 0.0, tokens = 0
        var frames: [Frame] = []
        var shardLoss: [Double] = [], shardTokens: [Int] = []
        for (k, message) in results {
            frames.append(try gradient(k, message))
            workerSeconds += message.envelope.result.seconds
            shardLoss.append(message.envelope.result.lossSum)
            shardTokens.append(Int(message.envelope.result.tokenCount))
        }
        // Robust aggregation (--reject-outlier-shards Z): a shard whose gradient norm lies more
        // than Z robust deviations (1.4826·MAD) above the median is left out and the sum rescaled
        // to the tokens kept. The decision depends on the results only, so honest runs stay
        // bit-identical for any worker count; finite poison (clipping bounds its size, not its
        // direction) is what it stops.
        var keep = Array(frames.indices)
        if let z = coordinator.settings.rejectOutlierShards, frames.count >= 3 {
            let norms = frames.map { f in f.withBytes { sumOfSquares($0.baseAddress!.assumingMemoryBound(to: Float.self), count: n).squareRoot() } }
            let outliers = Self.outliers(norms, z: z)
            for i in outliers {
                let (k, _) = results[i]
                let worker = coordinator.scheduler.acceptedFrom[TaskID(k)]?.worker ?? "?"
                coordinator.reject("outlier_shard", "from \(worker): gradient of \(TaskID(k)) has norm \(String(format: "%.4g", norms[i])), median \(String(format: "%.4g", Self.median(norms))): left out of step \(key.step)", worker: worker)
            }
            keep.removeAll { outliers.contains($0) }
        }
        for i in keep { lossSum += shardLoss[i]; tokens += shardTokens[i] }
        try ShardReduce.sum(keep.map { frames[$0].base }, into: grads, what: "step \(key.step)")   // the frames hold their bytes
        if keep.count < frames.count {
            let all = shardTokens.reduce(0, +)
            if tokens > 0 { scaleInPlace(grads.pointer, Float(Double(all) / Double(tokens)), count: n) }
            lossSum *= Double(all) / Double(max(1, tokens))
            tokens = all
        }
        let t3 = clock.now()
        coordinator.lastStepTiming = StepTiming(publish: t1 - t0, phase: t2 - t1, idle: coordinator.waitSeconds - wait0,
                                                reduce: t3 - t2, update: 0, workerCompute: workerSeconds)
        return GradientResult(lossSum: lossSum, tokens: tokens, computeSeconds: workerSeconds)
    }

    static func median(_ xs: [Double]) -> Double {
        let s = xs.sorted()
        return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
    }

    /// Indices of values more than `z` robust deviations (1.4826 × the median absolute
    /// deviation) above the median; none when the deviation is zero.
    static func outliers(_ xs: [Double], z: Double) -> [Int] {
        let m = median(xs)
        let mad = 1.4826 * median(xs.map { abs($0 - m) })
        guard mad > 0 else { return [] }
        return xs.indices.filter { xs[$0] > m + z * mad }
    }

    /// The largest gradient entry a shard may return (honest ones are many orders smaller).
    public static let maxGradientEntry: Float = 1e30

    public func statistics(model: Model, sequences: [[Int]], shards: Int, branchScale: [Float]?, key: WorkKey) throws
        -> (statistics: ActivationStatistics, loss: Double) {
        try Shards.check(shards, items: sequences.count, what: "statistics of \(key)")
        let hash = TaskCoding.publish(model, on: coordinator)
        let tasks = sequenceTasks(sequences, shards: shards, key: key, phase: .stats, hash: hash, lossScale: nil, branchScale: branchScale)
        let c = model.config
        var total = ActivationStatistics(layers: c.numHiddenLayers, intermediate: c.intermediateSize, hidden: c.hiddenSize)
        var lossSum = 0.0
        let results = try coordinator.runPhase(tasks) { _, message in
            try TaskCoding.checkStatistics(message, layers: c.numHiddenLayers, intermediate: c.intermediateSize, hidden: c.hiddenSize)
        }
        for (_, message) in results {
            total.add(try TaskCoding.decodeStatistics(message, layers: c.numHiddenLayers, intermediate: c.intermediateSize, hidden: c.hiddenSize))
            lossSum += message.envelope.result.lossSum
        }
        return (total, lossSum / Double(max(1, total.tokens)))
    }

    public func ffnGram(model: Model, sequences: [[Int]], shards: Int, branchScale: [Float]?, key: WorkKey) throws -> FFNGram {
        try Shards.check(shards, items: sequences.count, what: "FFN Gram matrices of \(key)")
        let hash = TaskCoding.publish(model, on: coordinator)
        var tasks = sequenceTasks(sequences, shards: shards, key: key, phase: .stats, hash: hash, lossScale: nil, branchScale: branchScale)
        for i in tasks.indices { tasks[i].spec.ffnGram = true }
        let c = model.config
        var total = FFNGram(layers: c.numHiddenLayers, intermediate: c.intermediateSize)
        let results = try coordinator.runPhase(tasks) { _, message in
            _ = try TaskCoding.decodeGram(message, layers: c.numHiddenLayers, intermediate: c.intermediateSize)
        }
        for (_, message) in results { try total.add(try TaskCoding.decodeGram(message, layers: c.numHiddenLayers, intermediate: c.intermediateSize)) }
        return total
    }

    public func layerHessians(model: Model, sequences: [[Int]], shards: Int, block: Int, branchScale: [Float]?, key: WorkKey) throws
        -> LayerHessians {
        try Shards.check(shards, items: sequences.count, what: "layer Hessians of \(key)")
        let c = model.config
        guard block >= 0, block < c.numHiddenLayers else { throw LoopError("layer Hessians: block \(block) of a \(c.numHiddenLayers)-block model") }
        let hash = TaskCoding.publish(model, on: coordinator)
        var tasks = sequenceTasks(sequences, shards: shards, key: key, phase: .stats, hash: hash, lossScale: nil, branchScale: branchScale)
        for i in tasks.indices { tasks[i].spec.hessianBlock = UInt32(block + 1) }
        var total = LayerHessians(block: block, config: c)
        let results = try coordinator.runPhase(tasks) { _, message in
            _ = try TaskCoding.decodeHessians(message, block: block, config: c)
        }
        for (_, message) in results { try total.add(try TaskCoding.decodeHessians(message, block: block, config: c)) }
        return total
    }

    public func traces(model: Model, jsonlLines: [String], shards: Int, maxNewTokens: Int, batchSize: Int, key: WorkKey) throws
        -> (texts: [String], counts: EvalCounts) {
        try Shards.check(shards, items: jsonlLines.count, what: "traces of \(key)")
        let tasks = answerTasks(model: model, jsonlLines: jsonlLines, shards: shards, maxNewTokens: maxNewTokens, batchSize: batchSize,
                                key: key, phase: .trace)
        /// The shard's texts and flags, checked: one string a record, each within what the token budget can produce.
        func decode(_ k: Ptl_V1_TaskKey, _ m: WireMessage) throws -> ([String], [Bool]) {
            let flags = try self.flags(k, m, records: jsonlLines.count, shards: shards, maxNewTokens: maxNewTokens)
            guard let t = m.tensor("traces"), t.dtype == .u8,
                  let texts = try? JSONSerialization.jsonObject(with: Data(t.bytes)) as? [String], texts.count == flags.count,
                  texts.allSatisfy({ $0.utf8.count <= 64 * maxNewTokens + 64 }) else {
                throw WireError(kind: .descriptorMismatch, message: "the trace result of \(TaskID(k)) lacks one text (at most \(maxNewTokens) tokens) a record as a JSON array")
            }
            return (texts, flags)
        }
        var counts = EvalCounts(), texts: [String] = []
        for (k, m) in try coordinator.runPhase(tasks, check: { k, m in _ = try decode(k, m) }) {
            let (t, f) = try decode(k, m)
            let r = m.envelope.result
            counts.add(EvalCounts(correct: Int(r.correct), total: Int(r.examples), generatedTokens: Int(r.tokenCount), perExample: f))
            texts += t
        }
        return (texts, counts)
    }

    /// EVAL or TRACE tasks: the records cut into shards.
    func answerTasks(model: Model, jsonlLines: [String], shards: Int, maxNewTokens: Int, batchSize: Int, key: WorkKey,
                     phase: Ptl_V1_Phase) -> [(key: Ptl_V1_TaskKey, spec: Ptl_V1_Task, inputs: [WireTensor])] {
        let hash = TaskCoding.publish(model, on: coordinator)
        return (0..<shards).map { s -> (key: Ptl_V1_TaskKey, spec: Ptl_V1_Task, inputs: [WireTensor]) in
            var spec = Ptl_V1_Task()
            spec.modelHash = hash
            spec.recordsJsonl = jsonlLines[Shards.range(s, of: jsonlLines.count, shards: shards)].joined(separator: "\n")
            spec.maxNewTokens = UInt32(maxNewTokens)
            spec.batchSize = UInt32(batchSize)
            spec.precision = wirePrecision
            return (Self.taskKey(key, phase: phase, shard: s), spec, [])
        }
    }

    /// The per-record correct flags of an EVAL or TRACE result, checked against its shard.
    func flags(_ k: Ptl_V1_TaskKey, _ m: WireMessage, records: Int, shards: Int, maxNewTokens: Int) throws -> [Bool] {
        let r = m.envelope.result
        let flags = (m.tensor("correct")?.bytes ?? []).map { $0 == 1 }
        let expected = Shards.range(Int(k.shard), of: records, shards: shards).count
        guard r.examples == UInt64(expected), flags.count == expected, r.correct == UInt64(flags.filter { $0 }.count),
              r.tokenCount <= UInt64(expected) * UInt64(max(0, maxNewTokens)) else {
            throw WireError(kind: .descriptorMismatch, message: "the \(k.phase == .trace ? "trace" : "eval") result of \(TaskID(k)) has \(flags.count) flags, \(r.correct) correct of \(r.examples) examples and \(r.tokenCount) generated tokens for a shard of \(expected) (at most \(maxNewTokens) tokens each)")
        }
        return flags
    }

    public func evaluate(model: Model, jsonlLines: [String], shards: Int, maxNewTokens: Int, batchSize: Int, key: WorkKey) throws
        -> EvalCounts {
        let tasks = answerTasks(model: model, jsonlLines: jsonlLines, shards: shards, maxNewTokens: maxNewTokens, batchSize: batchSize,
                                key: key, phase: .eval)
        func flags(_ k: Ptl_V1_TaskKey, _ m: WireMessage) throws -> [Bool] {
            try self.flags(k, m, records: jsonlLines.count, shards: shards, maxNewTokens: maxNewTokens)
        }
        var counts = EvalCounts()
        for (k, m) in try coordinator.runPhase(tasks, check: { k, m in _ = try flags(k, m) }) {
            let r = m.envelope.result
            let flags = try flags(k, m)
            counts.add(EvalCounts(correct: Int(r.correct), total: Int(r.examples), generatedTokens: Int(r.tokenCount), perExample: flags))
        }
        return counts
    }
}
