import Foundation
import PTLData
import PTLFormats
import PTLModel
import PTLPrune
import PTLTensor
import PTLTokenizer

/// On-policy calibration (RAC): each calibration question with the model's own greedy chain of
/// thought as its answer, encoded as a training line. The traces come from the backend (a trace
/// phase over the workers).
public enum OnPolicyCalibration {
    public static func sequences(model: Model, backend: ComputeBackend, lines: [String], tokenizer: Tokenizer, shards: Int,
                                 maxNewTokens: Int, batchSize: Int, key: WorkKey) throws -> (sequences: [[Int]], counts: EvalCounts, detail: String) {
        let t0 = Date()
        let (texts, counts) = try backend.traces(model: model, jsonlLines: lines, shards: shards, maxNewTokens: maxNewTokens,
                                                 batchSize: batchSize, key: key)
        let records = try Corpus.parse(Data(lines.joined(separator: "\n").utf8), source: "calibration records").records
        guard records.count == texts.count else { throw LoopError("internal: \(texts.count) traces for \(records.count) calibration records") }
        let template = PromptTemplate.standard
        let sequences = zip(records, texts).map { r, text -> [Int] in
            guard case .qa(let q, _) = r else { return [] }
            var answer = Substring(text)
            while answer.first == " " { answer = answer.dropFirst() }
            return encodeLine(template.render(.qa(question: q, answer: String(answer))), tokenizer: tokenizer,
                              eos: model.config.eosTokenIds, maxTokens: ShardCompute.maxSequenceLength)
        }
        let detail = String(format: "on-policy traces of %d calibration questions (%.1f s, %.1f%% right, %.0f tokens generated on average)",
                            texts.count, Date().timeIntervalSince(t0), counts.accuracy * 100,
                            Double(counts.generatedTokens) / Double(max(1, texts.count)))
        return (sequences, counts, detail)
    }
}

/// SparseGPT over a whole model, block by block as SparseGPT runs it: block b's layer Hessians
/// are measured (over the backend's shards, added in shard order) on the model whose blocks
/// before b are already pruned (the pass stops after block b), then b's seven linear layers are
/// pruned in place.
public enum SparsePruning {
    /// A pruned layer: its HF weight name, where it lives in the parameters, its mask (true =
    /// zero), and how many zeros it has.
    public struct Layer: Sendable, Equatable {
        public var name: String
        public var offset: Int
        public var rows: Int
        public var cols: Int
        public let mask: [Bool]
        /// Masked entries, counted once (reports and every phase row read it).
        public let zeros: Int
        public init(name: String, offset: Int, rows: Int, cols: Int, mask: [Bool]) {
            self.name = name; self.offset = offset; self.rows = rows; self.cols = cols; self.mask = mask
            zeros = mask.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
    }

    /// Every linear layer of every block (HF name, offset, rows = outputs, cols = inputs), in order.
    public static func linears(_ c: ModelConfig, _ layout: ParameterLayout) -> [(name: String, offset: Int, rows: Int, cols: Int)] {
        (0..<c.numHiddenLayers).flatMap { b -> [(name: String, offset: Int, rows: Int, cols: Int)] in
            let o = layout.layers[b]
            return [("self_attn.q_proj", o.q, c.qDim, c.hiddenSize), ("self_attn.k_proj", o.k, c.kvDim, c.hiddenSize),
                    ("self_attn.v_proj", o.v, c.kvDim, c.hiddenSize), ("self_attn.o_proj", o.o, c.hiddenSize, c.qDim),
                    ("mlp.gate_proj", o.gate, c.intermediateSize, c.hiddenSize), ("mlp.up_proj", o.up, c.intermediateSize, c.hiddenSize),
                    ("mlp.down_proj", o.down, c.hiddenSize, c.intermediateSize)]
                .map { ("model.layers.\(b).\($0.0).weight", $0.1, $0.2, $0.3) }
        }
    }

