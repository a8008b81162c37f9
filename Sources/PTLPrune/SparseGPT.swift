import COpenBLAS
import Foundation
import PTLModel
import PTLTensor

/// Which weights of a layer SparseGPT zeroes: a fraction anywhere (unstructured), or n of every
/// m consecutive inputs of each output row (2:4, 4:8 — the patterns sparse tensor cores run).
public enum SparsityPattern: Sendable, Equatable, CustomStringConvertible {
    case unstructured(Double)
    case nOfM(n: Int, m: Int)

    /// "0.5" (a fraction in [0, 1)) or "2:4" (n < m, m ≤ 64).
    public init(parsing s: String) throws {
        let parts = s.split(separator: ":", omittingEmptySubsequences: false)
        if parts.count == 2, let n = Int(parts[0]), let m = Int(parts[1]) {
            guard n > 0, n < m, m <= 64 else { throw ModelError("sparsity \(s): n:m needs 0 < n < m ≤ 64") }
            self = .nOfM(n: n, m: m)
        } else if parts.count == 1, let f = Double(s) {
            guard f >= 0, f < 1 else { throw ModelError("sparsity \(s): a fraction needs 0 ≤ f < 1") }
            self = .unstructured(f)
        } else {
            throw ModelError("sparsity \(s): expected a fraction (0.5) or n:m (2:4)")
        }
    }

    public var description: String {
        switch self {
        case .unstructured(let f): return "\(f)"
        case .nOfM(let n, let m): return "\(n):\(m)"
        }
    }

    /// The fraction of weights it zeroes.
    public var fraction: Double {
        switch self {
        case .unstructured(let f): return f
        case .nOfM(let n, let m): return Double(n) / Double(m)
        }
    }
}

/// SparseGPT (Frantar & Alistarh, 2023): prunes one linear layer W (rows = outputs, cols =
/// inputs) to a sparsity pattern while keeping its output on calibration inputs X, by the
/// Optimal Brain Surgeon update with H = XᵀX. Columns are processed left to right in blocks;
/// a block's mask is chosen at its start from w² / [H⁻¹]²_cc (the saliency, with H⁻¹ through the
/// upper Cholesky factor U of H⁻¹), each pruned weight's error is spread over the block's later
/// columns at once, and the block's accumulated error over all later columns in one product
/// (the lazy batch update). Everything in Double; H's scale does not matter (the damping is
/// relative and every update a ratio of U's entries).
public enum SparseGPT {
    /// H = XᵀX (cols × cols, full) of `tokens` input rows of `cols` values, accumulated in Double.
    public static func hessian(inputs: UnsafePointer<Float>, tokens: Int, cols: Int, into h: inout [Double]) {
        LayerHessians.accumulate(&h, x: inputs, rows: Array(0..<max(0, tokens)), dim: cols)
    }

