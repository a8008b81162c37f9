import Foundation
import PTLFormats
import PTLTensor

/// Loading and saving Hugging Face model directories (config.json + safetensors + tokenizer files).
public enum HFModel {
    /// Tensors a checkpoint may carry that we do not use.
    public static func sanitize(_ tensors: [String: TensorF32], config: ModelConfig) -> [String: TensorF32] {
        var out = tensors
        for name in tensors.keys where name.hasSuffix("rotary_emb.inv_freq") { out[name] = nil }
        if config.tieWordEmbeddings { out["lm_head.weight"] = nil }
        return out
    }

    /// Loads `directory` strictly: a missing, unexpected or mis-shaped tensor is an error naming it.
    public static func load(directory: String) throws -> Model {
        let config = try ModelConfig(directory: directory)
        let tensors: [String: TensorF32]
        do {
            tensors = try Safetensors.readModel(directory: directory)
        } catch {
            throw ModelError("\(error)")
        }
        return try model(config: config, tensors: tensors, source: directory)
    }

    /// Builds a model from named tensors, strictly.
    public static func model(config: ModelConfig, tensors raw: [String: TensorF32], source: String) throws -> Model {
        let tensors = sanitize(raw, config: config)
        // Every tensor is checked against the layout before the parameter buffer is allocated:
        // a config that declares sizes its weights do not have fails here, not in malloc.
        let layout = ParameterLayout(config: config)
        var missing: [String] = []
        for e in layout.entries {
            guard let t = tensors[e.name] else { missing.append(e.name); continue }
            guard t.shape == e.shape, t.values.count == e.count else {
                throw ModelError(.tensorMismatch, "\(source): tensor \(e.name) has shape \(t.shape), expected \(e.shape) from config.json")
            }
        }
        if !missing.isEmpty {
            throw ModelError(.tensorMismatch, "\(source): missing tensor\(missing.count > 1 ? "s" : "") \(missing.prefix(5).joined(separator: ", "))\(missing.count > 5 ? " and \(missing.count - 5) more" : "")")
        }
        let extra = Set(tensors.keys).subtracting(layout.entries.map(\.name)).sorted()
        if !extra.isEmpty {
            throw ModelError(.tensorMismatch, "\(source): unexpected tensor\(extra.count > 1 ? "s" : "") \(extra.prefix(5).joined(separator: ", ")) (not part of a \(config.architecture) with this config)")
        }
        let model = Model(config: config)
        for e in model.layout.entries {
            if let t = tensors[e.name] { model.parameters.copy(from: t.values, to: e.offset) }
        }
        for e in model.layout.entries {
            let p = model.parameters.at(e.offset)
            for i in 0..<e.count where !p[i].isFinite {
                throw ModelError(.tensorMismatch, "\(source): tensor \(e.name) holds a non-finite value at index \(i)")
            }
        }
        return model
    }

    /// Files copied along with a model so the output directory is complete for transformers.
    public static let tokenizerFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                        "generation_config.json", "vocab.json", "merges.txt", "chat_template.jinja"]

    /// Writes `model` as an HF directory (config.json + model.safetensors), copying tokenizer
    /// files from `copyFrom`. The directory is written beside the target and renamed into place.
    public static func save(_ model: Model, to directory: String, dtype: SafetensorsDType = .f32,
                            copyFrom source: String? = nil) throws {
        let fm = FileManager.default
        let target = URL(fileURLWithPath: directory).standardizedFileURL
        let temp = target.deletingLastPathComponent().appendingPathComponent(".\(target.lastPathComponent).tmp-\(getpid())")
        try? fm.removeItem(at: temp)
        try fm.createDirectory(at: temp, withIntermediateDirectories: true)
        var config = model.config.raw
        config["torch_dtype"] = .string(dtype == .bf16 ? "bfloat16" : "float32")
        if config["dtype"] != nil { config["dtype"] = config["torch_dtype"] }
        var cfg = model.config
        cfg.raw = config
        try cfg.jsonData().write(to: temp.appendingPathComponent("config.json"))
        let file = temp.appendingPathComponent("model.safetensors").path
        if dtype == .f32 {
            // Straight from the parameter buffer: no copy of the model.
            let p = model.parameters.pointer
            try Safetensors.writeF32(model.layout.entries.map { e in
                (e.name, e.shape, UnsafeBufferPointer(start: UnsafePointer(p + e.range.lowerBound), count: e.count))
            }, to: file)
        } else {
            let tensors = model.layout.entries.map { e in
                (name: e.name, tensor: TensorF32(shape: e.shape, values: model.parameters.array(e.range)))
            }
            try Safetensors.write(tensors, to: file, dtype: dtype)
        }
        if let source {
            for f in tokenizerFiles {
                let src = URL(fileURLWithPath: source).appendingPathComponent(f)
                if fm.fileExists(atPath: src.path) {
                    try fm.copyItem(at: src, to: temp.appendingPathComponent(f))
                }
            }
        }
        if fm.fileExists(atPath: target.path) {
            let old = target.deletingLastPathComponent().appendingPathComponent(".\(target.lastPathComponent).old-\(getpid())")
            try fm.moveItem(at: target, to: old)
            try fm.moveItem(at: temp, to: target)
            try? fm.removeItem(at: old)
        } else {
            try fm.moveItem(at: temp, to: target)
        }
    }
}
