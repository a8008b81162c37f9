import Foundation
import Testing
import PTLLoop
import PTLModel
import PTLPrune
import PTLTestSupport

/// The loop on `LocalBackend`, no sockets: the shipped demo model in a short job — two rounds
/// (64 neurons per block, then one block), two tune steps a PTL round, eval on 8 problems.
struct ShortJob {
    var settings = LoopSettings()
    var data = DataSettings()

    init() {
        settings.target = 0.8
        settings.step = 0.1
        settings.tuneSteps = 2
        settings.batchSize = 4
        settings.shards = 2
        settings.checkpointEvery = 1
        settings.evalMaxNewTokens = 48
        data.model = packageRoot.appendingPathComponent("models/demo").path
        data.calibrationLines = 8
        data.heldOutLines = 8
        data.evalCount = 8
    }

    func loop(out: String, fresh: Bool = false) throws -> PruneTuneLoop {
        let inputs = try LoopInputs.load(data, loop: settings, out: out)
        return try PruneTuneLoop(backend: LocalBackend(tokenizer: inputs.tokenizer), model: inputs.model, data: inputs.data,
                                 settings: settings, out: out, tokenizerSource: inputs.tokenizerSource, fresh: fresh,
                                 tokenizer: inputs.tokenizer)
    }

    /// Runs to the end; the final weights.
    func run(out: String) throws -> Data {
        #expect(try loop(out: out).runLoop { false })
        return try Data(contentsOf: URL(fileURLWithPath: out + "/final/model.safetensors"))
    }
}

func metrics(_ out: String) throws -> [PhaseRow] {
    let d = JSONDecoder()
    d.keyDecodingStrategy = .convertFromSnakeCase
    return try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map { try d.decode(PhaseRow.self, from: Data($0.utf8)) }
}

