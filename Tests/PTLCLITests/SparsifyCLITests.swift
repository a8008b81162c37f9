import Foundation
import PTLFormats
import PTLModel
import Testing

/// `ptl sparsify` on the demo model: the saved model is dense with exact zeros where
/// masks.safetensors says, 2:4 holds in every group of four inputs of every linear layer, and the
/// report and summary say what was measured.
@Suite struct SparsifyCLITests {
    @Test func twoOfFourOnPolicyGivesExactZerosInEveryGroup() throws {
        let out = scratchDirectory().appendingPathComponent("sparse")
        let demo = packageRoot.appendingPathComponent("models/demo").path
        let r = try runPTL(["sparsify", "--model", demo, "--sparsity", "2:4", "--calibration", "on-policy", "--calibration-lines", "16",
                            "--heldout-lines", "16", "--eval-count", "16", "--max-new-tokens", "48", "--out", out.path])
        #expect(r.status == 0, "\(r.stderr.suffix(1500))")
        let model = try HFModel.load(directory: out.appendingPathComponent("model").path)
        let masks = try Safetensors.read(path: out.appendingPathComponent("masks.safetensors").path)
        #expect(masks.count == 7 * model.config.numHiddenLayers)
        let weights = model.parameters.array()
        for (name, mask) in masks {
            let entry = try #require(model.layout.entries.first { $0.name == name })
            let cols = entry.shape[1]
            #expect(mask.count == entry.count)
            for i in 0..<entry.count where mask.values[i] == 1 { #expect(weights[entry.offset + i] == 0, "\(name)[\(i)]") }
            // Two of every four consecutive inputs of each row are zero.
            var bad = 0
            for g in stride(from: 0, to: entry.count, by: 4) where (g % cols) + 4 <= cols {
                if (0..<4).filter({ weights[entry.offset + g + $0] == 0 }).count < 2 { bad += 1 }
            }
            #expect(bad == 0, "\(name): \(bad) groups of four with fewer than two zeros")
        }
        let summary = try json(out.appendingPathComponent("summary.json"))
        #expect(summary["sparsity"] as? String == "2:4" && summary["calibration"] as? String == "on-policy")
        #expect(abs((summary["linearSparsity"] as? Double ?? 0) - 0.5) < 1e-3)
        let report = try String(contentsOf: out.appendingPathComponent("report.md"), encoding: .utf8)
        #expect(report.contains("mean generated tokens") && report.contains("| pruned |"))
    }

    @Test func aBadSparsityIsOneLine() throws {
        let r = try runPTL(["sparsify", "--sparsity", "3:2"])
        #expect(r.status != 0 && r.stderr.contains("n:m needs 0 < n < m"))
    }
}
