import Foundation
import Testing
@testable import PTLTensor

/// Deterministic pseudo-random values in [-1, 1).
func randomValues(_ n: Int, seed: UInt64) -> [Float] {
    var s = seed &+ 0x9E37_79B9_7F4A_7C15
    return (0..<n).map { _ in
        s = s &* 6364136223846793005 &+ 1442695040888963407
        return Float(Int64(bitPattern: s >> 11) % 2_000_000) / 1_000_000 - 1
    }
}

func maxRelativeDifference(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var diff: Float = 0, scale: Float = 0
    for i in 0..<a.count { diff = max(diff, abs(a[i] - b[i])); scale = max(scale, abs(b[i])) }
    return diff / max(scale, 1e-12)
}

@Suite struct MatmulTests {
    @Test(arguments: [(1, 7, 5), (13, 32, 48), (64, 40, 24)])
    func forwardMatchesNaive(shape: (Int, Int, Int)) {
        let (rows, inDim, outDim) = shape
        let x = randomValues(rows * inDim, seed: 1), w = randomValues(outDim * inDim, seed: 2), b = randomValues(outDim, seed: 3)
        var fast = [Float](repeating: 0, count: rows * outDim), slow = fast
        matmulForward(&fast, x, w, b, rows: rows, inDim: inDim, outDim: outDim)
        matmulForwardNaive(&slow, x, w, b, rows: rows, inDim: inDim, outDim: outDim)
        #expect(maxRelativeDifference(fast, slow) < 1e-5)
    }

    @Test func backwardMatchesNaiveAndAccumulates() {
        let rows = 11, inDim = 19, outDim = 23
        let x = randomValues(rows * inDim, seed: 4), w = randomValues(outDim * inDim, seed: 5), dy = randomValues(rows * outDim, seed: 6)
        let start = randomValues(rows * inDim, seed: 7), wstart = randomValues(outDim * inDim, seed: 8), bstart = randomValues(outDim, seed: 9)
        var dx1 = start, dw1 = wstart, db1 = bstart
        var dx2 = start, dw2 = wstart, db2 = bstart
        matmulBackward(&dx1, &dw1, &db1, dy, x, w, rows: rows, inDim: inDim, outDim: outDim)
        matmulBackwardNaive(&dx2, &dw2, &db2, dy, x, w, rows: rows, inDim: inDim, outDim: outDim)
        #expect(maxRelativeDifference(dx1, dx2) < 1e-5)
        #expect(maxRelativeDifference(dw1, dw2) < 1e-5)
        #expect(maxRelativeDifference(db1, db2) < 1e-5)
    }

    /// The fp32 products split by shape, not by thread count, so 1, 2 or 3 threads give the same
    /// bits (they did not: OpenBLAS's kernels for the blocks of a two-way and a one-way split
    /// rounded differently, and `ptl prune` on two threads ended a few bits away from workers on one).
    @Test func bitsDoNotDependOnThreadCount() {
        let saved = ComputeThreads.count
        defer { ComputeThreads.set(saved) }
        for (ta, tb, m, n, k) in [(false, true, 512, 576, 192), (true, false, 576, 192, 512), (false, false, 96, 1536, 160),
                                  (true, true, 300, 700, 250), (true, false, 1536, 96, 300), (false, true, 40, 2048, 64),
                                  (false, true, 1000, 24, 64), (false, false, 33, 1100, 72)] {
            let a = randomValues(m * k, seed: 46), b = randomValues(k * n, seed: 47)
            var results: [[Float]] = []
            for threads in [1, 2, 3] {
                ComputeThreads.set(threads)
                var c = [Float](repeating: 0, count: m * n)
                parallelSgemm(transA: ta, transB: tb, m: m, n: n, k: k, alpha: 1, a, lda: ta ? m : k, b, ldb: tb ? k : n, beta: 0, &c, ldc: n)
                results.append(c)
            }
            #expect(results[0] == results[1] && results[1] == results[2], "\(m)×\(n)×\(k)")
        }
    }
}

@Suite struct AttentionTests {
    @Test(arguments: [(1, 5, 2, 1, 4), (2, 9, 4, 2, 8), (3, 16, 6, 3, 6)])
    func forwardMatchesNaive(dims: (Int, Int, Int, Int, Int)) {
        let (B, T, Hq, Hkv, D) = dims
        let shape = AttentionShape(batch: B, seq: T, qHeads: Hq, kvHeads: Hkv, headDim: D)
        let q = randomValues(B * T * Hq * D, seed: 10), k = randomValues(B * T * Hkv * D, seed: 11), v = randomValues(B * T * Hkv * D, seed: 12)
        var fast = [Float](repeating: 0, count: B * T * Hq * D), slow = fast
        var probs = [Float](repeating: 0, count: shape.probsCount)
        attentionForward(&fast, &probs, q, k, v, shape: shape)
        attentionForwardNaive(&slow, q, k, v, shape: shape)
        #expect(maxRelativeDifference(fast, slow) < 1e-5)
    }

