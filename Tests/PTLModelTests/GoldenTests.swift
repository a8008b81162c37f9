import Foundation
import Testing
import PTLFormats
import PTLTensor
@testable import PTLModel

let fixtureRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

/// The PyTorch reference of one tiny model (scripts/make_golden.py).
struct Golden {
    let name: String
    let json: [String: Any]
    let tensors: [String: TensorF32]

    init(_ name: String) throws {
        self.name = name
        json = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtureRoot.appendingPathComponent("golden/\(name).json"))) as! [String: Any]
        tensors = try Safetensors.read(path: fixtureRoot.appendingPathComponent("golden/\(name).safetensors").path)
    }

    var modelDirectory: String { fixtureRoot.appendingPathComponent(name).path }

    /// The batch as next-token (tokens, targets): HF shifts labels inside the loss.
    var batch: (tokens: [Int32], targets: [Int32], batch: Int, seq: Int) {
        let ids = json["input_ids"] as! [[Int]], labels = json["labels"] as! [[Int]]
        let B = ids.count, T = ids[0].count
        var tokens: [Int32] = [], targets: [Int32] = []
        for b in 0..<B {
            for t in 0..<T {
                tokens.append(Int32(ids[b][t]))
                targets.append(t + 1 < T && labels[b][t + 1] >= 0 ? Int32(labels[b][t + 1]) : -1)
            }
        }
        return (tokens, targets, B, T)
    }
}

/// max |a − b| / max |b| over a tensor.
func relativeError(_ a: [Float], _ b: [Float]) -> Double {
    precondition(a.count == b.count, "sizes differ: \(a.count) vs \(b.count)")
    var diff = 0.0, scale = 0.0
    for i in 0..<a.count {
        diff = max(diff, abs(Double(a[i]) - Double(b[i])))
        scale = max(scale, abs(Double(b[i])))
    }
    return diff / max(scale, 1e-30)
}

@Suite struct GoldenTests {
    @Test(arguments: ["tiny-llama", "tiny-qwen2"])
    func logitsLossAndEveryGradientMatchPyTorch(name: String) throws {
        let golden = try Golden(name)
        let model = try HFModel.load(directory: golden.modelDirectory)
        let (tokens, targets, B, T) = golden.batch
        let pass = TrainingPass(model: model, batch: B, seq: T)
        let (sum, count) = pass.forward(tokens: tokens, targets: targets)
        let loss = sum / Double(count)
        let refLoss = golden.json["loss"] as! Double
        print("\(name): loss \(loss) vs \(refLoss), relative \(abs(loss - refLoss) / refLoss)")
        #expect(abs(loss - refLoss) / refLoss <= 1e-4)
        let logitsError = relativeError(pass.logits.array(), golden.tensors["logits"]!.values)
        print("\(name): logits relative error \(logitsError)")
        #expect(logitsError <= 1e-4)
        let grads = FloatBuffer(count: model.layout.count)
        pass.backward(into: grads, scale: 1 / Float(count))
        var worst = (name: "", error: 0.0)
        for e in model.layout.entries {
            let ref = try #require(golden.tensors["grad." + e.name], "no reference gradient for \(e.name)")
            let err = relativeError(grads.array(e.range), ref.values)
            if err > worst.error { worst = (e.name, err) }
            #expect(err <= 1e-4, "gradient of \(e.name): relative error \(err)")
        }
        print("\(name): \(model.layout.entries.count) gradients, largest relative error \(worst.error) (\(worst.name))")
    }

