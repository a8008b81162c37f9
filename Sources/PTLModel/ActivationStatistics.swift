import Foundation
import PTLTensor
import COpenBLAS

/// Redundancy statistics of a model over calibration tokens (DESIGN.md §1.1): for every FFN
/// neuron j of layer ℓ, with a = silu(x·W_gate[j])·(x·W_up[j]), the sums of |a| and a² and
/// max |a|; for every block, Σ‖h_out − h_in‖, Σ‖h_in‖ and Σ(1 − cos(h_in, h_out)) over tokens;
/// for every hidden channel c of every residual state h_ℓ (the input of block ℓ, and after the
/// last block the input of the final norm), Σ|h_ℓ[c]|/rms(h_ℓ) and Σh_ℓ[c]² — what hidden
/// (embedding) channel pruning scores channels by and rescales the norms with.
///
/// Sums are Double and every entry is accumulated over tokens in order, so statistics of a
/// shard are the same for any thread count, and shards add up in shard order.
public struct ActivationStatistics: Sendable, Equatable {
    public let layers: Int
    public let intermediate: Int
    public var tokens: Int = 0
    public var absSum: [Double]        // (layers, intermediate)
    public var squareSum: [Double]     // (layers, intermediate)
    public var maxAbs: [Float]         // (layers, intermediate)
    public var deltaNormSum: [Double]  // (layers)
    public var inputNormSum: [Double]  // (layers)
    public var cosineDistanceSum: [Double]  // (layers)
    /// Hidden channels of the residual-stream sums.
    public let hidden: Int
    public var channelNormalizedAbsSum: [Double]  // (layers + 1, hidden): Σ|h[c]| / rms(h)
    public var channelSquareSum: [Double]         // (layers + 1, hidden): Σ h[c]²

    public init(layers: Int, intermediate: Int, hidden: Int) {
        self.layers = layers
        self.intermediate = intermediate
        self.hidden = hidden
        channelNormalizedAbsSum = [Double](repeating: 0, count: (layers + 1) * hidden)
        channelSquareSum = channelNormalizedAbsSum
        absSum = [Double](repeating: 0, count: layers * intermediate)
        squareSum = absSum
        maxAbs = [Float](repeating: 0, count: layers * intermediate)
        deltaNormSum = [Double](repeating: 0, count: layers)
        inputNormSum = deltaNormSum
        cosineDistanceSum = deltaNormSum
    }

    /// Adds another shard's statistics (call in shard order).
    public mutating func add(_ o: ActivationStatistics) {
        precondition(o.layers == layers && o.intermediate == intermediate && o.hidden == hidden)
        tokens += o.tokens
        for i in channelSquareSum.indices { channelNormalizedAbsSum[i] += o.channelNormalizedAbsSum[i]; channelSquareSum[i] += o.channelSquareSum[i] }
        for i in absSum.indices { absSum[i] += o.absSum[i]; squareSum[i] += o.squareSum[i]; maxAbs[i] = max(maxAbs[i], o.maxAbs[i]) }
        for l in 0..<layers {
            deltaNormSum[l] += o.deltaNormSum[l]; inputNormSum[l] += o.inputNormSum[l]; cosineDistanceSum[l] += o.cosineDistanceSum[l]
        }
    }

    /// E|a|·‖W_down[:, j]‖₂ per neuron (the default score), from a model's weights.
    public func neuronScores(model: Model) -> [Double] {
        let c = model.config, H = c.hiddenSize, I = c.intermediateSize
        var out = [Double](repeating: 0, count: layers * I)
        for l in 0..<layers {
            let down = model.parameters.at(model.layout.layers[l].down)   // (hidden, intermediate)
            for j in 0..<I {
                var norm = 0.0
                for h in 0..<H { let w = Double(down[h * I + j]); norm += w * w }
                out[l * I + j] = absSum[l * I + j] / Double(max(1, tokens)) * norm.squareRoot()
            }
        }
        return out
    }

    /// E‖h_out − h_in‖ / E‖h_in‖ per block (the paper's Eq. 5, normalised).
    public var relativeChange: [Double] { (0..<layers).map { deltaNormSum[$0] / max(1e-30, inputNormSum[$0]) } }
    /// ShortGPT's Block Influence, E[1 − cos(h_in, h_out)] per block.
    public var blockInfluence: [Double] { cosineDistanceSum.map { $0 / Double(max(1, tokens)) } }
}

