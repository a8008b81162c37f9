/// `out[n] = table[tokens[n]]` for `rows` tokens; table is (vocab, dim).
@inline(__always)
public func embeddingForward(
    _ out: UnsafeMutablePointer<Float>, _ tokens: UnsafePointer<Int32>, _ table: UnsafePointer<Float>,
    rows: Int, dim: Int
) {
    parallelChunks(rows, minChunk: 32) { r0, r1 in
        for r in r0..<r1 {
            (out + r * dim).update(from: table + Int(tokens[r]) * dim, count: dim)
        }
    }
}

/// Backward of `embeddingForward`: `dtable[tokens[n]] += dout[n]`, rows summed in order
/// (work split over columns) so the result is independent of the thread count.
@inline(__always)
public func embeddingBackward(
    _ dtable: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, _ tokens: UnsafePointer<Int32>,
    rows: Int, dim: Int
) {
    parallelChunks(dim, minChunk: 64) { c0, c1 in
        for r in 0..<rows {
            let dst = dtable + Int(tokens[r]) * dim, src = dout + r * dim
            for c in c0..<c1 { dst[c] += src[c] }
        }
    }
}
