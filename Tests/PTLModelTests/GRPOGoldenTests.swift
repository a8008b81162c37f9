import Foundation
import Testing
import PTLFormats
import PTLTensor
@testable import PTLModel

/// The GRPO objective (issue 17) against PyTorch in float64 (scripts/make_golden_grpo.py): a
/// pruned, perturbed policy and its unpruned reference, four fixed completions in two groups
/// (one group's rewards tie), old log-probs off the policy's by noise so the clip is active on
/// both sides: advantages, the reference's log-probs, the token-mean loss, the clipped count,
/// the KL and the gradient of every policy parameter.
@Suite struct GRPOGoldenTests {
    @Test(arguments: ["tiny-llama", "tiny-qwen2"])
    func grpoLossAndEveryGradientMatchPyTorch(name: String) throws {
        let dir = fixtureRoot.appendingPathComponent("golden")
        let g = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("\(name).grpo.json"))) as! [String: Any]
        let refs = try Safetensors.read(path: dir.appendingPathComponent("\(name).grpo.safetensors").path)
        let policy = try HFModel.load(directory: dir.appendingPathComponent(g["policy"] as! String).path)
        let reference = try HFModel.load(directory: dir.appendingPathComponent(g["reference"] as! String).path)
        let ids = g["input_ids"] as! [[Int]], tg = g["targets"] as! [[Int]]
        let B = ids.count, T = ids[0].count
        let tokens = ids.flatMap { $0.map(Int32.init) }, targets = tg.flatMap { $0.map(Int32.init) }
        // Advantages from the rewards, per group.
        let adv = GRPOAdvantages.compute(rewards: g["rewards"] as! [Double], groupSize: g["group_size"] as! Int)
        for (a, b) in zip(adv, g["advantages"] as! [Double]) { #expect(abs(a - b) <= 1e-9 * max(1, abs(b))) }
        #expect(adv[2] == 0 && adv[3] == 0, "a tied group has zero advantages")
        // The reference model's log-probabilities of the sampled tokens.
        let refPass = TrainingPass(model: reference, batch: B, seq: T)
        _ = refPass.forward(tokens: tokens, targets: targets)
        var refLogp = [Float](repeating: 0, count: B * T)
        targets.withUnsafeBufferPointer { t in
            targetLogProbabilities(&refLogp, logits: refPass.logits.pointer, targets: t.baseAddress!, rows: B * T, vocab: reference.config.vocabSize)
        }
        let fixtureRef = (g["ref_logp"] as! [[Double]]).flatMap { $0.map(Float.init) }
        #expect(zip(refLogp, fixtureRef).allSatisfy { abs($0 - $1) <= 1e-4 * max(1, abs($1)) })
        // Loss and gradients.
        let settings = GRPOSettings(clipLow: Float(g["clip_low"] as! Double), clipHigh: Float(g["clip_high"] as! Double), beta: Float(g["beta"] as! Double))
        let rowAdvantages = (0..<(B * T)).map { Float(adv[$0 / T]) }
        let pass = TrainingPass(model: policy, batch: B, seq: T)
        pass.grpo = GRPORows(oldLogp: (g["old_logp"] as! [[Double]]).flatMap { $0.map(Float.init) }, refLogp: fixtureRef,
                             advantages: rowAdvantages, settings: settings)
        let (sum, count) = pass.forward(tokens: tokens, targets: targets)
        #expect(count == g["scored"] as! Int)
        let loss = sum / Double(count), refLoss = g["loss"] as! Double
        print("\(name) GRPO: loss \(loss) vs \(refLoss); clipped \(pass.grpoSums.clipped); KL \(pass.grpoSums.kl / Double(count))")
        #expect(abs(loss - refLoss) <= 1e-4 * abs(refLoss) + 1e-5)
        #expect(pass.grpoSums.clipped == g["clipped"] as! Int)
        #expect(abs(pass.grpoSums.kl / Double(count) - (g["kl_mean"] as! Double)) <= 1e-4)
        let grads = FloatBuffer(count: policy.layout.count)
        pass.backward(into: grads, scale: 1 / Float(count))
        var worst = (name: "", error: 0.0)
        for e in policy.layout.entries {
            let ref = try #require(refs["grad.\(e.name)"], "no reference gradient for \(e.name)")
            let err = relativeError(grads.array(e.range), ref.values)
            if err > worst.error { worst = (e.name, err) }
            #expect(err <= 1e-4, "gradient of \(e.name): relative error \(err)")
        }
        print("\(name) GRPO: \(policy.layout.entries.count) gradients, largest relative error \(worst.error) (\(worst.name))")
    }

    /// Limits: on-policy (old = current), zero advantages and β = 0 give zero loss and gradient;
    /// with A = 1, β = 0 and old = current, the gradient is −∇ mean log-prob (the REINFORCE limit),
    /// i.e. the cross-entropy gradient.
    @Test func limitsOfTheObjective() throws {
        let dir = fixtureRoot.appendingPathComponent("golden")
        let g = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("tiny-llama.grpo.json"))) as! [String: Any]
        let policy = try HFModel.load(directory: dir.appendingPathComponent(g["policy"] as! String).path)
        let ids = g["input_ids"] as! [[Int]], tg = g["targets"] as! [[Int]]
        let B = ids.count, T = ids[0].count, V = policy.config.vocabSize
        let tokens = ids.flatMap { $0.map(Int32.init) }, targets = tg.flatMap { $0.map(Int32.init) }
        let ce = TrainingPass(model: policy, batch: B, seq: T)
        let (ceSum, count) = ce.forward(tokens: tokens, targets: targets)
        var own = [Float](repeating: 0, count: B * T)
        targets.withUnsafeBufferPointer { t in targetLogProbabilities(&own, logits: ce.logits.pointer, targets: t.baseAddress!, rows: B * T, vocab: V) }
        let ceGrads = FloatBuffer(count: policy.layout.count)
        ce.backward(into: ceGrads, scale: 1 / Float(count))

        let one = TrainingPass(model: policy, batch: B, seq: T)
        one.grpo = GRPORows(oldLogp: own, refLogp: nil, advantages: [Float](repeating: 1, count: B * T), settings: GRPOSettings(beta: 0))
        let (sum, _) = one.forward(tokens: tokens, targets: targets)
        #expect(abs(sum + Double(count)) < 1e-3, "ρ = 1, A = 1: each row's loss is −1")
        #expect(one.grpoSums.clipped == 0)
        let grads = FloatBuffer(count: policy.layout.count)
        one.backward(into: grads, scale: 1 / Float(count))
        #expect(relativeError(grads.array(), ceGrads.array()) < 1e-4)
        #expect(ceSum > 0)

        let zero = TrainingPass(model: policy, batch: B, seq: T)
        zero.grpo = GRPORows(oldLogp: own, refLogp: nil, advantages: [Float](repeating: 0, count: B * T), settings: GRPOSettings(beta: 0))
        let (z, _) = zero.forward(tokens: tokens, targets: targets)
        #expect(z == 0)
        let zg = FloatBuffer(count: policy.layout.count)
        zero.backward(into: zg, scale: 1 / Float(count))
        #expect(zg.array().allSatisfy { $0 == 0 })
    }
}