    @Test func cachedAttentionMatchesFullAttention() {
        let B = 2, T = 7, Hq = 4, Hkv = 2, D = 4
        let shape = AttentionShape(batch: B, seq: T, qHeads: Hq, kvHeads: Hkv, headDim: D)
        let q = randomValues(B * T * Hq * D, seed: 13), k = randomValues(B * T * Hkv * D, seed: 14), v = randomValues(B * T * Hkv * D, seed: 15)
        var full = [Float](repeating: 0, count: B * T * Hq * D)
        attentionForwardNaive(&full, q, k, v, shape: shape)
        // Feed 3 tokens, then 4, against a cache of capacity T.
        var cached = [Float](repeating: 0, count: B * T * Hq * D)
        var scores = [Float](repeating: 0, count: B * Hq * T)
        var past = 0
        for n in [3, 4] {
            var qn = [Float](), out = [Float](repeating: 0, count: B * n * Hq * D)
            for b in 0..<B {
                let lo = (b * T + past) * Hq * D
                let hi = lo + n * Hq * D
                qn.append(contentsOf: q[lo..<hi])
            }
            attentionCachedForward(&out, &scores, qn, k, v, batch: B, newTokens: n, past: past, capacity: T,
                                   qHeads: Hq, kvHeads: Hkv, headDim: D)
            for b in 0..<B {
                for i in 0..<(n * Hq * D) { cached[(b * T + past) * Hq * D + i] = out[b * n * Hq * D + i] }
            }
            past += n
        }
        #expect(maxRelativeDifference(cached, full) < 1e-5)
    }

    @Test func backwardMatchesFiniteDifferences() {
        let B = 2, T = 5, Hq = 4, Hkv = 2, D = 4
        let shape = AttentionShape(batch: B, seq: T, qHeads: Hq, kvHeads: Hkv, headDim: D)
        let q = randomValues(B * T * Hq * D, seed: 16), k = randomValues(B * T * Hkv * D, seed: 17), v = randomValues(B * T * Hkv * D, seed: 18)
        let w = randomValues(B * T * Hq * D, seed: 19)   // loss = Σ w·out
        func loss(_ q: [Float], _ k: [Float], _ v: [Float]) -> Double {
            var out = [Float](repeating: 0, count: q.count)
            attentionForwardNaive(&out, q, k, v, shape: shape)
            return zip(out, w).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        var out = [Float](repeating: 0, count: q.count), probs = [Float](repeating: 0, count: shape.probsCount)
        attentionForward(&out, &probs, q, k, v, shape: shape)
        var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count), dv = dk
        var scratch = [Float](repeating: 0, count: T * T)
        attentionBackward(&dq, &dk, &dv, &scratch, slots: 1, w, probs, q, k, v, shape: shape)
        let h: Float = 1e-2
        for (which, analytic) in [(0, dq), (1, dk), (2, dv)] {
            for idx in stride(from: 0, to: analytic.count, by: 7) {
                var a = [q, k, v], b = [q, k, v]
                a[which][idx] += h; b[which][idx] -= h
                let fd = (loss(a[0], a[1], a[2]) - loss(b[0], b[1], b[2])) / Double(2 * h)
                #expect(abs(fd - Double(analytic[idx])) < 2e-3 + 1e-2 * abs(fd), "tensor \(which) index \(idx): fd \(fd) vs \(analytic[idx])")
            }
        }
    }
}

@Suite struct ElementwiseTests {
    @Test func rmsnormBackwardMatchesFiniteDifferences() {
        let rows = 3, dim = 8
        let x = randomValues(rows * dim, seed: 20), w = randomValues(dim, seed: 21).map { $0 + 1.5 }
        let g = randomValues(rows * dim, seed: 22)
        func loss(_ x: [Float], _ w: [Float]) -> Double {
            var y = [Float](repeating: 0, count: rows * dim)
            rmsnormForward(&y, nil, x, w, rows: rows, dim: dim, eps: 1e-5)
            return zip(y, g).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        }
        var y = [Float](repeating: 0, count: rows * dim), rstd = [Float](repeating: 0, count: rows)
        rmsnormForward(&y, &rstd, x, w, rows: rows, dim: dim, eps: 1e-5)
        var dx = [Float](repeating: 0, count: rows * dim), dw = [Float](repeating: 0, count: dim)
        rmsnormBackward(&dx, &dw, g, x, w, rstd, rows: rows, dim: dim)
        let h: Float = 1e-2
        for i in 0..<(rows * dim) {
            var a = x, b = x; a[i] += h; b[i] -= h
            let fd = (loss(a, w) - loss(b, w)) / Double(2 * h)
            #expect(abs(fd - Double(dx[i])) < 2e-3 + 1e-2 * abs(fd))
        }
        for i in 0..<dim {
            var a = w, b = w; a[i] += h; b[i] -= h
            let fd = (loss(x, a) - loss(x, b)) / Double(2 * h)
            #expect(abs(fd - Double(dw[i])) < 2e-3 + 1e-2 * abs(fd))
        }
    }

