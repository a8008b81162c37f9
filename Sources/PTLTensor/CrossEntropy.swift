import Foundation

/// Cross-entropy of `rows` logit rows of width `vocab` against `targets` (negative = ignored).
///
/// Writes each row's loss into `losses` (0 for ignored rows) and returns (sum of losses, valid
/// rows). When `dlogits` is given (it may alias `logits`), writes `scale · (softmax − onehot)`
/// for valid rows and 0 for ignored ones: with `scale = 1 / validCount` that is the gradient of
/// the mean loss.
@discardableResult
public func crossEntropyForwardBackward(
    losses: UnsafeMutablePointer<Float>, dlogits: UnsafeMutablePointer<Float>?,
    logits: UnsafeMutablePointer<Float>, targets: UnsafePointer<Int32>,
    rows: Int, vocab: Int, scale: Float
) -> (sum: Double, count: Int) {
    parallelChunks(rows, minChunk: 4) { r0, r1 in
        // Exponentials go to the gradient row, or to a scratch row when there is none.
        let scratchBuffer = dlogits == nil ? UnsafeMutablePointer<Float>.allocate(capacity: vocab) : nil
        defer { scratchBuffer?.deallocate() }
        let rowScratch = scratchBuffer ?? logits
        for r in r0..<r1 {
            let x = logits + r * vocab
            let target = Int(targets[r])
            guard target >= 0 else {
                losses[r] = 0
                if let dlogits { (dlogits + r * vocab).update(repeating: 0, count: vocab) }
                continue
            }
            let m = vectorMax(x, vocab)
            let xt = x[target]
            let g = dlogits.map { $0 + r * vocab } ?? rowScratch
            if g != x { g.update(from: x, count: vocab) }
            let sum = vectorExpShiftSum(g, shift: m, vocab)
            losses[r] = Foundation.log(sum) + m - xt
            if dlogits != nil {
                vectorScale(g, scale / sum, vocab)
                g[target] -= scale
            }
        }
    }
    return validLossSum(losses, targets, rows: rows)
}

/// The recovery loss of distillation (Hinton et al.; Minitron's choice is `kdWeight = 1`, `T = 1`):
/// for every row with a target (negative = ignored), with `p = softmax(logits / T)` and
/// `q = softmax(teacher / T)`,
///
///     loss_r = (1 − kdWeight) · CE(logits_r, target_r) + kdWeight · T² · KL(q ‖ p)
///
/// (forward KL on the full vocabulary; `T²` keeps the gradient's size independent of `T`).
/// Writes each row's loss into `losses` (0 for ignored rows) and returns (sum, valid rows). When
/// `dlogits` is given (it may alias `logits`), writes
/// `scale · [(1 − kdWeight)(softmax(logits_r) − onehot) + kdWeight · T · (p − q)]` for valid rows
/// and 0 for ignored ones. The caller checks `temperature > 0` and `kdWeight` in 0…1.
@discardableResult
public func distillationForwardBackward(
    losses: UnsafeMutablePointer<Float>, dlogits: UnsafeMutablePointer<Float>?,
    logits: UnsafeMutablePointer<Float>, teacher: UnsafePointer<Float>, targets: UnsafePointer<Int32>,
    rows: Int, vocab: Int, temperature: Float, kdWeight: Float, scale: Float
) -> (sum: Double, count: Int) {
    let T = temperature, w = kdWeight, ceWeight = 1 - kdWeight
    let invT = 1 / T
    parallelChunks(rows, minChunk: 4) { r0, r1 in
        // p (student at T), q (teacher at T) and, when T ≠ 1 and CE counts, softmax(logits).
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 3 * vocab)
        defer { scratch.deallocate() }
        let p = scratch, q = scratch + vocab, s = scratch + 2 * vocab
        for r in r0..<r1 {
            let z = logits + r * vocab, t = teacher + r * vocab
            let target = Int(targets[r])
            guard target >= 0 else {
                losses[r] = 0
                if let dlogits { (dlogits + r * vocab).update(repeating: 0, count: vocab) }
                continue
            }
            for i in 0..<vocab { p[i] = z[i] * invT; q[i] = t[i] * invT }
            let mp = vectorMax(p, vocab), mq = vectorMax(q, vocab)
            let sp = vectorExpShiftSum(p, shift: mp, vocab)   // p ← exp(z/T − mp)
            let sq = vectorExpShiftSum(q, shift: mq, vocab)
            // KL(q‖p) = Σ q (t − z)/T + (mp + log sp) − (mq + log sq), q normalised.
            var cross = 0.0
            for i in 0..<vocab { cross += Double(q[i]) * Double(t[i] - z[i]) }
            let kl = cross / (Double(sq) * Double(T)) + (Double(mp) + Foundation.log(Double(sp))) - (Double(mq) + Foundation.log(Double(sq)))
            var ce = 0.0
            var ss: Float = 0, ms: Float = 0
            if ceWeight > 0 {
                if T == 1 {
                    ce = Double(mp) + Foundation.log(Double(sp)) - Double(z[target])
                } else {
                    s.update(from: z, count: vocab)
                    ms = vectorMax(s, vocab)
                    ss = vectorExpShiftSum(s, shift: ms, vocab)
                    ce = Double(ms) + Foundation.log(Double(ss)) - Double(z[target])
                }
            }
            losses[r] = Float(Double(ceWeight) * ce + Double(w) * Double(T * T) * max(0, kl))
            guard let dlogits else { continue }
            let g = dlogits + r * vocab
            let a = scale * w * T / sp, b = scale * w * T / sq
            if ceWeight > 0 && T == 1 {
                let c = scale * (ceWeight + w) / sp
                for i in 0..<vocab { g[i] = c * p[i] - b * q[i] }
            } else if ceWeight > 0 {
                let c = scale * ceWeight / ss
                for i in 0..<vocab { g[i] = c * s[i] + a * p[i] - b * q[i] }
            } else {
                for i in 0..<vocab { g[i] = a * p[i] - b * q[i] }
            }
            if ceWeight > 0 { g[target] -= scale * ceWeight }
        }
    }
    return validLossSum(losses, targets, rows: rows)
}

/// Σ of the rows' losses whose target is not ignored (in row order, Double), and their count.
func validLossSum(_ losses: UnsafePointer<Float>, _ targets: UnsafePointer<Int32>, rows: Int) -> (sum: Double, count: Int) {
    var total = 0.0
    var count = 0
    for r in 0..<rows where targets[r] >= 0 {
        total += Double(losses[r])
        count += 1
    }
    return (total, count)
}