@Suite(.serialized) struct LoopTests {
    /// The probe's damage, and what the budget makes of it: a cut the probe does not see is
    /// harmless (no steps) only while the probe has questions to lose.
    @Test func aProbeAtItsFloorDoesNotMakeACutHarmless() {
        // The probe lost questions: its error rise, whatever the loss did.
        #expect(PruneTuneLoop.probeDamage(errorBefore: 0.2, errorAfter: 0.5, lossRise: 0.01) == 0.5 - 0.2)
        // It lost none and had room to: harmless (≤ 0), even when the loss rose.
        #expect(PruneTuneLoop.probeDamage(errorBefore: 0.1, errorAfter: 0.1, lossRise: 1.3) <= 0)
        #expect(PruneTuneLoop.probeDamage(errorBefore: 0.5, errorAfter: 0.4, lossRise: 0.2) < 0)
        // 6 % right (under the 10 % floor): no question to lose, the loss rose 1.28 nats — not harmless.
        let floored = PruneTuneLoop.probeDamage(errorBefore: 0.938, errorAfter: 0.938, lossRise: 1.28)
        #expect(floored > 0)
        // ... unless the loss did not rise either; and a floored probe that lost a question counts it.
        #expect(PruneTuneLoop.probeDamage(errorBefore: 0.938, errorAfter: 0.938, lossRise: -0.01) <= 0)
        #expect(PruneTuneLoop.probeDamage(errorBefore: 0.938, errorAfter: 0.969, lossRise: 0.5) == 0.969 - 0.938)
        // SmolLM2 at 30 %, round 6 of 8: 85 steps left, 48 kept for the last round; the two block
        // rounds after it are estimated from this one (as floored): the steps split, not 0 here.
        let share = Budget.damageShare(remaining: 85, roundsLeft: 3, damage: floored, expectedLater: [floored, floored], floor: 1,
                                       finalReserve: 48, harmlessGetsNone: true)
        #expect(share == 28)
        #expect(Budget.damageShare(remaining: 85, roundsLeft: 3, damage: 0, expectedLater: [0, 0], floor: 1,
                                   finalReserve: 48, harmlessGetsNone: true) == 0)
    }

    @Test func everyRoundShrinksTheModelAndTheBudgetAddsUp() throws {
        let out = temporaryDirectory("ptl-loop-local")
        _ = try ShortJob().run(out: out)
        let rows = try metrics(out)
        let evals = rows.filter { $0.phase == .eval }
        #expect(evals.map(\.round) == [0, 1, 2])
        #expect(evals.map(\.intermediate) == [512, 448, 448] && evals.map(\.layers) == [8, 8, 7])
        #expect(zip(evals, evals.dropFirst()).allSatisfy { $0.params > $1.params })
        #expect(evals.allSatisfy { $0.accuracy != nil && $0.loss != nil && ($0.decodeTokensPerSecond ?? 0) > 0 })
        // Every method gets tuneSteps × (PTL rounds) in all; each round at least one.
        let tunes = rows.filter { $0.phase == .tune }.compactMap(\.tuneSteps)
        #expect(tunes.reduce(0, +) == 4 && tunes.allSatisfy { $0 >= 1 })
        #expect(rows.map(\.phase) == [.eval, .stats, .prune, .tune, .eval, .stats, .prune, .tune, .eval])
        let final = try HFModel.load(directory: out + "/final")
        #expect(final.parameterCount == evals.last!.params)
    }

    @Test(arguments: [BudgetKind.equal, .damage])
    func theBudgetSplitsTheTotalOverTheRounds(_ kind: BudgetKind) throws {
        var job = ShortJob()
        job.settings.budget = kind
        job.settings.tuneSteps = 5
        let out = temporaryDirectory("ptl-loop-budget")
        _ = try job.run(out: out)
        let rows = try metrics(out)
        let steps = rows.filter { $0.phase == .tune }.compactMap(\.tuneSteps)
        #expect(steps.reduce(0, +) == 10)
        if kind == .equal { #expect(steps == [5, 5]) }
        // The damage budget gives the block round (by far the larger loss increase) more.
        if kind == .damage {
            let damage = rows.filter { $0.phase == .prune }.compactMap(\.loss)
            #expect(damage.count == 2 && steps[1] > steps[0])
        }
    }

    /// Half of every block's FFN cut at once: refitting down_proj by least squares on the
    /// calibration tokens leaves the held-out loss closer to the unpruned model's than slicing
    /// (measured on an AMD EPYC Zen 4: damage 0.0014 sliced, 0.0006 refitted).
    @Test func reconstructionLowersTheDamageOfANeuronCut() throws {
        var job = ShortJob()
        job.settings.target = 0.6
        job.settings.step = 0.5
        job.settings.removeLayers = 0
        job.settings.tuneSteps = 1
        job.settings.reconstruct = .ffn
        job.data.calibrationLines = 128
        job.data.heldOutLines = 64
        let out = temporaryDirectory("ptl-loop-reconstruct")
        let loop = try job.loop(out: out)
        _ = try loop.runLoop { false }
        let rows = try metrics(out)
        let before = try #require(rows.first { $0.phase == .eval }?.loss)
        let prune = try #require(rows.first { $0.phase == .prune })
        let detail = try #require(prune.detail)
        let sliced = try #require(Double(detail.split(separator: "held-out loss ").last!.prefix { $0 != " " }))
        let refitted = try #require(prune.loss)
        print("reconstruction: held-out loss \(before) → \(sliced) sliced, \(refitted) refitted")
        #expect(refitted - before < 0.75 * (sliced - before), "\(detail)")
    }

    /// --damage probe: each cut is judged by held-out questions answered before and after it —
    /// never the calibration questions, which reconstruction fits — and the budget still adds up.
    @Test func theProbeBudgetJudgesCutsByAnswers() throws {
        var job = ShortJob()
        job.settings.damage = .probe
        job.settings.tuneSteps = 5
        let out = temporaryDirectory("ptl-loop-probe")
        let inputs = try LoopInputs.load(job.data, loop: job.settings, out: out)
        #expect(inputs.data.probeLines.count == 8 && Set(inputs.data.probeLines).isDisjoint(with: inputs.data.calibrationLines))
        _ = try job.run(out: out)
        let rows = try metrics(out)
        let prunes = rows.filter { $0.phase == .prune }
        #expect(prunes.count == 2 && prunes.allSatisfy { $0.detail?.contains("probe (held-out questions) accuracy") == true })
        #expect(rows.filter { $0.phase == .tune }.compactMap(\.tuneSteps).reduce(0, +) == 10)
    }

    /// Plain, and with every recovery option (distillation, on-policy calibration with its trace
    /// phase, reconstruction, the probe budget): a run stopped anywhere resumes to the same bits.
    @Test(arguments: [false, true])
    func aStoppedRunResumesToTheSameModel(recovery: Bool) throws {
        var job = ShortJob()
        if recovery {
            job.settings.recover = .kdCE
            job.settings.calibration = .onPolicy
            job.settings.reconstruct = .ffn
            job.settings.damage = .probe
        }
        let straight = try job.run(out: temporaryDirectory("ptl-loop-straight"))
        // Stop at several points (mid-round, between phases), each time starting a new loop from the checkpoint.
        let out = temporaryDirectory("ptl-loop-resume")
        for stopAt in [3, 2, 4, 1] {
            let loop = try job.loop(out: out)
            var n = 0
            let done = try loop.runLoop { n += 1; return n > stopAt }
            #expect(!done)
            #expect(!FileManager.default.fileExists(atPath: out + "/final"))
        }
        #expect(try job.loop(out: out).runLoop { false })
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/final/model.safetensors")) == straight)
    }

    /// `--hidden-size`: the neuron round also removes hidden channels (the demo's 128 → 96), with
    /// every recovery option and the optimizer carried through the cut; the run shrinks to the
    /// plan's parameters, saves an HF model with an explicit head_dim, and a run stopped anywhere
    /// resumes to the same bits.
    @Test func hiddenChannelRoundsShrinkTheStreamAndResumeToTheSameModel() throws {
        var job = ShortJob()
        job.settings.target = 0.6
        job.settings.hiddenSize = 96
        job.settings.recover = .kd
        job.settings.calibration = .onPolicy
        job.settings.reconstruct = .ffn
        job.settings.damage = .probe
        job.settings.optimizer = .carry
        let straightOut = temporaryDirectory("ptl-loop-hidden")
        let straight = try job.run(out: straightOut)
        let rows = try metrics(straightOut)
        let prunes = rows.filter { $0.phase == .prune }
        #expect(prunes.count == 2)
        #expect(prunes.first?.detail?.contains("32 hidden channels") == true, "\(prunes.first?.detail ?? "")")
        let final = try HFModel.load(directory: straightOut + "/final")
        #expect(final.config.hiddenSize == 96 && final.config.headDim == 32 && final.config.intermediateSize == 448)
        #expect(final.config.numHiddenLayers == 7)
        #expect(Double(final.parameterCount) <= 0.6 * 2_070_656)
        #expect(rows.filter { $0.phase == .eval }.last?.params == final.parameterCount)
        let config = try String(contentsOfFile: straightOut + "/final/config.json", encoding: .utf8)
        #expect(config.contains("\"head_dim\" : 32") || config.contains("\"head_dim\": 32"), "\(config)")
        let out = temporaryDirectory("ptl-loop-hidden-resume")
        for stopAt in [2, 3, 1] {
            var n = 0
            #expect(try !job.loop(out: out).runLoop { n += 1; return n > stopAt })
        }
        #expect(try job.loop(out: out).runLoop { false })
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/final/model.safetensors")) == straight)
    }

    /// `--prune sparse` (issue 16): SparseGPT raises every linear layer's sparsity round by round
    /// (0.25 → 0.5 unstructured; 1:4 → 2:4), calibrated on the model's own traces; the masks only
    /// grow, tuning keeps every masked weight an exact zero, and the saved model has exactly the
    /// zeros the report and final/masks.safetensors say.
    @Test(arguments: ["0.5", "2:4"])
    func sparseRoundsRaiseTheSparsityAndTuningKeepsTheZeros(_ sparsity: String) throws {
        var job = ShortJob()
        job.settings.sparse = SparseSettings(sparsity: sparsity, blockSize: 32)
        job.settings.step = 0.25
        job.settings.calibration = .onPolicy
        let out = temporaryDirectory("ptl-loop-sparse")
        _ = try job.run(out: out)
        let rows = try metrics(out)
        let evals = rows.filter { $0.phase == .eval }
        #expect(evals.map(\.round) == [0, 1, 2])
        #expect(evals.allSatisfy { $0.layers == 8 && $0.intermediate == 512 && $0.meanGeneratedTokens != nil })
        let zeros = evals.compactMap(\.linearZeros)
        #expect(zeros.count == 3 && zeros[0] == 0 && abs(zeros[1] - 0.25) < 0.01 && abs(zeros[2] - 0.5) < 0.01, "\(zeros)")
        #expect(rows.filter { $0.phase == .tune }.compactMap(\.tuneSteps).reduce(0, +) == 4)
        let model = try HFModel.load(directory: out + "/final")
        let masks = try SparseMasks.read(path: out + "/final/masks.safetensors", model: model)
        let weights = model.parameters.array()
        var masked = 0
        for l in masks {
            let w = weights[l.offset..<(l.offset + l.mask.count)]
            #expect(zip(l.mask, w).allSatisfy { !$0 || $1 == 0 }, "\(l.name): a masked weight is not zero")
            masked += l.zeros
            #expect(abs(Double(l.zeros) / Double(l.mask.count) - 0.5) < 0.02, "\(l.name)")
            if sparsity == "2:4" {
                for row in 0..<l.rows {
                    for g in stride(from: 0, to: l.cols, by: 4) {
                        #expect((g..<(g + 4)).filter { l.mask[row * l.cols + $0] }.count == 2)
                    }
                }
            }
        }
        #expect(abs(Double(masked) / Double(SparseMasks.count(masks).total) - zeros[2]) < 1e-12)
        // The masks only grow: round 1's zeros are zeros at the end.
        let first = try HFModel.load(directory: out + "/rounds/round-01").parameters.array()
        for l in masks {
            for i in 0..<l.mask.count where first[l.offset + i] == 0 { #expect(l.mask[i], "\(l.name)[\(i)] was pruned in round 1, not at the end") }
        }
        let report = try String(contentsOfFile: out + "/report.md", encoding: .utf8)
        #expect(report.contains("Sparsity per layer") && report.contains("mean generated tokens") && report.contains("SparseGPT"))
    }

    @Test func aStoppedSparseRunResumesToTheSameModel() throws {
        var job = ShortJob()
        job.settings.sparse = SparseSettings(sparsity: "0.5", blockSize: 32)
        job.settings.step = 0.25
        job.settings.calibration = .onPolicy
        job.settings.optimizer = .carry
        let straight = try job.run(out: temporaryDirectory("ptl-sparse-straight"))
        let out = temporaryDirectory("ptl-sparse-resume")
        for stopAt in [3, 2, 4, 1] {
            var n = 0
            #expect(try !job.loop(out: out).runLoop { n += 1; return n > stopAt })
        }
        #expect(try job.loop(out: out).runLoop { false })
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/final/model.safetensors")) == straight)
        // A checkpoint without its masks (dropped from the manifest too, so its CRCs pass) is
        // refused, naming what is missing — a resumed run must not tune the zeros back.
        let damaged = temporaryDirectory("ptl-sparse-damaged")
        var n = 0
        #expect(try !job.loop(out: damaged).runLoop { n += 1; return n > 3 })
        let ck = damaged + "/checkpoint"
        try FileManager.default.removeItem(atPath: ck + "/masks.safetensors")
        try? FileManager.default.removeItem(atPath: damaged + "/.checkpoint.old")
        var manifest = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: ck + "/manifest.json"))) as? [String: Any])
        var files = try #require(manifest["files"] as? [String: Any])
        files["masks.safetensors"] = nil
        manifest["files"] = files
        try JSONSerialization.data(withJSONObject: manifest).write(to: URL(fileURLWithPath: ck + "/manifest.json"))
        do {
            _ = try job.loop(out: damaged)
            Issue.record("a sparse checkpoint without masks was resumed")
        } catch {
            #expect("\(error)".contains("no masks.safetensors"), "\(error)")
        }
    }

    /// `--tune grpo` and `cpt+grpo` (issue 17): the tune phase's steps are GRPO steps on the tuning
    /// questions (the KL to the round's starting model, checkpointed while the round tunes); every
    /// step's figures land in OUT/grpo.jsonl, and a run stopped anywhere resumes to the same bits.
    @Test(arguments: [TuneKind.grpo, .cptGRPO])
    func grpoTuningResumesToTheSameModel(_ tune: TuneKind) throws {
        var job = ShortJob()
        var g = GRPOTuneSettings()
        g.tune = tune
        g.promptsPerStep = 2
        g.rolloutsPerPrompt = 2
        g.learningRate = 1e-4
        job.settings.grpo = g
        let straightOut = temporaryDirectory("ptl-loop-grpo")
        let straight = try job.run(out: straightOut)
        let grpoRows = try String(contentsOfFile: straightOut + "/grpo.jsonl", encoding: .utf8).split(separator: "\n")
        // Every tune step (4 in all), or with cpt+grpo the second half of each round's.
        let perRound = try metrics(straightOut).filter { $0.phase == .tune }.compactMap(\.tuneSteps)
        #expect(perRound.reduce(0, +) == 4)
        #expect(grpoRows.count == (tune == .grpo ? 4 : perRound.reduce(0) { $0 + ($1 - $1 / 2) }), "\(grpoRows.count) GRPO steps for rounds of \(perRound)")
        #expect(grpoRows.allSatisfy { $0.contains("\"mean_reward\"") && $0.contains("\"round\"") })
        let out = temporaryDirectory("ptl-loop-grpo-resume")
        for stopAt in [3, 2, 4, 1] {
            var n = 0
            #expect(try !job.loop(out: out).runLoop { n += 1; return n > stopAt })
        }
        #expect(try job.loop(out: out).runLoop { false })
        #expect(try Data(contentsOf: URL(fileURLWithPath: out + "/final/model.safetensors")) == straight)
        #expect(try String(contentsOfFile: out + "/grpo.jsonl", encoding: .utf8).split(separator: "\n").count == grpoRows.count)
    }

    @Test func otherSettingsDoNotResumeAnotherRunsCheckpoint() throws {
        let out = temporaryDirectory("ptl-loop-settings")
        var n = 0
        #expect(try !ShortJob().loop(out: out).runLoop { n += 1; return n > 2 })
        var other = ShortJob()
        other.settings.seed = 7
        #expect(throws: LoopError.self) { try other.loop(out: out) }
        #expect(try other.loop(out: out, fresh: true).runLoop { false })
    }
}
