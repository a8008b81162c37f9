import Foundation
import CPTLKernels
import PTLLoop
import PTLModel
import PTLTensor

/// GRPO over the cluster (issue 17): ROLLOUT tasks sample completions of a shard's prompts on a
/// worker (seeded per completion, so a retried task samples the same wherever it runs), and
/// ROLLOUT gradient tasks compute the GRPO gradient of a shard's completions; both checked on
/// either side like every other task.
public enum GRPOCoding {
    static func i32(_ name: String, _ xs: [Int]) -> WireTensor {
        let v = xs.map { Int32(truncatingIfNeeded: $0) }
        return WireTensor(name: name, dtype: .i32, shape: [v.count], bytes: v.withUnsafeBytes { Array($0) })
    }

    public static func ints(_ inputs: [WireTensor], _ name: String, what: String) throws -> [Int] {
        guard let t = inputs.first(where: { $0.name == name }), t.dtype == .i32, t.byteCount % 4 == 0 else {
            throw WireError(kind: .descriptorMismatch, message: "the \(what) lacks the I32 tensor \(name)")
        }
        return t.values(Int32.self).map { Int($0) }
    }

    /// Rollouts as tensors: prompt and completion ids (concatenated, I32) with their lengths, and the texts.
    static func encode(_ rollouts: [Rollout]) throws -> [WireTensor] {
        let texts = Array(try JSONSerialization.data(withJSONObject: rollouts.map(\.text)))
        return [i32("prompt_lengths", rollouts.map(\.promptIds.count)), i32("prompt_ids", rollouts.flatMap(\.promptIds)),
                i32("completion_lengths", rollouts.map(\.completionIds.count)), i32("completion_ids", rollouts.flatMap(\.completionIds)),
                WireTensor(name: "texts", dtype: .u8, shape: [texts.count], bytes: texts)]
    }

    /// The rollouts of a result, checked: `count` of them, lengths adding up, completions within
    /// `maxNewTokens` (+ the EOS), ids in the vocabulary, texts a JSON array of strings.
    public static func decodeRollouts(_ m: WireMessage, count: Int, maxNewTokens: Int, vocab: Int) throws -> [Rollout] {
        let what = "rollout result"
        let pl = try ints(m.tensors, "prompt_lengths", what: what), pi = try ints(m.tensors, "prompt_ids", what: what)
        let cl = try ints(m.tensors, "completion_lengths", what: what), ci = try ints(m.tensors, "completion_ids", what: what)
        guard pl.count == count, cl.count == count, pl.allSatisfy({ $0 >= 1 && $0 <= ShardCompute.maxSequenceLength }),
              cl.allSatisfy({ $0 >= 0 && $0 <= maxNewTokens + 1 }), pl.reduce(0, +) == pi.count, cl.reduce(0, +) == ci.count else {
            throw WireError(kind: .descriptorMismatch, message: "the \(what) has \(pl.count)/\(cl.count) lengths for \(count) completions, or lengths that do not add up (a completion holds at most \(maxNewTokens + 1) tokens)")
        }
        guard (pi + ci).allSatisfy({ $0 >= 0 && $0 < vocab }) else {
            throw WireError(kind: .descriptorMismatch, message: "the \(what) has a token id outside the vocabulary (\(vocab))")
        }
        guard let t = m.tensor("texts"), t.dtype == .u8, let texts = try? JSONSerialization.jsonObject(with: Data(t.bytes)) as? [String],
              texts.count == count else {
            throw WireError(kind: .descriptorMismatch, message: "the \(what) lacks one text a completion as a JSON array")
        }
        var out: [Rollout] = [], p = 0, c = 0
        for i in 0..<count {
            out.append(Rollout(promptIds: Array(pi[p..<(p + pl[i])]), completionIds: Array(ci[c..<(c + cl[i])]), text: texts[i]))
            p += pl[i]; c += cl[i]
        }
        return out
    }
}

