import ArgumentParser
import Foundation
import Logging
import PTLCluster
import PTLCommandLine
import PTLLoop
import PTLTensor

nonisolated(unsafe) var pruneStopRequested = false

/// `ptl prune`: the main job in this process — the options, recipe files and outputs of
/// `ptl-coordinator`, no sockets, the same final model bit for bit.
struct Prune: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compress a model by the Prune–Tune Loop (or a baseline) in this process.",
        discussion: """
        Round 0 evaluates the original model; every round then runs stats → prune → tune → eval →
        checkpoint until --target-params. The same job as ptl-coordinator (same options, recipe
        files, outputs and final model, bit for bit), on this machine's threads instead of workers.
        Writes OUT/config.yaml (the recipe of this run: `ptl prune --config OUT/config.yaml` runs it
        again), OUT/report.md, OUT/metrics.jsonl, OUT/accuracy_vs_size.png, OUT/summary.json,
        OUT/rounds/round-NN/ and OUT/final/. SIGTERM/SIGINT checkpoint and stop; the same command resumes.
        """)

    @OptionGroup(title: "The loop") var loop: LoopOptions
    @OptionGroup(title: "Model and data") var data: LoopDataOptions
    @OptionGroup(title: "The run") var output: RunOptions
    @OptionGroup(title: "Logging") var log: LogOptions

    @Option(help: "Compute threads (default: all cores).")
    var threads: Int?

    func validate() throws {
        if loop.method == .train { throw ValidationError("--method train is ptl-coordinator's (or `ptl train`); ptl prune runs ptl, prune-once or shortgpt") }
        if let threads, threads < 1 || threads > 1024 { throw ValidationError("--threads must be between 1 and 1024") }
    }

    func run() throws {
        ComputeThreads.set(threads ?? System.coreCount)
        installStopSignals { pruneStopRequested = true }
        let logger = log.logger("ptl")
        let job = try LoopRun(loop: loop, data: data, run: output, command: self, commandName: "ptl prune", logger: logger)
        try job.run(backend: LocalBackend(tokenizer: job.inputs.tokenizer), stop: { pruneStopRequested })
    }
}
