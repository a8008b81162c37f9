import Foundation
import PTLModel
import PTLTensor

/// Hidden (embedding) channel pruning — the width axis Minitron prunes besides FFN neurons and
/// heads: channel c of the residual stream leaves every tensor that reads or writes it (column c
/// of the embedding, the LM head, q/k/v and gate/up; row c of o_proj and down_proj and their
/// biases; entry c of every RMSNorm gain). The attention's inner sizes stay, so the config gets
/// an explicit `head_dim`.
///
/// RMSNorm divides by the root mean square over all channels, so dropping channels changes every
/// norm's output scale: with ρ = Σ_kept h² / Σ_all h² measured on calibration tokens (ρ ≈ 1 for
/// the quiet channels pruned), the kept gains are multiplied by √(ρ·H/H′) — exact when the
/// removed channels carry nothing.
public struct HiddenSurgery: Sendable {
    public let oldConfig: ModelConfig
    public let newConfig: ModelConfig
    /// Old indices of the channels kept (sorted).
    public let keptChannels: [Int]
    /// Gain factors of the norms, in layout order: block ℓ's input norm at 2ℓ, its
    /// post-attention norm at 2ℓ + 1, the final norm last (2L + 1 values).
    public let normFactors: [Float]
    let oldLayout: ParameterLayout
    let newLayout: ParameterLayout

    /// - remove: channels to delete (distinct, in 0..<hidden).
    /// - normFactors: 2L + 1 positive gain factors (`HiddenSurgery.normFactors(…)`), or nil for 1.
    public init(config: ModelConfig, remove: [Int], normFactors: [Float]? = nil) throws {
        let H = config.hiddenSize, L = config.numHiddenLayers
        let s = Set(remove)
        guard s.count == remove.count, s.allSatisfy({ $0 >= 0 && $0 < H }) else {
            throw ModelError("hidden surgery: the channels to remove must be distinct indices in 0..<\(H)")
        }
        guard s.count < H else { throw ModelError("hidden surgery: removing all \(H) hidden channels") }
        let factors = normFactors ?? [Float](repeating: 1, count: 2 * L + 1)
        guard factors.count == 2 * L + 1, factors.allSatisfy({ $0.isFinite && $0 > 0 }) else {
            throw ModelError("hidden surgery: \(2 * L + 1) finite positive norm factors needed, got \(factors.count)")
        }
        var c = config
        // The attention keeps its heads and their size, which no longer follows from hidden_size.
        c.raw["head_dim"] = .number(Double(config.headDim))
        c.hiddenSize = H - s.count
        oldConfig = config
        newConfig = c
        keptChannels = (0..<H).filter { !s.contains($0) }
        self.normFactors = factors
        oldLayout = ParameterLayout(config: config)
        newLayout = ParameterLayout(config: c)
    }

    /// Gathers a buffer in the old layout (weights, a gradient, an AdamW moment) into the new
    /// one; `scaleNorms` multiplies the norm gains by their factors (weights only).
    public func apply(_ src: FloatBuffer, scaleNorms: Bool) throws -> FloatBuffer {
        guard src.count == oldLayout.count else {
            throw ModelError("hidden surgery: a buffer of \(src.count) values for a layout of \(oldLayout.count)")
        }
        let dst = FloatBuffer(count: newLayout.count)
        let H = oldConfig.hiddenSize, newH = newConfig.hiddenSize, kept = keptChannels
        let s = src.pointer, d = dst.pointer
        /// Columns: a (rows, H) matrix becomes (rows, H′).
        func columns(_ from: Int, _ to: Int, rows: Int) {
            for r in 0..<rows {
                let sr = s + from + r * H, dr = d + to + r * newH
                for (j, c) in kept.enumerated() { dr[j] = sr[c] }
            }
        }
        /// Rows: an (H, cols) matrix (or an H vector) becomes (H′, cols), times `factor`.
        func rows(_ from: Int, _ to: Int, cols: Int, factor: Float = 1) {
            for (j, c) in kept.enumerated() {
                let sr = s + from + c * cols, dr = d + to + j * cols
                if factor == 1 { dr.update(from: sr, count: cols) } else { for i in 0..<cols { dr[i] = sr[i] * factor } }
            }
        }
        /// A tensor whose shape does not involve the hidden size, copied.
        func copy(_ from: Int, _ to: Int, count: Int) { (d + to).update(from: s + from, count: count) }
        let c = oldConfig, V = c.vocabSize, I = c.intermediateSize
        columns(oldLayout.embedding, newLayout.embedding, rows: V)
        for (l, (o, n)) in zip(oldLayout.layers, newLayout.layers).enumerated() {
            rows(o.inputNorm, n.inputNorm, cols: 1, factor: scaleNorms ? normFactors[2 * l] : 1)
            columns(o.q, n.q, rows: c.qDim)
            columns(o.k, n.k, rows: c.kvDim)
            columns(o.v, n.v, rows: c.kvDim)
            rows(o.o, n.o, cols: c.qDim)
            rows(o.postNorm, n.postNorm, cols: 1, factor: scaleNorms ? normFactors[2 * l + 1] : 1)
            columns(o.gate, n.gate, rows: I)
            columns(o.up, n.up, rows: I)
            rows(o.down, n.down, cols: I)
            for (a, b, count) in [(o.qBias, n.qBias, c.qDim), (o.kBias, n.kBias, c.kvDim), (o.vBias, n.vBias, c.kvDim),
                                  (o.gateBias, n.gateBias, I), (o.upBias, n.upBias, I)] {
                if let a, let b { copy(a, b, count: count) }
            }
            if let a = o.oBias, let b = n.oBias { rows(a, b, cols: 1) }
            if let a = o.downBias, let b = n.downBias { rows(a, b, cols: 1) }
        }
        rows(oldLayout.finalNorm, newLayout.finalNorm, cols: 1, factor: scaleNorms ? normFactors[2 * c.numHiddenLayers] : 1)
        if !c.tieWordEmbeddings { columns(oldLayout.lmHead, newLayout.lmHead, rows: V) }
        return dst
    }

