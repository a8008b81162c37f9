import Foundation

/// Rotary position tables, `cos`/`sin` of shape (positions, headDim/2), in Hugging Face's
/// "rotate half" convention: element i pairs with element i + headDim/2.
public struct RoPETables: Sendable {
    public let headDim: Int
    public let positions: Int
    public let cos: [Float]   // (positions, headDim/2)
    public let sin: [Float]   // (positions, headDim/2)

    /// Builds the tables from inverse frequencies (length headDim/2) and an attention scale
    /// (1 except for some scaled-RoPE variants).
    public init(inverseFrequencies: [Double], headDim: Int, positions: Int, attentionScaling: Double = 1) {
        precondition(inverseFrequencies.count == headDim / 2)
        let half = headDim / 2
        var c = [Float](repeating: 0, count: positions * half)
        var s = [Float](repeating: 0, count: positions * half)
        for p in 0..<positions {
            for i in 0..<half {
                // transformers computes position·inv_freq in fp32.
                let angle = Double(Float(p) * Float(inverseFrequencies[i]))
                c[p * half + i] = Float(Foundation.cos(angle) * attentionScaling)
                s[p * half + i] = Float(Foundation.sin(angle) * attentionScaling)
            }
        }
        self.headDim = headDim
        self.positions = positions
        self.cos = c
        self.sin = s
    }
}

/// Rotates `heads` vectors of width `headDim` in each of `rows` rows in place;
/// row r is at position `positionOf(r)`.
@inline(__always)
public func ropeForward(
    _ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, headDim: Int,
    cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, positionOf: (Int) -> Int
) {
    rotate(x, rows: rows, heads: heads, headDim: headDim, cos: cos, sin: sin, sinSign: 1, positionOf: positionOf)
}

/// Backward of `ropeForward`, in place on the gradient: the transpose rotation (angle negated).
@inline(__always)
public func ropeBackward(
    _ dx: UnsafeMutablePointer<Float>, rows: Int, heads: Int, headDim: Int,
    cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, positionOf: (Int) -> Int
) {
    rotate(dx, rows: rows, heads: heads, headDim: headDim, cos: cos, sin: sin, sinSign: -1, positionOf: positionOf)
}

/// (x1, x2) ← (x1·c − x2·s', x2·c + x1·s') with s' = sinSign·sin, pairs (i, i + headDim/2).
@inline(__always)
func rotate(
    _ x: UnsafeMutablePointer<Float>, rows: Int, heads: Int, headDim: Int,
    cos: UnsafePointer<Float>, sin: UnsafePointer<Float>, sinSign: Float, positionOf: (Int) -> Int
) {
    let half = headDim / 2
    parallelChunks(rows, minChunk: 16) { r0, r1 in
        for r in r0..<r1 {
            let p = positionOf(r)
            let c = cos + p * half, s = sin + p * half
            for h in 0..<heads {
                let v = x + (r * heads + h) * headDim
                for i in 0..<half {
                    let x1 = v[i], x2 = v[i + half], si = sinSign * s[i]
                    v[i] = x1 * c[i] - x2 * si
                    v[i + half] = x2 * c[i] + x1 * si
                }
            }
        }
    }
}
