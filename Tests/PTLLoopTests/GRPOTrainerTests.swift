import Foundation
import Testing
import PTLData
import PTLLoop
import PTLModel
import PTLTestSupport
import PTLTokenizer

/// GRPO as a tune phase in this process (issue 17): the shipped demo model, 4 steps of 4 prompts ×
/// 4 sampled completions; every step's figures are recorded, and a run stopped anywhere resumes
/// to the same model, bit for bit (the sampling is seeded per step, prompt and completion).
@Suite(.serialized) struct GRPOTrainerTests {
    func trainer(out: String, fresh: Bool = false, steps: Int = 4) throws -> GRPOTrainer {
        let dir = packageRoot.appendingPathComponent("models/demo").path
        let model = try HFModel.load(directory: dir)
        let tokenizer = try Tokenizer(data: Data(contentsOf: URL(fileURLWithPath: dir + "/tokenizer.json")))
        let task = try ArithmeticTask()
        let train = task.jsonl(seed: 0, count: 64).split(separator: "\n").map(String.init)
        let eval = task.jsonl(seed: ArithmeticTask.testSeed(0), count: 8).split(separator: "\n").map(String.init)
        var c = GRPOConfig()
        c.steps = steps
        c.grpo.promptsPerStep = 4
        c.grpo.rolloutsPerPrompt = 4
        c.maxNewTokens = 48
        c.grpo.learningRate = 1e-4
        c.evalEvery = 2
        c.checkpointEvery = 1
        return try GRPOTrainer(backend: LocalBackend(tokenizer: tokenizer), model: model, trainLines: train, evalLines: eval, config: c,
                               out: out, tokenizerSource: dir, fresh: fresh)
    }

    @Test func everyStepIsRecordedAndAStoppedRunResumesToTheSameModel() throws {
        let straight = temporaryDirectory("ptl-grpo-straight")
        let t = try trainer(out: straight)
        #expect(try t.train())
        let rows = t.rows
        #expect(rows.map(\.step) == [0, 1, 2, 3, 4])
        #expect(rows.compactMap(\.evalAccuracy).count == 3, "step 0, 2 and 4")
        for r in rows.dropFirst() {
            #expect(r.meanResponseTokens > 0 && r.meanReward >= 0 && r.meanReward <= 1 && r.kl >= -1e-6 && r.clipFraction == 0)
        }
        // The policy moved (the demo's truncated answers miss the format reward: advantages are not all 0).
        let start = try HFModel.load(directory: packageRoot.appendingPathComponent("models/demo").path).parameters.array()
        #expect(t.currentModel.parameters.array() != start)
        let final = try Data(contentsOf: URL(fileURLWithPath: straight + "/final/model.safetensors"))
        let out = temporaryDirectory("ptl-grpo-resume")
        for stopAt in [1, 1, 1] {   // one step a run: 3 runs stop, the 4th finishes
            var n = 0
            #expect(try !trainer(out: out).train { n += 1; return n > stopAt })
        }
        #expect(try trainer(out: out).train())
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/final/model.safetensors")) == final)
        let metrics = try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(metrics.count == 5 && metrics[1].contains("\"mean_reward\"") && metrics[1].contains("\"clip_fraction\""))
        // Other settings do not resume this checkpoint.
        #expect(throws: LoopError.self) { try trainer(out: out, steps: 5) }
    }

    @Test func badDataAndSettingsAreNamed() throws {
        let dir = packageRoot.appendingPathComponent("models/demo").path
        let model = try HFModel.load(directory: dir)
        let tokenizer = try Tokenizer(data: Data(contentsOf: URL(fileURLWithPath: dir + "/tokenizer.json")))
        var c = GRPOConfig()
        c.grpo.promptsPerStep = 2
        c.grpo.rolloutsPerPrompt = 2
        let good = "{\"question\": \"1 + 1?\", \"answer\": \"#### 2\"}"
        let noAnswer = "{\"question\": \"1 + 1?\", \"answer\": \"two\"}"
        do {
            _ = try GRPOTrainer(backend: LocalBackend(tokenizer: tokenizer), model: model, trainLines: [good, noAnswer], evalLines: [good, good],
                                config: c, out: temporaryDirectory("ptl-grpo-bad"), tokenizerSource: dir, fresh: true)
            Issue.record("a record without a final number was accepted")
        } catch { #expect("\(error)".contains("record 2"), "\(error)") }
        c.grpo.rolloutsPerPrompt = 1
        #expect(throws: LoopError.self) {
            try GRPOTrainer(backend: LocalBackend(tokenizer: tokenizer), model: model, trainLines: [good, good], evalLines: [good, good],
                            config: c, out: temporaryDirectory("ptl-grpo-bad"), tokenizerSource: dir, fresh: true)
        }
    }
}
