import Foundation
import PTLData
import PTLModel
import PTLPrune
import PTLTensor

/// How a doomed layer leaves: at once, or with its branches annealed to zero while tuning first.
public enum LayerRemoval: String, Codable, Sendable, CaseIterable { case anneal, cut }
/// Whether one AdamW state (sliced with the weights) lives across rounds.
public enum OptimizerCarry: String, Codable, Sendable, CaseIterable { case carry, reset }

/// The loss the tune phase recovers with: next-token cross-entropy on the tuning lines, logit
/// distillation from the teacher (forward KL on the full vocabulary), or a weighted sum.
public enum RecoveryLoss: String, Codable, Sendable, CaseIterable {
    case ce, kd
    case kdCE = "kd+ce"
}

/// What happens to a block's remaining FFN after a neuron cut: nothing (the kept columns of
/// down_proj stay as they were), or least-squares refitting of them to the unpruned block's FFN
/// output on the calibration tokens (`Reconstruction`).
public enum ReconstructKind: String, Codable, Sendable, CaseIterable { case none, ffn }

/// What the stats phase (neuron and block scores, reconstruction's Gram matrices) runs on:
/// the calibration lines as the dataset has them (question + its chain of thought), the prompts
/// alone, or the prompts with the current model's own greedy chain of thought, generated anew
/// every round (RAC's on-policy calibration).
public enum CalibrationKind: String, Codable, Sendable, CaseIterable {
    case dataset, prompts
    case onPolicy = "on-policy"
}

/// How the damage budget measures what a cut did: the held-out loss on dataset text, or the
/// error rate on a probe set (held-out questions answered greedily — what the loop is for: one
/// wrong digit fails a multi-step answer while barely moving the loss).
public enum DamageMeasure: String, Codable, Sendable, CaseIterable { case loss, probe }

/// `--prune sparse`: the loop raises every linear layer's sparsity round by round with SparseGPT
/// (RAC's reconstruction, calibrated as `--calibration` says) instead of removing neurons and
/// blocks; tuning keeps the pruned weights at zero.
public struct SparseSettings: Codable, Sendable, Equatable {
    /// The final pattern: a fraction ("0.5") or n:m ("2:4").
    public var sparsity: String
    /// SparseGPT's damping: this fraction of mean(diag H) added to the diagonal.
    public var percentDamp = 0.01
    /// Columns per SparseGPT lazy batch update.
    public var blockSize = 128
    /// The rounds' sparsity levels: nil or "linear" (step by step), "cubic" (Zhu & Gupta).
    public var schedule: String?
    public init(sparsity: String, percentDamp: Double = 0.01, blockSize: Int = 128) {
        self.sparsity = sparsity; self.percentDamp = percentDamp; self.blockSize = blockSize
    }
}

/// What a round's tune phase trains with: next-token loss (continual pre-training, `--recover`
/// says which), GRPO, or the first half of the round's steps one and the second half the other.
public enum TuneKind: String, Codable, Sendable, CaseIterable {
    case cpt, grpo
    case cptGRPO = "cpt+grpo"
}

/// `--tune grpo | cpt+grpo`: GRPO steps in the tune phase (issue 17). The KL is to the round's
/// starting model (the pruned model before its tuning).
public struct GRPOTuneSettings: Codable, Sendable, Equatable {
    public var tune: TuneKind = .grpo
    public var promptsPerStep = 8
    public var rolloutsPerPrompt = 8
    public var temperature: Float = 1
    public var topP: Float = 1
    public var beta: Float = 0.04
    public var clipLow: Float = 0.2
    public var clipHigh: Float = 0.28
    public var rewards: RewardSpec = .standard
    /// The GRPO steps' peak learning rate (RL wants a smaller one than next-token tuning).
    public var learningRate: Float = 1e-5
    public init() {}

    /// Throws naming the first setting out of range.
    public func check(shards: Int) throws {
        guard promptsPerStep >= shards, promptsPerStep <= 1 << 16 else { throw LoopError("--prompts-per-step must be between --shards (\(shards)) and 65536") }
        guard rolloutsPerPrompt >= 2, rolloutsPerPrompt <= 1024 else {
            throw LoopError("--rollouts-per-prompt must be between 2 and 1024 (advantages compare a prompt's completions)")
        }
        guard temperature.isFinite, temperature > 0, temperature <= 100 else { throw LoopError("--temperature must be in (0, 100]: GRPO samples") }
        guard topP.isFinite, topP > 0, topP <= 1 else { throw LoopError("--top-p must be in (0, 1]") }
        guard beta.isFinite, beta >= 0 else { throw LoopError("--kl-beta must be a number ≥ 0") }
        guard clipLow >= 0, clipLow < 1, clipHigh >= 0, clipHigh.isFinite else { throw LoopError("--clip-low must be in [0, 1) and --clip-high ≥ 0") }
        guard learningRate.isFinite, learningRate > 0 else { throw LoopError("the GRPO learning rate must be a positive number") }
    }
}

