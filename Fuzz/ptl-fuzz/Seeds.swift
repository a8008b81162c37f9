import Foundation
import PTLCluster
import PTLFormats
@testable import PTLLoop
import PTLModel
import PTLPrune
import PTLFuzzTargets

/// Writes the seed corpora (`PTL_FUZZ_WRITE_SEEDS=DIR ptl-fuzz`; scripts/fuzz.sh --seeds): small
/// valid inputs made by the encoders ptl itself uses, so the fuzzer starts from what honest peers
/// and files look like. Sources are read from the package root (the working directory).
enum Seeds {
    static func write(to dir: String) throws {
        let fm = FileManager.default
        func put(_ target: FuzzTarget, _ name: String, _ bytes: [UInt8]) throws {
            let d = "\(dir)/\(target.rawValue)"
            try fm.createDirectory(atPath: d, withIntermediateDirectories: true)
            try Data(bytes).write(to: URL(fileURLWithPath: "\(d)/\(name)"))
        }
        func joined(_ parts: [[UInt8]]) -> [UInt8] {
            var out: [UInt8] = []
            for (i, p) in parts.enumerated() { if i > 0 { out += [0, 0x50, 0x54, 0x4C] }; out += p }
            return out
        }
        func file(_ path: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }

        // Wire: what workers and the coordinator send each other.
        var key = Ptl_V1_TaskKey()
        key.run = "seed"; key.round = 1; key.phase = .grad; key.step = 3; key.shard = 1; key.attempt = 0
        var task = Messages.envelope(.task, run: "seed")
        task.task = key
        var spec = Ptl_V1_Task()
        spec.modelHash = "0123abcd"; spec.batchSize = 2; spec.seqLen = 16; spec.lossScale = 0.5
        task.taskSpec = spec
        var result = Messages.envelope(.result, run: "seed")
        result.task = key
        var r = Ptl_V1_Result()
        r.lossSum = 12.5; r.tokenCount = 20; r.examples = 2; r.seconds = 0.1
        result.result = r
        var stats = ActivationStatistics(layers: 2, intermediate: 8, hidden: 4)
        stats.tokens = 20
        var gram = FFNGram(layers: 2, intermediate: 8)
        gram.tokens = 20
        for i in gram.values.indices { gram.values[i] = Double(i % 7) }
        let messages: [(String, WireMessage)] = [
            ("ready", Messages.ready(workerID: "w1", threads: 2, cachedModel: "0123abcd")),
            ("heartbeat", Messages.heartbeat()),
            ("busy", Messages.busy(key)),
            ("error", Messages.error(key, "shard 1: out of memory")),
            ("task", WireMessage(envelope: task, tensors: TaskCoding.encode([[1, 2, 3, 4], [5, 6], []]) +
                                 [WireTensor(name: "branch_scale", shape: [2], floats: [1, 0.5])])),
            ("result-grad", WireMessage(envelope: result, tensors: [WireTensor(name: "grad", shape: [4], floats: [0.1, -0.2, 0.3, 0])])),
            ("result-stats", WireMessage(envelope: result, tensors: TaskCoding.encode(stats))),
            ("result-gram", WireMessage(envelope: result, tensors: TaskCoding.encode(gram))),
            ("result-hessians", WireMessage(envelope: result, tensors: TaskCoding.encode(LayerHessians(block: 1, config: fuzzConfig)))),
        ]
        for (name, m) in messages { try put(.wire, name, joined(try Wire.encode(m))) }

        // Model updates: one block changed, one unchanged, sizes around a block.
        for n in [0, 5, 300, 1100] {
            let old = [Float](repeating: 1, count: n), new = (0..<n).map { Float($0 % 13) * 0.25 }
            let tensors = ModelDelta.encode(old: old.withUnsafeBytes { Array($0) }, new: new.withUnsafeBytes { Array($0) })
            try put(.delta, "update-\(n)", [UInt8(n & 0xFF), UInt8(n >> 8)] + joined(tensors.map(\.bytes)))
        }

        // Tokenizers: the fixtures' tokenizer.json cut to the byte alphabet and the merges among it.
        var small: [String: Data] = [:]
        for name in ["bytelevel", "digits", "llama3", "qwen2"] {
            let src = try Data(contentsOf: URL(fileURLWithPath: "Tests/Fixtures/tokenizers/\(name)/tokenizer.json"))
            let cut = try trimmedTokenizer(src, keep: 400)
            small[name] = cut
            try put(.tokenizer, name, joined([Array(cut), Array("Question: 48 + 7 × 3 = ? Answer: 69\n\u{00e9}\u{4e2d} <|im_end|>".utf8)]))
        }

        // A small model of the byte-level tokenizer's vocabulary: GGUF and safetensors.
        let work = "\(scratch)/seeds"
        try? fm.removeItem(atPath: work)
        try fm.createDirectory(atPath: work, withIntermediateDirectories: true)
        try small["bytelevel"]!.write(to: URL(fileURLWithPath: "\(work)/tokenizer.json"))
        let vocab = try JSONSerialization.jsonObject(with: small["bytelevel"]!) as! [String: Any]
        let ids = ((vocab["model"] as! [String: Any])["vocab"] as! [String: Any]).values.compactMap { ($0 as? NSNumber)?.intValue }
            + ((vocab["added_tokens"] as? [[String: Any]]) ?? []).compactMap { ($0["id"] as? NSNumber)?.intValue }
        let vocabSize = (ids.max() ?? 0) + 1
        let config = try ModelConfig(vocabSize: vocabSize, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 2,
                                     numAttentionHeads: 2, numKeyValueHeads: 1, maxPositionEmbeddings: 128, tieWordEmbeddings: true)
        let model = Model(config: config)
        model.initializeRandomly(seed: 1)
        for type in [GGUFExportType.f16, .q8_0] {
            try GGUFExport.write(model, tokenizerSource: work, to: "\(work)/m.gguf", type: type)
            try put(.gguf, "small-\(type.rawValue)", try file("\(work)/m.gguf"))
        }
        try put(.gguf, "types", try file("Tests/Fixtures/gguf/types.gguf"))
        try HFModel.save(model, to: "\(work)/hf", dtype: .bf16, copyFrom: nil)
        try put(.safetensors, "small-bf16", try file("\(work)/hf/model.safetensors"))
        for f in ["dtypes.safetensors", "sharded/model-00001-of-00002.safetensors", "sharded/model-00002-of-00002.safetensors"] {
            try put(.safetensors, (f as NSString).lastPathComponent, try file("Tests/Fixtures/safetensors/\(f)"))
        }

        // config.json of every model the repo ships.
        for d in ["Tests/Fixtures/tiny-llama", "Tests/Fixtures/tiny-qwen2", "models/demo", "\(work)/hf"] {
            try put(.config, d.split(separator: "/").last.map(String.init)!, try file("\(d)/config.json"))
        }

        // Corpus lines: GSM8K's and the demo's.
        for (name, path) in [("gsm8k", "../shared/data/gsm8k/test.jsonl"), ("perplexity", "Tests/Fixtures/golden/perplexity.jsonl")] {
            let lines = String(decoding: try file(path), as: UTF8.self).split(separator: "\n").prefix(3)
            try put(.jsonl, name, Array((lines.joined(separator: "\n") + "\n").utf8))
        }

        // A checkpoint's manifest and loop state, for a plan on the harness's model.
        var settings = LoopSettings()
        settings.target = 0.6; settings.removeLayers = 1; settings.step = 0.25; settings.widthMultiple = 8
        let plan = try PrunePlan.make(config: fuzzConfig, method: .ptl, target: settings.target, removeLayers: settings.removeLayers,
                                      step: settings.step, widthMultiple: settings.widthMultiple,
                                      layersPerRound: settings.layersPerRound, order: settings.order)
        var state = LoopState(settings: settings, plan: plan, totalSteps: settings.tuneSteps * plan.rounds.count,
                              alpha: [Float](repeating: 1, count: fuzzConfig.numHiddenLayers))
        let stateJSON = Array(try JSONEncoder().encode(state))
        state.doomed = [DoomedLayers(removeAtRound: plan.rounds.count, windowStart: 0, layers: [2], scores: [0.5], trialDamage: 0.1)]
        let manifest = Checkpoint.Manifest(files: ["loop.json": .init(bytes: stateJSON.count, crc32c: stateJSON.withUnsafeBytes { CRC32C.checksum($0) })])
        try put(.checkpoint, "fresh", joined([Array(try JSONEncoder().encode(manifest)), stateJSON, Array(#"{"step":3,"optimizerStep":3,"run":"seed"}"#.utf8)]))
        try put(.checkpoint, "doomed", joined([Array(#"{"files":{}}"#.utf8), Array(try JSONEncoder().encode(state)), []]))

        // Recipes the repo ships.
        for path in ["recipes/demo/ptl.yaml"] { try put(.recipe, "demo", try file(path)) }
        try put(.recipe, "small", Array("model: models/demo\nmethod: prune-once\ntarget-params: 0.5\nseed: 3\nfresh: true\n".utf8))
        try? fm.removeItem(atPath: work)
    }

    /// tokenizer.json with the vocabulary cut to its first `keep` ids (the byte alphabet comes
    /// first in these) and the merges whose parts and result are all kept; added tokens kept.
    static func trimmedTokenizer(_ data: Data, keep: Int) throws -> Data {
        var json = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        var model = json["model"] as! [String: Any]
        let vocab = (model["vocab"] as! [String: Any]).compactMapValues { ($0 as? NSNumber)?.intValue }
        var kept = vocab.filter { $0.value < keep }
        if let added = json["added_tokens"] as? [[String: Any]] {
            var next = keep
            var newAdded: [[String: Any]] = []
            for var a in added {
                guard let content = a["content"] as? String else { continue }
                a["id"] = next; kept[content] = next; next += 1
                newAdded.append(a)
            }
            json["added_tokens"] = newAdded
        }
        model["vocab"] = kept
        if let merges = model["merges"] as? [Any] {
            model["merges"] = merges.filter { m in
                let pair: [String] = (m as? String).map { $0.split(separator: " ").map(String.init) } ?? (m as? [String] ?? [])
                return pair.count == 2 && kept[pair[0]] != nil && kept[pair[1]] != nil && kept[pair[0] + pair[1]] != nil
            }
        }
        json["model"] = model
        json.removeValue(forKey: "post_processor")
        return try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
    }
}
