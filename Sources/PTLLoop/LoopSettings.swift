import Foundation
import PTLPrune
import PTLTensor

/// How a doomed layer leaves: at once, or with its branches annealed to zero while tuning first.
public enum LayerRemoval: String, Codable, Sendable, CaseIterable { case anneal, cut }
/// Whether one AdamW state (sliced with the weights) lives across rounds.
public enum OptimizerCarry: String, Codable, Sendable, CaseIterable { case carry, reset }

/// Every setting of a loop run (stored in the checkpoint: a resumed run keeps its own).
public struct LoopSettings: Codable, Sendable, Equatable {
    public var method: PruneMethod = .ptl
    public var target = 0.5
    public var removeLayers = 1
    public var step = 0.05
    public var widthMultiple = 32
    public var layersPerRound = 1
    public var order: PruneOrder = .neuronsFirst
    public var neuronScore: NeuronScore = .magnitude
    public var layerScore: LayerScore = .relativeChange
    public var budget: BudgetKind = .damage
    /// With the damage budget: the fewest tune steps a round gets.
    public var minRoundSteps = 1
    public var layerRemoval: LayerRemoval = .cut
    /// Rounds over which a doomed layer's branches fall to zero before it is deleted.
    public var annealRounds = 3
    public var optimizer: OptimizerCarry = .reset
    /// Tune steps per PTL round; every method gets tuneSteps × (PTL rounds) in total.
    public var tuneSteps = 20
    public var learningRate: Float = 3e-4
    public var minLearningRateRatio: Float = 0.1
    public var warmup = 2
    public var weightDecay: Float = 0.1
    public var clip: Float = 1
    public var batchSize = 16
    public var shards = 4
    public var seed: UInt64 = 0
    public var checkpointEvery = 10
    public var evalMaxNewTokens = 160
    public var evalBatchSize = 16
    public var decodePromptTokens = 32
    public var decodeNewTokens = 96
    /// Eval problems of the rounds in between (the original and the final model get all of them).
    public var roundEvalCount = 200
    /// Matmul arithmetic of every phase: fp32, or bf16 with fp32 accumulation (see `Precision`).
    public var precision: Precision = .fp32
    public init() {}
}

/// The data of a run, already tokenized: tuning lines (consumed in a seeded order, each line
/// once), calibration lines (stats), held-out lines (loss), and eval records as JSONL lines.
public struct LoopData: Sendable {
    public var tune: [[Int]]
    public var calibration: [[Int]]
    public var heldOut: [[Int]]
    public var evalLines: [String]
    public init(tune: [[Int]], calibration: [[Int]], heldOut: [[Int]], evalLines: [String]) {
        self.tune = tune; self.calibration = calibration; self.heldOut = heldOut; self.evalLines = evalLines
    }
}

