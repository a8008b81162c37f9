import Foundation

/// What one GRPO row (a completion token) needs besides its logits and target: the log-probability
/// the sampling policy gave the token, the reference model's (for the KL penalty), and the
/// advantage of the completion it belongs to.
public struct GRPOSettings: Sendable, Equatable {
    /// The ratio is clipped to [1 − clipLow, 1 + clipHigh] (DAPO's clip-higher: 0.2 / 0.28).
    public var clipLow: Float
    public var clipHigh: Float
    /// The KL penalty's weight β (0: no reference model needed).
    public var beta: Float
    public init(clipLow: Float = 0.2, clipHigh: Float = 0.28, beta: Float = 0.04) {
        self.clipLow = clipLow; self.clipHigh = clipHigh; self.beta = beta
    }
}

/// Sums a GRPO forward returns: the loss, the scored rows, the rows whose ratio was clipped (no
/// gradient from the policy term) and the KL estimate, each summed over the scored rows.
public struct GRPOSums: Sendable, Equatable {
    public var loss = 0.0
    public var count = 0
    public var clipped = 0
    public var kl = 0.0
    public var ratio = 0.0
    public init() {}
}

/// GRPO's per-token objective (DeepSeekMath's GRPO with DAPO's asymmetric clip): for every row
/// with a target (negative = ignored), with logp = log softmax(logits)[target],
/// ρ = exp(logp − oldLogp) and d = refLogp − logp,
///
///     loss_r = −min(ρ·A, clip(ρ, 1 − clipLow, 1 + clipHigh)·A) + β·(exp(d) − d − 1)
///
/// (the KL term is Schulman's k3 estimator of KL(π‖π_ref); with β = 0 `refLogp` is not read;
/// `oldLogp` nil means on-policy — one update per batch of rollouts, TRL's default — so ρ = 1).
/// Writes each row's loss into `losses` (0 for ignored rows). When `dlogits` is given (it may
/// alias `logits`) writes `scale · ∂loss_r/∂logits_r` = `scale · c · (onehot − softmax)` with
/// c = ∂loss_r/∂logp = −A·ρ (0 when the clip is the active side: A > 0 and ρ > 1 + clipHigh, or
/// A < 0 and ρ < 1 − clipLow) + β·(1 − exp(d)); 0 for ignored rows. With scale = 1 / scored
/// tokens of the whole batch, that is the gradient of the token-mean loss.
public func grpoForwardBackward(
    losses: UnsafeMutablePointer<Float>, dlogits: UnsafeMutablePointer<Float>?,
    logits: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>,
    oldLogp: UnsafePointer<Float>?, refLogp: UnsafePointer<Float>?, advantages: UnsafePointer<Float>,
    rows: Int, vocab: Int, settings s: GRPOSettings, scale: Float
) -> GRPOSums {
    let flags = UnsafeMutablePointer<Float>.allocate(capacity: max(1, 3 * rows))   // clipped, kl, ratio per row
    defer { flags.deallocate() }
    parallelChunks(rows, minChunk: 4) { r0, r1 in
        let scratchBuffer = dlogits == nil ? UnsafeMutablePointer<Float>.allocate(capacity: vocab) : nil
        defer { scratchBuffer?.deallocate() }
        for r in r0..<r1 {
            let x = logits + r * vocab
            let target = Int(targets[r])
            guard target >= 0 else {
                losses[r] = 0
                flags[3 * r] = 0; flags[3 * r + 1] = 0; flags[3 * r + 2] = 0
                if let dlogits { (dlogits + r * vocab).update(repeating: 0, count: vocab) }
                continue
            }
            let m = vectorMax(x, vocab)
            let xt = x[target]
            let g = dlogits.map { $0 + r * vocab } ?? scratchBuffer!
            if g != x { g.update(from: x, count: vocab) }
            let sum = vectorExpShiftSum(g, shift: m, vocab)        // g ← exp(x − m)
            let logp = Double(xt) - Double(m) - Foundation.log(Double(sum))
            let a = Double(advantages[r])
            // No old log-probs: on-policy (the version that sampled is this one), ρ = 1 exactly.
            let ratio = oldLogp.map { Foundation.exp(logp - Double($0[r])) } ?? 1
            let clippedRatio = min(max(ratio, 1 - Double(s.clipLow)), 1 + Double(s.clipHigh))
            let clipped = (a > 0 && ratio > 1 + Double(s.clipHigh)) || (a < 0 && ratio < 1 - Double(s.clipLow))
            var loss = -min(ratio * a, clippedRatio * a)
            var c = clipped ? 0 : -a * ratio
            var kl = 0.0
            if s.beta != 0, let refLogp {
                let d = Double(refLogp[r]) - logp
                kl = Foundation.exp(d) - d - 1
                loss += Double(s.beta) * kl
                c += Double(s.beta) * (1 - Foundation.exp(d))
            }
            losses[r] = Float(loss)
            flags[3 * r] = clipped ? 1 : 0
            flags[3 * r + 1] = Float(kl)
            flags[3 * r + 2] = Float(ratio)
            guard dlogits != nil else { continue }
            // scale · c · (onehot − softmax) = −scale·c/sum · exp(x − m), then + scale·c at the target.
            let k = Float(Double(scale) * c)
            vectorScale(g, -k / sum, vocab)
            g[target] += k
        }
    }
    var sums = GRPOSums()
    for r in 0..<rows where targets[r] >= 0 {
        sums.loss += Double(losses[r])
        sums.count += 1
        sums.clipped += flags[3 * r] != 0 ? 1 : 0
        sums.kl += Double(flags[3 * r + 1])
        sums.ratio += Double(flags[3 * r + 2])
    }
    return sums
}

