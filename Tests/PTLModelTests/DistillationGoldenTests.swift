import Foundation
import Testing
import PTLFormats
import PTLTensor
@testable import PTLModel

/// The distillation loss and every student gradient against PyTorch in float64
/// (scripts/make_golden_kd.py): a pruned, perturbed student of a tiny teacher, kd (T = 1, w = 1)
/// and kd+ce (T = 2, w = 0.5), on the batch of the plain golden test (ignored labels included).
@Suite struct DistillationGoldenTests {
    @Test(arguments: ["tiny-llama", "tiny-qwen2"])
    func distillationLossAndEveryGradientMatchPyTorch(name: String) throws {
        let golden = try Golden(name)
        let kd = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureRoot.appendingPathComponent("golden/\(name).kd.json"))) as! [String: Any]
        let refs = try Safetensors.read(path: fixtureRoot.appendingPathComponent("golden/\(name).kd.safetensors").path)
        let teacher = try HFModel.load(directory: fixtureRoot.appendingPathComponent("golden/\(name)-kd-teacher").path)
        let student = try HFModel.load(directory: fixtureRoot.appendingPathComponent("golden/\(name)-kd-student").path)
        #expect(student.config.intermediateSize == teacher.config.intermediateSize - 32)
        let (tokens, targets, B, T) = golden.batch
        let teacherPass = TrainingPass(model: teacher, batch: B, seq: T)
        _ = teacherPass.forward(tokens: tokens, targets: targets)
        for setting in ["kd", "kdce"] {
            let s = kd[setting] as! [String: Any]
            let temperature = Float(s["temperature"] as! Double), weight = Float(s["kd_weight"] as! Double)
            let pass = TrainingPass(model: student, batch: B, seq: T)
            pass.distillation = Distillation(teacherLogits: teacherPass.logits, temperature: temperature, kdWeight: weight)
            let (sum, count) = pass.forward(tokens: tokens, targets: targets)
            let loss = sum / Double(count), refLoss = s["loss"] as! Double
            print("\(name) \(setting): loss \(loss) vs \(refLoss)")
            // Float logits of size ~10 carry ~1e-6 absolute error into a KL that is a difference of
            // such terms: absolute 1e-5 on top of the usual 1e-4 relative.
            #expect(abs(loss - refLoss) <= 1e-4 * refLoss + 1e-5)
            let grads = FloatBuffer(count: student.layout.count)
            pass.backward(into: grads, scale: 1 / Float(count))
            var worst = (name: "", error: 0.0)
            for e in student.layout.entries {
                let ref = try #require(refs["\(setting).grad.\(e.name)"], "no reference gradient for \(e.name)")
                let err = relativeError(grads.array(e.range), ref.values)
                if err > worst.error { worst = (e.name, err) }
                #expect(err <= 1e-4, "\(setting): gradient of \(e.name): relative error \(err)")
            }
            print("\(name) \(setting): \(student.layout.entries.count) gradients, largest relative error \(worst.error) (\(worst.name))")
        }
    }

    /// kd+ce at w → 0 is cross-entropy: the same per-position losses and gradient as the plain
    /// head, to rounding; and a teacher equal to the student has zero distillation loss and gradient.
    @Test func limitsOfTheLoss() throws {
        let golden = try Golden("tiny-llama")
        let model = try HFModel.load(directory: golden.modelDirectory)
        let (tokens, targets, B, T) = golden.batch
        let plain = TrainingPass(model: model, batch: B, seq: T)
        let (ceSum, count) = plain.forward(tokens: tokens, targets: targets)
        let self_ = TrainingPass(model: model, batch: B, seq: T)
        _ = self_.forward(tokens: tokens, targets: targets)
        let pass = TrainingPass(model: model, batch: B, seq: T)
        pass.distillation = Distillation(teacherLogits: self_.logits, temperature: 1, kdWeight: 1)
        let (kdSum, _) = pass.forward(tokens: tokens, targets: targets)
        #expect(abs(kdSum) < 1e-4 * Double(count))
        let g = FloatBuffer(count: model.layout.count)
        pass.backward(into: g, scale: 1 / Float(count))
        #expect(g.array().allSatisfy { abs($0) < 1e-6 })
        let mixed = TrainingPass(model: model, batch: B, seq: T)
        mixed.distillation = Distillation(teacherLogits: self_.logits, temperature: 1, kdWeight: 1e-6)
        let (mixedSum, _) = mixed.forward(tokens: tokens, targets: targets)
        #expect(abs(mixedSum - ceSum) <= 1e-5 * abs(ceSum))
    }
}
