import Foundation
import PTLData
import PTLModel
import PTLPrune
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
/// before b are already pruned, then b's seven linear layers are pruned in place.
public enum SparsePruning {
    /// A pruned layer: its HF weight name, its mask (true = zero), and how many zeros it has.
    public struct Layer: Sendable {
        public var name: String
        public var mask: [Bool]
        public var zeros: Int { mask.lazy.filter { $0 }.count }
    }

    public static func run(model: Model, backend: ComputeBackend, sequences: [[Int]], shards: Int, pattern: SparsityPattern,
                           blockSize: Int, percentDamp: Double, run: String, log: (String) -> Void = { _ in }) throws -> [Layer] {
        let c = model.config
        var layers: [Layer] = []
        for b in 0..<c.numHiddenLayers {
            let t0 = Date()
            // Blocks after b do not change b's inputs: measure on the model cut after block b.
            let L = c.numHiddenLayers
            let prefix = b + 1 < L
                ? try Surgery(config: c, removeNeurons: [[Int]](repeating: [], count: L), removeLayers: Set((b + 1)..<L)).apply(model: model)
                : model
            let h = try backend.layerHessians(model: prefix, sequences: sequences, shards: shards, block: b, branchScale: nil,
                                              key: WorkKey(run: run, round: 0, measurement: UInt64(b + 1)))
            let o = model.layout.layers[b]
            let linears: [(String, Int, Int, Int, [Double])] = [
                ("self_attn.q_proj", o.q, c.qDim, c.hiddenSize, h.attention), ("self_attn.k_proj", o.k, c.kvDim, c.hiddenSize, h.attention),
                ("self_attn.v_proj", o.v, c.kvDim, c.hiddenSize, h.attention), ("self_attn.o_proj", o.o, c.hiddenSize, c.qDim, h.output),
                ("mlp.gate_proj", o.gate, c.intermediateSize, c.hiddenSize, h.mlp), ("mlp.up_proj", o.up, c.intermediateSize, c.hiddenSize, h.mlp),
                ("mlp.down_proj", o.down, c.hiddenSize, c.intermediateSize, h.down),
            ]
            for (name, offset, rows, cols, hessian) in linears {
                let mask = try SparseGPT.prune(weights: model.parameters.at(offset), rows: rows, cols: cols, hessian: hessian,
                                               pattern: pattern, blockSize: blockSize, percentDamp: percentDamp)
                layers.append(Layer(name: "model.layers.\(b).\(name).weight", mask: mask))
            }
            model.parametersChanged()
            log(String(format: "block %d: %d calibration tokens, pruned to %@ in %.1f s", b, h.tokens, "\(pattern)", Date().timeIntervalSince(t0)))
        }
        return layers
    }
}
