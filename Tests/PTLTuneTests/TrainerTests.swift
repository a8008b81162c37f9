import Testing
import PTLModel
@testable import PTLTune

func tinyModel() throws -> Model {
    let config = try ModelConfig(vocabSize: 32, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 2,
                                 numAttentionHeads: 2, numKeyValueHeads: 1, maxPositionEmbeddings: 64)
    let m = Model(config: config)
    m.initializeRandomly(seed: 3, std: 0.1)
    return m
}

@Suite struct TrainerTests {
    /// Lines of a repeating pattern the model can learn quickly.
    let lines: [[Int]] = (0..<8).map { k in (0..<12).map { ($0 * 3 + k) % 32 } }

    @Test func lossFallsAndRunsAreDeterministic() throws {
        var settings = TrainingSettings(steps: 30, batchSize: 4, learningRate: 1e-2)
        settings.warmup = 3
        var finals: [[Float]] = []
        var losses: [Double] = []
        for _ in 0..<2 {
            let model = try tinyModel()
            let trainer = try Trainer(model: model, sequences: lines, settings: settings)
            losses = try (0..<settings.steps).map { _ in try trainer.runStep().loss }
            finals.append(model.parameters.array())
        }
        #expect(losses.last! < losses.first! * 0.5, "loss \(losses.first!) → \(losses.last!)")
        #expect(finals[0] == finals[1])
    }

    @Test func lossEvaluationMatchesOneSequenceAtATime() throws {
        let model = try tinyModel()
        let batched = LossEvaluation.evaluate(model: model, sequences: lines + [[1, 2, 3]], batchSize: 4)
        var sum = 0.0, tokens = 0
        for l in lines + [[1, 2, 3]] {
            let r = LossEvaluation.evaluate(model: model, sequences: [l], batchSize: 1)
            sum += r.sum
            tokens += r.tokens
        }
        #expect(batched.tokens == tokens)
        #expect(abs(batched.sum - sum) / sum < 1e-5)
    }

    @Test func rejectsDataWithNothingToPredict() throws {
        #expect(throws: (any Error).self) { try Trainer(model: try tinyModel(), sequences: [[1]], settings: TrainingSettings(steps: 1, batchSize: 1, learningRate: 1e-3)) }
    }
}
