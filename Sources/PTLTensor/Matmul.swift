import COpenBLAS

// Linear layers in Hugging Face layout: weight is (out, in), y = x·Wᵀ + b.
// All matrix products go through cblas_sgemm; backward functions add into their gradients.

/// `out (rows, outDim) = inp (rows, inDim) · weightᵀ + bias`.
@inline(__always)
public func matmulForward(
    _ out: UnsafeMutablePointer<Float>,
    _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>, _ bias: UnsafePointer<Float>?,
    rows: Int, inDim: Int, outDim: Int
) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(rows), Int32(outDim), Int32(inDim),
                1, inp, Int32(inDim), weight, Int32(inDim), 0, out, Int32(outDim))
    if let bias {
        parallelChunks(rows, minChunk: 16) { r0, r1 in
            for r in r0..<r1 {
                let row = out + r * outDim
                for o in 0..<outDim { row[o] += bias[o] }
            }
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
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(inDim), Int32(outDim),
                    1, dout, Int32(outDim), weight, Int32(inDim), 1, dinp, Int32(inDim))
    }
    if let dweight {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, Int32(outDim), Int32(inDim), Int32(rows),
                    1, dout, Int32(outDim), inp, Int32(inDim), 1, dweight, Int32(inDim))
    }
    if let dbias {
        // Column sums, split over columns so each output element is summed in row order.
        parallelChunks(outDim, minChunk: 64) { o0, o1 in
            for r in 0..<rows {
                let row = dout + r * outDim
                for o in o0..<o1 { dbias[o] += row[o] }
            }
        }
    }
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
