/// Parameter and FLOP counts of a model.
public struct ModelCost: Sendable, Equatable {
    /// Parameters stored (a tied LM head counted once).
    public let parameters: Int
    /// Parameters without the token embedding and an untied LM head.
    public let nonEmbeddingParameters: Int
    /// Forward FLOPs per token that do not depend on the context: 2 × every weight used in a
    /// matrix product (projections, FFN, LM head).
    public let flopsPerTokenBase: Int
    /// Extra forward FLOPs per token per position attended to: 4 × layers × heads × headDim
    /// (QKᵀ and PV).
    public let flopsPerContextPosition: Int

    public init(config c: ModelConfig) {
        let layout = ParameterLayout(config: c)
        parameters = layout.count
        nonEmbeddingParameters = layout.nonEmbeddingCount
        let H = c.hiddenSize, I = c.intermediateSize
        let perLayer = H * c.qDim * 2 + H * c.kvDim * 2 + 3 * H * I
        flopsPerTokenBase = 2 * (c.numHiddenLayers * perLayer + c.vocabSize * H)
        flopsPerContextPosition = 4 * c.numHiddenLayers * c.qDim
    }

    /// Forward FLOPs for one token that attends to `context` positions (itself included).
    public func forwardFlopsPerToken(context: Int) -> Int { flopsPerTokenBase + flopsPerContextPosition * context }

    /// Mean forward FLOPs per token over a sequence of `length` tokens.
    public func meanForwardFlopsPerToken(sequenceLength length: Int) -> Double {
        Double(flopsPerTokenBase) + Double(flopsPerContextPosition) * Double(length + 1) / 2
    }

    /// Forward + backward ≈ 3 × forward.
    public func trainingFlopsPerToken(sequenceLength length: Int) -> Double { 3 * meanForwardFlopsPerToken(sequenceLength: length) }
}
