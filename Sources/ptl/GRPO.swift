import ArgumentParser
import Foundation
import PTLCluster
import PTLCommandLine
import PTLData
import PTLLoop
import PTLModel
import PTLTensor

/// `ptl grpo`: recovery (or plain tuning) by reinforcement learning, in this process.
struct GRPOCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "grpo",
        abstract: "Tune a model by GRPO on question/answer data: sampled completions, rewards for accuracy and format, a clipped objective with a KL to the start.",
        discussion: """
        Every step samples --rollouts-per-prompt completions of --prompts-per-step training questions
        (seeded per step, question and sample), scores them (--rewards, default accuracy:0.9,format:0.1;
        the answer extracted as ptl eval does), normalises each question's rewards to advantages
        (r − mean)/(std + 1e-6), and takes one AdamW step on the token-mean objective
        −min(ρA, clip(ρ, 1 − clip-low, 1 + clip-high)A) + β·KL_k3(π‖π_start). The data need only a
        question and a final answer ({"question", "answer": "#### 42"}). Writes OUT/metrics.jsonl
        (reward, accuracy and format rates, response length, KL, clip fraction per step; held-out
        accuracy every --eval-every steps), OUT/report.md, OUT/reward.png and OUT/final; resumable
        from OUT/checkpoint.
        """)

    @Option(help: "The policy to tune (HF directory or .gguf).")
    var model: String = "models/demo"
    @Option(help: "JSONL question/answer records to sample prompts from (default: the arithmetic task, seed 0).")
    var data: String?
    @Option(help: "JSONL held-out records (default: the arithmetic task's test split).")
    var evalData: String?
    @Option(help: "Held-out problems measured.")
    var evalCount: Int = 200
    @Option(help: "Optimizer steps.") var steps: Int = 100
    @Option(help: "Training questions per step.") var promptsPerStep: Int = 8
    @Option(help: "Completions sampled per question (the group whose rewards are normalised).") var rolloutsPerPrompt: Int = 8
    @Option(help: "Sampling temperature.") var temperature: Float = 1
    @Option(help: "Nucleus sampling: keep the smallest set of tokens whose probability reaches p.") var topP: Float = 1
    @Option(help: "Longest completion in tokens.") var maxNewTokens: Int = 96
    @Option(help: "Learning rate (constant after --warmup).") var lr: Float = 1e-5
    @Option(help: "Linear warm-up steps.") var warmup: Int = 0
    @Option(help: "KL penalty weight β to the starting model (0: none, no reference pass).") var klBeta: Float = 0.04
    @Option(help: "The ratio's lower clip ε_low (1 − ε_low).") var clipLow: Float = 0.2
    @Option(help: "The ratio's upper clip ε_high (1 + ε_high; DAPO's clip-higher).") var clipHigh: Float = 0.28
    @Option(help: "Reward functions and weights, e.g. accuracy:0.9,format:0.1.") var rewards: String = "accuracy:0.9,format:0.1"
    @Option(help: "Shards of every step's prompts (fixed by the job, not by the machine).") var shards: Int = 2
    @Option(help: "Seed of the prompt order and of the sampling.") var seed: UInt64 = 0
    @Option(help: "Measure held-out accuracy every K steps.") var evalEvery: Int = 25
    @Option(help: "Write a checkpoint every K steps.") var checkpointEvery: Int = 5
    @Option(help: "Matmul arithmetic: fp32 or bf16 (default: bf16 where the CPU has bf16 products).") var precision: Precision = .machineDefault
    @Option(help: "Compute threads (default: all cores).") var threads: Int?
    @Option(help: "Output directory.") var out: String = "out/grpo"
    @Flag(help: "Ignore an existing checkpoint and start over.") var fresh = false
    @OptionGroup(title: "Logging") var log: LogOptions

    func config() throws -> GRPOConfig {
        var c = GRPOConfig()
        c.steps = steps; c.grpo.promptsPerStep = promptsPerStep; c.grpo.rolloutsPerPrompt = rolloutsPerPrompt
        c.grpo.temperature = temperature; c.grpo.topP = topP; c.maxNewTokens = maxNewTokens; c.grpo.learningRate = lr; c.warmup = warmup
        c.grpo.beta = klBeta; c.grpo.clipLow = clipLow; c.grpo.clipHigh = clipHigh; c.shards = shards; c.seed = seed; c.evalEvery = evalEvery
        c.checkpointEvery = checkpointEvery; c.precision = precision
        do { c.grpo.rewards = try RewardSpec(parsing: rewards) } catch { throw ValidationError("\(error)") }
        do { try c.check() } catch { throw ValidationError("\(error)") }
        return c
    }

    func validate() throws {
        _ = try config()
        if evalCount < 2 { throw ValidationError("--eval-count must be at least 2") }
        if let threads, threads < 1 || threads > 1024 { throw ValidationError("--threads must be between 1 and 1024") }
    }

    func run() throws {
        ComputeThreads.set(threads ?? System.coreCount)
        let logger = log.logger("ptl")
        let c = try config()
        let start = try ModelSource.loadModel(model)
        let tokenizer = try ModelSource.loadTokenizer(model)
        let (train, eval) = try GRPOData.lines(data: data, evalData: evalData, evalCount: evalCount)
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let tokenizerDir = (out as NSString).appendingPathComponent("tokenizer")
        try ModelSource.writeTokenizerFiles(model, to: tokenizerDir)
        let backend = LocalBackend(tokenizer: tokenizer, precision: c.precision)
        let trainer = try GRPOTrainer(backend: backend, model: start, trainLines: train, evalLines: eval, config: c, out: out,
                                      tokenizerSource: tokenizerDir, fresh: fresh, logger: logger)
        installStopSignals { pruneStopRequested = true }
        guard try trainer.train(stop: { pruneStopRequested }) else {
            logger.info("stopped; run the same command again to resume from \(out)/checkpoint")
            return
        }
        let rows = trainer.rows
        if let first = rows.first?.evalAccuracy, let last = rows.last?.evalAccuracy {
            logger.info("\(String(format: "held-out accuracy %.1f%% → %.1f%% in %d steps; %@/report.md, %@/final", first * 100, last * 100, c.steps, out, out))")
        }
    }
}
