import Foundation
import Testing
import PTLFormats
@testable import PTLModel

// tiny-llama's config.json and weights with one value patched: every size, count and number a
// kernel relies on must be refused with a ModelError naming the key (or tensor) and what was
// expected, before a buffer is sized from it.

func tinyLlamaConfigJSON() throws -> [String: Any] {
    try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureRoot.appendingPathComponent("tiny-llama/config.json"))) as! [String: Any]
}

/// The error parsing the patched config gives (nil when it parses).
func configError(_ patch: (inout [String: Any]) -> Void) throws -> ModelError? {
    var json = try tinyLlamaConfigJSON()
    patch(&json)
    do {
        _ = try ModelConfig(data: JSONSerialization.data(withJSONObject: json), source: "hostile/config.json")
        return nil
    } catch let error as ModelError {
        return error
    }
}

@Suite struct ConfigValidationTests {
    @Test func theUnpatchedConfigParses() throws {
        #expect(try configError { _ in } == nil)
    }

    @Test(arguments: [
        ("num_attention_heads", "0", "\"num_attention_heads\" must be an integer from 1 to 1024, found 0"),
        ("num_attention_heads", "-4", "\"num_attention_heads\" must be an integer from 1 to 1024, found -4"),
        ("num_attention_heads", "\"4\"", "\"num_attention_heads\" must be an integer from 1 to 1024, found \"4\""),
        ("num_attention_heads", "4.5", "found 4.5"),
        ("num_key_value_heads", "0", "\"num_key_value_heads\" must be an integer from 1 to 1024, found 0"),
        ("num_key_value_heads", "3", "num_attention_heads (4) must be a multiple of num_key_value_heads (3)"),
        ("head_dim", "23", "head_dim must be even (RoPE rotates pairs)"),
        ("head_dim", "4096", "\"head_dim\" must be an integer from 1 to 1024, found 4096"),
        ("num_hidden_layers", "2000", "\"num_hidden_layers\" must be an integer from 1 to 1024, found 2000"),
        ("hidden_size", "1048576", "\"hidden_size\" must be an integer from 1 to 65536, found 1048576"),
        ("vocab_size", "8388608", "\"vocab_size\" must be an integer from 1 to 4194304, found 8388608"),
        ("vocab_size", "[384]", "\"vocab_size\" must be an integer from 1 to 4194304, found [384]"),
        ("intermediate_size", "2097152", "\"intermediate_size\" must be an integer from 1 to 1048576, found 2097152"),
        ("max_position_embeddings", "1073741824", "\"max_position_embeddings\" must be an integer from 1 to 16777216"),
        ("rms_norm_eps", "0", "\"rms_norm_eps\" must be a finite positive number, found 0"),
        ("rms_norm_eps", "-1e-5", "\"rms_norm_eps\" must be a finite positive number"),
        ("rms_norm_eps", "\"1e-5\"", "\"rms_norm_eps\" must be a finite positive number, found \"1e-5\""),
        ("rms_norm_eps", "2", "\"rms_norm_eps\" must be below 1"),
        ("rms_norm_eps", "1e-60", "representable in fp32"),
        ("tie_word_embeddings", "\"yes\"", "\"tie_word_embeddings\" must be true or false, found \"yes\""),
        ("attention_bias", "1", "\"attention_bias\" must be true or false, found 1"),
        ("eos_token_id", "384", "\"eos_token_id\" must be an integer from 0 to 383, found 384"),
        ("eos_token_id", "[0, -1]", "\"eos_token_id\" must hold integers from 0 to 383, found -1"),
        ("eos_token_id", "\"</s>\"", "\"eos_token_id\" must be an integer or a list of integers"),
        ("bos_token_id", "1e300", "\"bos_token_id\" must be an integer from 0 to 383"),
        ("model_type", "5", "\"model_type\" must be a string, found 5"),
        ("hidden_act", "[\"silu\"]", "\"hidden_act\" must be a string"),
        ("rope_parameters", "\"none\"", "\"rope_parameters\" must be an object"),
    ])
    func aBadValueIsNamed(key: String, json: String, expected: String) throws {
        let value = try JSONSerialization.jsonObject(with: Data(json.utf8), options: .fragmentsAllowed)
        let e = try configError { $0[key] = value }
        #expect(e?.kind == .invalidConfig, "\(key) = \(json): \(String(describing: e))")
        #expect(e?.message.hasPrefix("hostile/config.json: ") == true)
        #expect(e?.message.contains(expected) == true, "\(String(describing: e))")
    }

    @Test func headsMustDivideTheHiddenSizeWithoutAHeadDim() throws {
        let e = try configError { $0["head_dim"] = nil; $0["num_attention_heads"] = 5; $0["num_key_value_heads"] = 5 }
        #expect(e?.kind == .invalidConfig && e?.message.contains("hidden_size (64) is not divisible by num_attention_heads (5) and no head_dim is given") == true)
    }