extension WorkerTasks {
    /// A ROLLOUT task: sampling, or (`grpo_gradient`) the GRPO gradient of a shard.
    static func rollout(spec: Ptl_V1_Task, inputs: [WireTensor], model m: Model, cache: ModelCache, version: ModelVersion,
                        teacherVersion: ModelVersion?, precision: Precision) throws -> (Ptl_V1_Result, [WireTensor]) {
        if spec.grpoGradient {
            let sequences = try TaskCoding.decodeSequences(inputs)
            let prompts = try GRPOCoding.ints(inputs, "prompt_lengths", what: "GRPO gradient task")
            guard let a = inputs.first(where: { $0.name == "advantages" })?.floats else {
                throw WireError(kind: .descriptorMismatch, message: "the GRPO gradient task lacks the F32 tensor advantages")
            }
            let reference = spec.klBeta > 0 ? try cache.teacher(spec, version: teacherVersion, student: (spec.modelHash, m)) : nil
            let grads = cache.compute.gradientBuffer(count: m.layout.count)
            let (out, sums) = try cache.compute.grpoGradient(
                model: m, batch: GRPOBatch(sequences: sequences, promptLengths: prompts, advantages: a), seqLen: Int(spec.seqLen),
                lossScale: Float(spec.lossScale), settings: GRPOSettings(clipLow: spec.clipLow, clipHigh: spec.clipHigh, beta: spec.klBeta),
                reference: reference, precision: precision, into: grads)
            var r = result(out)
            r.clipped = UInt64(sums.clipped)
            r.klSum = sums.kl
            return (r, [WireTensor(name: "grad", buffer: grads)])
        }
        guard let s = inputs.first(where: { $0.name == "seeds" }), s.dtype == .i64, s.byteCount % 8 == 0 else {
            throw WireError(kind: .descriptorMismatch, message: "the rollout task lacks the I64 tensor seeds")
        }
        let t0 = Date()
        let rollouts = try ShardCompute.rollouts(model: m, tokenizer: try cache.tokenizer(json: version.tokenizer), jsonl: spec.recordsJsonl,
                                                 samples: Int(spec.samplesPerPrompt), seeds: s.values(UInt64.self),
                                                 sampling: SamplingSettings(temperature: spec.temperature, topK: 0, topP: spec.topP),
                                                 maxNewTokens: Int(spec.maxNewTokens), batchSize: Int(spec.batchSize), precision: precision)
        var r = Ptl_V1_Result()
        r.examples = UInt64(rollouts.count)
        r.tokenCount = UInt64(rollouts.reduce(0) { $0 + $1.completionIds.count })
        r.seconds = Date().timeIntervalSince(t0)
        return (r, try GRPOCoding.encode(rollouts))
    }
}

extension ClusterBackend: GRPOBackend {
    /// The gradient tasks of a GRPO step carry this bit in their key's measurement: sampling and
    /// gradient are both ROLLOUT-phase tasks of the same step, and a result (or a duplicate) of
    /// one must never be taken for the other.
    static let grpoGradientMeasurement: UInt64 = 1 << 62

    public func rollouts(model: Model, jsonlLines: [String], samples: Int, seeds: [UInt64], shards: Int, sampling: SamplingSettings,
                         maxNewTokens: Int, batchSize: Int, key: WorkKey) throws -> [Rollout] {
        try Shards.check(shards, items: jsonlLines.count, what: "rollouts of \(key)")
        guard seeds.count == jsonlLines.count * samples else { throw LoopError("rollouts of \(key): \(seeds.count) seeds for \(jsonlLines.count) × \(samples)") }
        let hash = TaskCoding.publish(model, on: coordinator)
        let tasks = (0..<shards).map { s -> (key: Ptl_V1_TaskKey, spec: Ptl_V1_Task, inputs: [WireTensor]) in
            let r = Shards.range(s, of: jsonlLines.count, shards: shards)
            var spec = Ptl_V1_Task()
            spec.modelHash = hash
            spec.recordsJsonl = jsonlLines[r].joined(separator: "\n")
            spec.samplesPerPrompt = UInt32(samples)
            spec.temperature = sampling.temperature
            spec.topP = sampling.topP
            spec.maxNewTokens = UInt32(maxNewTokens)
            spec.batchSize = UInt32(batchSize)
            spec.precision = wirePrecision
            let part = Array(seeds[(r.lowerBound * samples)..<(r.upperBound * samples)])
            return (Self.taskKey(key, phase: .rollout, shard: s), spec,
                    [WireTensor(name: "seeds", dtype: .i64, shape: [part.count], bytes: part.withUnsafeBytes { Array($0) })])
        }
        let vocab = model.config.vocabSize
        func decode(_ k: Ptl_V1_TaskKey, _ m: WireMessage) throws -> [Rollout] {
            try GRPOCoding.decodeRollouts(m, count: Shards.range(Int(k.shard), of: jsonlLines.count, shards: shards).count * samples,
                                          maxNewTokens: maxNewTokens, vocab: vocab)
        }
        var out: [Rollout] = []
        for (k, m) in try coordinator.runPhase(tasks, check: { k, m in _ = try decode(k, m) }) { out += try decode(k, m) }
        return out
    }

