import Foundation
import PTLFormats
import PTLTokenizer

/// Llama and Qwen2 models from llama.cpp GGUF files: config from metadata, tensors renamed to
/// their HF names (undoing the q/k row permutation llama.cpp applies to Llama), and the
/// tokenizer rebuilt from `tokenizer.ggml.*` as an HF tokenizer.json.
public enum GGUFModel {
    /// Loads the model of a GGUF file.
    public static func load(path: String) throws -> Model {
        let file = try wrap { try GGUFFile(path: path) }
        let config = try self.config(file)
        // Shapes are checked before the q/k un-permutation, which indexes rows by head.
        let expected = Dictionary(uniqueKeysWithValues: ParameterLayout(config: config).entries.map { ($0.name, $0.shape) })
        var tensors: [String: TensorF32] = [:]
        for info in file.tensors {
            guard let name = try hfName(info.name, path: path) else { continue }
            guard let shape = expected[name] else {
                throw ModelError(.tensorMismatch, "\(path): unexpected tensor \(info.name) (\(name) is not part of a \(config.architecture) with this config)")
            }
            guard info.shape == shape else {
                throw ModelError(.tensorMismatch, "\(path): tensor \(info.name) (\(name)) has shape \(info.shape), expected \(shape) from the metadata")
            }
            var t = try wrap { try file.tensor(info) }
            if config.modelType == "llama" {
                if name.hasSuffix("self_attn.q_proj.weight") || name.hasSuffix("self_attn.q_proj.bias") {
                    t = unpermute(t, heads: config.numAttentionHeads)
                } else if name.hasSuffix("self_attn.k_proj.weight") || name.hasSuffix("self_attn.k_proj.bias") {
                    t = unpermute(t, heads: config.numKeyValueHeads)
                }
            }
            tensors[name] = t
        }
        return try HFModel.model(config: config, tensors: tensors, source: path)
    }

    static func wrap<T>(_ body: () throws -> T) throws -> T {
        do { return try body() } catch { throw ModelError("\(error)") }
    }

    /// The HF config a GGUF file describes.
    public static func config(_ file: GGUFFile) throws -> ModelConfig {
        let m = file.metadata
        guard let arch = m["general.architecture"]?.string else { throw ModelError("\(file.path): no general.architecture") }
        guard arch == "llama" || arch == "qwen2" else {
            throw ModelError("\(file.path): unsupported architecture \"\(arch)\" (supported: llama, qwen2)")
        }
        func int(_ key: String) throws -> Int {
            guard let v = m["\(arch).\(key)"]?.int else { throw ModelError("\(file.path): missing \(arch).\(key)") }
            return v
        }
        if file.tensors.contains(where: { $0.name == "rope_freqs.weight" }) {
            throw ModelError("\(file.path): rope frequency factors (llama3 rope scaling) in GGUF are not supported")
        }
        let hidden = try int("embedding_length"), heads = try int("attention.head_count")
        let vocab = m["\(arch).vocab_size"]?.int ?? m["tokenizer.ggml.tokens"]?.array?.count ?? 0
        let tied = !file.tensors.contains { $0.name == "output.weight" }
        var eos: [Int] = []
        if let e = m["tokenizer.ggml.eos_token_id"]?.int { eos.append(e) }
        if let e = m["tokenizer.ggml.eot_token_id"]?.int, !eos.contains(e) { eos.append(e) }
        let intermediate = try int("feed_forward_length"), layers = try int("block_count")
        var c: ModelConfig
        do {
            c = try ModelConfig(modelType: arch, vocabSize: vocab, hiddenSize: hidden, intermediateSize: intermediate,
                                numHiddenLayers: layers, numAttentionHeads: heads,
                                numKeyValueHeads: m["\(arch).attention.head_count_kv"]?.int ?? heads,
                                headDim: m["\(arch).attention.key_length"]?.int,
                                rmsNormEps: Float(m["\(arch).attention.layer_norm_rms_epsilon"]?.double ?? 1e-6),
                                ropeTheta: m["\(arch).rope.freq_base"]?.double ?? 10000,
                                maxPositionEmbeddings: m["\(arch).context_length"]?.int ?? 2048, tieWordEmbeddings: tied,
                                bosTokenId: m["tokenizer.ggml.bos_token_id"]?.int, eosTokenIds: eos)
        } catch let error as ModelError {
            // The config was built in code ("config: …"): name the file, and say the values came from its metadata.
            let detail = error.message.hasPrefix("config: ") ? String(error.message.dropFirst(8)) : error.message
            throw ModelError(error.kind, "\(file.path): the metadata gives an invalid config (HF names): \(detail)")
        }
        if let name = m["general.name"]?.string { c.raw["_name_or_path"] = .string(name) }
        return c
    }

