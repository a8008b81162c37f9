import Foundation
import Testing
import PTLModel
import PTLTensor
import PTLTestSupport
@testable import PTLPrune

/// Least-squares reconstruction against numpy (scripts/make_reconstruction_fixture.py): the
/// Gram matrix reduced in two shards, then the normal equations solved by Cholesky, give the
/// refit numpy's lstsq finds on the activations themselves.
@Suite struct ReconstructionTests {
    struct Fixture: Decodable {
        let tokens: Int, intermediate: Int, hidden: Int
        let keep: [Int]
        let activations: [Float], down: [Float], refit: [Double]
        let residual_sliced: Double, residual_refit: Double
    }

    func fixture() throws -> Fixture {
        try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: packageRoot.appendingPathComponent("Tests/Fixtures/reconstruction.json")))
    }

    @Test func refitMatchesNumpysLeastSquares() throws {
        let f = try fixture()
        let I = f.intermediate, H = f.hidden, split = 37
        // Two shards (37 and 43 tokens) added in order, as workers' results are.
        var gram = FFNGram(layers: 1, intermediate: I)
        for (lo, hi) in [(0, split), (split, f.tokens)] {
            var shard = FFNGram(layers: 1, intermediate: I)
            shard.tokens = hi - lo
            f.activations.withUnsafeBufferPointer { shard.accumulate(layer: 0, rows: $0.baseAddress! + lo * I, count: hi - lo) }
            try gram.add(shard)
        }
        #expect(gram.tokens == f.tokens)
        let refit = try f.down.withUnsafeBufferPointer { d in
            try gram.values.withUnsafeBufferPointer { g in
                try Reconstruction.refitDown(down: d.baseAddress!, hidden: H, intermediate: I, gram: g.baseAddress!, keep: f.keep, damping: 0)
            }
        }
        var worst = 0.0, scale = 0.0
        for i in 0..<refit.count { worst = max(worst, abs(Double(refit[i]) - f.refit[i])); scale = max(scale, abs(f.refit[i])) }
        print("reconstruction: largest difference from numpy's lstsq \(worst / scale) (relative)")
        #expect(worst / scale < 1e-5)
        // The refit's residual is numpy's, well below slicing's.
        func residual(_ w: (Int, Int) -> Double) -> Double {
            var s = 0.0
            for t in 0..<f.tokens {
                for h in 0..<H {
                    var y = 0.0, yk = 0.0
                    for j in 0..<I { y += Double(f.activations[t * I + j]) * Double(f.down[h * I + j]) }
                    for (p, j) in f.keep.enumerated() { yk += Double(f.activations[t * I + j]) * w(h, p) }
                    s += (y - yk) * (y - yk)
                }
            }
            return s.squareRoot()
        }
        let k = f.keep.count
        #expect(abs(residual { Double(refit[$0 * k + $1]) } - f.residual_refit) < 1e-4 * f.residual_refit)
        #expect(abs(residual { Double(f.down[$0 * I + f.keep[$1]]) } - f.residual_sliced) < 1e-4 * f.residual_sliced)
    }

    @Test func badInputsAreNamedErrors() throws {
        let f = try fixture()
        let I = f.intermediate
        let zero = [Double](repeating: 0, count: I * I)
        try f.down.withUnsafeBufferPointer { d in
            try zero.withUnsafeBufferPointer { g in
                #expect(throws: ModelError.self) {
                    try Reconstruction.refitDown(down: d.baseAddress!, hidden: f.hidden, intermediate: I, gram: g.baseAddress!, keep: [0, 0], damping: 0.01)
                }
                let e = #expect(throws: ModelError.self) {
                    try Reconstruction.refitDown(down: d.baseAddress!, hidden: f.hidden, intermediate: I, gram: g.baseAddress!, keep: [1, 2], damping: 0.01)
                }
                #expect(e?.description == "reconstruction: the kept neurons never fired on the calibration tokens (Gram diagonal 0)")
            }
        }
    }
}
