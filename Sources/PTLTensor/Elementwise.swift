/// `out = a + b` over `count` floats (out may alias a or b).
@inline(__always)
public func addForward(_ out: UnsafeMutablePointer<Float>, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
    parallelChunks(count, minChunk: 8192) { i0, i1 in
        for i in i0..<i1 { out[i] = a[i] + b[i] }
    }
}

/// `dst += src` over `count` floats.
@inline(__always)
public func addInPlace(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, count: Int) {
    parallelChunks(count, minChunk: 8192) { i0, i1 in
        for i in i0..<i1 { dst[i] += src[i] }
    }
}

/// `dst *= s` over `count` floats.
@inline(__always)
public func scaleInPlace(_ dst: UnsafeMutablePointer<Float>, _ s: Float, count: Int) {
    parallelChunks(count, minChunk: 8192) { i0, i1 in
        for i in i0..<i1 { dst[i] *= s }
    }
}

/// Σ x² in Double, summed in fixed blocks so the result does not depend on the thread count.
public func sumOfSquares(_ x: UnsafePointer<Float>, count: Int) -> Double {
    let block = 1 << 16
    let blocks = (count + block - 1) / block
    guard blocks > 0 else { return 0 }
    var partial = [Double](repeating: 0, count: blocks)
    partial.withUnsafeMutableBufferPointer { p in
        let base = p.baseAddress!
        parallelFor(blocks) { bi in
            let start = bi * block, end = min(count, start + block)
            var acc = 0.0
            var i = start
            while i < end { let v = Double(x[i]); acc += v * v; i += 1 }
            base[bi] = acc
        }
    }
    return partial.reduce(0, +)
}
