import Foundation

/// A thrown, readable problem with a model directory, config or weights.
public struct ModelError: Error, CustomStringConvertible, Sendable {
    /// The kind of failure, for callers and tests that branch on it.
    public enum Kind: Sendable, Equatable {
        /// A config value is missing, of the wrong JSON type, out of range or inconsistent.
        case invalidConfig
        /// A valid value this library does not implement (model_type, hidden_act, rope type, …).
        case unsupported
        /// A tensor is missing, unexpected, mis-shaped or holds a non-finite value.
        case tensorMismatch
        /// Anything else (a file that cannot be read, an error passed on from a parser, …).
        case other
    }

    public let kind: Kind
    public let message: String
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
    public init(_ message: String) { self.init(.other, message) }
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
            throw ModelError(.invalidConfig, "\(source): not valid JSON (\(error))")
        }
        guard case .object(let dict) = value else { throw ModelError(.invalidConfig, "\(source): expected a JSON object") }
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

    /// Upper bounds on the sizes a config may declare: far above any supported model, low
    /// enough that no buffer size derived from them overflows or asks for an absurd allocation.
    public static let maxLayers = 1024
    public static let maxHiddenSize = 65536
    public static let maxIntermediateSize = 1 << 20
    public static let maxVocabSize = 1 << 22
    public static let maxHeads = 1024
    public static let maxHeadDim = 1024
    public static let maxPositionEmbeddingsLimit = 1 << 24

    init(raw: [String: JSONValue], source: String) throws {
        func invalid(_ message: String) -> ModelError { ModelError(.invalidConfig, "\(source): \(message)") }
        // The offending value as JSON, shortened: a hostile file must not flood the message.
        func shown(_ v: JSONValue) -> String {
            let text = v.description
            return text.count > 60 ? text.prefix(60) + "…" : text
        }
        func int(_ key: String, max limit: Int) throws -> Int {
            guard let v = raw[key] else { throw invalid("missing \"\(key)\"") }
            guard let n = v.int, n > 0, n <= limit else {
                throw invalid("\"\(key)\" must be an integer from 1 to \(limit), found \(shown(v))")
            }
            return n
        }
        func optInt(_ key: String, min lower: Int = 1, max limit: Int) throws -> Int? {
            guard let v = raw[key], v != .null else { return nil }
            guard let n = v.int, n >= lower, n <= limit else {
                throw invalid("\"\(key)\" must be an integer from \(lower) to \(limit), found \(shown(v))")
            }
            return n
        }
        func optBool(_ key: String) throws -> Bool? {
            guard let v = raw[key], v != .null else { return nil }
            guard let b = v.bool else { throw invalid("\"\(key)\" must be true or false, found \(shown(v))") }
            return b
        }
        /// A finite, positive number (rope_theta, rms_norm_eps, scaling factors).
        func optPositive(_ key: String, in dict: [String: JSONValue]) throws -> Double? {
            guard let v = dict[key], v != .null else { return nil }
            guard let d = v.number, d.isFinite, d > 0 else { throw invalid("\"\(key)\" must be a finite positive number, found \(shown(v))") }
            return d
        }
        guard let typeValue = raw["model_type"] else { throw invalid("missing \"model_type\"") }
        guard let type = typeValue.string else { throw invalid("\"model_type\" must be a string, found \(shown(typeValue))") }
        guard let arch = Architecture.registry[type] else {
            throw ModelError(.unsupported, "\(source): unsupported model_type \"\(type)\" (supported: \(Architecture.registry.keys.sorted().joined(separator: ", ")))")
        }
        self.raw = raw
        modelType = type
        architecture = arch.className
        vocabSize = try int("vocab_size", max: Self.maxVocabSize)
        hiddenSize = try int("hidden_size", max: Self.maxHiddenSize)
        intermediateSize = try int("intermediate_size", max: Self.maxIntermediateSize)
        numHiddenLayers = try int("num_hidden_layers", max: Self.maxLayers)
        numAttentionHeads = try int("num_attention_heads", max: Self.maxHeads)
        numKeyValueHeads = try optInt("num_key_value_heads", max: Self.maxHeads) ?? numAttentionHeads
        let explicitHeadDim = try optInt("head_dim", max: Self.maxHeadDim)
        if explicitHeadDim == nil, hiddenSize % numAttentionHeads != 0 {
            throw invalid("hidden_size (\(hiddenSize)) is not divisible by num_attention_heads (\(numAttentionHeads)) and no head_dim is given")
        }
        headDim = explicitHeadDim ?? (hiddenSize / numAttentionHeads)
        guard numAttentionHeads % numKeyValueHeads == 0 else {
            throw invalid("num_attention_heads (\(numAttentionHeads)) must be a multiple of num_key_value_heads (\(numKeyValueHeads))")
        }
        guard headDim % 2 == 0, headDim <= Self.maxHeadDim else {
            throw invalid("head_dim must be even (RoPE rotates pairs) and at most \(Self.maxHeadDim), found \(headDim)")
        }
        if let actValue = raw["hidden_act"], actValue != .null {
            guard let act = actValue.string else { throw invalid("\"hidden_act\" must be a string, found \(shown(actValue))") }
            guard act == "silu" else { throw ModelError(.unsupported, "\(source): unsupported hidden_act \"\(act)\" (only silu)") }
        }
        let eps = try optPositive("rms_norm_eps", in: raw) ?? 1e-6
        guard eps < 1, Float(eps) > 0 else { throw invalid("\"rms_norm_eps\" must be below 1 and representable in fp32, found \(eps)") }
        rmsNormEps = Float(eps)
        maxPositionEmbeddings = try optInt("max_position_embeddings", max: Self.maxPositionEmbeddingsLimit) ?? 2048
        tieWordEmbeddings = try optBool("tie_word_embeddings") ?? arch.tiedByDefault
        let attentionBias = try optBool("attention_bias") ?? false
        qkvBias = arch.qkvBias ?? attentionBias
        oBias = arch.oBias ?? attentionBias
        mlpBias = try optBool("mlp_bias") ?? false
        bosTokenId = try optInt("bos_token_id", min: 0, max: vocabSize - 1)
        switch raw["eos_token_id"] {
        case nil, .null?:
            eosTokenIds = []
        case .number?:
            eosTokenIds = [try optInt("eos_token_id", min: 0, max: vocabSize - 1)!]
        case .array(let a)?:
            let vocab = vocabSize
            var ids: [Int] = []
            for v in a {
                guard let n = v.int, n >= 0, n < vocab else {
                    throw invalid("\"eos_token_id\" must hold integers from 0 to \(vocab - 1), found \(shown(v))")
                }
                ids.append(n)
            }
            eosTokenIds = ids
        case let v?:
            throw invalid("\"eos_token_id\" must be an integer or a list of integers, found \(shown(v))")
        }
        // rope: transformers ≤4 writes rope_theta + rope_scaling; 5 writes rope_parameters.
        var theta = try optPositive("rope_theta", in: raw)
        var scalingDict: [String: JSONValue]? = nil
        if let rpValue = raw["rope_parameters"], rpValue != .null {
            guard case .object(let rp) = rpValue else { throw invalid("\"rope_parameters\" must be an object, found \(shown(rpValue))") }
            theta = try optPositive("rope_theta", in: rp) ?? theta
            scalingDict = rp
        }
        if let rsValue = raw["rope_scaling"], rsValue != .null {
            guard case .object(let rs) = rsValue else { throw invalid("\"rope_scaling\" must be an object, found \(shown(rsValue))") }
            scalingDict = rs
        }
        ropeTheta = theta ?? 10000
        ropeScaling = nil
        if let d = scalingDict {
            let kind = d["rope_type"]?.string ?? d["type"]?.string ?? "default"
            switch kind {
            case "default":
                break
            case "llama3":
                var s = RopeScaling(type: "llama3")
                guard let f = try optPositive("factor", in: d) else { throw invalid("llama3 rope scaling needs \"factor\"") }
                s.factor = f
                s.lowFreqFactor = try optPositive("low_freq_factor", in: d) ?? 1
                s.highFreqFactor = try optPositive("high_freq_factor", in: d) ?? 4
                guard s.highFreqFactor > s.lowFreqFactor else {
                    throw invalid("llama3 rope scaling needs high_freq_factor > low_freq_factor, found \(s.highFreqFactor) and \(s.lowFreqFactor)")
                }
                if let v = d["original_max_position_embeddings"], v != .null {
                    guard let n = v.int, n > 0, n <= Self.maxPositionEmbeddingsLimit else {
                        throw invalid("\"original_max_position_embeddings\" must be an integer from 1 to \(Self.maxPositionEmbeddingsLimit), found \(shown(v))")
                    }
                    s.originalMaxPositionEmbeddings = n
                }
                ropeScaling = s
            default:
                throw ModelError(.unsupported, "\(source): unsupported rope scaling type \"\(kind)\" (supported: default, llama3)")
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