    /// llama.cpp's names of a block's tensors → the HF names under `model.layers.N.`.
    public static let tensorNames = [
        "attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
        "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
        "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
        "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
        "attn_output.weight": "self_attn.o_proj.weight", "attn_output.bias": "self_attn.o_proj.bias",
        "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
        "ffn_down.weight": "mlp.down_proj.weight",
        "ffn_gate.bias": "mlp.gate_proj.bias", "ffn_up.bias": "mlp.up_proj.bias", "ffn_down.bias": "mlp.down_proj.bias",
    ]

    /// llama.cpp tensor name → HF name (nil for tensors we do not use).
    static func hfName(_ gguf: String, path: String) throws -> String? {
        switch gguf {
        case "token_embd.weight": return "model.embed_tokens.weight"
        case "output_norm.weight": return "model.norm.weight"
        case "output.weight": return "lm_head.weight"
        default: break
        }
        let parts = gguf.split(separator: ".")
        guard parts.count >= 3, parts[0] == "blk", let layer = Int(parts[1]) else {
            throw ModelError("\(path): unexpected tensor \(gguf)")
        }
        let rest = parts[2...].joined(separator: ".")
        guard let hf = tensorNames[rest] else { throw ModelError("\(path): unexpected tensor \(gguf)") }
        return "model.layers.\(layer).\(hf)"
    }

    /// Undoes convert_hf_to_gguf's `permute`: GGUF row h·D + 2i + j holds HF row h·D + j·D/2 + i.
    static func unpermute(_ t: TensorF32, heads: Int) -> TensorF32 {
        let rows = t.shape[0]
        return TensorF32(shape: t.shape, values: permuteRows(t.values, rows: rows, cols: t.count / rows, heads: heads, toGGUF: false))
    }

    /// llama.cpp's q/k row order against HF's, either way: within each head of D rows, GGUF row
    /// 2i + j is HF row j·D/2 + i.
    static func permuteRows(_ values: [Float], rows: Int, cols: Int, heads: Int, toGGUF: Bool) -> [Float] {
        let D = rows / heads, half = D / 2
        var out = [Float](repeating: 0, count: values.count)
        for h in 0..<heads {
            for i in 0..<half {
                for j in 0..<2 {
                    let gguf = (h * D + 2 * i + j) * cols, hf = (h * D + j * half + i) * cols
                    let (src, dst) = toGGUF ? (hf, gguf) : (gguf, hf)
                    for c in 0..<cols { out[dst + c] = values[src + c] }
                }
            }
        }
        return out
    }

    /// tokenizer.json contents of the GGUF file at `path`.
    public static func tokenizerJSON(path: String) throws -> Data {
        try tokenizerJSON(try wrap { try GGUFFile(path: path) })
    }

