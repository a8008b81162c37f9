import Testing
import PTLTestSupport
import PTLTensor
@testable import PTLModel

/// A pass sized for a larger capacity and reshaped (what a worker does across its tasks) gives
/// the same loss, gradients and statistics, bit for bit, as a pass allocated for the shape.
@Suite struct TrainingPassReuseTests {
    func run(_ pass: TrainingPass, batch: Int, seq: Int, seed: Int) -> (loss: Double, grads: [Float], act: [Double]) {
        let config = pass.model.config
        let tokens: [Int32] = (0..<(batch * seq)).map { Int32(($0 * 7 + seed) % config.vocabSize) }
        var targets: [Int32] = (0..<(batch * seq)).map { Int32(($0 * 5 + seed) % config.vocabSize) }
        targets[batch * seq - 1] = -1
        pass.branchScale = seed % 2 == 0 ? nil : [0.5, 1]
        let (sum, _) = pass.forward(tokens: tokens, targets: targets)
        let grads = FloatBuffer(count: pass.model.layout.count)
        pass.backward(into: grads, scale: 0.1)
        return (sum, grads.array(), pass.statistics().absSum)
    }

    @Test(arguments: ["llama", "qwen2"])
    func aReshapedPassEqualsAFreshOne(type: String) throws {
        let model = randomModel(try tinyConfig(type: type, tied: type == "qwen2"), seed: 3)
        let reused = TrainingPass(model: model, capacity: (3, 16))
        let big = run(reused, batch: 3, seq: 16, seed: 1)
        for (b, t, seed) in [(2, 8, 2), (1, 5, 3), (3, 11, 4), (3, 16, 1)] {
            reused.reshape(batch: b, seq: t)
            let got = run(reused, batch: b, seq: t, seed: seed)
            let want = run(TrainingPass(model: model, batch: b, seq: t), batch: b, seq: t, seed: seed)
            #expect(got.loss == want.loss && got.grads == want.grads && got.act == want.act, "(\(b), \(t))")
        }
        #expect(run(reused, batch: 3, seq: 16, seed: 1).grads == big.grads)
        #expect(reused.fits(batch: 3, seq: 16) && !reused.fits(batch: 4, seq: 2) && !reused.fits(batch: 1, seq: 17))
    }
}
