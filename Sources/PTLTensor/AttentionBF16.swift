import CPTLBF16

// Causal attention with bf16 products (as autocast's bf16 attention): q, k, v, the
// probabilities and the output gradient go to the products in bf16; scores, softmax, its
// backward and every accumulation stay fp32. Each (batch, head) is one thread's work with
// single-threaded oneDNN calls, so the bits do not depend on the thread count.

/// bf16 values of one slot's scratch for `attentionBackwardBF16` / `attentionForwardBF16`:
/// two seq×seq blocks per slot.
public func attentionBF16ScratchCount(seq: Int, slots: Int) -> Int { 2 * seq * seq * slots }

/// `attentionForward` with bf16 products: `qB`, `kB`, `vB` are the bf16 copies of q, k, v (same
/// layout); `scratch` holds `slots` blocks of 2·seq·seq bf16 values.
public func attentionForwardBF16(
    _ out: UnsafeMutablePointer<Float>, _ probs: UnsafeMutablePointer<Float>,
    _ qB: UnsafePointer<UInt16>, _ kB: UnsafePointer<UInt16>, _ vB: UnsafePointer<UInt16>,
    scratch: UnsafeMutablePointer<UInt16>, slots: Int, shape s: AttentionShape
) {
    let T = s.seq, D = s.headDim
    let ldq = s.qHeads * D, ldk = s.kvHeads * D
    parallelChunksIndexed(s.batch * s.qHeads, maxChunks: slots) { slot, i0, i1 in
        let pB = scratch + slot * 2 * T * T
        for bh in i0..<i1 {
            let b = bh / s.qHeads, h = bh % s.qHeads, kh = h / s.group
            let pp = probs + (b * s.qHeads + h) * T * T
            bf16Gemm(false, true, T, T, D, qB + b * T * ldq + h * D, ldq, kB + b * T * ldk + kh * D, ldk, accumulate: false, pp, T)
            causalSoftmaxRows(pp, T, scale: s.scale)
            ptl_f32_to_bf16(pB, pp, T * T)
            bf16Gemm(false, false, T, D, T, pB, T, vB + b * T * ldk + kh * D, ldk, accumulate: false, out + b * T * ldq + h * D, ldq)
        }
    }
}

/// `attentionBackward` with bf16 products: writes `dq`, adds into `dk` and `dv` (zeroed by the
/// caller). `doutB` is the bf16 copy of `dout`; `dpScratch` holds `slots` blocks of seq·seq
/// floats, `scratch` `slots` blocks of 2·seq·seq bf16 values.
public func attentionBackwardBF16(
    _ dq: UnsafeMutablePointer<Float>, _ dk: UnsafeMutablePointer<Float>, _ dv: UnsafeMutablePointer<Float>,
    dpScratch: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<UInt16>, slots: Int,
    _ doutB: UnsafePointer<UInt16>, _ probs: UnsafePointer<Float>,
    _ qB: UnsafePointer<UInt16>, _ kB: UnsafePointer<UInt16>, _ vB: UnsafePointer<UInt16>,
    shape s: AttentionShape
) {
    let T = s.seq, D = s.headDim
    let ldq = s.qHeads * D, ldk = s.kvHeads * D
    parallelChunksIndexed(s.batch * s.kvHeads, maxChunks: slots) { slot, i0, i1 in
        let dP = dpScratch + slot * T * T
        let pB = scratch + slot * 2 * T * T, dSB = pB + T * T
        for bk in i0..<i1 {
            let b = bk / s.kvHeads, kh = bk % s.kvHeads
            let kp = kB + b * T * ldk + kh * D, vp = vB + b * T * ldk + kh * D
            let dkp = dk + b * T * ldk + kh * D, dvp = dv + b * T * ldk + kh * D
            for h in (kh * s.group)..<((kh + 1) * s.group) {
                let qp = qB + b * T * ldq + h * D, dop = doutB + b * T * ldq + h * D
                let pp = probs + (b * s.qHeads + h) * T * T
                // dP = dO·Vᵀ ; dV += Pᵀ·dO
                bf16Gemm(false, true, T, T, D, dop, ldq, vp, ldk, accumulate: false, dP, T)
                ptl_f32_to_bf16(pB, pp, T * T)
                bf16Gemm(true, false, T, D, T, pB, T, dop, ldq, accumulate: true, dvp, ldk)
                // dS = scale · P ⊙ (dP − Σ_j P·dP), causal part only (zero above the diagonal).
                for t in 0..<T {
                    let pr = pp + t * T, dr = dP + t * T
                    let dot = vectorDot(pr, dr, t + 1)
                    for j in 0...t { dr[j] = s.scale * pr[j] * (dr[j] - dot) }
                    if t + 1 < T { (dr + t + 1).update(repeating: 0, count: T - t - 1) }
                }
                ptl_f32_to_bf16(dSB, dP, T * T)
                // dQ = dS·K ; dK += dSᵀ·Q
                bf16Gemm(false, false, T, D, T, dSB, T, kp, ldk, accumulate: false, dq + b * T * ldq + h * D, ldq)
                bf16Gemm(true, false, T, D, T, dSB, T, qp, ldq, accumulate: true, dkp, ldk)
            }
        }
    }
}
