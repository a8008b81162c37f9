import Foundation
import PTLTensor

/// AdamW hyper-parameters (PyTorch's names and defaults except betas, which follow LLM practice).
public struct AdamWSettings: Sendable, Equatable, Codable {
    public var beta1: Float = 0.9
    public var beta2: Float = 0.95
    public var eps: Float = 1e-8
    public var weightDecay: Float = 0.1
    public init(beta1: Float = 0.9, beta2: Float = 0.95, eps: Float = 1e-8, weightDecay: Float = 0.1) {
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
    }
}

/// AdamW with PyTorch's exact update (`torch.optim.AdamW`, non-fused): decoupled weight decay
/// `p ← p·(1 − lr·wd)`, then `p ← p − lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε)`.
///
/// Weight decay applies to tensors of two or more dimensions only (not norms or biases). The two
/// moments share the parameter layout, so pruning slices them with the weights.
public final class AdamW: @unchecked Sendable {
    public var settings: AdamWSettings
    public let layout: ParameterLayout
    /// First moment, in the parameter layout.
    public let m: FloatBuffer
    /// Second moment, in the parameter layout.
    public let v: FloatBuffer
    /// Steps taken so far (the `t` of the bias corrections).
    public var step: Int = 0
    private let decayMask: [(range: Range<Int>, decays: Bool)]

    public init(layout: ParameterLayout, settings: AdamWSettings = AdamWSettings(),
                m: FloatBuffer? = nil, v: FloatBuffer? = nil, step: Int = 0) {
        self.settings = settings
        self.layout = layout
        self.m = m ?? FloatBuffer(count: layout.count)
        self.v = v ?? FloatBuffer(count: layout.count)
        self.step = step
        decayMask = layout.entries.map { ($0.range, $0.decays) }
    }

    /// Applies one update with learning rate `lr` to `params` from `grads`.
    public func update(params: FloatBuffer, grads: FloatBuffer, lr: Float) {
        precondition(params.count == layout.count && grads.count == layout.count)
        step += 1
        let s = settings
        let t = Double(step)
        let bc1 = 1 - Foundation.pow(Double(s.beta1), t)
        let bc2 = 1 - Foundation.pow(Double(s.beta2), t)
        let stepSize = Float(Double(lr) / bc1)
        let bc2Sqrt = Float(bc2.squareRoot())
        let b1 = s.beta1, b2 = s.beta2, eps = s.eps
        let P = params.pointer, G = grads.pointer, M = m.pointer, Vv = v.pointer
        for (range, decays) in decayMask {
            let decay: Float = decays ? 1 - lr * s.weightDecay : 1
            parallelChunks(range.count, minChunk: 16384) { i0, i1 in
                for i in (range.lowerBound + i0)..<(range.lowerBound + i1) {
                    let g = G[i]
                    let p = P[i] * decay
                    let mi = b1 * M[i] + (1 - b1) * g
                    let vi = b2 * Vv[i] + (1 - b2) * g * g
                    M[i] = mi
                    Vv[i] = vi
                    let denom = vi.squareRoot() / bc2Sqrt + eps
                    P[i] = p - stepSize * (mi / denom)
                }
            }
        }
    }
}

/// Global L2 norm of a gradient buffer, and in-place clipping as `torch.nn.utils.clip_grad_norm_`.
public enum GradientClipping {
    /// √Σg² over the whole buffer (Double accumulation, thread-count independent).
    public static func norm(_ grads: FloatBuffer) -> Double {
        sumOfSquares(grads.pointer, count: grads.count).squareRoot()
    }

    /// Scales `grads` by `maxNorm / (norm + 1e-6)` when that is below 1; returns the pre-clip norm.
    /// `maxNorm <= 0` disables clipping.
    @discardableResult
    public static func clip(_ grads: FloatBuffer, maxNorm: Float) -> Double {
        let total = norm(grads)
        if maxNorm > 0 {
            let coef = Double(maxNorm) / (total + 1e-6)
            if coef < 1 { scaleInPlace(grads.pointer, Float(coef), count: grads.count) }
        }
        return total
    }
}

/// Learning-rate schedules: linear warm-up, then constant or cosine decay to `minRatio · peak`.
public struct LearningRateSchedule: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable, Codable { case constant, cosine }
    public var kind: Kind
    public var peak: Float
    public var warmup: Int
    public var total: Int
    public var minRatio: Float
    public init(kind: Kind, peak: Float, warmup: Int, total: Int, minRatio: Float = 0.1) {
        self.kind = kind; self.peak = peak; self.warmup = warmup; self.total = total; self.minRatio = minRatio
    }

    /// The rate at 0-based `step`: `peak·(step+1)/warmup` during warm-up; then `peak` (constant)
    /// or `peak·(r + (1−r)·½(1+cos(π·progress)))` with `progress = (step−warmup)/max(1, total−warmup)`.
    public func rate(at step: Int) -> Float {
        if step < warmup { return peak * Float(step + 1) / Float(warmup) }
        switch kind {
        case .constant: return peak
        case .cosine:
            let progress = min(1, Double(step - warmup) / Double(max(1, total - warmup)))
            let r = Double(minRatio)
            return Float(Double(peak) * (r + (1 - r) * 0.5 * (1 + Foundation.cos(Double.pi * progress))))
        }
    }
}
