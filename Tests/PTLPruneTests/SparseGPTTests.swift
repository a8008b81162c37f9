import Foundation
import PTLFormats
import PTLModel
import PTLTestSupport
import Testing
@testable import PTLPrune

/// SparseGPT against its reference (scripts/make_sparsegpt_fixture.py: the algorithm as the
/// SparseGPT authors' code runs it, in float64 PyTorch) on two real layers of the tiny Llama
/// fixture with their real calibration inputs: the same mask, entry for entry, and the same
/// weights within 1e-4.
@Suite struct SparseGPTTests {
    static let fixture: [String: TensorF32] = try! Safetensors.read(
        path: packageRoot.appendingPathComponent("Tests/Fixtures/sparsegpt/layers.safetensors").path)

    @Test(arguments: [("gate_proj", "u50", "0.5", 128), ("gate_proj", "4of8-b16", "4:8", 16),
                      ("down_proj", "u50", "0.5", 128), ("down_proj", "2of4", "2:4", 128), ("down_proj", "u60-b32", "0.6", 32)])
    func matchesTheReference(_ layer: String, _ config: String, _ pattern: String, _ blockSize: Int) throws {
        let x = try #require(Self.fixture["x.\(layer)"]), w = try #require(Self.fixture["w.\(layer)"])
        let expected = try #require(Self.fixture["pruned.\(layer).\(config)"])
        let (tokens, cols, rows) = (x.shape[0], x.shape[1], w.shape[0])
        #expect(w.shape[1] == cols)
        var h = [Double](repeating: 0, count: cols * cols)
        x.values.withUnsafeBufferPointer { SparseGPT.hessian(inputs: $0.baseAddress!, tokens: tokens, cols: cols, into: &h) }
        var pruned = w.values
        let mask = try pruned.withUnsafeMutableBufferPointer {
            try SparseGPT.prune(weights: $0.baseAddress!, rows: rows, cols: cols, hessian: h,
                                pattern: try SparsityPattern(parsing: pattern), blockSize: blockSize)
        }
        let expectedMask = expected.values.map { $0 == 0 }
        let differing = zip(mask, expectedMask).filter { $0 != $1 }.count
        #expect(differing == 0, "\(differing) of \(mask.count) mask entries differ")
        #expect(zip(mask, pruned).allSatisfy { !$0 || $1 == 0 }, "masked weights are exact zeros")
        let scale = sqrt(expected.values.reduce(0) { $0 + Double($1) * Double($1) } / Double(expected.count))
        var worst = 0.0
        for (a, b) in zip(pruned, expected.values) {
            worst = max(worst, abs(Double(a) - Double(b)) / max(abs(Double(b)), 1e-3 * scale))
        }
        #expect(worst <= 1e-4, "largest relative difference \(worst)")
        let zeros = Double(mask.filter { $0 }.count) / Double(mask.count)
        #expect(abs(zeros - (try SparsityPattern(parsing: pattern)).fraction) < 0.01)
    }

    /// The OBS updates are what make it SparseGPT: on the calibration inputs, its layer output
    /// is closer to the dense layer's than magnitude pruning's at the same sparsity.
    @Test func beatsMagnitudePruningOnTheCalibrationInputs() throws {
        let x = Self.fixture["x.down_proj"]!, w = Self.fixture["w.down_proj"]!
        let (tokens, cols, rows) = (x.shape[0], x.shape[1], w.shape[0])
        var h = [Double](repeating: 0, count: cols * cols)
        x.values.withUnsafeBufferPointer { SparseGPT.hessian(inputs: $0.baseAddress!, tokens: tokens, cols: cols, into: &h) }
        var sparse = w.values
        _ = try sparse.withUnsafeMutableBufferPointer {
            try SparseGPT.prune(weights: $0.baseAddress!, rows: rows, cols: cols, hessian: h, pattern: .unstructured(0.5))
        }
        let threshold = w.values.map(abs).sorted()[w.count / 2]
        let magnitude = w.values.map { abs($0) < threshold ? 0 : $0 }
        func outputError(_ p: [Float]) -> Double {
            var e = 0.0
            for t in 0..<tokens {
                for r in 0..<rows {
                    var d = 0.0
                    for c in 0..<cols { d += Double(x.values[t * cols + c]) * Double(w.values[r * cols + c] - p[r * cols + c]) }
                    e += d * d
                }
            }
            return e
        }
        #expect(outputError(sparse) < 0.7 * outputError(magnitude))
    }

    @Test func badInputIsAnError() throws {
        var w: [Float] = [1, 2, 3, 4]
        #expect(throws: ModelError.self) { try SparseGPT.prune(weights: &w, rows: 2, cols: 2, hessian: [1, 0, 0], pattern: .unstructured(0.5)) }
        #expect(throws: ModelError.self) { try SparseGPT.prune(weights: &w, rows: 2, cols: 2, hessian: [1, 0, 0, .nan], pattern: .unstructured(0.5)) }
        #expect(throws: ModelError.self) { try SparseGPT.prune(weights: &w, rows: 2, cols: 2, hessian: [1, 0, 0, 1], pattern: .nOfM(n: 2, m: 4)) }
        #expect(throws: ModelError.self) { try SparseGPT.prune(weights: &w, rows: 2, cols: 2, hessian: [1, 0, 0, 1], pattern: .unstructured(1)) }
        for bad in ["1.5", "4:2", "0:4", "a:b", "", "-0.1"] { #expect(throws: ModelError.self) { try SparsityPattern(parsing: bad) } }
        #expect(try SparsityPattern(parsing: "2:4") == .nOfM(n: 2, m: 4))
        #expect(try SparsityPattern(parsing: "0.5") == .unstructured(0.5))
    }
}
