import Foundation
import Logging
import PTLLoop
import PTLModel
import PTLTensor
import PTLTokenizer

/// The worker's side of the loop's phases: `stats`, `grad`, `eval` and `trace` tasks computed by
/// `ShardCompute` — the code `LocalBackend` runs — on the model version the task names. Every
/// input from the network is checked first (sequences, token ids against the vocabulary, branch
/// scales, eval sizes); a bad one fails the task with an error naming it, and the worker serves on.
public enum WorkerTasks {
    /// The handler of a worker; it keeps the last model version, its tokenizer, one training
    /// pass and one gradient buffer across tasks.
    /// `logger` hears of a bf16 task this machine computes in fp32.
    public static func handler(logger: Logger = .silent) -> TaskHandler {
        let cache = ModelCache()
        cache.logger = logger
        return { key, spec, inputs, version, teacherVersion in
            let m = try cache.model(hash: spec.modelHash, config: version.config, weights: version.weights)
            let precision = try cache.precision(spec.precision)
            switch key.phase {
            case .eval, .trace:
                let (counts, texts, seconds) = try ShardCompute.answers(model: m, tokenizer: try cache.tokenizer(json: version.tokenizer),
                                                                         jsonl: spec.recordsJsonl, maxNewTokens: Int(spec.maxNewTokens),
                                                                         batchSize: Int(spec.batchSize), precision: precision)
                var r = Ptl_V1_Result()
                r.correct = UInt64(counts.correct)
                r.examples = UInt64(counts.total)
                r.tokenCount = UInt64(counts.generatedTokens)
                r.seconds = seconds
                let flags = counts.perExample.map { UInt8($0 ? 1 : 0) }
                var tensors = [WireTensor(name: "correct", dtype: .u8, shape: [flags.count], bytes: flags)]
                if key.phase == .trace {   // the generated texts, as one JSON array
                    let json = Array(try JSONSerialization.data(withJSONObject: texts))
                    tensors.append(WireTensor(name: "traces", dtype: .u8, shape: [json.count], bytes: json))
                }
                return (r, tensors)
            case .stats where spec.hessianBlock > 0:
                let (out, h) = try cache.compute.layerHessians(model: m, sequences: try TaskCoding.decodeSequences(inputs), seqLen: Int(spec.seqLen),
                                                               block: Int(spec.hessianBlock) - 1,
                                                               branchScale: try TaskCoding.decodeBranchScale(inputs), precision: precision)
                return (result(out), TaskCoding.encode(h))
            case .stats where spec.ffnGram:
                let (out, gram) = try cache.compute.ffnGram(model: m, sequences: try TaskCoding.decodeSequences(inputs), seqLen: Int(spec.seqLen),
                                                            branchScale: try TaskCoding.decodeBranchScale(inputs), precision: precision)
                return (result(out), TaskCoding.encode(gram))
            case .stats:
                let (out, stats) = try cache.compute.statistics(model: m, sequences: try TaskCoding.decodeSequences(inputs), seqLen: Int(spec.seqLen),
                                                                branchScale: try TaskCoding.decodeBranchScale(inputs), precision: precision)
                return (result(out), TaskCoding.encode(stats))
            case .grad:
                let teacher = try cache.teacher(spec, version: teacherVersion, student: (spec.modelHash, m))
                let grads = cache.compute.gradientBuffer(count: m.layout.count)
                let out = try cache.compute.gradient(model: m, sequences: try TaskCoding.decodeSequences(inputs), seqLen: Int(spec.seqLen),
                                                     lossScale: Float(spec.lossScale), branchScale: try TaskCoding.decodeBranchScale(inputs),
                                                     precision: precision, teacher: teacher, into: grads)
                return (result(out), [WireTensor(name: "grad", buffer: grads)])   // sent from the buffer itself
            case .rollout:
                return try rollout(spec: spec, inputs: inputs, model: m, cache: cache, version: version, teacherVersion: teacherVersion,
                                   precision: precision)
            default:
                throw WireError(kind: .unknownType, message: "phase \(key.phase.name) is not run by this worker")
            }
        }
    }