    public func apply(model: Model) throws -> Model { Model(config: newConfig, parameters: try apply(model.parameters, scaleNorms: true)) }

    /// The optimizer with both moments gathered (no norm scaling; its step count kept).
    public func apply(optimizer: AdamW) throws -> AdamW {
        AdamW(layout: newLayout, settings: optimizer.settings, m: try apply(optimizer.m, scaleNorms: false),
              v: try apply(optimizer.v, scaleNorms: false), step: optimizer.step)
    }

    /// Channel importance from calibration statistics (Minitron's embedding-channel score): for
    /// channel c, Σ over the norms that read it of E|h[c]/rms(h)|·|g[c]| — what the channel puts
    /// into every block's attention and FFN input and into the final norm. The post-attention
    /// norm reads the stream after the attention; block ℓ's input state stands in for it.
    public static func channelScores(_ s: ActivationStatistics, model: Model) throws -> [Double] {
        let c = model.config, H = c.hiddenSize, L = c.numHiddenLayers
        guard s.hidden == H, s.layers == L, s.channelNormalizedAbsSum.count == (L + 1) * H else {
            throw ModelError("hidden channel scores: statistics of \(s.layers) blocks × hidden \(s.hidden) for a model of \(L) × \(H)")
        }
        let n = Double(max(1, s.tokens)), P = model.parameters, layout = model.layout
        var score = [Double](repeating: 0, count: H)
        for l in 0...L {
            let gains: [UnsafeMutablePointer<Float>] = l < L ? [P.at(layout.layers[l].inputNorm), P.at(layout.layers[l].postNorm)]
                                                             : [P.at(layout.finalNorm)]
            for j in 0..<H {
                let e = s.channelNormalizedAbsSum[l * H + j] / n
                for g in gains { score[j] += e * Double(abs(g[j])) }
            }
        }
        return score
    }

    /// The `k` lowest-scoring channels (ties by index), sorted.
    public static func lowestChannels(scores: [Double], count k: Int) -> [Int] {
        scores.indices.sorted { (scores[$0], $0) < (scores[$1], $1) }.prefix(k).sorted()
    }

    /// The norm gain factors √(ρ·H/H′) of removing `remove`, ρ the kept share of each residual
    /// state's Σh² (block ℓ's state for both its norms; the last state for the final norm).
    public static func normFactors(_ s: ActivationStatistics, remove: [Int]) throws -> [Float] {
        let H = s.hidden, L = s.layers
        guard H > 0, s.channelSquareSum.count == (L + 1) * H, remove.count < H else {
            throw ModelError("hidden surgery: statistics without the residual channels' sums")
        }
        let removed = Set(remove), newH = Double(H - removed.count)
        var out: [Float] = []
        for l in 0...L {
            var all = 0.0, kept = 0.0
            for j in 0..<H {
                let v = s.channelSquareSum[l * H + j]
                all += v
                if !removed.contains(j) { kept += v }
            }
            let rho = all > 0 ? kept / all : 1
            // A state whose kept channels carry (almost) nothing would get an absurd factor: cap it.
            let f = Float(min(4, max(0.25, (rho * Double(H) / newH).squareRoot())))
            out.append(contentsOf: l < L ? [f, f] : [f])
        }
        return out
    }
}