    @Test(arguments: ["tiny-llama", "tiny-qwen2"])
    func fiveAdamWStepsFollowPyTorch(name: String) throws {
        let golden = try Golden(name)
        let model = try HFModel.load(directory: golden.modelDirectory)
        let adam = golden.json["adamw"] as! [String: Any]
        let betas = adam["betas"] as! [Double]
        let settings = AdamWSettings(beta1: Float(betas[0]), beta2: Float(betas[1]), eps: Float(adam["eps"] as! Double),
                                     weightDecay: Float(adam["weight_decay"] as! Double))
        let optimizer = AdamW(layout: model.layout, settings: settings)
        let (tokens, targets, B, T) = golden.batch
        let pass = TrainingPass(model: model, batch: B, seq: T)
        let grads = FloatBuffer(count: model.layout.count)
        var losses: [Double] = [], norms: [Double] = []
        for _ in 0..<5 {
            let (sum, count) = pass.forward(tokens: tokens, targets: targets)
            losses.append(sum / Double(count))
            grads.zero()
            pass.backward(into: grads, scale: 1 / Float(count))
            norms.append(GradientClipping.clip(grads, maxNorm: Float(adam["clip"] as! Double)))
            optimizer.update(params: model.parameters, grads: grads, lr: Float(adam["lr"] as! Double))
        }
        let (sum, count) = pass.forward(tokens: tokens, targets: targets)
        losses.append(sum / Double(count))
        let refLosses = adam["losses"] as! [Double], refNorms = adam["grad_norms"] as! [Double]
        print("\(name): AdamW losses \(losses)\n  PyTorch      \(refLosses)")
        for (a, b) in zip(losses, refLosses) { #expect(abs(a - b) / abs(b) <= 1e-4) }
        for (a, b) in zip(norms, refNorms) { #expect(abs(a - b) / abs(b) <= 1e-4) }
        // Adam divides by √v, so an element whose gradient is ~0 moves by up to lr in a direction
        // set by the last bits of its gradient: fp32 and PyTorch's fp64 reference may disagree
        // there by a fraction of one step. Parameters are compared to a quarter of the rate.
        let lr = adam["lr"] as! Double
        var worst = 0.0
        for e in model.layout.entries {
            let a = model.parameters.array(e.range), b = golden.tensors["after." + e.name]!.values
            let err = zip(a, b).reduce(0.0) { max($0, abs(Double($1.0) - Double($1.1))) }
            worst = max(worst, err)
            #expect(err <= lr / 4, "\(e.name) after 5 steps: largest difference \(err)")
        }
        print("\(name): parameters after 5 steps, largest absolute difference \(worst) (lr \(lr))")
    }

    @Test(arguments: ["tiny-llama", "tiny-qwen2"])
    func perplexityAndGreedyGenerationMatchTransformers(name: String) throws {
        let golden = try Golden(name)
        let model = try HFModel.load(directory: golden.modelDirectory)
        let ppl = golden.json["perplexity"] as! [String: Any]
        var sum = 0.0, count = 0
        for ids in ppl["ids"] as! [[Int]] {
            let pass = TrainingPass(model: model, batch: 1, seq: ids.count - 1)
            let r = pass.forward(tokens: ids.dropLast().map { Int32($0) }, targets: ids.dropFirst().map { Int32($0) })
            sum += r.sum
            count += r.count
        }
        #expect(count == ppl["tokens"] as! Int)
        #expect(abs(sum - (ppl["sum_nll"] as! Double)) / (ppl["sum_nll"] as! Double) <= 1e-5)
        let gen = golden.json["generate"] as! [String: Any]
        let out = Generation.generate(model: model, prompt: gen["prompt_ids"] as! [Int], maxNewTokens: 24)
        #expect(out == gen["generated_ids"] as! [Int])
    }

    @Test func savedModelsReloadBitIdentically() throws {
        let model = try HFModel.load(directory: fixtureRoot.appendingPathComponent("tiny-qwen2").path)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-save-\(UUID().uuidString)")
        try HFModel.save(model, to: dir.path, copyFrom: fixtureRoot.appendingPathComponent("tiny-qwen2").path)
        let again = try HFModel.load(directory: dir.path)
        #expect(again.parameters.array() == model.parameters.array())
        #expect(FileManager.default.fileExists(atPath: dir.appendingPathComponent("tokenizer.json").path))
        let config = try JSONValue.parse(Data(contentsOf: dir.appendingPathComponent("config.json")))
        #expect(config["layer_types"] != nil && config["rope_parameters"]?["rope_theta"]?.number == 1e6)
        // bf16 output: every value within bf16 rounding of the original.
        try HFModel.save(model, to: dir.path, dtype: .bf16)
        let bf = try HFModel.load(directory: dir.path)
        #expect(relativeError(bf.parameters.array(), model.parameters.array()) < 1e-2)
    }

    @Test func strictLoadingNamesTheProblem() throws {
        let src = fixtureRoot.appendingPathComponent("tiny-llama")
        func copy() throws -> URL {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-bad-\(UUID().uuidString)")
            try FileManager.default.copyItem(at: src, to: dir)
            return dir
        }
        var tensors = try Safetensors.read(path: src.appendingPathComponent("model.safetensors").path)
        let ordered = { (t: [String: TensorF32]) in t.keys.sorted().map { (name: $0, tensor: t[$0]!) } }
        // Missing tensor.
        var dir = try copy()
        let norm = tensors.removeValue(forKey: "model.norm.weight")!
        try Safetensors.write(ordered(tensors), to: dir.appendingPathComponent("model.safetensors").path)
        #expect(thrownMessage { _ = try HFModel.load(directory: dir.path) }?.contains("missing tensor model.norm.weight") == true)
        // Wrong shape.
        dir = try copy()
        tensors["model.norm.weight"] = TensorF32(shape: [2, 32], values: norm.values)
        try Safetensors.write(ordered(tensors), to: dir.appendingPathComponent("model.safetensors").path)
        #expect(thrownMessage { _ = try HFModel.load(directory: dir.path) }?.contains("tensor model.norm.weight has shape [2, 32], expected [64]") == true)
        // Extra tensor.
        dir = try copy()
        tensors["model.norm.weight"] = norm
        tensors["model.layers.9.mlp.up_proj.weight"] = norm
        try Safetensors.write(ordered(tensors), to: dir.appendingPathComponent("model.safetensors").path)
        #expect(thrownMessage { _ = try HFModel.load(directory: dir.path) }?.contains("unexpected tensor model.layers.9.mlp.up_proj.weight") == true)
        // Truncated weights file.
        dir = try copy()
        let weights = dir.appendingPathComponent("model.safetensors")
        let data = try Data(contentsOf: weights)
        try data.prefix(data.count - 100).write(to: weights)
        #expect(thrownMessage { _ = try HFModel.load(directory: dir.path) }?.contains("truncated") == true)
        // Missing and corrupt config.json, unsupported model_type.
        dir = try copy()
        try FileManager.default.removeItem(at: dir.appendingPathComponent("config.json"))
        #expect(thrownMessage { _ = try HFModel.load(directory: dir.path) }?.contains("config.json: missing") == true)
        try Data("{\"model_type\": ".utf8).write(to: dir.appendingPathComponent("config.json"))
        #expect(thrownMessage { _ = try HFModel.load(directory: dir.path) }?.contains("config.json: not valid JSON") == true)
        try Data("{\"model_type\": \"mamba\"}".utf8).write(to: dir.appendingPathComponent("config.json"))
        #expect(thrownMessage { _ = try HFModel.load(directory: dir.path) }?.contains("unsupported model_type \"mamba\"") == true)
    }
}
