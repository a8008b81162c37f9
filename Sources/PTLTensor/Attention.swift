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
public func attentionForward(
    _ out: UnsafeMutablePointer<Float>, _ probs: UnsafeMutablePointer<Float>,
    _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
    shape s: AttentionShape
) {
    let T = s.seq, D = s.headDim
    let ldq = s.qHeads * D, ldk = s.kvHeads * D
    for b in 0..<s.batch {
        for h in 0..<s.qHeads {
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

/// Softmax of row t over columns 0...t of a (T, T) matrix; columns after t set to 0.
@inline(__always)
func causalSoftmaxRows(_ p: UnsafeMutablePointer<Float>, _ T: Int) {
    parallelChunks(T, minChunk: 32) { r0, r1 in
        for t in r0..<r1 {
            let row = p + t * T
            var m = -Float.infinity
            for j in 0...t where row[j] > m { m = row[j] }
            var sum: Float = 0
            for j in 0...t {
                let e = Foundation.exp(row[j] - m)
                row[j] = e
                sum += e
            }
            let inv = 1 / sum
            for j in 0...t { row[j] *= inv }
            for j in (t + 1)..<T { row[j] = 0 }
        }
    }
}

/// Backward of `attentionForward`. Writes `dq` (batch·seq, qHeads·headDim) and *adds* into `dk`
/// and `dv` (callers zero them first). `scratch` holds seq·seq floats.
public func attentionBackward(
    _ dq: UnsafeMutablePointer<Float>, _ dk: UnsafeMutablePointer<Float>, _ dv: UnsafeMutablePointer<Float>,
    _ scratch: UnsafeMutablePointer<Float>,
    _ dout: UnsafePointer<Float>, _ probs: UnsafePointer<Float>,
    _ q: UnsafePointer<Float>, _ k: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
    shape s: AttentionShape
) {
    let T = s.seq, D = s.headDim
    let ldq = s.qHeads * D, ldk = s.kvHeads * D
    for b in 0..<s.batch {
        for h in 0..<s.qHeads {
            let kh = h / s.group
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
                        1, dop, Int32(ldq), vp, Int32(ldk), 0, scratch, Int32(T))
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(T), Int32(D), Int32(T),
                        1, pp, Int32(T), dop, Int32(ldq), 1, dvp, Int32(ldk))
            // dS = P ⊙ (dP − Σ_j P·dP), causal part only
            parallelChunks(T, minChunk: 32) { r0, r1 in
                for t in r0..<r1 {
                    let pr = pp + t * T, dr = scratch + t * T
                    var dot: Float = 0
                    for j in 0...t { dot += pr[j] * dr[j] }
                    for j in 0...t { dr[j] = pr[j] * (dr[j] - dot) }
                    for j in (t + 1)..<T { dr[j] = 0 }
                }
            }
            // dQ = scale · dS · K ; dK += scale · dSᵀ · Q
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(T), Int32(D), Int32(T),
                        s.scale, scratch, Int32(T), kp, Int32(ldk), 0, dqp, Int32(ldq))
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(T), Int32(D), Int32(T),
                        s.scale, scratch, Int32(T), qp, Int32(ldq), 1, dkp, Int32(ldk))
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
/// `scores` holds batch·qHeads·(past + newTokens) floats.
public func attentionCachedForward(
    _ out: UnsafeMutablePointer<Float>, _ scores: UnsafeMutablePointer<Float>,
    _ q: UnsafePointer<Float>, _ kCache: UnsafePointer<Float>, _ vCache: UnsafePointer<Float>,
    batch: Int, newTokens: Int, past: Int, capacity: Int, qHeads: Int, kvHeads: Int, headDim: Int
) {
    let D = headDim, group = qHeads / kvHeads
    let scale = 1 / Float(D).squareRoot()
    let total = past + newTokens
    parallelFor(batch * qHeads) { bh in
        let b = bh / qHeads, h = bh % qHeads, kh = h / group
        let sc = scores + bh * total
        for t in 0..<newTokens {
            let qv = q + ((b * newTokens + t) * qHeads + h) * D
            let visible = past + t + 1
            var m = -Float.infinity
            for j in 0..<visible {
                let kv = kCache + ((b * capacity + j) * kvHeads + kh) * D
                var dot: Float = 0
                for d in 0..<D { dot += qv[d] * kv[d] }
                dot *= scale
                sc[j] = dot
                if dot > m { m = dot }
            }
            var sum: Float = 0
            for j in 0..<visible { let e = Foundation.exp(sc[j] - m); sc[j] = e; sum += e }
            let inv = 1 / sum
            let o = out + ((b * newTokens + t) * qHeads + h) * D
            for d in 0..<D { o[d] = 0 }
            for j in 0..<visible {
                let w = sc[j] * inv
                let vv = vCache + ((b * capacity + j) * kvHeads + kh) * D
                for d in 0..<D { o[d] += w * vv[d] }
            }
        }
    }
}
