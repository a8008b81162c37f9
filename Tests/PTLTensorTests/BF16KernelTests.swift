import CPTLBF16
import Foundation
import Testing
@testable import PTLTensor

/// bf16 bits of `values` (round to nearest even) and the fp32 values they stand for.
func bf16(_ values: [Float]) -> (bits: [UInt16], values: [Float]) {
    var bits = [UInt16](repeating: 0, count: values.count)
    ptl_f32_to_bf16(&bits, values, values.count)
    var back = [Float](repeating: 0, count: values.count)
    ptl_bf16_to_f32(&back, bits, bits.count)
    return (bits, back)
}

@Suite struct BF16ConversionTests {
    @Test func roundsToNearestEvenAndKeepsSpecials() {
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0);
        // 1 + 3·2^-8 goes up to 1 + 2^-6 (the even neighbour); just above half goes up.
        let inputs: [Float] = [1, 1 + 0x1p-8, 1 + 3 * 0x1p-8, 1 + 0x1p-8 + 0x1p-20, -2.5, .infinity, -.infinity, 0, -0.0,
                               Float.greatestFiniteMagnitude]
        let out = bf16(inputs).values
        #expect(out[0] == 1 && out[1] == 1 && out[2] == 1 + 0x1p-6 && out[3] == 1 + 0x1p-7 && out[4] == -2.5)
        #expect(out[5] == .infinity && out[6] == -.infinity && out[7] == 0 && out[8].sign == .minus)
        #expect(out[9] == .infinity)   // rounds past the largest bf16, as RNE does
        let nan = bf16([.nan, -.nan]).values
        #expect(nan[0].isNaN && nan[1].isNaN)
    }

}