extension TrainingPass {
    /// Statistics of the last `forward` over the positions whose target is not ignored.
    public func statistics() -> ActivationStatistics {
        let c = model.config
        let L = c.numHiddenLayers, I = c.intermediateSize, H = c.hiddenSize, N = batch * seq
        var s = ActivationStatistics(layers: L, intermediate: I, hidden: H)
        let rows = (0..<N).filter { targets[$0] >= 0 }
        s.tokens = rows.count
        s.absSum.withUnsafeMutableBufferPointer { absSum in
            s.squareSum.withUnsafeMutableBufferPointer { sqSum in
                s.maxAbs.withUnsafeMutableBufferPointer { maxAbs in
                    let a0 = UncheckedSendable((absSum.baseAddress!, sqSum.baseAddress!, maxAbs.baseAddress!))
                    // Split over neurons; each neuron sums its tokens in order.
                    parallelChunks(L * I, minChunk: 64) { j0, j1 in
                        let (absP, sqP, maxP) = a0.value
                        for lj in j0..<j1 {
                            let l = lj / I, j = lj % I
                            let a = act.at(l * N * I)
                            var sa = 0.0, sq = 0.0
                            var m: Float = 0
                            for r in rows {
                                let v = a[r * I + j]
                                sa += Double(abs(v)); sq += Double(v) * Double(v)
                                if abs(v) > m { m = abs(v) }
                            }
                            absP[lj] = sa; sqP[lj] = sq; maxP[lj] = m
                        }
                    }
                }
            }
        }
        for l in 0..<L {
            let hin = resid.at(l * N * H), hout = resid.at((l + 1) * N * H)
            var dsum = 0.0, insum = 0.0, cossum = 0.0
            for r in rows {
                var dd = 0.0, ii = 0.0, oo = 0.0, io = 0.0
                for h in 0..<H {
                    let x = Double(hin[r * H + h]), y = Double(hout[r * H + h])
                    dd += (y - x) * (y - x); ii += x * x; oo += y * y; io += x * y
                }
                dsum += dd.squareRoot(); insum += ii.squareRoot()
                cossum += 1 - io / max(1e-30, (ii * oo).squareRoot())
            }
            s.deltaNormSum[l] = dsum; s.inputNormSum[l] = insum; s.cosineDistanceSum[l] = cossum
        }
        // Per channel of every residual state: split over states, each summing its tokens in order.
        let eps = Double(c.rmsNormEps)
        s.channelNormalizedAbsSum.withUnsafeMutableBufferPointer { na in
            s.channelSquareSum.withUnsafeMutableBufferPointer { sq in
                let p = UncheckedSendable((na.baseAddress!, sq.baseAddress!))
                parallelChunks(L + 1) { l0, l1 in
                    let (naP, sqP) = p.value
                    for l in l0..<l1 {
                        let h = resid.at(l * N * H), a = naP + l * H, q = sqP + l * H
                        for r in rows {
                            let x = h + r * H
                            var ms = 0.0
                            for j in 0..<H { ms += Double(x[j]) * Double(x[j]) }
                            let inv = 1 / (ms / Double(H) + eps).squareRoot()
                            for j in 0..<H { let v = Double(x[j]); a[j] += abs(v) * inv; q[j] += v * v }
                        }
                    }
                }
            }
        }
        return s
    }
}

/// Gram matrices of every block's FFN activations over calibration tokens: for layer ℓ,
/// `G_ℓ = Σ_tokens a aᵀ` (intermediate × intermediate, a = silu(x·W_gate)·(x·W_up)), in Double —
/// what least-squares reconstruction of `down_proj` after a neuron cut needs (`Reconstruction`).
/// Shards add up in shard order.
public struct FFNGram: Sendable, Equatable {
    public let layers: Int
    public let intermediate: Int
    public var tokens: Int = 0
    /// (layers, intermediate, intermediate), each matrix symmetric and full.
    public var values: [Double]

    public init(layers: Int, intermediate: Int) {
        self.layers = layers
        self.intermediate = intermediate
        values = [Double](repeating: 0, count: layers * intermediate * intermediate)
    }

    /// Adds another shard's Gram matrices (call in shard order).
    public mutating func add(_ o: FFNGram) throws {
        guard o.layers == layers, o.intermediate == intermediate, o.values.count == values.count else {
            throw ModelError("FFN Gram matrices of \(o.layers) blocks × \(o.intermediate) cannot be added to \(layers) × \(intermediate)")
        }
        tokens += o.tokens
        for i in values.indices { values[i] += o.values[i] }
    }

    /// Adds `Σ_r a_r a_rᵀ` of `rows` activation rows (row-major, `intermediate` wide) to layer `l`.
    public mutating func accumulate(layer l: Int, rows: UnsafePointer<Float>, count: Int) {
        guard count > 0 else { return }
        let a = UnsafeMutablePointer<Double>.allocate(capacity: count * intermediate)
        defer { a.deallocate() }
        for i in 0..<(count * intermediate) { a[i] = Double(rows[i]) }
        accumulate(layer: l, rows: UnsafePointer(a), count: count)
    }

    /// The same from rows already in Double.
    public mutating func accumulate(layer l: Int, rows a: UnsafePointer<Double>, count: Int) {
        let I = intermediate
        guard count > 0 else { return }
        values.withUnsafeMutableBufferPointer { v in
            let g = v.baseAddress! + l * I * I
            // G += Aᵀ A (upper triangle), single-threaded OpenBLAS: the same bits on every run.
            ComputeThreads.pinBLAS()
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, Int32(I), Int32(count), 1, a, Int32(I), 1, g, Int32(I))
            for i in 0..<I { for j in 0..<i { g[i * I + j] = g[j * I + i] } }
        }
    }
}

extension TrainingPass {
    /// FFN Gram matrices of the last `forward` over the positions whose target is not ignored.
    public func ffnGram() -> FFNGram {
        let c = model.config
        let L = c.numHiddenLayers, I = c.intermediateSize, N = batch * seq
        var g = FFNGram(layers: L, intermediate: I)
        let rows = (0..<N).filter { targets[$0] >= 0 }
        g.tokens = rows.count
        // One Double buffer for every layer's scored rows.
        let packed = UnsafeMutablePointer<Double>.allocate(capacity: max(1, rows.count * I))
        defer { packed.deallocate() }
        for l in 0..<L {
            let a = act.at(l * N * I)
            for (k, r) in rows.enumerated() { for j in 0..<I { packed[k * I + j] = Double(a[r * I + j]) } }
            g.accumulate(layer: l, rows: UnsafePointer(packed), count: rows.count)
        }
        return g
    }
}