    /// Prunes `weights` (rows × cols, row-major) in place; returns the mask (true = zeroed;
    /// inputs that never fired, H_cc = 0, are zeroed as well).
    /// - Parameters:
    ///   - hessian: XᵀX of the layer's inputs (any positive scale), cols × cols.
    ///   - blockSize: columns per lazy batch (SparseGPT: 128); a multiple of m for n:m.
    ///   - percentDamp: λ = percentDamp · mean(diag H) added to the diagonal (SparseGPT: 0.01).
    ///   - fixed: weights that must be pruned whatever their saliency (rows × cols, true = pruned):
    ///     an earlier round's mask when the loop raises the sparsity, so masks only grow. They are
    ///     chosen first (and their OBS error spread like any other); the pattern's count is then
    ///     filled up from the rest. With n:m, no group of m may hold more than n of them.
    public static func prune(weights: UnsafeMutablePointer<Float>, rows: Int, cols: Int, hessian: [Double],
                             pattern: SparsityPattern, blockSize: Int = 128, percentDamp: Double = 0.01, fixed: [Bool]? = nil) throws -> [Bool] {
        guard rows > 0, cols > 0, hessian.count == cols * cols else {
            throw ModelError("SparseGPT: a \(rows) × \(cols) layer needs a \(cols) × \(cols) Hessian, got \(hessian.count) values")
        }
        guard blockSize > 0 else { throw ModelError("SparseGPT: block size \(blockSize) must be positive") }
        guard percentDamp.isFinite, percentDamp >= 0 else { throw ModelError("SparseGPT: damping \(percentDamp) must be finite and ≥ 0") }
        guard hessian.allSatisfy({ $0.isFinite }) else { throw ModelError("SparseGPT: the Hessian has a non-finite entry") }
        switch pattern {
        case .unstructured(let f):
            guard f >= 0, f < 1 else { throw ModelError("SparseGPT: sparsity \(f) must be in [0, 1)") }
        case .nOfM(let n, let m):
            guard n > 0, n < m, cols % m == 0, blockSize % m == 0 else {
                throw ModelError("SparseGPT: \(n):\(m) needs 0 < n < m dividing the \(cols) inputs and the block size \(blockSize)")
            }
        }
        if let fixed {
            guard fixed.count == rows * cols else {
                throw ModelError("SparseGPT: a mask of \(fixed.count) entries for a \(rows) × \(cols) layer")
            }
            if case .nOfM(let n, let m) = pattern {
                for r in 0..<rows {
                    for g in stride(from: 0, to: cols, by: m) {
                        var k = 0
                        for j in g..<(g + m) where fixed[r * cols + j] { k += 1 }
                        guard k <= n else {
                            throw ModelError("SparseGPT: row \(r), inputs \(g)..<\(g + m) already hold \(k) pruned weights, more than \(n):\(m) allows")
                        }
                    }
                }
            }
        }
        var w = [Double](unsafeUninitializedCapacity: rows * cols) { d, n in
            for i in 0..<(rows * cols) { d[i] = Double(weights[i]) }
            n = rows * cols
        }
        var h = hessian
        var dead = [Bool](repeating: false, count: cols)
        for c in 0..<cols where h[c * cols + c] == 0 {
            dead[c] = true
            h[c * cols + c] = 1
            for r in 0..<rows { w[r * cols + c] = 0 }
        }
        var meanDiag = 0.0
        for c in 0..<cols { meanDiag += h[c * cols + c] }
        meanDiag /= Double(cols)
        for c in 0..<cols { h[c * cols + c] += percentDamp * meanDiag }
        let u = try upperCholeskyOfInverse(h, cols)

        var mask = [Bool](repeating: false, count: rows * cols)
        let maxBlock = min(blockSize, cols)
        var w1 = [Double](repeating: 0, count: rows * maxBlock), q1 = w1, err1 = w1
        var blockMask = [Bool](repeating: false, count: rows * maxBlock)
        var scores = [Double](repeating: 0, count: rows * maxBlock), sorted = scores
        var groupSize = 0
        if case .nOfM(_, let m) = pattern { groupSize = m }
        var group = [(Double, Int)](repeating: (0, 0), count: groupSize)
        var i1 = 0
        while i1 < cols {
            let i2 = min(i1 + blockSize, cols), count = i2 - i1
            for r in 0..<rows { for j in 0..<count { w1[r * count + j] = w[r * cols + i1 + j] } }
            for i in 0..<(rows * count) { blockMask[i] = false }
            if case .unstructured(let f) = pattern {
                for r in 0..<rows {
                    for j in 0..<count {
                        let d = u[(i1 + j) * cols + i1 + j], x = w1[r * count + j]
                        scores[r * count + j] = fixed?[r * cols + i1 + j] == true ? -.infinity : (x * x) / (d * d)
                    }
                }
                let k = Int(Double(rows * count) * f)
                let threshold = scores.withUnsafeBufferPointer { all in
                    sorted.withUnsafeMutableBufferPointer { out in
                        var part = UnsafeMutableBufferPointer(rebasing: out[0..<(rows * count)])
                        _ = part.initialize(from: UnsafeBufferPointer(rebasing: all[0..<(rows * count)]))
                        part.sort()
                        return part[k]
                    }
                }
                for i in 0..<(rows * count) { blockMask[i] = scores[i] <= threshold }
            }
            for i in 0..<count {
                if case .nOfM(let n, let m) = pattern, i % m == 0 {
                    for r in 0..<rows {
                        // The n smallest saliencies of the group (ties to the lower column):
                        // an insertion sort of m ≤ 64 pairs in a buffer allocated once.
                        for j in 0..<m {
                            let d = u[(i1 + i + j) * cols + i1 + i + j], x = w1[r * count + i + j]
                            var p = j
                            let v = fixed?[r * cols + i1 + i + j] == true ? -.infinity : (x * x) / (d * d)
                            while p > 0 && group[p - 1].0 > v { group[p] = group[p - 1]; p -= 1 }
                            group[p] = (v, j)
                        }
                        for g in 0..<n { blockMask[r * count + i + group[g].1] = true }
                    }
                }
                if let fixed {
                    for r in 0..<rows where fixed[r * cols + i1 + i] { blockMask[r * count + i] = true }
                }
                let d = u[(i1 + i) * cols + i1 + i]
                let uRow = (i1 + i) * cols + i1
                for r in 0..<rows {
                    let x = w1[r * count + i]
                    let q = blockMask[r * count + i] ? 0 : x
                    q1[r * count + i] = q
                    let e = (x - q) / d
                    err1[r * count + i] = e
                    if e != 0 {
                        for j in i..<count { w1[r * count + j] -= e * u[uRow + j] }
                    }
                }
            }
            for r in 0..<rows {
                for j in 0..<count {
                    w[r * cols + i1 + j] = q1[r * count + j]
                    mask[r * cols + i1 + j] = blockMask[r * count + j]
                }
            }
            if i2 < cols {
                ComputeThreads.pinBLAS()
                err1.withUnsafeBufferPointer { e in
                    u.withUnsafeBufferPointer { uu in
                        w.withUnsafeMutableBufferPointer { ww in
                            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(rows), Int32(cols - i2), Int32(count),
                                        -1, e.baseAddress!, Int32(count), uu.baseAddress! + i1 * cols + i2, Int32(cols),
                                        1, ww.baseAddress! + i2, Int32(cols))
                        }
                    }
                }
            }
            i1 = i2
        }
        for i in 0..<(rows * cols) {
            if dead[i % cols] { mask[i] = true }
            weights[i] = mask[i] ? 0 : Float(w[i])
        }
        return mask
    }

    /// U (row-major, upper, zeros below) with H⁻¹ = UᵀU, from H (symmetric positive definite):
    /// Cholesky of H, the inverse from it, the Cholesky of that (LAPACK, column-major; H and H⁻¹
    /// are symmetric, so the layouts agree).
    static func upperCholeskyOfInverse(_ h: [Double], _ n: Int) throws -> [Double] {
        var a = h
        var uplo: CChar = CChar(UInt8(ascii: "U")), nn = Int32(n), lda = Int32(n), info: Int32 = 0
        ComputeThreads.pinBLAS()
        dpotrf_(&uplo, &nn, &a, &lda, &info)
        guard info == 0 else { throw ModelError("SparseGPT: H + λI is not positive definite (LAPACK dpotrf info \(info)); raise the damping") }
        dpotri_(&uplo, &nn, &a, &lda, &info)
        guard info == 0 else { throw ModelError("SparseGPT: H is singular (LAPACK dpotri info \(info))") }
        dpotrf_(&uplo, &nn, &a, &lda, &info)
        guard info == 0 else { throw ModelError("SparseGPT: H⁻¹ is not positive definite (LAPACK dpotrf info \(info)); raise the damping") }
        // Column-major upper (i ≤ j) at a[i + j·n] → row-major U[i][j].
        var u = [Double](repeating: 0, count: n * n)
        for j in 0..<n { for i in 0...j { u[i * n + j] = a[i + j * n] } }
        return u
    }
}