    public func grpoGradients(model: Model, batch: GRPOBatch, shards: Int, settings: GRPOSettings, reference: Teacher?, key: WorkKey,
                              into grads: FloatBuffer) throws -> GRPOGradientResult {
        let tokens = try batch.checkedTokens(shards: shards, key: key)
        let hash = TaskCoding.publish(model, on: coordinator)
        // The reference travels like a distillation teacher: pinned once, fetched once by each worker.
        if settings.beta > 0 {
            guard let reference else { throw LoopError("GRPO gradients of \(key): β \(settings.beta) needs the reference model") }
            if referenceHash?.model !== reference.model { referenceHash = (reference.model, TaskCoding.pin(reference.model, on: coordinator)) }
        }
        let longest = batch.sequences.map(\.count).max() ?? 0
        let tasks = (0..<shards).map { s -> (key: Ptl_V1_TaskKey, spec: Ptl_V1_Task, inputs: [WireTensor]) in
            let part = batch.shard(s, of: shards)
            var spec = Ptl_V1_Task()
            spec.modelHash = hash
            spec.lossScale = 1 / Double(tokens)
            spec.batchSize = UInt32(part.sequences.count)
            spec.seqLen = UInt32(longest)
            spec.precision = wirePrecision
            spec.grpoGradient = true
            spec.klBeta = settings.beta
            spec.clipLow = settings.clipLow
            spec.clipHigh = settings.clipHigh
            if settings.beta > 0, let h = referenceHash?.hash { spec.teacherHash = h; spec.kdTemperature = 1; spec.kdWeight = 1 }
            return (Self.taskKey(key, phase: .rollout, shard: s, measurement: key.measurement | Self.grpoGradientMeasurement), spec,
                    TaskCoding.encode(part.sequences) + [GRPOCoding.i32("prompt_lengths", part.promptLengths),
                                                         WireTensor(name: "advantages", shape: [part.advantages.count], floats: part.advantages)])
        }
        let n = grads.count
        func check(_ k: Ptl_V1_TaskKey, _ m: WireMessage) throws -> Frame {
            guard let g = m.tensor("grad"), g.dtype == .f32, g.byteCount == 4 * n else {
                throw WireError(kind: .descriptorMismatch, message: "the GRPO gradient result of \(TaskID(k)) lacks a gradient of \(n) floats")
            }
            let r = m.envelope.result
            guard r.lossSum.isFinite, abs(r.lossSum) <= 1e100, r.klSum.isFinite, r.klSum >= -1e-3 * Double(r.tokenCount) - 1e-3,
                  r.tokenCount <= UInt64(ShardCompute.maxShardTokens), r.clipped <= r.tokenCount, r.seconds.isFinite else {
                throw WireError(kind: .descriptorMismatch, message: "the GRPO gradient result of \(TaskID(k)) has an absurd loss, KL, clipped or token count")
            }
            let above = ptl_first_above_f32(g.frame.base, n, Self.maxGradientEntry)
            guard above == n else {
                throw WireError(kind: .nonFinite, message: "the GRPO gradient result of \(TaskID(k)) has an entry above \(Self.maxGradientEntry) in magnitude at index \(above)")
            }
            return g.frame
        }
        var frames: [Frame] = [], sums = GRPOSums(), seconds = 0.0
        for (k, m) in try coordinator.runPhase(tasks, check: { k, m in _ = try check(k, m) }) {
            frames.append(try check(k, m))
            let r = m.envelope.result
            sums.loss += r.lossSum; sums.count += Int(r.tokenCount); sums.clipped += Int(r.clipped); sums.kl += r.klSum
            seconds += r.seconds
        }
        try ShardReduce.sum(frames.map { $0.base }, into: grads, what: "GRPO step \(key.step)")
        return GRPOGradientResult(sums: sums, computeSeconds: seconds)
    }
}
