import Foundation
import Logging
import PTLLoop

/// The loop run both `ptl prune` and `ptl-coordinator` make: the same inputs, settings, outputs
/// and resume rules, over the backend each brings.
public struct LoopRun {
    public var inputs: LoopInputs
    public var settings: LoopSettings
    public var out: String
    public var fresh: Bool
    public var logger: Logger
    /// The run's name in task keys and checkpoints.
    public var runName: String
    /// `--export-gguf`: the type of OUT/final/model-TYPE.gguf, or nil.
    public var exportGGUF: String?

    /// Loads the model and the data (before any worker starts: a large corpus or model takes
    /// long enough to load that waiting workers would think the coordinator gone) and writes
    /// OUT/config.yaml, the recipe of this run.
    public init(loop: LoopOptions, data: LoopDataOptions, run: RunOptions, command: Any, commandName: String, logger: Logger,
                runName: String = "ptl") throws {
        self.runName = runName
        settings = try loop.settings()
        out = run.out
        fresh = run.fresh
        exportGGUF = run.exportGguf
        self.logger = logger
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let recipe = Recipe.yaml(of: command, header: "The settings of a \(commandName) run (every option, defaults included).\nRun it again: \(commandName) --config \(out)/config.yaml --out OTHER")
        try Data(recipe.utf8).write(to: URL(fileURLWithPath: out).appendingPathComponent("config.yaml"), options: .atomic)
        inputs = try LoopInputs.load(data.settings, loop: settings, out: out)
    }

    /// Runs the loop over `backend` until done or `stop()`; true when done.
    @discardableResult
    public func run(backend: ComputeBackend, stop: @escaping () -> Bool, progress: @escaping (String) -> Void = { _ in }) throws -> Bool {
        let loop = try PruneTuneLoop(backend: backend, model: inputs.model, data: inputs.data, settings: settings, out: out,
                                     tokenizerSource: inputs.tokenizerSource, fresh: fresh, teacher: inputs.teacher,
                                     tokenizer: inputs.tokenizer, logger: logger)
        loop.run = runName
        loop.progress = { round, rounds, activity, _ in progress("round \(round)/\(rounds) \(activity)") }
        let d = inputs.data
        logger.info("\(settings.method.rawValue): \(loop.rounds) round(s), \(d.tune.count) tuning lines, \(d.calibration.count) calibration, \(d.heldOut.count) held-out, \(d.evalLines.count) eval")
        let finished: Bool
        do { finished = try loop.runLoop(stop: stop) } catch is Interrupted { finished = false }
        if !finished { logger.info("stopped; checkpoint written to \(out)/checkpoint — run the same command to resume"); return false }
        try FinalExport.gguf(exportGGUF, out: out, logger: logger)
        logger.info("done: \(out)/report.md, \(out)/final")
        return true
    }
}
