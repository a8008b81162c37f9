import COpenBLAS
import Foundation

/// Shape of a causal multi-head attention with grouped-query heads.
///
/// q is (batch·seq, qHeads, headDim), k and v are (batch·seq, kvHeads, headDim), rows ordered
/// batch-major; q head h reads kv head h / (qHeads / kvHeads).
public struct AttentionShape: Sendable {
    public var batch: Int, seq: Int, qHeads: Int, kvHeads: Int, headDim: Int
    public init(batch: Int, seq: Int, qHeads: Int, kvHeads: Int, headDim: Int) {
        precondition(qHeads % kvHeads == 0, "query heads must be a multiple of key/value heads")
        self.batch = batch; self.seq = seq; self.qHeads = qHeads; self.kvHeads = kvHeads; self.headDim = headDim
    }
    public var group: Int { qHeads / kvHeads }
    public var scale: Float { 1 / Float(headDim).squareRoot() }
    /// Floats in the saved attention probabilities (batch, qHeads, seq, seq).
    public var probsCount: Int { batch * qHeads * seq * seq }
}

/// Causal attention forward. Writes `out` (batch·seq, qHeads·headDim) and the softmax
/// probabilities `probs` (batch, qHeads, seq, seq; zero above the diagonal) kept for backward.
///
/// (batch, head) pairs run in parallel on our threads, each with single-threaded sgemm calls.
public func attentionForward(
    _ out: UnsafeMutablePointer<Float>, _ probs: UnsafeMutablePointer<Float>,
    _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
    shape s: AttentionShape
) {
    let T = s.seq, D = s.headDim
    let ldq = s.qHeads * D, ldk = s.kvHeads * D
    do {
        parallelChunks(s.batch * s.qHeads) { i0, i1 in
            for bh in i0..<i1 {
                let b = bh / s.qHeads, h = bh % s.qHeads
                let kh = h / s.group
                let qp = q + b * T * ldq + h * D
                let kp = k + b * T * ldk + kh * D
                let vp = v + b * T * ldk + kh * D
                let op = out + b * T * ldq + h * D
                let pp = probs + (b * s.qHeads + h) * T * T
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(T), Int32(D),
                            s.scale, qp, Int32(ldq), kp, Int32(ldk), 0, pp, Int32(T))
                causalSoftmaxRows(pp, T)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(T), Int32(D), Int32(T),
                            1, pp, Int32(T), vp, Int32(ldk), 0, op, Int32(ldq))
            }
        }
    }
}

/// Softmax of row t over columns 0...t of a (T, T) matrix (times `scale` first, when given);
/// columns after t set to 0.
@inline(__always)
func causalSoftmaxRows(_ p: UnsafeMutablePointer<Float>, _ T: Int, scale: Float = 1) {
    for t in 0..<T {
        let row = p + t * T
        if scale != 1 { vectorScale(row, scale, t + 1) }
        let m = vectorMax(row, t + 1)
        let sum = vectorExpShiftSum(row, shift: m, t + 1)
        vectorScale(row, 1 / sum, t + 1)
        if t + 1 < T { (row + t + 1).update(repeating: 0, count: T - t - 1) }
    }
}

/// Floats of scratch `attentionBackward` needs for `slots` parallel slots.
public func attentionScratchCount(seq: Int, slots: Int) -> Int { seq * seq * slots }

/// Backward of `attentionForward`. Writes `dq` (batch·seq, qHeads·headDim) and *adds* into `dk`
/// and `dv` (callers zero them first). `scratch` holds `slots` blocks of seq·seq floats.
///
/// Work is split by (batch, kv head) so the q heads sharing a kv head add into its gradient in
/// a fixed order: the result does not depend on the thread count.
public func attentionBackward(
    _ dq: UnsafeMutablePointer<Float>, _ dk: UnsafeMutablePointer<Float>, _ dv: UnsafeMutablePointer<Float>,
    _ scratch: UnsafeMutablePointer<Float>, slots: Int,
    _ dout: UnsafePointer<Float>, _ probs: UnsafePointer<Float>,
    _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
    shape s: AttentionShape
) {
    let T = s.seq, D = s.headDim
    let ldq = s.qHeads * D, ldk = s.kvHeads * D
    do {
        parallelChunksIndexed(s.batch * s.kvHeads, maxChunks: slots) { slot, i0, i1 in
            let dP = scratch + slot * T * T
            for bk in i0..<i1 {
                let b = bk / s.kvHeads, kh = bk % s.kvHeads
                for h in (kh * s.group)..<((kh + 1) * s.group) {
                    let qp = q + b * T * ldq + h * D
                    let kp = k + b * T * ldk + kh * D
                    let vp = v + b * T * ldk + kh * D
                    let dop = dout + b * T * ldq + h * D
                    let dqp = dq + b * T * ldq + h * D
                    let dkp = dk + b * T * ldk + kh * D
                    let dvp = dv + b * T * ldk + kh * D
                    let pp = probs + (b * s.qHeads + h) * T * T
                    // dP = dO · Vᵀ ; dV += Pᵀ · dO
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(T), Int32(T), Int32(D),
                                1, dop, Int32(ldq), vp, Int32(ldk), 0, dP, Int32(T))
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(T), Int32(D), Int32(T),
                                1, pp, Int32(T), dop, Int32(ldq), 1, dvp, Int32(ldk))
                    // dS = P ⊙ (dP − Σ_j P·dP), causal part only
                    for t in 0..<T {
                        let pr = pp + t * T, dr = dP + t * T
                        let dot = vectorDot(pr, dr, t + 1)
                        for j in 0...t { dr[j] = pr[j] * (dr[j] - dot) }
                        if t + 1 < T { (dr + t + 1).update(repeating: 0, count: T - t - 1) }
                    }
                    // dQ = scale · dS · K ; dK += scale · dSᵀ · Q
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(T), Int32(D), Int32(T),
                                s.scale, dP, Int32(T), kp, Int32(ldk), 0, dqp, Int32(ldq))
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(T), Int32(D), Int32(T),
                                s.scale, dP, Int32(T), qp, Int32(ldq), 1, dkp, Int32(ldk))
                }
            }
        }
    }
}

