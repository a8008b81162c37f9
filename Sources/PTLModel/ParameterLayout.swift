/// One named tensor inside the flat parameter buffer.
public struct ParameterEntry: Sendable, Equatable {
    /// Hugging Face tensor name, e.g. `model.layers.3.mlp.gate_proj.weight`.
    public let name: String
    public let shape: [Int]
    /// Offset in floats from the start of the flat buffer.
    public let offset: Int
    public var count: Int { shape.reduce(1, *) }
    public var range: Range<Int> { offset..<(offset + count) }
    /// AdamW decays tensors of two or more dimensions (matrices and embeddings), not norms or biases.
    public var decays: Bool { shape.count >= 2 }
}

/// Offsets (in floats) of one decoder block's tensors; bias offsets are nil when absent.
public struct LayerOffsets: Sendable {
    public var inputNorm = 0                                   // (hidden)
    public var q = 0, qBias: Int? = nil                        // (heads·headDim, hidden)
    public var k = 0, kBias: Int? = nil                        // (kvHeads·headDim, hidden)
    public var v = 0, vBias: Int? = nil                        // (kvHeads·headDim, hidden)
    public var o = 0, oBias: Int? = nil                        // (hidden, heads·headDim)
    public var postNorm = 0                                    // (hidden)
    public var gate = 0, gateBias: Int? = nil                  // (intermediate, hidden)
    public var up = 0, upBias: Int? = nil                      // (intermediate, hidden)
    public var down = 0, downBias: Int? = nil                  // (hidden, intermediate)
}

/// Where every parameter of a model lives in one contiguous fp32 buffer.
///
/// Gradients and the AdamW moments use the same layout, so pruning, checkpointing and reducing
/// operate on the same flat ranges.
public struct ParameterLayout: Sendable {
    public let entries: [ParameterEntry]
    public let count: Int
    public let embedding: Int                                  // (vocab, hidden)
    public let layers: [LayerOffsets]
    public let finalNorm: Int                                  // (hidden)
    /// Offset of the LM head; equals `embedding` when the embeddings are tied.
    public let lmHead: Int                                     // (vocab, hidden)
    private let index: [String: Int]

    public init(config c: ModelConfig) {
        var entries: [ParameterEntry] = []
        var offset = 0
        func add(_ name: String, _ shape: [Int]) -> Int {
            let e = ParameterEntry(name: name, shape: shape, offset: offset)
            entries.append(e)
            offset += e.count
            return e.offset
        }
        let H = c.hiddenSize, I = c.intermediateSize
        embedding = add("model.embed_tokens.weight", [c.vocabSize, H])
        var layers: [LayerOffsets] = []
        for l in 0..<c.numHiddenLayers {
            let p = "model.layers.\(l)."
            var o = LayerOffsets()
            // Weights first, so q/k/v and gate/up sit back to back: decoding reads each pair as
            // one fused matrix. Biases follow.
            o.inputNorm = add(p + "input_layernorm.weight", [H])
            o.q = add(p + "self_attn.q_proj.weight", [c.qDim, H])
            o.k = add(p + "self_attn.k_proj.weight", [c.kvDim, H])
            o.v = add(p + "self_attn.v_proj.weight", [c.kvDim, H])
            o.o = add(p + "self_attn.o_proj.weight", [H, c.qDim])
            o.postNorm = add(p + "post_attention_layernorm.weight", [H])
            o.gate = add(p + "mlp.gate_proj.weight", [I, H])
            o.up = add(p + "mlp.up_proj.weight", [I, H])
            o.down = add(p + "mlp.down_proj.weight", [H, I])
            if c.qkvBias {
                o.qBias = add(p + "self_attn.q_proj.bias", [c.qDim])
                o.kBias = add(p + "self_attn.k_proj.bias", [c.kvDim])
                o.vBias = add(p + "self_attn.v_proj.bias", [c.kvDim])
            }
            if c.oBias { o.oBias = add(p + "self_attn.o_proj.bias", [H]) }
            if c.mlpBias {
                o.gateBias = add(p + "mlp.gate_proj.bias", [I])
                o.upBias = add(p + "mlp.up_proj.bias", [I])
                o.downBias = add(p + "mlp.down_proj.bias", [H])
            }
            layers.append(o)
        }
        self.layers = layers
        finalNorm = add("model.norm.weight", [H])
        lmHead = c.tieWordEmbeddings ? embedding : add("lm_head.weight", [c.vocabSize, H])
        self.entries = entries
        self.count = offset
        var index: [String: Int] = [:]
        for (i, e) in entries.enumerated() { index[e.name] = i }
        self.index = index
    }

    /// The entry for an HF tensor name.
    public func entry(_ name: String) -> ParameterEntry? { index[name].map { entries[$0] } }

    /// Parameters excluding the token embedding and an untied LM head.
    public var nonEmbeddingCount: Int {
        entries.filter { $0.name != "model.embed_tokens.weight" && $0.name != "lm_head.weight" }
            .reduce(0) { $0 + $1.count }
    }
}
