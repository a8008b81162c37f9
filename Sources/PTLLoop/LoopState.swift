import Foundation
import PTLModel
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
    /// Eval rows: mean tokens generated per answer (RAC: a badly pruned reasoner thinks longer).
    public var meanGeneratedTokens: Double?
    /// `--prune sparse`: the fraction of the linear layers' weights pruned (exact zeros).
    public var linearZeros: Double?
}

/// What a round removed, with the scores that chose it.
public struct RemovalRecord: Codable, Sendable, Equatable {
    public var round: Int
    /// Per block (numbered as the block was before this round): removed neuron → score.
    public var neurons: [[ScoredIndex]]
    /// Removed blocks (numbered before this round) with their layer scores.
    public var layers: [ScoredIndex]
    public var how: RemovalKind?
    /// Removed hidden channels (numbered before this round) with their scores (nil: none).
    public var channels: [ScoredIndex]? = nil
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
    /// `--prune sparse`: held-out damage per unit of sparsity added, as the last round measured.
    var sparseDamagePerUnit: Double?
    var tuneLossSum = 0.0
    var tuneSeconds = 0.0
    var workerSeconds = 0.0
    var rows: [PhaseRow] = []
    var removals: [RemovalRecord] = []
    /// `--tune grpo`: every GRPO step's figures (OUT/grpo.jsonl).
    var grpoRows: [GRPOStepRow]?
}


extension LoopState {
    /// Reads `loop.json` of a checkpoint and checks it against the run it resumes: the plan its
    /// settings give from the starting model, the model the checkpoint holds, indices in range.
    /// A checkpoint's CRCs catch a torn or damaged file, not a crafted or stale one: without
    /// this check such a state indexes the plan, the branch scales or the blocks out of range.
    static func read(_ data: Data, source: String, start: ModelConfig, current: ModelConfig) throws -> LoopState {
        let s: LoopState
        do { s = try JSONDecoder().decode(LoopState.self, from: data) } catch {
            throw LoopError("\(source) cannot be read as this version's loop state (\(error)); pass --fresh to start over")
        }
        try s.check(source: source, start: start, current: current)
        return s
    }

    func check(source: String, start: ModelConfig, current: ModelConfig) throws {
        func bad(_ what: String) -> LoopError { LoopError("\(source): \(what); pass --fresh to start over") }
        func makePlan(_ method: PruneMethod) throws -> PrunePlan { try settings.plan(config: start, method: method) }
        let expected: PrunePlan
        do { expected = try makePlan(settings.method) } catch { throw bad("its settings give no plan for this model (\(error))") }
        guard plan == expected else { throw bad("its prune plan is not the one its settings give for this model") }
        let (total, overflow) = settings.tuneSteps.multipliedReportingOverflow(by: (try? makePlan(.ptl))?.rounds.count ?? -1)
        guard !overflow, totalSteps == total else { throw bad("total tune steps \(totalSteps), its settings give \(total)") }
        let rounds = plan.rounds.count
        switch stage {
        case .original: guard round == 0 else { throw bad("round \(round) before the original model was measured") }
        case .prune, .tune, .eval: guard round >= 1, round <= rounds else { throw bad("round \(round) of \(rounds)") }
        case .done: guard round == rounds else { throw bad("done at round \(round) of \(rounds)") }
        }
        guard roundSteps >= 0, stepInRound >= 0, stepInRound <= roundSteps, stepsUsed >= 0 else {
            throw bad("step counts out of range (round \(roundSteps), in round \(stepInRound), used \(stepsUsed))")
        }
        // The model must have the shape the rounds done so far give.
        let done = stage == .original ? 0 : stage == .prune ? round - 1 : round
        let layers = start.numHiddenLayers - plan.rounds.prefix(done).reduce(0) { $0 + $1.layers }
        let width = start.intermediateSize - plan.rounds.prefix(done).reduce(0) { $0 + $1.neurons }
        let hidden = start.hiddenSize - plan.rounds.prefix(done).reduce(0) { $0 + $1.hiddenChannels }
        guard current.numHiddenLayers == layers, current.intermediateSize == width, current.hiddenSize == hidden,
              current.headDim == start.headDim else {
            throw bad("the checkpoint's model has \(current.numHiddenLayers) blocks of width \(current.intermediateSize), hidden size \(current.hiddenSize), head_dim \(current.headDim); its state says \(layers) of \(width), hidden \(hidden), head_dim \(start.headDim)")
        }
        guard alpha.count == layers, alpha.allSatisfy({ $0.isFinite }) else {
            throw bad("\(alpha.count) branch scales for \(layers) blocks (or one not finite)")
        }
        for d in doomed {
            guard d.removeAtRound >= 1, d.removeAtRound <= rounds, d.windowStart >= 0, d.windowStart <= d.removeAtRound,
                  d.scores.count == d.layers.count, Set(d.layers).count == d.layers.count,
                  d.layers.allSatisfy({ $0 >= 0 && $0 < layers }) else {
                throw bad("blocks chosen for removal out of range (\(d.layers) at round \(d.removeAtRound) of \(rounds), \(layers) blocks)")
            }
        }
    }
}

/// The loop state file of a checkpoint, as the loop reads it on resume (for tools and fuzzing).
public enum LoopStateFile {
    /// Decodes `data` and checks it against the starting and the checkpoint's model; throws naming what is wrong.
    public static func check(_ data: Data, source: String, start: ModelConfig, current: ModelConfig) throws {
        _ = try LoopState.read(data, source: source, start: start, current: current)
    }
}
