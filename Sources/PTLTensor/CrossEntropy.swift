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
    var total = 0.0
    var count = 0
    for r in 0..<rows where targets[r] >= 0 {
        total += Double(losses[r])
        count += 1
    }
    return (total, count)
}
