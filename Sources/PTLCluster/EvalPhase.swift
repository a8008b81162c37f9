import Foundation
import PTLData
import PTLEval
import PTLModel

/// The `eval` phase: greedy answers and correct counts for shards of an eval set.
public enum EvalPhase {
    /// Worker side: evaluate the shard's records.
    static func compute(model: Model, version: ModelVersion, spec: Ptl_V1_Task, tokenizers: GradPhase.ModelCache) throws -> (Ptl_V1_Result, [WireTensor]) {
        let tokenizer = try tokenizers.tokenizer(json: version.tokenizer)
        let records = try Corpus.parse(Data(spec.recordsJsonl.utf8), source: "eval task").records
        var settings = EvalSettings()
        settings.maxNewTokens = Int(max(1, spec.maxNewTokens))
        settings.batchSize = Int(max(1, spec.batchSize))
        let t0 = Date()
        let (report, predictions) = Evaluator.run(model: model, tokenizer: tokenizer, records: records, settings: settings)
        var r = Ptl_V1_Result()
        r.correct = UInt64(report.correct)
        r.examples = UInt64(report.total)
        r.tokenCount = UInt64(report.generatedTokens)
        r.seconds = Date().timeIntervalSince(t0)
        let flags = predictions.map { UInt8($0.correct ? 1 : 0) }
        return (r, [WireTensor(name: "correct", dtype: .u8, shape: [flags.count], bytes: flags)])
    }

    /// Coordinator side: accuracy over `jsonlLines` (one record a line) cut into `shards`.
    public static func run(coordinator: Coordinator, model: Model, tokenizerJSON: String, jsonlLines: [String], shards: Int,
                           maxNewTokens: Int, batchSize: Int = 8, run: String = "run", round: UInt32 = 0)
        throws -> (correct: Int, total: Int, generatedTokens: Int, perExample: [Bool]) {
        let hash = GradPhase.publish(model, on: coordinator)
        coordinator.tokenizerJSON = tokenizerJSON
        var tasks: [(key: Ptl_V1_TaskKey, spec: Ptl_V1_Task, inputs: [WireTensor])] = []
        for s in 0..<shards {
            let part = jsonlLines[(s * jsonlLines.count / shards)..<((s + 1) * jsonlLines.count / shards)]
            var key = Ptl_V1_TaskKey()
            key.run = run; key.round = round; key.phase = .eval; key.shard = UInt32(s)
            var spec = Ptl_V1_Task()
            spec.modelHash = hash
            spec.recordsJsonl = part.joined(separator: "\n")
            spec.maxNewTokens = UInt32(maxNewTokens)
            spec.batchSize = UInt32(batchSize)
            tasks.append((key, spec, []))
        }
        var correct = 0, total = 0, tokens = 0
        var flags: [Bool] = []
        for (_, m) in try coordinator.runPhase(tasks) {
            correct += Int(m.envelope.result.correct)
            total += Int(m.envelope.result.examples)
            tokens += Int(m.envelope.result.tokenCount)
            flags += (m.tensor("correct")?.bytes ?? []).map { $0 == 1 }
        }
        return (correct, total, tokens, flags)
    }
}
