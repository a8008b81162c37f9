import PTLData
import PTLModel
import PTLTensor

/// Mean next-token loss of a model over token sequences.
public enum LossEvaluation {
    /// Sums the next-token loss over every predicted position of every sequence (position t
    /// predicts token t+1). Sequences are batched by length; the result does not depend on the
    /// batching beyond float rounding.
    public static func evaluate(model: Model, sequences: [[Int]], batchSize: Int = 8, precision: Precision = .fp32,
                                progress: ((Int, Int) -> Void)? = nil) -> (sum: Double, tokens: Int) {
        let order = sequences.indices.sorted { sequences[$0].count != sequences[$1].count ? sequences[$0].count < sequences[$1].count : $0 < $1 }
        var passes = PassCache(model: model, precision: precision)
        var sum = 0.0
        var tokens = 0
        var done = 0
        for start in stride(from: 0, to: order.count, by: batchSize) {
            let chunk = order[start..<min(order.count, start + batchSize)].map { sequences[$0] }.filter { $0.count >= 2 }
            done += min(batchSize, order.count - start)
            guard !chunk.isEmpty else { continue }
            let batch = TokenBatch(sequences: chunk, multiple: 8)
            let pass = passes.pass(batch: batch.batch, seq: batch.seq)
            let (s, n) = pass.forward(tokens: batch.tokens, targets: batch.targets)
            sum += s
            tokens += n
            progress?(done, order.count)
        }
        return (sum, tokens)
    }
}

/// Keeps the most recent training pass and reallocates only when the batch shape changes.
public struct PassCache {
    public let model: Model
    /// The matmul arithmetic of every pass handed out.
    public let precision: Precision
    private var current: TrainingPass?

    public init(model: Model, precision: Precision = .fp32) { self.model = model; self.precision = precision }

    public mutating func pass(batch: Int, seq: Int) -> TrainingPass {
        if let p = current, p.batch == batch, p.seq == seq { return p }
        current = nil   // free the old activations before allocating the new ones
        let p = TrainingPass(model: model, batch: batch, seq: seq)
        p.precision = precision
        current = p
        return p
    }
}
