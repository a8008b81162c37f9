import ArgumentParser
import PTLModel

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a model's architecture, parameter counts, FLOPs per token and tensors.")

    @OptionGroup var options: ModelOptions

    @Flag(help: "Print JSON instead of text.")
    var json = false

    @Option(parsing: .upToNextOption, help: "Context lengths at which to report forward FLOPs per token.")
    var context: [Int] = [1, 128, 1024]

    func run() throws {
        let model = try options.loadModel()
        let c = model.config
        let cost = ModelCost(config: c)
        if json {
            printJSON(.object([
                "architecture": .string(c.architecture), "model_type": .string(c.modelType),
                "layers": .number(Double(c.numHiddenLayers)), "hidden_size": .number(Double(c.hiddenSize)),
                "intermediate_size": .number(Double(c.intermediateSize)), "vocab_size": .number(Double(c.vocabSize)),
                "attention_heads": .number(Double(c.numAttentionHeads)), "kv_heads": .number(Double(c.numKeyValueHeads)),
                "head_dim": .number(Double(c.headDim)), "tied_embeddings": .bool(c.tieWordEmbeddings),
                "parameters": .number(Double(cost.parameters)),
                "non_embedding_parameters": .number(Double(cost.nonEmbeddingParameters)),
                "flops_per_token_base": .number(Double(cost.flopsPerTokenBase)),
                "flops_per_context_position": .number(Double(cost.flopsPerContextPosition)),
                "flops_per_token": .object(Dictionary(uniqueKeysWithValues: context.map { ("\($0)", .number(Double(cost.forwardFlopsPerToken(context: $0)))) })),
                "tensors": .array(model.layout.entries.map { .object(["name": .string($0.name), "shape": .ints($0.shape)]) }),
            ]))
            return
        }
        print("\(c.architecture) (model_type \(c.modelType))")
        print("  layers \(c.numHiddenLayers), hidden \(c.hiddenSize), intermediate \(c.intermediateSize), vocab \(c.vocabSize)")
        print("  heads \(c.numAttentionHeads) (kv \(c.numKeyValueHeads)), head_dim \(c.headDim), rope_theta \(c.ropeTheta)\(c.ropeScaling.map { ", rope scaling \($0.type) ×\($0.factor)" } ?? "")")
        print("  tied embeddings: \(c.tieWordEmbeddings), qkv bias: \(c.qkvBias), rms eps \(c.rmsNormEps)")
        print("parameters: \(cost.parameters.formatted) total, \(cost.nonEmbeddingParameters.formatted) without embeddings")
        print("forward FLOPs/token = \(cost.flopsPerTokenBase.formatted) + \(cost.flopsPerContextPosition.formatted) × context")
        for n in context { print("  context \(n): \(cost.forwardFlopsPerToken(context: n).formatted)") }
        print("tensors (\(model.layout.entries.count)):")
        for e in model.layout.entries { print("  \(e.name) \(e.shape)") }
    }
}

extension Int {
    /// 1234567 → "1,234,567".
    var formatted: String {
        let s = String(abs(self))
        var out = ""
        for (i, ch) in s.enumerated() {
            if i > 0 && (s.count - i) % 3 == 0 { out += "," }
            out.append(ch)
        }
        return (self < 0 ? "-" : "") + out
    }
}
