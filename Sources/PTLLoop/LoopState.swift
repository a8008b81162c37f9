import Foundation
import PTLPrune

/// The phases of a round as the report and OUT/metrics.jsonl name them.
public enum LoopPhase: String, Codable, Sendable, CaseIterable {
    /// Activation statistics on the calibration lines.
    case stats
    /// Scores, surgery and the damage measurement.
    case prune
    /// Recovery training.
    case tune
    /// Held-out loss, accuracy and decode speed.
    case eval
}

/// One line of OUT/metrics.jsonl: a phase of a round.
public struct PhaseRow: Codable, Sendable, Equatable {
    public var round: Int
    public var phase: LoopPhase
    public var layers: Int
    public var intermediate: Int
    public var params: Int
    public var paramsFraction: Double
    public var flopsPerToken: Int
    public var accuracy: Double?
    public var loss: Double?
    public var decodeTokensPerSecond: Double?
    public var tuneSteps: Int?
    public var seconds: Double
    public var detail: String?
}

/// What a round removed, with the scores that chose it.
public struct RemovalRecord: Codable, Sendable, Equatable {
    public var round: Int
    /// Per block (numbered as the block was before this round): removed neuron → score.
    public var neurons: [[ScoredIndex]]
    /// Removed blocks (numbered before this round) with their layer scores.
    public var layers: [ScoredIndex]
    public var how: RemovalKind?
}

/// How a round's blocks left the model.
public enum RemovalKind: Codable, Sendable, Equatable, CustomStringConvertible {
    /// Deleted at once.
    case cut
    /// Their branches annealed to zero over rounds `from…to`, then deleted.
    case annealed(from: Int, to: Int)

    public var description: String {
        switch self {
        case .cut: return "cut"
        case .annealed(let a, let b): return "annealed over rounds \(a)–\(b), then deleted"
        }
    }
}

public struct ScoredIndex: Codable, Sendable, Equatable {
    public var index: Int
    public var score: Double
}

/// A layer chosen early for annealed removal.
struct DoomedLayers: Codable, Sendable, Equatable {
    var removeAtRound: Int
    var windowStart: Int
    var layers: [Int]            // current block numbering
    var scores: [Double]
    var trialDamage: Double      // held-out loss increase of cutting them when chosen
}

/// The resumable state of a run (written with every checkpoint).
struct LoopState: Codable, Sendable {
    enum Stage: String, Codable { case original, prune, tune, eval, done }
    var settings: LoopSettings
    var plan: PrunePlan
    var totalSteps: Int
    var round = 0
    var stage: Stage = .original
    var roundSteps = 0
    var stepInRound = 0
    var stepsUsed = 0
    var alpha: [Float]
    var doomed: [DoomedLayers] = []
    var lossBefore = 0.0
    var neuronDamagePerNeuron: Double?
    var layerDamagePerLayer: Double?
    var tuneLossSum = 0.0
    var tuneSeconds = 0.0
    var workerSeconds = 0.0
    var rows: [PhaseRow] = []
    var removals: [RemovalRecord] = []
}