    @Test func swigluBackwardMatchesFiniteDifferences() {
        let n = 32
        let gate = randomValues(n, seed: 23).map { $0 * 3 }, up = randomValues(n, seed: 24), dy = randomValues(n, seed: 25)
        var dg = [Float](repeating: 0, count: n), du = dg
        swigluBackward(&dg, &du, dy, gate, up, count: n)
        let h: Float = 1e-3
        for i in 0..<n {
            func f(_ g: Float, _ u: Float) -> Double { Double(g / (1 + exp(-g)) * u * dy[i]) }
            let fdg = (f(gate[i] + h, up[i]) - f(gate[i] - h, up[i])) / Double(2 * h)
            let fdu = (f(gate[i], up[i] + h) - f(gate[i], up[i] - h)) / Double(2 * h)
            #expect(abs(fdg - Double(dg[i])) < 1e-3)
            #expect(abs(fdu - Double(du[i])) < 1e-3)
        }
    }

    @Test func ropeBackwardIsTheInverseRotation() {
        let rows = 4, heads = 2, D = 8
        let tables = RoPETables(inverseFrequencies: [1, 0.1, 0.01, 0.001], headDim: D, positions: rows)
        let x0 = randomValues(rows * heads * D, seed: 26)
        var x = x0
        ropeForward(&x, rows: rows, heads: heads, headDim: D, cos: tables.cos, sin: tables.sin, positionOf: { $0 })
        // The rotation is orthogonal: backward (its transpose) undoes forward.
        ropeBackward(&x, rows: rows, heads: heads, headDim: D, cos: tables.cos, sin: tables.sin, positionOf: { $0 })
        #expect(maxRelativeDifference(x, x0) < 1e-6)
    }

    @Test func crossEntropyIgnoresMaskedRowsAndGivesSoftmaxGradient() {
        let rows = 3, V = 5
        var logits = randomValues(rows * V, seed: 27)
        let targets: [Int32] = [2, -1, 4]
        var losses = [Float](repeating: 0, count: rows)
        let copy = logits
        let (sum, count) = crossEntropyForwardBackward(losses: &losses, dlogits: nil, logits: &logits, targets: targets, rows: rows, vocab: V, scale: 0)
        #expect(count == 2)
        var expected = 0.0
        for (r, t) in [(0, 2), (2, 4)] {
            let row = copy[(r * V)..<(r * V + V)].map(Double.init)
            expected += log(row.map { exp($0) }.reduce(0, +)) - row[t]
        }
        #expect(abs(sum - expected) < 1e-5)
        var grad = [Float](repeating: 0, count: rows * V)
        crossEntropyForwardBackward(losses: &losses, dlogits: &grad, logits: &logits, targets: targets, rows: rows, vocab: V, scale: 0.5)
        #expect(grad[(V)..<(2 * V)].allSatisfy { $0 == 0 })
        #expect(abs(grad[0..<V].reduce(0, +)) < 1e-6)
    }

    @Test func sumOfSquaresDoesNotDependOnThreads() {
        let x = randomValues(300_000, seed: 28)
        let saved = ComputeThreads.count
        ComputeThreads.set(1)
        let one = sumOfSquares(x, count: x.count)
        ComputeThreads.set(2)
        let two = sumOfSquares(x, count: x.count)
        ComputeThreads.set(saved)
        #expect(one == two)
    }
}

@Suite struct VectorTests {
    @Test func fastExpIsAccurate() {
        var worst: Double = 0
        var x: Float = -100
        while x < 88 {
            var v = SIMD16<Float>(repeating: 0)
            for j in 0..<16 { v[j] = x + Float(j) * 0.0013 }
            let e = fastExp(v)
            for j in 0..<16 {
                let ref = exp(Double(v[j]))
                if ref > 1e-37 { worst = max(worst, abs(Double(e[j]) - ref) / ref) }
                else { #expect(e[j] < 2e-37) }
            }
            x += 0.37
        }
        #expect(worst < 5e-7, "largest relative error \(worst)")
        #expect(fastExp(SIMD16<Float>(repeating: -.infinity))[0] == 0)
    }

    @Test func reductionsMatchPlainLoops() {
        for n in [0, 1, 15, 16, 17, 100] {
            let a = randomValues(n, seed: 30), b = randomValues(n, seed: 31), c = randomValues(n, seed: 32)
            var dot = 0.0, dot3 = 0.0
            for i in 0..<n { dot += Double(a[i] * b[i]); dot3 += Double(a[i] * b[i] * c[i]) }
            #expect(abs(Double(vectorDot(a, b, n)) - dot) < 1e-4)
            #expect(abs(Double(vectorDot3(a, b, c, n)) - dot3) < 1e-4)
            #expect(vectorMax(a, n) == (a.max() ?? -.infinity))
            var e = a
            let sum = vectorExpShiftSum(&e, shift: 0.5, n)
            #expect(abs(Double(sum) - a.reduce(0.0) { $0 + exp(Double($1) - 0.5) }) < 1e-4)
        }
    }
}