/// Every setting of a loop run (stored in the checkpoint: a resumed run keeps its own).
public struct LoopSettings: Codable, Sendable, Equatable {
    public var method: PruneMethod = .ptl
    public var target = 0.5
    public var removeLayers = 1
    public var step = 0.05
    public var widthMultiple = 32
    /// The final hidden size (hidden / embedding channel pruning with the neuron rounds); nil: unchanged.
    public var hiddenSize: Int?
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
    /// The tune phase's loss; with kd the teacher is the unpruned starting model (or `--teacher`).
    public var recover: RecoveryLoss = .ce
    /// Distillation's temperature T (the loss is T² · KL at T).
    public var kdTemperature: Float = 1
    /// With kd+ce: the weight w of w · T² · KL + (1 − w) · CE.
    public var kdWeight: Float = 0.5
    /// Least-squares reconstruction of down_proj after each neuron cut.
    public var reconstruct: ReconstructKind = .none
    /// Its damping: λ = this × mean diagonal of the kept neurons' Gram matrix.
    public var reconstructDamping = 0.01
    /// What the stats phase calibrates on.
    public var calibration: CalibrationKind = .dataset
    /// What the damage budget follows.
    public var damage: DamageMeasure = .loss
    /// With the damage budget: the fraction of the total tune steps kept for the final round.
    public var finalReserve = 0.0
    /// Set: the loop prunes weights (SparseGPT) instead of neurons and blocks.
    public var sparse: SparseSettings?
    /// Set: GRPO steps in the tune phase (`--tune grpo | cpt+grpo`); nil: next-token tuning.
    public var grpo: GRPOTuneSettings?
    public init() {}

    /// The rounds these settings give for a model of `config` with `method`.
    public func plan(config: ModelConfig, method: PruneMethod) throws -> PrunePlan {
        if let sparse {
            guard sparse.schedule == nil || sparse.schedule == "linear" || sparse.schedule == "cubic" else {
                throw LoopError("--sparsity-schedule must be linear or cubic (got \(sparse.schedule!))")
            }
            return try PrunePlan.sparse(config: config, method: method, target: try SparsityPattern(parsing: sparse.sparsity), step: step,
                                        cubic: sparse.schedule == "cubic")
        }
        return try PrunePlan.make(config: config, method: method, target: target, removeLayers: removeLayers, step: step,
                                  widthMultiple: widthMultiple, layersPerRound: layersPerRound, order: order, hiddenSize: hiddenSize)
    }

    /// What the tune phase asks of the backend's gradients: nil for cross-entropy.
    public var distillationWeights: (temperature: Float, kdWeight: Float)? {
        switch recover {
        case .ce: return nil
        case .kd: return (kdTemperature, 1)
        case .kdCE: return (kdTemperature, kdWeight)
        }
    }
}

/// The data of a run, already tokenized: tuning lines (consumed in a seeded order, each line
/// once), calibration lines (stats), held-out lines (loss), and eval records as JSONL lines.
public struct LoopData: Sendable {
    public var tune: [[Int]]
    public var calibration: [[Int]]
    public var heldOut: [[Int]]
    public var evalLines: [String]
    /// The calibration records as JSONL lines (on-policy calibration answers their questions).
    public var calibrationLines: [String]
    /// The calibration records' prompts alone (`--calibration prompts`).
    public var calibrationPrompts: [[Int]]
    /// `--damage probe`'s questions: held-out records as JSONL lines, as many as there are
    /// calibration records. Never the calibration questions: reconstruction and on-policy
    /// calibration fit the model to those, so a probe on them sees no damage (on the SmolLM2
    /// specialist a 20 % FFN cut probed 93.8 → 96.9 % on the calibration questions while 100
    /// held-out problems fell from 91.5 to 68 %).
    public var probeLines: [String]
    /// The tuning records as JSONL lines (GRPO samples answers to their questions); empty when
    /// the tuning data are plain text.
    public var tuneRecords: [String]
    public init(tune: [[Int]], calibration: [[Int]], heldOut: [[Int]], evalLines: [String],
                calibrationLines: [String] = [], calibrationPrompts: [[Int]] = [], probeLines: [String] = [], tuneRecords: [String] = []) {
        self.tune = tune; self.calibration = calibration; self.heldOut = heldOut; self.evalLines = evalLines
        self.calibrationLines = calibrationLines; self.calibrationPrompts = calibrationPrompts; self.probeLines = probeLines
        self.tuneRecords = tuneRecords
    }
}

