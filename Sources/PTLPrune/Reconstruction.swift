import COpenBLAS
import Foundation
import PTLModel
import PTLTensor

/// Least-squares reconstruction of a block's FFN output after a neuron cut (the structured
/// form of RAC's / SparseGPT's layer-wise reconstruction): with a the block's activations on
/// calibration tokens, K the kept neurons and W = down_proj (hidden × intermediate), the kept
/// columns are refitted to
///
///     W'  = argmin Σ_tokens ‖W a − W' a_K‖²  =  W · G[:, K] · (G[K, K] + λ I)⁻¹
///
/// from the Gram matrix G = Σ a aᵀ alone (normal equations), solved by Cholesky through
/// LAPACK in Double. λ = damping × mean(diag G[K, K]) keeps the system positive definite when
/// activations are collinear or a neuron never fires (SparseGPT damps by 1 % the same way).
public enum Reconstruction {
    /// The refitted down_proj (hidden × |keep|, row-major) of one block.
    /// - Parameters:
    ///   - down: the block's down_proj before the cut, hidden × intermediate, row-major.
    ///   - gram: the block's G, intermediate × intermediate.
    ///   - keep: kept neurons (sorted, distinct, in 0..<intermediate).
    public static func refitDown(down: UnsafePointer<Float>, hidden H: Int, intermediate I: Int, gram: UnsafePointer<Double>,
                                 keep: [Int], damping: Double) throws -> [Float] {
        let k = keep.count
        guard k > 0, k <= I, keep.allSatisfy({ $0 >= 0 && $0 < I }), Set(keep).count == k else {
            throw ModelError("reconstruction: the kept neurons must be distinct indices in 0..<\(I)")
        }
        guard damping.isFinite, damping >= 0 else { throw ModelError("reconstruction: damping \(damping) must be a finite number ≥ 0") }
        // A = G[K, K] + λ I (symmetric; column- and row-major alike).
        var a = [Double](repeating: 0, count: k * k)
        var meanDiag = 0.0
        for (p, i) in keep.enumerated() {
            for (q, j) in keep.enumerated() { a[p * k + q] = gram[i * I + j] }
            meanDiag += gram[i * I + i]
        }
        meanDiag /= Double(k)
        guard meanDiag.isFinite else { throw ModelError("reconstruction: the Gram matrix is not finite") }
        guard meanDiag > 0 else { throw ModelError("reconstruction: the kept neurons never fired on the calibration tokens (Gram diagonal 0)") }
        let lambda = damping * meanDiag
        for p in 0..<k { a[p * k + p] += lambda }
        // B = (W G[:, K])ᵀ = G[K, :] Wᵀ: k × H. Stored column-major for LAPACK: B[p + h·k].
        var w = [Double](repeating: 0, count: H * I)
        for i in 0..<(H * I) { w[i] = Double(down[i]) }
        var gk = [Double](repeating: 0, count: k * I)   // G[K, :], row-major k × I
        for (p, i) in keep.enumerated() { for j in 0..<I { gk[p * I + j] = gram[i * I + j] } }
        var b = [Double](repeating: 0, count: k * H)
        // Column-major B (k × H) is row-major Bᵀ (H × k) = W (H × I) · G[K, :]ᵀ (I × k).
        ComputeThreads.pinBLAS()
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Int32(H), Int32(k), Int32(I), 1, w, Int32(I), gk, Int32(I), 0, &b, Int32(k))
        var n = Int32(k), nrhs = Int32(H), lda = Int32(k), info: Int32 = 0
        var uplo = CChar(UInt8(ascii: "L"))
        dpotrf_(&uplo, &n, &a, &lda, &info)
        guard info == 0 else {
            throw ModelError("reconstruction: G[K, K] + λI is not positive definite (LAPACK dpotrf info \(info)); raise the damping")
        }
        dpotrs_(&uplo, &n, &nrhs, a, &lda, &b, &lda, &info)
        guard info == 0 else { throw ModelError("reconstruction: LAPACK dpotrs failed (info \(info))") }
        // Column-major X (k × H): W'[h, p] = X[p + h·k].
        var out = [Float](repeating: 0, count: H * k)
        for h in 0..<H { for p in 0..<k { out[h * k + p] = Float(b[p + h * k]) } }
        guard out.allSatisfy({ $0.isFinite }) else { throw ModelError("reconstruction: the refitted weights are not finite") }
        return out
    }

    /// Refits every block's down_proj of `pruned` (the result of `surgery` on a model whose
    /// FFN Gram matrices are `gram`) in place, from the unpruned model's down_proj.
    public static func apply(to pruned: Model, surgery: Surgery, original: Model, gram: FFNGram, damping: Double) throws {
        let oc = original.config, H = oc.hiddenSize, I = oc.intermediateSize
        guard gram.layers == oc.numHiddenLayers, gram.intermediate == I, gram.tokens > 0 else {
            throw ModelError("reconstruction: Gram matrices of \(gram.layers) blocks × \(gram.intermediate) (\(gram.tokens) tokens) for a model of \(oc.numHiddenLayers) × \(I)")
        }
        let k = pruned.config.intermediateSize
        try gram.values.withUnsafeBufferPointer { g in
            for (newBlock, oldBlock) in surgery.keptLayers.enumerated() {
                let keep = surgery.keptNeurons[oldBlock]
                guard keep.count == k else { throw ModelError("reconstruction: block \(oldBlock) keeps \(keep.count) neurons, the pruned model has \(k)") }
                if keep.count == I { continue }
                let refit = try refitDown(down: original.parameters.at(original.layout.layers[oldBlock].down), hidden: H, intermediate: I,
                                          gram: g.baseAddress! + oldBlock * I * I, keep: keep, damping: damping)
                refit.withUnsafeBufferPointer { pruned.parameters.at(pruned.layout.layers[newBlock].down).update(from: $0.baseAddress!, count: H * k) }
            }
        }
        pruned.parametersChanged()
    }
}