    @Test func ropeValuesMustBeFinitePositive() throws {
        func ropeError(_ key: String, _ value: Any) throws -> ModelError? {
            try configError { json in
                var rope = json["rope_parameters"] as! [String: Any]
                rope[key] = value
                json["rope_parameters"] = rope
            }
        }
        var e = try ropeError("rope_theta", -10000)
        #expect(e?.kind == .invalidConfig && e?.message.contains("\"rope_theta\" must be a finite positive number, found -10000") == true)
        e = try ropeError("rope_theta", 0)
        #expect(e?.kind == .invalidConfig && e?.message.contains("\"rope_theta\" must be a finite positive number") == true)
        e = try ropeError("factor", 0)
        #expect(e?.kind == .invalidConfig && e?.message.contains("\"factor\" must be a finite positive number") == true)
        e = try ropeError("high_freq_factor", 1)
        #expect(e?.kind == .invalidConfig && e?.message.contains("high_freq_factor > low_freq_factor, found 1.0 and 1.0") == true)
        e = try ropeError("original_max_position_embeddings", -32)
        #expect(e?.kind == .invalidConfig && e?.message.contains("\"original_max_position_embeddings\" must be an integer") == true)
        e = try ropeError("rope_type", "yarn")
        #expect(e?.kind == .unsupported && e?.message.contains("unsupported rope scaling type \"yarn\"") == true)
        // 1e999 overflows a Double: either the JSON is refused or the value is not finite.
        let text = try String(contentsOf: fixtureRoot.appendingPathComponent("tiny-llama/config.json"), encoding: .utf8)
            .replacingOccurrences(of: "\"vocab_size\": 384", with: "\"vocab_size\": 384, \"rope_theta\": 1e999")
        #expect(throws: ModelError.self) { try ModelConfig(data: Data(text.utf8), source: "inf/config.json") }
    }

    @Test func theSameLimitsApplyToConfigsBuiltInCode() throws {
        #expect(throws: ModelError.self) {
            try ModelConfig(vocabSize: 10, hiddenSize: 16, intermediateSize: 8, numHiddenLayers: 1, numAttentionHeads: 4,
                            numKeyValueHeads: 4, ropeTheta: .infinity)
        }
        #expect(throws: ModelError.self) {
            try ModelConfig(vocabSize: 10, hiddenSize: 16, intermediateSize: 8, numHiddenLayers: 1, numAttentionHeads: 4,
                            numKeyValueHeads: 4, rmsNormEps: .nan)
        }
    }
}

@Suite struct StrictWeightTests {
    func tinyLlama() throws -> (ModelConfig, [String: TensorF32]) {
        let dir = fixtureRoot.appendingPathComponent("tiny-llama").path
        return (try ModelConfig(directory: dir), try Safetensors.read(path: dir + "/model.safetensors"))
    }

    @Test func missingExtraAndMisShapedTensorsAreNamed() throws {
        let (config, tensors) = try tinyLlama()
        #expect(throws: Never.self) { try HFModel.model(config: config, tensors: tensors, source: "tiny") }

        var t = tensors
        t["model.layers.1.mlp.up_proj.weight"] = nil
        var e = caughtModelError { _ = try HFModel.model(config: config, tensors: t, source: "tiny") }
        #expect(e?.kind == .tensorMismatch && e?.message.contains("tiny: missing tensor model.layers.1.mlp.up_proj.weight") == true)

        t = tensors
        t["model.layers.3.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"]
        e = caughtModelError { _ = try HFModel.model(config: config, tensors: t, source: "tiny") }
        #expect(e?.kind == .tensorMismatch && e?.message.contains("tiny: unexpected tensor model.layers.3.mlp.up_proj.weight") == true)

        t = tensors
        let up = tensors["model.layers.1.mlp.up_proj.weight"]!
        t["model.layers.1.mlp.up_proj.weight"] = TensorF32(shape: [up.shape[1], up.shape[0]], values: up.values)
        e = caughtModelError { _ = try HFModel.model(config: config, tensors: t, source: "tiny") }
        #expect(e?.kind == .tensorMismatch && e?.message.contains("tiny: tensor model.layers.1.mlp.up_proj.weight has shape [64, 176], expected [176, 64] from config.json") == true)

        // A tensor whose shape was changed after it was built no longer holds its values.
        t = tensors
        var lying = up
        lying.shape = [176, 65]
        t["model.layers.1.mlp.up_proj.weight"] = lying
        e = caughtModelError { _ = try HFModel.model(config: config, tensors: t, source: "tiny") }
        #expect(e?.kind == .tensorMismatch)

        t = tensors
        var values = up.values
        values[7] = .nan
        t["model.layers.1.mlp.up_proj.weight"] = TensorF32(shape: up.shape, values: values)
        e = caughtModelError { _ = try HFModel.model(config: config, tensors: t, source: "tiny") }
        #expect(e?.kind == .tensorMismatch && e?.message.contains("holds a non-finite value at index 7") == true)
    }

