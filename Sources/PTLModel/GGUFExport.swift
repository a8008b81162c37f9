import Foundation
import PTLFormats
import PTLTensor

/// The file types `ptl export --type` writes, with llama.cpp's `general.file_type` (llama_ftype).
public enum GGUFExportType: String, CaseIterable, Sendable {
    case f32, f16, bf16, q8_0
    /// llama-quantize's Q4_K_M mix: Q4_K, with Q6_K for the output matrix (the embedding when tied)
    /// and for attn_v/ffn_down in the layers `useMoreBits` picks; llama.cpp's fallbacks where a
    /// row is not a whole number of 256-blocks (Q4_K → Q5_0, Q6_K → Q8_0, then F16).
    case q4_k_m

    public var fileType: UInt32 {
        switch self {
        case .f32: return 0
        case .f16: return 1
        case .q8_0: return 7
        case .q4_k_m: return 15
        case .bf16: return 32
        }
    }
    public var isQuantized: Bool { self == .q8_0 || self == .q4_k_m }
}

/// HF model (Llama or Qwen2) + tokenizer.json → a GGUF file llama.cpp loads: the `llama` or
/// `qwen2` architecture keys, `blk.N.*` tensor names, llama.cpp's q/k row permutation for
/// `llama`, tied embeddings as a missing `output.weight`, and the tokenizer as
/// `tokenizer.ggml.*` (byte-level BPE only, with a `pre` name llama.cpp knows).
public enum GGUFExport {
    /// Writes `model` with the tokenizer of `tokenizerSource` (an HF directory or a .gguf file) to
    /// `path`. Returns the file's size in bytes and the type each tensor got.
    @discardableResult
    public static func write(_ model: Model, tokenizerSource: String, to path: String, type: GGUFExportType,
                             name: String? = nil) throws -> (bytes: Int, types: [String: GGMLType]) {
        let vocabulary = try vocabulary(tokenizerSource: tokenizerSource, config: model.config)
        let writer = try self.writer(model, vocabulary: vocabulary, type: type, name: name)
        let bytes = try writer.write(to: path)
        return (bytes, Dictionary(uniqueKeysWithValues: writer.tensors.map { ($0.name, $0.type) }))
    }

    /// The tokenizer of a model path in GGUF terms.
    public static func vocabulary(tokenizerSource: String, config: ModelConfig) throws -> GGUFVocabulary {
        if ModelSource.isGGUF(tokenizerSource) {
            return try GGUFVocabulary(tokenizerJSON: GGUFModel.tokenizerJSON(path: tokenizerSource),
                                      tokenizerConfig: GGUFModel.tokenizerConfigJSON(path: tokenizerSource),
                                      chatTemplateFile: nil, config: config, source: tokenizerSource)
        }
        let dir = URL(fileURLWithPath: tokenizerSource)
        let file = dir.appendingPathComponent("tokenizer.json")
        guard let json = FileManager.default.contents(atPath: file.path) else {
            throw ModelError("\(file.path): missing (the GGUF export needs the model's tokenizer.json)")
        }
        return try GGUFVocabulary(tokenizerJSON: json,
                                  tokenizerConfig: FileManager.default.contents(atPath: dir.appendingPathComponent("tokenizer_config.json").path),
                                  chatTemplateFile: try? String(contentsOf: dir.appendingPathComponent("chat_template.jinja"), encoding: .utf8),
                                  config: config, source: file.path)
    }

    /// llama.cpp's use_more_bits: the layers Q4_K_M gives Q6_K for attn_v and ffn_down.
    public static func useMoreBits(_ layer: Int, _ layers: Int) -> Bool {
        layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
    }

