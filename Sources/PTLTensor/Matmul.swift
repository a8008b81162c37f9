import COpenBLAS

/// `C = α·op(A)·op(B) + β·C` (row-major), split by blocks of C's rows or columns, each block one
/// single-threaded sgemm over the full K, the blocks spread over our threads.
@inline(__always)
public func parallelSgemm(
    transA: Bool, transB: Bool, m: Int, n: Int, k: Int, alpha: Float,
    _ a: UnsafePointer<Float>, lda: Int, _ b: UnsafePointer<Float>, ldb: Int,
    beta: Float, _ c: UnsafeMutablePointer<Float>, ldc: Int
) {
    let ta = transA ? CblasTrans : CblasNoTrans, tb = transB ? CblasTrans : CblasNoTrans
    if m * n * k < 1 << 18 {
        cblas_sgemm(CblasRowMajor, ta, tb, Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
        return
    }
    // The split into blocks depends on the shape alone, never on the thread count: OpenBLAS takes
    // other kernels for other block shapes (its small-matrix and edge kernels round differently),
    // so a split by threads made `ptl prune` on two threads differ in the last bits from workers
    // on one. Blocks are multiples of 16 rows (or columns) of C, at most `sgemmBlocks` of them.
    if m >= n {
        let blocks = max(1, min(sgemmBlocks, m / 64))
        parallelChunks(blocks) { b0, b1 in for blk in b0..<b1 {
            let r0 = blk * m / blocks / 16 * 16, r1 = blk + 1 == blocks ? m : (blk + 1) * m / blocks / 16 * 16
            if r1 <= r0 { continue }
            let aOff = transA ? r0 : r0 * lda
            cblas_sgemm(CblasRowMajor, ta, tb, Int32(r1 - r0), Int32(n), Int32(k), alpha, a + aOff, Int32(lda),
                        b, Int32(ldb), beta, c + r0 * ldc, Int32(ldc))
        } }
    } else {
        let blocks = max(1, min(sgemmBlocks, n / 64))
        parallelChunks(blocks) { b0, b1 in for blk in b0..<b1 {
            let c0 = blk * n / blocks / 16 * 16, c1 = blk + 1 == blocks ? n : (blk + 1) * n / blocks / 16 * 16
            if c1 <= c0 { continue }
            let bOff = transB ? c0 * ldb : c0
            cblas_sgemm(CblasRowMajor, ta, tb, Int32(m), Int32(c1 - c0), Int32(k), alpha, a, Int32(lda),
                        b + bOff, Int32(ldb), beta, c + c0, Int32(ldc))
        } }
    }
}

/// The most blocks `parallelSgemm` splits a product into (enough for the cores of the machines
/// this runs on; a fixed number, so the bits do not depend on them).
let sgemmBlocks = 8

/// `y (rows) = W (rows, cols) · x (cols)`: rows split over our threads; each thread streams its
/// rows of W four at a time against x, so decoding reads every weight once.
@inline(__always)
public func matvec(_ y: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, rows: Int, cols: Int) {
    let blocks = rows * cols < 1 << 15 ? 1 : min(ComputeThreads.count, max(1, rows / 16))
    parallelChunks(blocks) { b0, b1 in
        for blk in b0..<b1 {
            let r0 = blk * rows / blocks / 4 * 4, r1 = blk + 1 == blocks ? rows : (blk + 1) * rows / blocks / 4 * 4
            matvecRows(y, w, x, r0: r0, r1: r1, cols: cols)
        }
    }
}

@inline(__always)
func matvecRows(_ y: UnsafeMutablePointer<Float>, _ w: UnsafePointer<Float>, _ x: UnsafePointer<Float>, r0: Int, r1: Int, cols: Int) {
    var r = r0
    let full = cols / 16 * 16
    while r + 4 <= r1 {
        let w0 = w + r * cols, w1 = w0 + cols, w2 = w1 + cols, w3 = w2 + cols
        var a0 = SIMD16<Float>(), a1 = SIMD16<Float>(), a2 = SIMD16<Float>(), a3 = SIMD16<Float>()
        var i = 0
        while i < full {
            let xv = load16(x + i)
            a0 += load16(w0 + i) * xv
            a1 += load16(w1 + i) * xv
            a2 += load16(w2 + i) * xv
            a3 += load16(w3 + i) * xv
            i += 16
        }
        var s0 = a0.sum(), s1 = a1.sum(), s2 = a2.sum(), s3 = a3.sum()
        while i < cols { s0 += w0[i] * x[i]; s1 += w1[i] * x[i]; s2 += w2[i] * x[i]; s3 += w3[i] * x[i]; i += 1 }
        y[r] = s0; y[r + 1] = s1; y[r + 2] = s2; y[r + 3] = s3
        r += 4
    }
    while r < r1 {
        y[r] = vectorDot(w + r * cols, x, cols)
        r += 1
    }
}

// Linear layers in Hugging Face layout: weight is (out, in), y = x·Wᵀ + b.
// All matrix products go through cblas_sgemm; backward functions add into their gradients.

/// `out (rows, outDim) = inp (rows, inDim) · weightᵀ + bias`.
@inline(__always)
public func matmulForward(
    _ out: UnsafeMutablePointer<Float>,
    _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
    rows: Int, inDim: Int, outDim: Int
) {
    if rows == 1 {
        // One token (decoding): a matrix-vector product bound by reading the weights once.
        matvec(out, weight, inp, rows: outDim, cols: inDim)
    } else {
        parallelSgemm(transA: false, transB: true, m: rows, n: outDim, k: inDim, alpha: 1,
                      inp, lda: inDim, weight, ldb: inDim, beta: 0, out, ldc: outDim)
    }
    if let bias { addBias(out, bias, rows: rows, dim: outDim) }
}

/// `out[r, o] += bias[o]` for every row.
@inline(__always)
public func addBias(_ out: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>, rows: Int, dim: Int) {
    parallelChunks(rows, minChunk: 16) { r0, r1 in
        for r in r0..<r1 {
            let row = out + r * dim
            for o in 0..<dim { row[o] += bias[o] }
        }
    }
}

/// `dbias[o] += Σ_r dout[r, o]`: column sums, split over columns so each is summed in row order.
@inline(__always)
public func biasBackward(_ dbias: UnsafeMutablePointer<Float>, _ dout: UnsafePointer<Float>, rows: Int, dim: Int) {
    parallelChunks(dim, minChunk: 64) { o0, o1 in
        for r in 0..<rows {
            let row = dout + r * dim
            for o in o0..<o1 { dbias[o] += row[o] }
        }
    }
}

/// Backward of `matmulForward`: `dinp += dout·W`, `dweight += doutᵀ·inp`, `dbias += Σ_rows dout`.
/// Pass nil for a gradient that is not needed.
@inline(__always)
public func matmulBackward(
    _ dinp: UnsafeMutablePointer<Float>?, _ dweight: UnsafeMutablePointer<Float>?,
    _ dbias: UnsafeMutablePointer<Float>?,
    _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
    rows: Int, inDim: Int, outDim: Int
) {
    if let dinp {
        parallelSgemm(transA: false, transB: false, m: rows, n: inDim, k: outDim, alpha: 1,
                      dout, lda: outDim, weight, ldb: inDim, beta: 1, dinp, ldc: inDim)
    }
    if let dweight {
        parallelSgemm(transA: true, transB: false, m: outDim, n: inDim, k: rows, alpha: 1,
                      dout, lda: outDim, inp, ldb: inDim, beta: 1, dweight, ldc: inDim)
    }
    if let dbias { biasBackward(dbias, dout, rows: rows, dim: outDim) }
}

/// Plain triple-loop oracle for `matmulForward` (tests only compare against it).
public func matmulForwardNaive(
    _ out: UnsafeMutablePointer<Float>,
    _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
    rows: Int, inDim: Int, outDim: Int
) {
    for r in 0..<rows {
        for o in 0..<outDim {
            var acc: Double = bias.map { Double($0[o]) } ?? 0
            for i in 0..<inDim { acc += Double(inp[r * inDim + i]) * Double(weight[o * inDim + i]) }
            out[r * outDim + o] = Float(acc)
        }
    }
}

/// Plain-loop oracle for `matmulBackward` (adds, like the fast one).
public func matmulBackwardNaive(
    _ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>,
    _ dbias: UnsafeMutablePointer<Float>?,
    _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
    rows: Int, inDim: Int, outDim: Int
) {
    for r in 0..<rows {
        for i in 0..<inDim {
            var acc: Double = 0
            for o in 0..<outDim { acc += Double(dout[r * outDim + o]) * Double(weight[o * inDim + i]) }
            dinp[r * inDim + i] += Float(acc)
        }
    }
    for o in 0..<outDim {
        for i in 0..<inDim {
            var acc: Double = 0
            for r in 0..<rows { acc += Double(dout[r * outDim + o]) * Double(inp[r * inDim + i]) }
            dweight[o * inDim + i] += Float(acc)
        }
        if let dbias {
            var acc: Double = 0
            for r in 0..<rows { acc += Double(dout[r * outDim + o]) }
            dbias[o] += Float(acc)
        }
    }
}