    /// tokenizer_config.json for the rebuilt tokenizer: its class, special tokens and chat template.
    public static func tokenizerConfigJSON(path: String) throws -> Data {
        let file = try wrap { try GGUFFile(path: path) }
        let m = file.metadata
        let tokens = m["tokenizer.ggml.tokens"]?.array?.compactMap(\.string) ?? []
        var config: [String: Any] = ["tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": false,
                                     "model_max_length": m["\(m["general.architecture"]?.string ?? "llama").context_length"]?.int ?? 2048]
        for (key, field) in [("bos", "bos_token"), ("eos", "eos_token"), ("unknown", "unk_token"), ("padding", "pad_token")] {
            if let id = m["tokenizer.ggml.\(key)_token_id"]?.int, tokens.indices.contains(id) { config[field] = tokens[id] }
        }
        if let t = m["tokenizer.chat_template"]?.string { config["chat_template"] = t }
        config["add_bos_token"] = m["tokenizer.ggml.add_bos_token"]?.bool ?? false
        return try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys, .prettyPrinted])
    }

    /// tokenizer.json contents equivalent to the GGUF's `tokenizer.ggml.*` (a byte-level BPE).
    public static func tokenizerJSON(_ file: GGUFFile) throws -> Data {
        let m = file.metadata
        guard m["tokenizer.ggml.model"]?.string == "gpt2" else {
            throw ModelError("\(file.path): tokenizer model \"\(m["tokenizer.ggml.model"]?.string ?? "none")\" is not supported (only gpt2 byte-level BPE)")
        }
        guard let tokens = m["tokenizer.ggml.tokens"]?.array?.compactMap(\.string) else { throw ModelError("\(file.path): no tokenizer.ggml.tokens") }
        let merges = m["tokenizer.ggml.merges"]?.array?.compactMap(\.string) ?? []
        let types = m["tokenizer.ggml.token_type"]?.array?.compactMap(\.int) ?? []
        var vocab: [String: Int] = [:]
        for (i, t) in tokens.enumerated() where vocab[t] == nil { vocab[t] = i }
        var added: [[String: Any]] = []
        for (i, t) in types.enumerated() where (t == 3 || t == 4) && i < tokens.count {
            added.append(["id": i, "content": tokens[i], "single_word": false, "lstrip": false, "rstrip": false,
                          "normalized": false, "special": t == 3])
        }
        let pre = m["tokenizer.ggml.pre"]?.string ?? "default"
        let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
        let byteLevelNoRegex: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false]
        var normalizer: Any = NSNull()
        let preTokenizer: [String: Any]
        switch pre {
        case "default", "gpt2", "gpt-2":
            preTokenizer = byteLevel
        case "smollm":
            preTokenizer = ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel]]
        case "llama-bpe", "llama3":
            preTokenizer = ["type": "Sequence", "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": SplitPatternSources.llama3], "behavior": "Isolated", "invert": false], byteLevelNoRegex]]
        case "qwen2":
            normalizer = ["type": "NFC"]
            preTokenizer = ["type": "Sequence", "pretokenizers": [
                ["type": "Split", "pattern": ["Regex": SplitPatternSources.qwen2], "behavior": "Isolated", "invert": false], byteLevelNoRegex]]
        default:
            throw ModelError("\(file.path): tokenizer pre-tokenizer \"\(pre)\" is not supported (supported: default, gpt2, smollm, llama-bpe, qwen2)")
        }
        var single: [[String: Any]] = []
        var specials: [String: Any] = [:]
        func special(_ key: String) -> (String, Int)? {
            guard let id = m["tokenizer.ggml.\(key)_token_id"]?.int, tokens.indices.contains(id) else { return nil }
            return (tokens[id], id)
        }
        if m["tokenizer.ggml.add_bos_token"]?.bool == true, let (t, id) = special("bos") {
            single.append(["SpecialToken": ["id": t, "type_id": 0]])
            specials[t] = ["id": t, "ids": [id], "tokens": [t]]
        }
        single.append(["Sequence": ["id": "A", "type_id": 0]])
        if m["tokenizer.ggml.add_eos_token"]?.bool == true, let (t, id) = special("eos") {
            single.append(["SpecialToken": ["id": t, "type_id": 0]])
            specials[t] = ["id": t, "ids": [id], "tokens": [t]]
        }
        let json: [String: Any] = [
            "version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added,
            "normalizer": normalizer, "pre_tokenizer": preTokenizer,
            "post_processor": ["type": "TemplateProcessing", "single": single,
                               "pair": single + [["Sequence": ["id": "B", "type_id": 1]]], "special_tokens": specials],
            "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "dropout": NSNull(), "unk_token": NSNull(), "continuing_subword_prefix": NSNull(),
                      "end_of_word_suffix": NSNull(), "fuse_unk": false, "byte_fallback": false, "ignore_merges": pre == "llama-bpe",
                      "vocab": vocab, "merges": merges],
        ]
        return try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
    }
}

/// Regex sources of the pre-tokenizer families (as tokenizer.json spells them).
enum SplitPatternSources {
    static let llama3 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2 = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
}

/// Loading by path: an HF model directory or a `.gguf` file.
public enum ModelSource {
    public static func isGGUF(_ path: String) -> Bool { path.lowercased().hasSuffix(".gguf") }

    public static func loadModel(_ path: String) throws -> Model {
        isGGUF(path) ? try GGUFModel.load(path: path) : try HFModel.load(directory: path)
    }

    public static func loadTokenizer(_ path: String) throws -> Tokenizer {
        if isGGUF(path) {
            return try Tokenizer(data: try GGUFModel.tokenizerJSON(path: path), source: "\(path) (tokenizer.ggml.*)")
        }
        let file = (path as NSString).appendingPathComponent("tokenizer.json")
        guard FileManager.default.fileExists(atPath: file) else {
            throw ModelError("\(file): missing (the model directory needs a tokenizer.json)")
        }
        return try Tokenizer(path: file)
    }

    /// The model's tokenizer.json text (rebuilt from `tokenizer.ggml.*` for a GGUF file).
    public static func tokenizerJSON(_ path: String) throws -> String {
        if isGGUF(path) { return String(decoding: try GGUFModel.tokenizerJSON(path: path), as: UTF8.self) }
        let file = (path as NSString).appendingPathComponent("tokenizer.json")
        guard let d = FileManager.default.contents(atPath: file) else { throw ModelError("\(file): missing (the model directory needs a tokenizer.json)") }
        return String(decoding: d, as: UTF8.self)
    }

    /// Writes tokenizer.json and tokenizer_config.json for a GGUF model into `directory`, so saved
    /// HF directories are complete; an HF model directory is left alone.
    public static func writeTokenizerFiles(_ path: String, to directory: String) throws {
        guard isGGUF(path) else { return }
        let dir = URL(fileURLWithPath: directory)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try GGUFModel.tokenizerJSON(path: path).write(to: dir.appendingPathComponent("tokenizer.json"))
        try GGUFModel.tokenizerConfigJSON(path: path).write(to: dir.appendingPathComponent("tokenizer_config.json"))
    }
}