    /// The type a tensor gets in a file of `type` (1-D tensors stay F32, as in llama.cpp's files).
    public static func tensorType(_ ggufName: String, shape: [Int], layer: Int?, layers: Int, tied: Bool, type: GGUFExportType) -> GGMLType {
        if shape.count < 2 { return .f32 }
        let row = shape.last!
        func fallback(_ t: GGMLType) -> GGMLType {
            if row % t.block.elements == 0 { return t }
            let next: GGMLType = t == .q4_K ? .q5_0 : t == .q6_K ? .q8_0 : .f16
            return row % next.block.elements == 0 ? next : .f16
        }
        switch type {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        case .q8_0: return fallback(.q8_0)
        case .q4_k_m:
            if ggufName == "output.weight" || (tied && ggufName == "token_embd.weight") {
                return row % 256 == 0 ? .q6_K : .q8_0
            }
            if let layer, ggufName.hasSuffix("attn_v.weight") || ggufName.hasSuffix("ffn_down.weight"), useMoreBits(layer, layers) {
                return fallback(.q6_K)
            }
            return fallback(.q4_K)
        }
    }

    /// llama.cpp name of an HF tensor name.
    public static func ggufName(_ hf: String, architecture: String) throws -> (name: String, layer: Int?) {
        switch hf {
        case "model.embed_tokens.weight": return ("token_embd.weight", nil)
        case "model.norm.weight": return ("output_norm.weight", nil)
        case "lm_head.weight": return ("output.weight", nil)
        default: break
        }
        let parts = hf.split(separator: ".")
        guard parts.count >= 5, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]) else {
            throw ModelError("\(hf): no GGUF name for this tensor")
        }
        let rest = parts[3...].joined(separator: ".")
        guard let name = GGUFModel.tensorNames.first(where: { $0.value == rest })?.key else {
            throw ModelError("\(hf): no GGUF name for this tensor in the \(architecture) architecture")
        }
        return ("blk.\(layer).\(name)", layer)
    }

    /// The GGUF writer for `model`: metadata, tokenizer and tensors (encoded when written).
    public static func writer(_ model: Model, vocabulary v: GGUFVocabulary, type: GGUFExportType, name: String?) throws -> GGUFWriter {
        let c = model.config
        let arch = c.modelType
        guard arch == "llama" || arch == "qwen2" else {
            throw ModelError("model_type \"\(arch)\" has no GGUF mapping here (supported: llama, qwen2)")
        }
        if let s = c.ropeScaling {
            throw ModelError("rope_scaling of type \"\(s.type)\" is not written to GGUF yet (llama.cpp needs a rope_freqs tensor); only unscaled RoPE exports")
        }
        if arch == "qwen2" && (c.oBias || c.mlpBias) {
            throw ModelError("qwen2 with an o_proj or MLP bias has no GGUF mapping (llama.cpp's qwen2 has q/k/v biases only)")
        }
        guard v.tokens.count == c.vocabSize else {
            throw ModelError("the tokenizer has \(v.tokens.count) tokens but the model's vocab_size is \(c.vocabSize)")
        }
        var w = GGUFWriter(alignment: 32)
        w.add("general.architecture", .string(arch))
        w.add("general.type", .string("model"))
        var modelName = name ?? "ptl-model"
        if name == nil, case .string(let n)? = c.raw["_name_or_path"], !n.isEmpty { modelName = (n as NSString).lastPathComponent }
        w.add("general.name", .string(modelName))
        w.add("general.file_type", .u32(type.fileType))
        if type.isQuantized { w.add("general.quantization_version", .u32(2)) }
        w.add("general.alignment", .u32(32))
        func u32(_ key: String, _ value: Int) { w.add("\(arch).\(key)", .u32(UInt32(value))) }
        u32("block_count", c.numHiddenLayers)
        u32("context_length", c.maxPositionEmbeddings)
        u32("embedding_length", c.hiddenSize)
        u32("feed_forward_length", c.intermediateSize)
        u32("attention.head_count", c.numAttentionHeads)
        u32("attention.head_count_kv", c.numKeyValueHeads)
        w.add("\(arch).rope.freq_base", .f32(Float(c.ropeTheta)))
        w.add("\(arch).attention.layer_norm_rms_epsilon", .f32(c.rmsNormEps))
        u32("vocab_size", c.vocabSize)
        u32("rope.dimension_count", c.headDim)
        if c.headDim * c.numAttentionHeads != c.hiddenSize {
            u32("attention.key_length", c.headDim)
            u32("attention.value_length", c.headDim)
        }
        v.add(to: &w)

        let tied = c.tieWordEmbeddings
        let layers = c.numHiddenLayers
        for e in model.layout.entries {
            if tied && e.name == "lm_head.weight" { continue }
            let (gname, layer) = try ggufName(e.name, architecture: arch)
            let t = tensorType(gname, shape: e.shape, layer: layer, layers: layers, tied: tied, type: type)
            var permuteHeads: Int? = nil
            if arch == "llama" {
                if e.name.hasSuffix("self_attn.q_proj.weight") || e.name.hasSuffix("self_attn.q_proj.bias") { permuteHeads = c.numAttentionHeads }
                if e.name.hasSuffix("self_attn.k_proj.weight") || e.name.hasSuffix("self_attn.k_proj.bias") { permuteHeads = c.numKeyValueHeads }
            }
            let entry = e
            try w.add(GGUFWriter.Tensor(name: gname, shape: e.shape, type: t) { region in
                var values = model.parameters.array(entry.range)
                if let bad = values.firstIndex(where: { !$0.isFinite }) {
                    throw ModelError("\(entry.name): value \(values[bad]) at index \(bad) is not finite; a GGUF file would carry it to every engine")
                }
                let rows = entry.shape[0], cols = entry.count / rows
                if let heads = permuteHeads { values = GGUFModel.permuteRows(values, rows: rows, cols: cols, heads: heads, toGGUF: true) }
                try encode(values, rowLength: entry.shape.last!, type: t, into: region)
            })
        }
        return w
    }

    /// Quantises `values` (whole rows of `rowLength`) into `region`, rows spread over the cores
    /// (each row's bytes depend on that row only, so the file is the same for any thread count).
    static func encode(_ values: [Float], rowLength: Int, type: GGMLType, into region: UnsafeMutableRawBufferPointer) throws {
        let rows = values.count / rowLength
        let rowBytes = GGMLQuantizer.byteCount(type, elements: rowLength)
        guard rows * rowBytes == region.count else { throw ModelError("GGUF export: \(rows)×\(rowBytes) bytes do not fill \(region.count)") }
        let failure = ErrorBox()
        values.withUnsafeBufferPointer { src in
            let base = src.baseAddress!, out = region.baseAddress!
            parallelChunks(rows, minChunk: max(1, 65_536 / max(1, rowLength))) { start, end in
                do { try GGMLQuantizer.quantize(type, base + start * rowLength, out + start * rowBytes, (end - start) * rowLength) }
                catch { failure.set(error) }
            }
        }
        if let e = failure.error { throw e }
    }
}

