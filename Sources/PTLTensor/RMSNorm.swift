import Foundation

/// `out = inp / sqrt(mean(inp²) + eps) * weight` over rows of width `dim`; saves 1/rms per row.
@inline(__always)
public func rmsnormForward(
    _ out: UnsafeMutablePointer<Float>, _ rstd: UnsafeMutablePointer<Float>?,
    _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
    rows: Int, dim: Int, eps: Float
) {
    parallelChunks(rows, minChunk: 8) { r0, r1 in
        for r in r0..<r1 {
            let x = inp + r * dim, y = out + r * dim
            let ss = vectorDot(x, x, dim)
            let s = 1 / (ss / Float(dim) + eps).squareRoot()
            rstd?[r] = s
            for i in 0..<dim { y[i] = (x[i] * s) * weight[i] }
        }
    }
}

/// Backward of `rmsnormForward`: adds into `dinp` and `dweight`.
///
/// `dweight` is reduced over rows in row order by splitting the work over columns, so the result
/// does not depend on the thread count.
@inline(__always)
public func rmsnormBackward(
    _ dinp: UnsafeMutablePointer<Float>, _ dweight: UnsafeMutablePointer<Float>?,
    _ dout: UnsafePointer<Float>, _ inp: UnsafePointer<Float>, _ weight: UnsafePointer<Float>,
    _ rstd: UnsafePointer<Float>, rows: Int, dim: Int
) {
    parallelChunks(rows, minChunk: 8) { r0, r1 in
        for r in r0..<r1 {
            let x = inp + r * dim, dy = dout + r * dim, dx = dinp + r * dim
            let s = rstd[r]
            // y_i = w_i x_i s;  dx_j = s w_j dy_j - s³/d x_j Σ_i dy_i w_i x_i
            let dot = vectorDot3(dy, weight, x, dim)
            let c = dot * s * s * s / Float(dim)
            for i in 0..<dim { dx[i] += s * weight[i] * dy[i] - c * x[i] }
        }
    }
    if let dweight {
        parallelChunks(dim, minChunk: 32) { c0, c1 in
            for r in 0..<rows {
                let x = inp + r * dim, dy = dout + r * dim
                let s = rstd[r]
                for i in c0..<c1 { dweight[i] += dy[i] * x[i] * s }
            }
        }
    }
}