    @Test func aGGUFTensorIsCheckedAgainstTheMetadataBeforeItIsUnpermuted() throws {
        // Swap the two dimensions of blk.0.attn_q.weight: same byte count, wrong shape.
        var bytes = [UInt8](try Data(contentsOf: ggufFixtures.appendingPathComponent("tiny-llama.gguf")))
        let name = Array("blk.0.attn_q.weight".utf8)
        var at = 0
        while !bytes[at..<(at + name.count)].elementsEqual(name) { at += 1 }
        let dims = at + name.count + 4
        let d0 = bytes[dims..<(dims + 8)], d1 = bytes[(dims + 8)..<(dims + 16)]
        bytes.replaceSubrange(dims..<(dims + 16), with: Array(d1) + Array(d0))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("swapped.gguf").path
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        let e = caughtModelError { _ = try GGUFModel.load(path: path) }
        #expect(e?.kind == .tensorMismatch && e?.message.contains("swapped.gguf: tensor blk.0.attn_q.weight (model.layers.0.self_attn.q_proj.weight) has shape [64, 96], expected [96, 64]") == true)
    }
}

@Suite struct GGUFMetadataValidationTests {
    /// tiny-llama.gguf with the u32 value of metadata `key` replaced.
    func patched(_ key: String, _ value: UInt32) throws -> String {
        var bytes = [UInt8](try Data(contentsOf: ggufFixtures.appendingPathComponent("tiny-llama.gguf")))
        let name = Array(key.utf8)
        var at = 0
        while !bytes[at..<(at + name.count)].elementsEqual(name) { at += 1 }
        let valueAt = at + name.count + 4   // after the type
        withUnsafeBytes(of: value.littleEndian) { bytes.replaceSubrange(valueAt..<(valueAt + 4), with: $0) }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("meta.gguf").path
        FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    @Test func metadataSizesAreValidatedLikeAConfig() throws {
        var e = caughtModelError { _ = try GGUFModel.load(path: try patched("llama.attention.head_count", 0)) }
        #expect(e?.kind == .invalidConfig && e?.message.contains("meta.gguf: the metadata gives an invalid config (HF names): \"num_attention_heads\" must be an integer from 1 to 1024, found 0") == true)
        e = caughtModelError { _ = try GGUFModel.load(path: try patched("llama.attention.key_length", 23)) }
        #expect(e?.kind == .invalidConfig && e?.message.contains("head_dim must be even") == true)
        e = caughtModelError { _ = try GGUFModel.load(path: try patched("llama.block_count", 5000)) }
        #expect(e?.kind == .invalidConfig && e?.message.contains("\"num_hidden_layers\" must be an integer from 1 to 1024, found 5000") == true)
        e = caughtModelError { _ = try GGUFModel.load(path: try patched("tokenizer.ggml.eos_token_id", 384)) }
        #expect(e?.kind == .invalidConfig && e?.message.contains("\"eos_token_id\" must be an integer from 0 to 383, found 384") == true)
    }
}

func caughtModelError(_ body: () throws -> Void) -> ModelError? {
    do { try body(); return nil } catch { return error as? ModelError }
}

@Suite struct TokenIDValidationTests {
    @Test func idsOutsideTheVocabularyAreNamed() throws {
        try validateTokenIDs([0, 5, 9] as [Int32], vocabularySize: 10, source: "batch")
        try validateTokenIDs([3, -1, -1] as [Int32], vocabularySize: 10, source: "targets", negativeMeansIgnored: true)
        var e = #expect(throws: TokenIDError.self) { try validateTokenIDs([1, 2, 10, 3], vocabularySize: 10, source: "task 7") }
        #expect(e?.kind == .outOfVocabulary && e?.position == 2 && e?.id == 10)
        #expect(e?.description == "task 7: token id 10 at position 2 is outside the vocabulary (expected 0 to 9)")
        e = #expect(throws: TokenIDError.self) { try validateTokenIDs([1, -5] as [Int32], vocabularySize: 10, source: "corpus.jsonl") }
        #expect(e?.kind == .negative && e?.position == 1 && e?.id == -5)
        e = #expect(throws: TokenIDError.self) { try validateTokenIDs([Int.max], vocabularySize: 10, source: "x") }
        #expect(e?.id == Int.max)
    }
}