/// Plain-loop oracle for `attentionForward` (writes `out` only).
public func attentionForwardNaive(
    _ out: UnsafeMutablePointer<Float>,
    _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
    shape s: AttentionShape
) {
    let T = s.seq, D = s.headDim
    var w = [Double](repeating: 0, count: T)
    for b in 0..<s.batch {
        for h in 0..<s.qHeads {
            let kh = h / s.group
            for t in 0..<T {
                let qv = q + ((b * T + t) * s.qHeads + h) * D
                var m = -Double.infinity
                for j in 0...t {
                    let kv = k + ((b * T + j) * s.kvHeads + kh) * D
                    var dot = 0.0
                    for d in 0..<D { dot += Double(qv[d]) * Double(kv[d]) }
                    w[j] = dot * Double(s.scale)
                    m = max(m, w[j])
                }
                var sum = 0.0
                for j in 0...t { w[j] = Foundation.exp(w[j] - m); sum += w[j] }
                let o = out + ((b * T + t) * s.qHeads + h) * D
                for d in 0..<D {
                    var acc = 0.0
                    for j in 0...t { acc += w[j] / sum * Double(v[((b * T + j) * s.kvHeads + kh) * D + d]) }
                    o[d] = Float(acc)
                }
            }
        }
    }
}

/// Attention of `newTokens` queries per sequence against a KV cache holding `past + newTokens`
/// positions (the new keys/values already written), causal within the new tokens.
///
/// q/out: (batch, newTokens, qHeads, headDim); cache k/v: (batch, capacity, kvHeads, headDim).
/// `scores` holds batch·qHeads·(past + newTokens) floats. `firstVisible[b]` (optional) hides
/// the cache positions before it from sequence b: left padding of a batch of unequal prompts.
public func attentionCachedForward(
    _ out: UnsafeMutablePointer<Float>, _ scores: UnsafeMutablePointer<Float>,
    _ q: UnsafePointer<Float>, _ kCache: UnsafePointer<Float>, _ vCache: UnsafePointer<Float>,
    batch: Int, newTokens: Int, past: Int, capacity: Int, qHeads: Int, kvHeads: Int, headDim: Int,
    firstVisible: UnsafePointer<Int>? = nil
) {
    let D = headDim, group = qHeads / kvHeads
    let scale = 1 / Float(D).squareRoot()
    let total = past + newTokens
    parallelFor(batch * qHeads) { bh in
        let b = bh / qHeads, h = bh % qHeads, kh = h / group
        let sc = scores + bh * total
        let first = firstVisible?[b] ?? 0
        for t in 0..<newTokens {
            let qv = q + ((b * newTokens + t) * qHeads + h) * D
            let visible = past + t + 1
            let o = out + ((b * newTokens + t) * qHeads + h) * D
            if first >= visible {
                o.update(repeating: 0, count: D)   // a padding position: attends to nothing
                continue
            }
            var m = -Float.infinity
            for j in first..<visible {
                let kv = kCache + ((b * capacity + j) * kvHeads + kh) * D
                let dot = vectorDot(qv, kv, D) * scale
                sc[j] = dot
                if dot > m { m = dot }
            }
            let sum = vectorExpShiftSum(sc + first, shift: m, visible - first)
            let inv = 1 / sum
            o.update(repeating: 0, count: D)
            for j in first..<visible {
                vectorAxpy(o, sc[j] * inv, vCache + ((b * capacity + j) * kvHeads + kh) * D, D)
            }
        }
    }
}