    static func result(_ out: ShardOutput) -> Ptl_V1_Result {
        var r = Ptl_V1_Result()
        r.lossSum = out.lossSum
        r.tokenCount = UInt64(out.tokens)
        r.examples = UInt64(out.examples)
        r.seconds = out.seconds
        return r
    }

    /// The worker's model of the current version, kept across tasks (tasks run one at a time):
    /// a new version of the same shape is copied into the same parameter buffer, so a tuning step
    /// allocates (and page-faults) nothing model-sized.
    final class ModelCache: @unchecked Sendable {
        let lock = NSLock()
        var current: (hash: String, config: String, model: Model)?
        var teacherModel: (hash: String, model: Model)?
        var tokenizer: (source: String, tokenizer: Tokenizer)?
        let compute = ShardCompute()
        var warnedFallback = false
        var logger = Logger.silent

        /// What this worker runs for the task's precision; a fallback to fp32 is logged once.
        func precision(_ wire: Ptl_V1_Precision) throws -> Precision {
            switch wire {
            case .fp32: return .fp32
            case .bf16:
                let (p, note) = Precision.bf16.resolved()
                lock.lock(); defer { lock.unlock() }
                if let note, !warnedFallback {
                    warnedFallback = true
                    logger.warning("\(note)")
                }
                return p
            case .UNRECOGNIZED(let n):
                throw WireError(kind: .descriptorMismatch, message: "precision \(n) is not one this worker knows (fp32 = 0, bf16 = 1)")
            }
        }

        func tokenizer(json: String) throws -> Tokenizer {
            lock.lock(); defer { lock.unlock() }
            if let t = tokenizer, t.source == json { return t.tokenizer }
            guard !json.isEmpty else { throw WireError(kind: .descriptorMismatch, message: "the model version came without a tokenizer") }
            let t = try Tokenizer(data: Data(json.utf8), source: "tokenizer.json from the coordinator")
            tokenizer = (json, t)
            return t
        }

        /// The task's distillation teacher (its knobs checked), nil for cross-entropy. The teacher's
        /// model is built once per hash (its bf16 copy, made on first use, is kept with it).
        func teacher(_ spec: Ptl_V1_Task, version: ModelVersion?, student: (hash: String, model: Model)) throws -> Teacher? {
            guard !spec.teacherHash.isEmpty else { return nil }
            guard let version, version.hash == spec.teacherHash else {
                throw WireError(kind: .descriptorMismatch, message: "the task names the teacher \(spec.teacherHash), which this worker does not hold")
            }
            lock.lock()
            defer { lock.unlock() }
            let m: Model
            if spec.teacherHash == student.hash {
                m = student.model
            } else if let t = teacherModel, t.hash == spec.teacherHash {
                m = t.model
            } else {
                teacherModel = nil
                let cfg = try ModelConfig(data: Data(version.config.utf8), source: "teacher \(version.hash)")
                guard version.weights.count == ParameterLayout(config: cfg).count else {
                    throw WireError(kind: .descriptorMismatch, message: "teacher \(version.hash): \(version.weights.count) weights for its config")
                }
                m = Model(config: cfg, parameters: FloatBuffer(version.weights))
                teacherModel = (version.hash, m)
            }
            do { return try Teacher(model: m, temperature: spec.kdTemperature, kdWeight: spec.kdWeight) } catch {
                throw WireError(kind: .descriptorMismatch, message: "\(error)")
            }
        }

        func model(hash: String, config: String, weights: [Float]) throws -> Model {
            lock.lock(); defer { lock.unlock() }
            if let c = current, c.hash == hash { return c.model }
            if let c = current, c.config == config, c.model.parameters.count == weights.count {
                weights.withUnsafeBufferPointer { c.model.parameters.pointer.update(from: $0.baseAddress!, count: $0.count) }
                c.model.parametersChanged()
                current = (hash, config, c.model)
                return c.model
            }
            let cfg = try ModelConfig(data: Data(config.utf8), source: "model \(hash)")
            let layout = ParameterLayout(config: cfg)
            guard weights.count == layout.count else {
                throw WireError(kind: .descriptorMismatch, message: "model \(hash): \(weights.count) weights for a config of \(layout.count) parameters")
            }
            let m = Model(config: cfg, parameters: FloatBuffer(weights))
            current = (hash, config, m)
            return m
        }
    }
}