/// Log-probabilities of `targets` under `logits` (rows × vocab; negative target = ignored, 0
/// written): what the sampling policy and the reference model give each completion token.
public func targetLogProbabilities(_ out: UnsafeMutablePointer<Float>, logits: UnsafePointer<Float>, targets: UnsafePointer<Int32>,
                                   rows: Int, vocab: Int) {
    parallelChunks(rows, minChunk: 4) { r0, r1 in
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: vocab)
        defer { scratch.deallocate() }
        for r in r0..<r1 {
            let t = Int(targets[r])
            guard t >= 0 else { out[r] = 0; continue }
            let x = logits + r * vocab
            let m = vectorMax(x, vocab)
            scratch.update(from: x, count: vocab)
            let sum = vectorExpShiftSum(scratch, shift: m, vocab)
            out[r] = Float(Double(x[t]) - Double(m) - Foundation.log(Double(sum)))
        }
    }
}

public enum GRPOAdvantages {
    /// Group-normalised advantages: rewards in consecutive groups of `groupSize` completions of one
    /// prompt; each becomes (r − group mean) / (group std + eps), std the unbiased one (as TRL and
    /// verl compute it). A group whose rewards tie gets zero advantages. Needs groupSize ≥ 2 and
    /// a whole number of groups (the caller checks; here it is a programming error).
    public static func compute(rewards: [Double], groupSize: Int, eps: Double = 1e-6) -> [Double] {
        precondition(groupSize >= 2 && rewards.count % groupSize == 0, "GRPO: \(rewards.count) rewards in groups of \(groupSize)")
        var out = [Double](repeating: 0, count: rewards.count)
        for g in stride(from: 0, to: rewards.count, by: groupSize) {
            let r = rewards[g..<(g + groupSize)]
            let mean = r.reduce(0, +) / Double(groupSize)
            let variance = r.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(groupSize - 1)
            let std = variance.squareRoot()
            for i in 0..<groupSize { out[g + i] = (rewards[g + i] - mean) / (std + eps) }
        }
        return out
    }
}