@Suite(.enabled(if: BF16Support.available, "needs AVX512-BF16 or AMX"))
struct BF16MatmulTests {
    /// The exact product of the bf16 inputs (in Double): what an fp32-accumulating bf16 matmul
    /// approximates to within fp32 rounding of the sum.
    static func reference(_ a: [Float], _ b: [Float], m: Int, n: Int, k: Int, transA: Bool, transB: Bool) -> [Float] {
        var c = [Float](repeating: 0, count: m * n)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    let x = transA ? a[p * m + i] : a[i * k + p], y = transB ? b[j * k + p] : b[p * n + j]
                    s += Double(x) * Double(y)
                }
                c[i * n + j] = Float(s)
            }
        }
        return c
    }

    @Test(arguments: [(false, true), (false, false), (true, false), (true, true)])
    func gemmMatchesExactProductOfBF16Inputs(trans: (Bool, Bool)) {
        let (ta, tb) = trans
        for (m, n, k) in [(1, 7, 5), (37, 70, 48), (130, 64, 200)] {
            let a = bf16(randomValues(m * k, seed: 41)), b = bf16(randomValues(k * n, seed: 42))
            var c = [Float](repeating: 0, count: m * n)
            parallelBF16Gemm(transA: ta, transB: tb, m: m, n: n, k: k, a.bits, lda: ta ? m : k, b.bits, ldb: tb ? k : n,
                             accumulate: false, &c, ldc: n)
            let ref = Self.reference(a.values, b.values, m: m, n: n, k: k, transA: ta, transB: tb)
            // fp32 accumulation of k exact products: |error| ≤ k·2⁻²⁴·Σ|terms| ≤ 1e-5·k here.
            #expect(maxRelativeDifference(c, ref) < 2e-6 * Float(k), "\(m)×\(n)×\(k) transA \(ta) transB \(tb)")
        }
    }

    @Test func accumulateAddsIntoC() {
        let m = 40, n = 33, k = 64
        let a = bf16(randomValues(m * k, seed: 43)), b = bf16(randomValues(n * k, seed: 44))
        let start = randomValues(m * n, seed: 45)
        var c = start, fresh = [Float](repeating: 0, count: m * n)
        parallelBF16Gemm(transA: false, transB: true, m: m, n: n, k: k, a.bits, lda: k, b.bits, ldb: k, accumulate: true, &c, ldc: n)
        parallelBF16Gemm(transA: false, transB: true, m: m, n: n, k: k, a.bits, lda: k, b.bits, ldb: k, accumulate: false, &fresh, ldc: n)
        let expected = zip(start, fresh).map { $0 + $1 }
        #expect(maxRelativeDifference(c, expected) < 1e-6)
    }

    /// The split is the shape's: the SmolLM2 FFN product in 12 column blocks of 128, the LM
    /// head's weight gradient in 12 row blocks of 4096, one block for a product too small to
    /// share. (A precedence slip once made every product one block: `m * n * k >> 20` shifts k.)
    @Test func blocksFollowTheShape() {
        #expect(bf16Split(m: 1024, n: 1536, k: 576) == (false, 128))
        #expect(bf16Split(m: 1024, n: 576, k: 1536) == (true, 96))
        #expect(bf16Split(m: 49152, n: 576, k: 1024) == (true, 4096))
        #expect(bf16Split(m: 1024, n: 49152, k: 576) == (false, 4096))
        #expect(bf16Split(m: 8, n: 576, k: 576) == (false, 288))
        #expect(bf16Split(m: 4, n: 40, k: 16) == (false, 48))
    }

    /// Every element of C is computed by one full-K product whatever the split, so the bits do
    /// not depend on the thread count (the training step's gradients rely on it).
    @Test func bitsDoNotDependOnThreadCount() {
        let saved = ComputeThreads.count
        defer { ComputeThreads.set(saved) }
        for (ta, tb, m, n, k) in [(false, true, 512, 576, 192), (true, false, 576, 192, 512), (false, false, 96, 1536, 160),
                                  (true, true, 300, 700, 250), (true, false, 1536, 96, 300)] {
            let a = bf16(randomValues(m * k, seed: 46)).bits, b = bf16(randomValues(k * n, seed: 47)).bits
            var results: [[Float]] = []
            for threads in [1, 2, 3] {
                ComputeThreads.set(threads)
                var c = [Float](repeating: 0, count: m * n)
                parallelBF16Gemm(transA: ta, transB: tb, m: m, n: n, k: k, a, lda: ta ? m : k, b, ldb: tb ? k : n,
                                 accumulate: false, &c, ldc: n)
                results.append(c)
            }
            #expect(results[0] == results[1] && results[1] == results[2], "\(m)×\(n)×\(k)")
        }
    }

    @Test func matvecMatchesExactProduct() {
        for (rows, cols) in [(1, 5), (7, 33), (129, 576), (64, 1000)] {
            let w = bf16(randomValues(rows * cols, seed: 48)), x = bf16(randomValues(cols, seed: 49))
            var y = [Float](repeating: 0, count: rows)
            matvecBF16(&y, w.bits, x.bits, rows: rows, cols: cols)
            let ref = Self.reference(w.values, x.values, m: rows, n: 1, k: cols, transA: false, transB: false)
            #expect(maxRelativeDifference(y, ref) < 2e-6 * Float(cols), "\(rows)×\(cols)")
        }
    }

    /// Small batches (decoding 2–32 sequences) read each weight row once: the same bits as one
    /// matrix–vector product per sequence.
    @Test func smallBatchesEqualOneMatvecPerSequence() {
        for (batch, rows, cols) in [(2, 7, 33), (8, 130, 576), (11, 64, 1000), (32, 96, 64)] {
            let w = bf16(randomValues(rows * cols, seed: 53)).bits, x = bf16(randomValues(batch * cols, seed: 54)).bits
            var y = [Float](repeating: 0, count: batch * rows), single = y
            matvecBF16(&y, w, x, batch: batch, rows: rows, cols: cols)
            for b in 0..<batch {
                x.withUnsafeBufferPointer { xp in
                    single.withUnsafeMutableBufferPointer { sp in
                        matvecBF16(sp.baseAddress! + b * rows, w, xp.baseAddress! + b * cols, rows: rows, cols: cols)
                    }
                }
            }
            #expect(y == single, "\(batch)×\(rows)×\(cols)")
        }
    }

    @Test func backwardMatchesFP32BackwardOnBF16Inputs() {
        let rows = 24, inDim = 40, outDim = 36
        let x = bf16(randomValues(rows * inDim, seed: 50)), w = bf16(randomValues(outDim * inDim, seed: 51))
        let dy = bf16(randomValues(rows * outDim, seed: 52)).values   // already bf16: the scratch copy is exact
        var dx = [Float](repeating: 0, count: rows * inDim), dw = [Float](repeating: 0, count: outDim * inDim)
        var db = [Float](repeating: 0, count: outDim)
        var dx2 = dx, dw2 = dw, db2 = db
        var scratch = [UInt16](repeating: 0, count: rows * outDim)
        matmulBackwardBF16(&dx, &dw, &db, dy, doutScratch: &scratch, x.bits, w.bits, rows: rows, inDim: inDim, outDim: outDim)
        matmulBackwardNaive(&dx2, &dw2, &db2, dy, x.values, w.values, rows: rows, inDim: inDim, outDim: outDim)
        #expect(maxRelativeDifference(dx, dx2) < 1e-5)
        #expect(maxRelativeDifference(dw, dw2) < 1e-5)
        #expect(db == db2)
    }
}

@Suite struct PrecisionTests {
    @Test func fp32IsAlwaysFP32AndBF16SaysWhatItRuns() {
        #expect(Precision.fp32.resolved().precision == .fp32 && Precision.fp32.resolved().note == nil)
        let (p, note) = Precision.bf16.resolved()
        if BF16Support.available {
            #expect(p == .bf16 && note == nil)
        } else {
            #expect(p == .fp32 && note?.contains("running fp32") == true)
        }
        #expect(BF16Support.summary.hasPrefix("oneDNN "))
    }
}