    /// Prunes every linear layer of `model` in place to `pattern`; `fixed` (an earlier round's
    /// masks, in `linears` order) are kept pruned. Returns the masks, in `linears` order.
    public static func run(model: Model, backend: ComputeBackend, sequences: [[Int]], shards: Int, pattern: SparsityPattern,
                           blockSize: Int, percentDamp: Double, fixed: [Layer]? = nil, key: () -> WorkKey,
                           log: (String) -> Void = { _ in }) throws -> [Layer] {
        let c = model.config
        let all = linears(c, model.layout)
        if let fixed {
            guard fixed.count == all.count, zip(fixed, all).allSatisfy({ $0.name == $1.name && $0.mask.count == $1.rows * $1.cols }) else {
                throw LoopError("SparseGPT: the earlier masks do not match this model's \(all.count) linear layers")
            }
        }
        var layers: [Layer] = []
        for b in 0..<c.numHiddenLayers {
            let t0 = Date()
            let h = try backend.layerHessians(model: model, sequences: sequences, shards: shards, block: b, branchScale: nil, key: key())
            let hessians = [h.attention, h.attention, h.attention, h.output, h.mlp, h.mlp, h.down]
            for (j, hessian) in hessians.enumerated() {
                let i = b * 7 + j, l = all[i]
                let mask = try SparseGPT.prune(weights: model.parameters.at(l.offset), rows: l.rows, cols: l.cols, hessian: hessian,
                                               pattern: pattern, blockSize: blockSize, percentDamp: percentDamp, fixed: fixed?[i].mask)
                layers.append(Layer(name: l.name, offset: l.offset, rows: l.rows, cols: l.cols, mask: mask))
            }
            model.parametersChanged()
            log(String(format: "block %d: %d calibration tokens, pruned to %@ in %.1f s", b, h.tokens, "\(pattern)", Date().timeIntervalSince(t0)))
        }
        return layers
    }
}

/// The masks of a sparse model: zeroing what they cover (weights, gradients, AdamW moments), and
/// their file (safetensors, one BOOL tensor [rows, cols] per layer, true = pruned — loads in torch
/// as `torch.bool`).
public enum SparseMasks {
    /// Sets every masked entry of `buffer` (laid out like the model's parameters) to zero.
    public static func zero(_ layers: [SparsePruning.Layer], in buffer: FloatBuffer) {
        let p = buffer.pointer
        for l in layers {
            l.mask.withUnsafeBufferPointer { m in
                let base = p + l.offset
                for i in 0..<m.count where m[i] { base[i] = 0 }
            }
        }
    }

    public static func encode(_ layers: [SparsePruning.Layer], metadata: [String: String] = [:]) throws -> Data {
        try Safetensors.encodeBool(layers.map { ($0.name, [$0.rows, $0.cols], $0.mask) }, metadata: metadata)
    }

    /// Reads masks written by `encode` and checks them against `model` (every linear layer, its
    /// shape, only 0/1); throws naming the file and what is wrong.
    public static func read(path: String, model: Model) throws -> [SparsePruning.Layer] {
        let tensors = try Safetensors.read(path: path)
        let all = SparsePruning.linears(model.config, model.layout)
        guard tensors.count == all.count else { throw LoopError("\(path): \(tensors.count) masks for \(all.count) linear layers") }
        return try all.map { l in
            guard let t = tensors[l.name] else { throw LoopError("\(path): no mask for \(l.name)") }
            guard t.shape == [l.rows, l.cols] else { throw LoopError("\(path): mask \(l.name) has shape \(t.shape), the layer is [\(l.rows), \(l.cols)]") }
            guard t.values.allSatisfy({ $0 == 0 || $0 == 1 }) else { throw LoopError("\(path): mask \(l.name) holds a value other than 0 and 1") }
            return SparsePruning.Layer(name: l.name, offset: l.offset, rows: l.rows, cols: l.cols, mask: t.values.map { $0 == 1 })
        }
    }

    /// Zeros of the masks and entries they cover.
    public static func count(_ layers: [SparsePruning.Layer]) -> (zeros: Int, total: Int) {
        layers.reduce((0, 0)) { ($0.0 + $1.zeros, $0.1 + $1.mask.count) }
    }
}