/// The first error of a parallel loop.
final class ErrorBox: @unchecked Sendable {
    private let lock = NSLock()
    private(set) var error: Error?
    func set(_ e: Error) { lock.withLock { if error == nil { error = e } } }
}

/// A byte-level BPE tokenizer as GGUF stores it (`tokenizer.ggml.*`).
public struct GGUFVocabulary: Sendable {
    public var tokens: [String]
    /// llama.cpp token types: 1 normal, 3 control (special added tokens), 4 user-defined, 5 unused (padding).
    public var types: [Int32]
    public var merges: [String]
    /// llama.cpp's pre-tokenizer name.
    public var pre: String
    public var bos: Int?
    public var eos: Int?
    public var pad: Int?
    public var addBOS: Bool
    public var addEOS: Bool
    public var chatTemplate: String?

    /// The pre-tokenizer names llama.cpp knows for the tokenizer.json pre-tokenizers ptl reads.
    public static let preNames = ["gpt-2", "smollm", "llama-bpe", "qwen2"]

    public init(tokenizerJSON: Data, tokenizerConfig: Data?, chatTemplateFile: String?, config: ModelConfig, source: String) throws {
        guard let json = try? JSONSerialization.jsonObject(with: tokenizerJSON) as? [String: Any] else {
            throw ModelError("\(source): not a JSON object")
        }
        guard let model = json["model"] as? [String: Any], model["type"] as? String == "BPE",
              let vocab = model["vocab"] as? [String: Any] else {
            throw ModelError("\(source): only byte-level BPE tokenizers export to GGUF (model.type is \"\((json["model"] as? [String: Any])?["type"] as? String ?? "none")\")")
        }
        pre = try Self.preName(json, source: source)
        var byID: [Int: (String, Int32)] = [:]
        for (token, idValue) in vocab {
            guard let id = (idValue as? Int) ?? (idValue as? NSNumber)?.intValue else { throw ModelError("\(source): vocab entry \(token) has no integer id") }
            byID[id] = (token, 1)
        }
        var addedSpecial: [String: Int] = [:]
        for item in json["added_tokens"] as? [[String: Any]] ?? [] {
            guard let id = (item["id"] as? Int) ?? (item["id"] as? NSNumber)?.intValue, let content = item["content"] as? String else {
                throw ModelError("\(source): an added_tokens entry has no id or content")
            }
            let special = item["special"] as? Bool ?? false
            byID[id] = (content, special ? 3 : 4)
            addedSpecial[content] = id
        }
        let n = config.vocabSize
        if let top = byID.keys.max(), top >= n {
            throw ModelError("\(source): token id \(top) does not fit the model's vocab_size \(n)")
        }
        if let low = byID.keys.min(), low < 0 { throw ModelError("\(source): negative token id \(low)") }
        let tokens = (0..<n).map { byID[$0]?.0 ?? "[PAD\($0)]" }
        self.tokens = tokens
        types = (0..<n).map { byID[$0]?.1 ?? 5 }
        var merges: [String] = []
        for m in model["merges"] as? [Any] ?? [] {
            if let s = m as? String { merges.append(s) } else if let p = m as? [String], p.count == 2 { merges.append(p[0] + " " + p[1]) } else {
                throw ModelError("\(source): a merge is neither \"a b\" nor [\"a\", \"b\"]")
            }
        }
        self.merges = merges

        let tc = tokenizerConfig.flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] } ?? [:]
        func tokenID(_ field: String) -> Int? {
            let value = tc[field]
            let content = (value as? String) ?? ((value as? [String: Any])?["content"] as? String)
            guard let content else { return nil }
            return addedSpecial[content] ?? tokens.firstIndex(of: content)
        }
        let bos = tokenID("bos_token") ?? config.bosTokenId
        let eos = tokenID("eos_token") ?? config.eosTokenIds.first
        self.bos = bos
        self.eos = eos
        pad = tokenID("pad_token")
        // What tokenizer.json's post-processor adds is what its encode does: bos first, eos last.
        var addBOS = false, addEOS = false
        if let post = json["post_processor"] as? [String: Any], post["type"] as? String == "TemplateProcessing",
           let single = post["single"] as? [[String: Any]] {
            for (i, piece) in single.enumerated() {
                guard let special = piece["SpecialToken"] as? [String: Any], let t = special["id"] as? String else { continue }
                let id = addedSpecial[t] ?? tokens.firstIndex(of: t)
                if i == 0, let id, id == bos { addBOS = true } else if i == single.count - 1, let id, id == eos { addEOS = true } else {
                    throw ModelError("\(source): the post-processor adds \(t) at position \(i), which GGUF cannot express (only bos first and eos last)")
                }
            }
        } else if let post = json["post_processor"], !(post is NSNull) {
            let kind = (post as? [String: Any])?["type"] as? String ?? "?"
            if kind != "ByteLevel" { throw ModelError("\(source): post-processor \(kind) has no GGUF equivalent") }
        }
        self.addBOS = addBOS
        self.addEOS = addEOS
        if let template = tc["chat_template"] as? String {
            chatTemplate = template
        } else if let list = tc["chat_template"] as? [[String: Any]] {
            chatTemplate = list.first { $0["name"] as? String == "default" }?["template"] as? String
        } else {
            chatTemplate = chatTemplateFile
        }
    }

    /// llama.cpp's `tokenizer.ggml.pre` for this tokenizer.json, or an error naming what it has.
    static func preName(_ json: [String: Any], source: String) throws -> String {
        let normalizer = json["normalizer"]
        let normalizerType = (normalizer as? [String: Any])?["type"] as? String
        let pre = json["pre_tokenizer"] as? [String: Any]
        func byteLevel(_ p: [String: Any], regex: Bool) -> Bool {
            p["type"] as? String == "ByteLevel" && (p["use_regex"] as? Bool ?? true) == regex && (p["add_prefix_space"] as? Bool ?? false) == false
        }
        func split(_ p: [String: Any], _ pattern: String) -> Bool {
            p["type"] as? String == "Split" && ((p["pattern"] as? [String: Any])?["Regex"] as? String) == pattern
                && (p["behavior"] as? String ?? "Isolated") == "Isolated" && (p["invert"] as? Bool ?? false) == false
        }
        let seq = pre?["type"] as? String == "Sequence" ? pre?["pretokenizers"] as? [[String: Any]] : nil
        var name: String?
        if let pre, byteLevel(pre, regex: true) {
            name = "gpt-2"
        } else if let seq, seq.count == 2, seq[0]["type"] as? String == "Digits", seq[0]["individual_digits"] as? Bool == true,
                  byteLevel(seq[1], regex: true) {
            name = "smollm"
        } else if let seq, seq.count == 2, split(seq[0], SplitPatternSources.llama3), byteLevel(seq[1], regex: false) {
            name = "llama-bpe"
        } else if let seq, seq.count == 2, split(seq[0], SplitPatternSources.qwen2), byteLevel(seq[1], regex: false) {
            name = "qwen2"
        }
        guard let name else {
            let described = (try? JSONSerialization.data(withJSONObject: json["pre_tokenizer"] ?? NSNull(), options: [.sortedKeys, .fragmentsAllowed]))
                .map { String(decoding: $0.prefix(300), as: UTF8.self) } ?? "?"
            throw ModelError("\(source): its pre-tokenizer has no llama.cpp name (known: \(preNames.joined(separator: ", "))); refusing to write a GGUF that would tokenize differently: \(described)")
        }
        let expectedNormalizer: String? = name == "qwen2" ? "NFC" : nil
        let isNull = normalizer == nil || normalizer is NSNull
        if expectedNormalizer == nil ? !isNull : normalizerType != expectedNormalizer {
            throw ModelError("\(source): normalizer \(normalizerType ?? "none") does not match llama.cpp's \(name) pre-tokenizer (expects \(expectedNormalizer ?? "none"))")
        }
        return name
    }

    func add(to w: inout GGUFWriter) {
        w.add("tokenizer.ggml.model", .string("gpt2"))
        w.add("tokenizer.ggml.pre", .string(pre))
        w.add("tokenizer.ggml.tokens", .strings(tokens))
        w.add("tokenizer.ggml.token_type", .i32s(types))
        w.add("tokenizer.ggml.merges", .strings(merges))
        if let bos { w.add("tokenizer.ggml.bos_token_id", .u32(UInt32(bos))) }
        if let eos { w.add("tokenizer.ggml.eos_token_id", .u32(UInt32(eos))) }
        if let pad { w.add("tokenizer.ggml.padding_token_id", .u32(UInt32(pad))) }
        w.add("tokenizer.ggml.add_bos_token", .bool(addBOS))
        w.add("tokenizer.ggml.add_eos_token", .bool(addEOS))
        if let chatTemplate { w.add("tokenizer.chat_template", .string(chatTemplate)) }
    }
}
