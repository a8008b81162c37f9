import Foundation

/// A thrown, readable problem with a model directory, config or weights.
public struct ModelError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// RoPE frequency scaling (only `llama3` changes the frequencies; `default` leaves them).
public struct RopeScaling: Sendable, Equatable {
    public var type: String
    public var factor: Double = 1
    public var lowFreqFactor: Double = 1
    public var highFreqFactor: Double = 4
    public var originalMaxPositionEmbeddings: Int = 8192
}

/// The architecture hyper-parameters of a Llama or Qwen2 model, read from HF `config.json`.
///
/// Unknown keys are kept in `raw` and written back unchanged when the model is saved, so a
/// pruned model's config differs from its source only in the sizes we changed.
public struct ModelConfig: Sendable {
    public var modelType: String
    public var architecture: String
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var numKeyValueHeads: Int
    public var headDim: Int
    public var rmsNormEps: Float
    public var ropeTheta: Double
    public var ropeScaling: RopeScaling?
    public var maxPositionEmbeddings: Int
    public var tieWordEmbeddings: Bool
    /// q/k/v projections carry a bias (Qwen2 always; Llama when `attention_bias`).
    public var qkvBias: Bool
    /// o_proj carries a bias (Llama `attention_bias`).
    public var oBias: Bool
    /// gate/up/down carry biases (Llama `mlp_bias`).
    public var mlpBias: Bool
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]
    /// Every key of config.json as read (JSON values).
    public var raw: [String: JSONValue]

    /// Builds a config in code (tests, benchmarks, the demo recipe).
    public init(modelType: String = "llama", vocabSize: Int, hiddenSize: Int, intermediateSize: Int,
                numHiddenLayers: Int, numAttentionHeads: Int, numKeyValueHeads: Int, headDim: Int? = nil,
                rmsNormEps: Float = 1e-5, ropeTheta: Double = 10000, ropeScaling: RopeScaling? = nil,
                maxPositionEmbeddings: Int = 2048, tieWordEmbeddings: Bool = false,
                bosTokenId: Int? = nil, eosTokenIds: [Int] = []) throws {
        var raw: [String: JSONValue] = [
            "model_type": .string(modelType),
            "architectures": .array([.string(modelType == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM")]),
            "vocab_size": .number(Double(vocabSize)), "hidden_size": .number(Double(hiddenSize)),
            "intermediate_size": .number(Double(intermediateSize)),
            "num_hidden_layers": .number(Double(numHiddenLayers)),
            "num_attention_heads": .number(Double(numAttentionHeads)),
            "num_key_value_heads": .number(Double(numKeyValueHeads)),
            "rms_norm_eps": .number(Double(rmsNormEps)), "rope_theta": .number(ropeTheta),
            "max_position_embeddings": .number(Double(maxPositionEmbeddings)),
            "tie_word_embeddings": .bool(tieWordEmbeddings), "hidden_act": .string("silu"),
            "torch_dtype": .string("float32"),
        ]
        if let headDim { raw["head_dim"] = .number(Double(headDim)) }
        if let bosTokenId { raw["bos_token_id"] = .number(Double(bosTokenId)) }
        if eosTokenIds.count == 1 { raw["eos_token_id"] = .number(Double(eosTokenIds[0])) }
        if eosTokenIds.count > 1 { raw["eos_token_id"] = .array(eosTokenIds.map { .number(Double($0)) }) }
        if let s = ropeScaling {
            raw["rope_scaling"] = .object([
                "rope_type": .string(s.type), "factor": .number(s.factor),
                "low_freq_factor": .number(s.lowFreqFactor), "high_freq_factor": .number(s.highFreqFactor),
                "original_max_position_embeddings": .number(Double(s.originalMaxPositionEmbeddings)),
            ])
        }
        try self.init(raw: raw, source: "config")
    }

    /// Parses config.json contents; `source` names the file in errors.
    public init(data: Data, source: String) throws {
        let value: JSONValue
        do { value = try JSONValue.parse(data) } catch {
            throw ModelError("\(source): not valid JSON (\(error))")
        }
        guard case .object(let dict) = value else { throw ModelError("\(source): expected a JSON object") }
        try self.init(raw: dict, source: source)
    }

    /// Reads `directory/config.json`.
    public init(directory: String) throws {
        let path = (directory as NSString).appendingPathComponent("config.json")
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ModelError("\(path): missing (an HF model directory needs config.json)")
        }
        try self.init(data: data, source: path)
    }

    init(raw: [String: JSONValue], source: String) throws {
        func int(_ key: String) throws -> Int {
            guard let v = raw[key] else { throw ModelError("\(source): missing \"\(key)\"") }
            guard let n = v.int, n > 0 else { throw ModelError("\(source): \"\(key)\" must be a positive integer, found \(v)") }
            return n
        }
        func optInt(_ key: String) throws -> Int? {
            guard let v = raw[key], v != .null else { return nil }
            guard let n = v.int else { throw ModelError("\(source): \"\(key)\" must be an integer, found \(v)") }
            return n
        }
        guard let type = raw["model_type"]?.string else {
            throw ModelError("\(source): missing \"model_type\"")
        }
        guard let arch = Architecture.registry[type] else {
            throw ModelError("\(source): unsupported model_type \"\(type)\" (supported: \(Architecture.registry.keys.sorted().joined(separator: ", ")))")
        }
        self.raw = raw
        modelType = type
        architecture = arch.className
        vocabSize = try int("vocab_size")
        hiddenSize = try int("hidden_size")
        intermediateSize = try int("intermediate_size")
        numHiddenLayers = try int("num_hidden_layers")
        numAttentionHeads = try int("num_attention_heads")
        numKeyValueHeads = try optInt("num_key_value_heads") ?? numAttentionHeads
        headDim = try optInt("head_dim") ?? (hiddenSize / numAttentionHeads)
        guard numKeyValueHeads > 0, numAttentionHeads % numKeyValueHeads == 0 else {
            throw ModelError("\(source): num_attention_heads (\(numAttentionHeads)) must be a multiple of num_key_value_heads (\(numKeyValueHeads))")
        }
        guard headDim > 0, headDim % 2 == 0 else { throw ModelError("\(source): head_dim must be even and positive, found \(headDim)") }
        if raw["head_dim"] == nil || raw["head_dim"] == .null, hiddenSize % numAttentionHeads != 0 {
            throw ModelError("\(source): hidden_size (\(hiddenSize)) is not divisible by num_attention_heads (\(numAttentionHeads)) and no head_dim is given")
        }
        if let act = raw["hidden_act"]?.string, act != "silu" {
            throw ModelError("\(source): unsupported hidden_act \"\(act)\" (only silu)")
        }
        rmsNormEps = Float(raw["rms_norm_eps"]?.number ?? 1e-6)
        maxPositionEmbeddings = try optInt("max_position_embeddings") ?? 2048
        tieWordEmbeddings = raw["tie_word_embeddings"]?.bool ?? arch.tiedByDefault
        let attentionBias = raw["attention_bias"]?.bool ?? false
        qkvBias = arch.qkvBias ?? attentionBias
        oBias = arch.oBias ?? attentionBias
        mlpBias = raw["mlp_bias"]?.bool ?? false
        bosTokenId = try optInt("bos_token_id")
        switch raw["eos_token_id"] {
        case .number(let n)?: eosTokenIds = [Int(n)]
        case .array(let a)?: eosTokenIds = a.compactMap { $0.int }
        default: eosTokenIds = []
        }
        // rope: transformers ≤4 writes rope_theta + rope_scaling; 5 writes rope_parameters.
        var theta = raw["rope_theta"]?.number
        var scalingDict: [String: JSONValue]? = nil
        if case .object(let rp)? = raw["rope_parameters"] {
            theta = rp["rope_theta"]?.number ?? theta
            scalingDict = rp
        }
        if case .object(let rs)? = raw["rope_scaling"] { scalingDict = rs }
        ropeTheta = theta ?? 10000
        ropeScaling = nil
        if let d = scalingDict {
            let kind = d["rope_type"]?.string ?? d["type"]?.string ?? "default"
            switch kind {
            case "default":
                break
            case "llama3":
                var s = RopeScaling(type: "llama3")
                guard let f = d["factor"]?.number else { throw ModelError("\(source): llama3 rope scaling needs \"factor\"") }
                s.factor = f
                s.lowFreqFactor = d["low_freq_factor"]?.number ?? 1
                s.highFreqFactor = d["high_freq_factor"]?.number ?? 4
                s.originalMaxPositionEmbeddings = d["original_max_position_embeddings"]?.int ?? 8192
                ropeScaling = s
            default:
                throw ModelError("\(source): unsupported rope scaling type \"\(kind)\" (supported: default, llama3)")
            }
        }
    }

    /// Size of the q projection output.
    public var qDim: Int { numAttentionHeads * headDim }
    /// Size of each of the k and v projection outputs.
    public var kvDim: Int { numKeyValueHeads * headDim }

    /// RoPE inverse frequencies (headDim/2), with llama3 scaling applied as transformers does.
    public var ropeInverseFrequencies: [Double] {
        let half = headDim / 2
        // transformers: 1 / base^(arange(0, dim, 2).float() / dim), in fp32.
        var inv = (0..<half).map { i in Double(Float(1) / Float(Foundation.pow(ropeTheta, Double(2 * i) / Double(headDim)))) }
        if let s = ropeScaling, s.type == "llama3" {
            let old = Double(s.originalMaxPositionEmbeddings)
            let lowWavelen = old / s.lowFreqFactor
            let highWavelen = old / s.highFreqFactor
            inv = inv.map { f in
                let wavelen = 2 * Double.pi / f
                var g = wavelen > lowWavelen ? f / s.factor : f
                if !(wavelen < highWavelen) && !(wavelen > lowWavelen) {
                    let smooth = (old / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor)
                    g = (1 - smooth) * g / s.factor + smooth * g
                }
                return g
            }
        }
        return inv
    }

    /// config.json contents reflecting the current sizes (unknown keys preserved).
    public func jsonData() -> Data {
        var out = raw
        out["num_hidden_layers"] = .number(Double(numHiddenLayers))
        out["intermediate_size"] = .number(Double(intermediateSize))
        out["vocab_size"] = .number(Double(vocabSize))
        out["hidden_size"] = .number(Double(hiddenSize))
        out["num_attention_heads"] = .number(Double(numAttentionHeads))
        out["num_key_value_heads"] = .number(Double(numKeyValueHeads))
        out["tie_word_embeddings"] = .bool(tieWordEmbeddings)
        if case .array? = out["layer_types"] {
            out["layer_types"] = .array(Array(repeating: .string("full_attention"), count: numHiddenLayers))
        }
        out["torch_dtype"] = out["torch_dtype"] ?? .string("float32")
        return JSONValue.object(out).serialized(pretty: true)
    }
}

/// What differs between the supported architectures.
public struct Architecture: Sendable {
    public let className: String
    /// Forced q/k/v bias (nil: follow `attention_bias`).
    public let qkvBias: Bool?
    /// Forced o_proj bias (nil: follow `attention_bias`).
    public let oBias: Bool?
    public let tiedByDefault: Bool

    /// Architectures keyed by `model_type`.
    public static let registry: [String: Architecture] = [
        "llama": Architecture(className: "LlamaForCausalLM", qkvBias: nil, oBias: nil, tiedByDefault: false),
        "qwen2": Architecture(className: "Qwen2ForCausalLM", qkvBias: true, oBias: false, tiedByDefault: false),
    ]
}
