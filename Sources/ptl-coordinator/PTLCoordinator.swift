import ArgumentParser
import Foundation
import Logging
import PTLCluster
import PTLData
import PTLModel
import PTLPrune
import PTLTokenizer
import PTLTune

nonisolated(unsafe) var terminateRequested = false

@main
struct PTLCoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ptl-coordinator",
        abstract: "Runs a job over ptl-worker processes: the Prune–Tune Loop (default), its baselines, or plain training.",
        discussion: """
        --method ptl (default): round 0 evaluates the original model; every round then runs stats
        (activation statistics on calibration lines) → prune (the lowest-scoring FFN neurons of every
        block, or whole blocks) → tune (data-parallel continual pre-training on fresh lines) → eval
        (accuracy, held-out loss, decode speed) → checkpoint, until --target-params. --method
        prune-once / shortgpt are the baselines with the same data, total tune steps and target.
        Writes OUT/metrics.jsonl, OUT/report.md, OUT/accuracy_vs_size.png, OUT/summary.json,
        OUT/rounds/round-NN/ and OUT/final/ (plain HF directories).
        --method train: continual pre-training only (--steps).

        Work is split into --shards tasks per phase (independent of the worker count), reduced in
        shard order (bit-identical for any number of workers and any failures). OUT/checkpoint is
        written atomically; a restarted coordinator resumes from it; workers re-register by
        themselves. --local-workers N starts N ptl-worker processes on loopback.
        """)

    @Option(help: "ptl | prune-once | shortgpt | train.")
    var method: String = "ptl"

    @Option(help: "Fraction of the original parameters to end at or below.")
    var targetParams: Double = 0.5

    @Option(help: "Blocks PTL and Prune-Once delete (the FFN width shrinks until the target is met).")
    var removeLayers: Int = 1

    @Option(help: "Fraction of the original FFN width removed per neuron round.")
    var step: Double = 0.05

    @Option(help: "The FFN width stays a multiple of this.")
    var widthMultiple: Int = 32

    @Option(help: "Blocks removed per layer round.")
    var layersPerRound: Int = 1

    @Option(help: "neurons-first | layers-first | alternate.")
    var order: String = "neurons-first"

    @Option(help: "Neuron score: act-norm (E|a|·‖W_down[:,j]‖) | mean-abs | max-abs | mean-square.")
    var score: String = "act-norm"

    @Option(help: "Layer score: relative-change (E‖Δh‖/E‖h‖) | block-influence (ShortGPT).")
    var layerScore: String = "relative-change"

    @Option(help: "damage (each round's tune steps follow its held-out loss increase) | equal.")
    var budget: String = "damage"

    @Option(help: "With --budget damage: the fewest tune steps a round gets.")
    var minRoundSteps: Int = 1

    @Option(help: "cut (a block is deleted at once) | anneal (a doomed block's branches fall to 0 while tuning, then it is deleted).")
    var layerRemoval: String = "cut"

    @Option(help: "Rounds over which a doomed block is annealed.")
    var annealRounds: Int = 3

    @Option(help: "carry (one AdamW state across rounds, sliced with the weights) | reset.")
    var optimizer: String = "reset"

    @Option(help: "Tune steps per PTL round; every method gets this × the PTL round count in total.")
    var tuneSteps: Int = 20

    @Option(help: "Calibration lines for the stats phase.")
    var calibrationLines: Int = 128

    @Option(help: "Calibrate on: full (question + chain of thought) | answer.")
    var calibrateOn: String = "full"

    @Option(help: "Held-out lines for the loss (damage) measurement.")
    var heldoutLines: Int = 128

    @Option(help: "Eval problems (from --eval-data, else the task's test split / the end of --data).")
    var evalCount: Int = 500

    @Option(help: "Eval problems of the rounds in between (the original and the final model get --eval-count).")
    var roundEvalCount: Int = 200

    @Option(help: "JSONL eval set.")
    var evalData: String?

    @Option(help: "Largest answer length in tokens at eval.")
    var maxNewTokens: Int = 160

    @Option(help: "Endpoint to bind.")
    var bind: String = "tcp://127.0.0.1:5555"

    @Option(help: "The model to train (HF directory or .gguf).")
    var model: String = "models/demo"

    @Option(help: "JSONL training data (default: the arithmetic task, seed 0, generated in memory).")
    var data: String?

    @Option(help: "Output directory (checkpoint/, final/, metrics.jsonl).")
    var out: String = "out/cluster"

    @Option(help: "Optimizer steps (--method train).")
    var steps: Int = 20

    @Option(help: "Peak learning rate (per round with a warm-up and cosine decay in the loop).")
    var lr: Float = 3e-4

    @Option(help: "Lines per step.")
    var batchSize: Int = 16

    @Option(help: "Shards (micro-batches) per step: fixed by the job, not by the worker count.")
    var shards: Int = 4

    @Option(help: "Tokens kept of each line.")
    var seqLen: Int = 256

    @Option(help: "Seed of the line order (and of which tuning lines each step sees).")
    var seed: UInt64 = 0

    @Option(help: "Write a checkpoint every K steps.")
    var checkpointEvery: Int = 10

    @Option(help: "Start this many ptl-worker processes on loopback.")
    var localWorkers: Int = 0

    @Option(help: "Threads of each local worker.")
    var threadsPerWorker: Int = 1

    @Option(help: "Heartbeat interval in seconds.")
    var heartbeat: Double = 1

    @Option(help: "Heartbeats a worker may miss before it is dropped and its task requeued.")
    var liveness: Double = 10

    @Option(help: "Seconds a task may run before it is leased to another worker.")
    var lease: Double = 600

    @Option(help: "Largest tensor frame accepted from a worker, in bytes (bigger messages are refused).")
    var maxTensorBytes: Int = 1 << 31

    @Option(help: "How a worker holding the previous model version gets the next: auto (as an update — the XOR of the two versions, about half the bytes — to workers on other hosts, the whole weights over loopback), always (updates), never (the whole weights).")
    var modelUpdates: String = "auto"

    @Option(help: "Local workers keep their last model version under OUT/workers/ID (a restarted worker need not fetch it).")
    var localWorkerCache = true

    @Option(help: "Fault injection (tests): the local workers stage faults with this seed (see ptl-worker --fault-seed).")
    var workerFaultSeed: UInt64?

    @Option(help: "Fault injection: the local workers' fault rate.")
    var workerFaultRate: Double = 0.3

    @Option(help: "Fault injection: the local workers' delay before computing, ms.")
    var workerFaultDelayMs: Int = 0

    @Option(help: "Fault injection (tests): SIGKILL this process in the middle of its Nth checkpoint write.")
    var faultKillInCheckpoint: Int?

    @Flag(help: "Ignore an existing checkpoint and start over.")
    var fresh = false

    @Option(help: "CURVE: a file holding the coordinator's secret key (Z85, from `ptl keys generate`). Enables encryption.")
    var curveSecretKey: String?

    @Option(help: "CURVE: a file of worker public keys (Z85, one a line) allowed to connect.")
    var allowKeys: String?

    @Option(help: "Log records on standard error: text (a line each) | json (an object a line, with the metadata as fields). Local workers log the same way.")
    var logFormat: String = "text"

    @Option(help: "Least level logged: trace | debug | info | notice | warning | error | critical.")
    var logLevel: String = "info"

    @Option(help: "Off a terminal, the per-phase status (tasks done/total, workers alive, tokens/s) is logged at most every this many seconds (0: on every change). On a terminal it is one line redrawn in place.")
    var statusInterval: Double = 10

    func validate() throws {
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
        if shards < 1 || shards > batchSize { throw ValidationError("--shards must be between 1 and --batch-size") }
        if localWorkers < 0 { throw ValidationError("--local-workers must not be negative") }
        if ModelUpdates(rawValue: modelUpdates) == nil {
            throw ValidationError("--model-updates must be one of \(ModelUpdates.allCases.map(\.rawValue).joined(separator: ", ")), not '\(modelUpdates)'")
        }
        if checkpointEvery < 1 { throw ValidationError("--checkpoint-every must be at least 1") }
        if method != "train" && PruneMethod(rawValue: method) == nil { throw ValidationError("--method must be ptl, prune-once, shortgpt or train") }
        if PruneOrder(rawValue: order) == nil { throw ValidationError("--order must be neurons-first, layers-first or alternate") }
        if NeuronScore(rawValue: score) == nil { throw ValidationError("--score must be act-norm, mean-abs, max-abs or mean-square") }
        if LayerScore(rawValue: layerScore) == nil { throw ValidationError("--layer-score must be relative-change or block-influence") }
        if BudgetKind(rawValue: budget) == nil { throw ValidationError("--budget must be damage or equal") }
        if LayerRemoval(rawValue: layerRemoval) == nil { throw ValidationError("--layer-removal must be anneal or cut") }
        if OptimizerCarry(rawValue: optimizer) == nil { throw ValidationError("--optimizer must be carry or reset") }
        if !["full", "answer"].contains(calibrateOn) { throw ValidationError("--calibrate-on must be full or answer") }
        if !(targetParams > 0 && targetParams < 1) { throw ValidationError("--target-params must be between 0 and 1") }
        if !(step > 0 && step < 1) { throw ValidationError("--step must be between 0 and 1") }
        if tuneSteps < 1 || calibrationLines < 1 || heldoutLines < 1 || evalCount < 1 {
            throw ValidationError("--tune-steps, --calibration-lines, --heldout-lines and --eval-count must be at least 1")
        }
        if !(liveness >= 1) || !(lease > 0) || maxTensorBytes < 1024 { throw ValidationError("--liveness must be ≥ 1, --lease > 0, --max-tensor-bytes ≥ 1024") }
        if (curveSecretKey == nil) != (allowKeys == nil) { throw ValidationError("--curve-secret-key and --allow-keys go together") }
        if let problem = Logger.ptl("coordinator", format: logFormat, level: logLevel).problem { throw ValidationError(problem) }
        if !(statusInterval >= 0) { throw ValidationError("--status-interval must not be negative") }
    }

    var logger: Logger { Logger.ptl("coordinator", format: logFormat, level: logLevel).logger! }

    func say(_ s: String) { logger.info("\(s)") }

    func run() throws {
        installStopSignals { terminateRequested = true }
        // tokenizer.json is read (or, for GGUF, rebuilt) once: the loop also sends its text to workers.
        let tokenizerJSON = try ModelSource.tokenizerJSON(model)
        let tokenizer = try Tokenizer(data: Data(tokenizerJSON.utf8), source: "\(model) tokenizer")
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        // Data and models are prepared before any worker starts: a large corpus or model takes
        // long enough to load that waiting workers would think the coordinator gone.
        let job: (Coordinator, StatusLine) throws -> Void = method == "train"
            ? try prepareTrain(tokenizer: tokenizer)
            : try prepareLoop(tokenizer: tokenizer, tokenizerJSON: tokenizerJSON)
        let context = try ZMQContext()
        var cs = CoordinatorSettings()
        cs.heartbeatInterval = heartbeat
        cs.liveness = liveness
        cs.leaseSeconds = lease
        cs.maxTensorBytes = maxTensorBytes
        cs.modelUpdates = ModelUpdates(rawValue: modelUpdates)!
        Checkpoint.killDuringWrite = faultKillInCheckpoint
        var authenticator: CurveAuthenticator? = nil
        var localKey: (pub: String, secret: String)? = nil
        if let curveSecretKey, let allowKeys {
            let secret = try readKey(curveSecretKey)
            var allowed = try String(contentsOfFile: allowKeys, encoding: .utf8).split(whereSeparator: \.isNewline)
                .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
            if localWorkers > 0 {
                let k = try CurveKeys.generate()
                localKey = (k.publicKey, k.secretKey)
                allowed.append(k.publicKey)
            }
            authenticator = try CurveAuthenticator(context: context, allowedPublicKeys: allowed)
            authenticator?.logger = logger
            cs.curveSecretKey = secret
        }
        defer { authenticator?.stop() }
        let coordinator = try Coordinator(context: context, bind: bind, settings: cs)
        coordinator.logger = logger
        coordinator.shouldStop = { terminateRequested }
        let status = StatusLine(logger: logger, interval: statusInterval)
        defer { status.finish() }
        coordinator.onProgress = { status.show($0) }
        say("bound \(coordinator.endpoint)")
        // The endpoint actually bound (a port 0 or * bind picks one), for scripts and tests.
        try Data((coordinator.endpoint + "\n").utf8).write(to: URL(fileURLWithPath: out).appendingPathComponent("endpoint"), options: .atomic)
        let workerExe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("ptl-worker")
        let keyDir = URL(fileURLWithPath: out).appendingPathComponent("keys")
        if let localKey, let curveSecretKey {
            try FileManager.default.createDirectory(at: keyDir, withIntermediateDirectories: true)
            try writeKey(localKey.secret, to: keyDir.appendingPathComponent("local-worker.key").path)
            try writeKey(try CurveKeys.publicKey(fromSecret: try readKey(curveSecretKey)), to: keyDir.appendingPathComponent("coordinator.pub").path)
        }
        var arguments: [[String]] = []
        for i in 0..<localWorkers {
            var a = ["--connect", coordinator.endpoint, "--threads", "\(threadsPerWorker)", "--id", "local-\(i)", "--heartbeat", "\(heartbeat)",
                     "--parent-pid", "\(getpid())", "--log-format", logFormat, "--log-level", logLevel]
            if localWorkerCache { a += ["--cache", URL(fileURLWithPath: out).appendingPathComponent("workers/local-\(i)").path] }
            if localKey != nil {
                a += ["--curve-server-key", keyDir.appendingPathComponent("coordinator.pub").path,
                      "--curve-secret-key", keyDir.appendingPathComponent("local-worker.key").path]
            }
            if let workerFaultSeed {
                a += ["--fault-seed", "\(workerFaultSeed)", "--fault-rate", "\(workerFaultRate)", "--fault-delay-ms", "\(workerFaultDelayMs)"]
            }
            arguments.append(a)
        }
        let supervisor = LocalWorkers(executable: workerExe, arguments: arguments, logger: logger)
        defer { supervisor.stopAll() }
        try supervisor.startAll()
        // A local worker that dies is started again, as the compose file's restart policy does.
        coordinator.onPump = { if !terminateRequested { supervisor.restartDead() } }
        try job(coordinator, status)
    }

    /// --method train: continual pre-training over the cluster (data, model and checkpoint
    /// loaded now; the returned job trains).
    func prepareTrain(tokenizer: Tokenizer) throws -> (Coordinator, StatusLine) throws -> Void {
        let records: [CorpusRecord]
        if let data {
            records = try Corpus.load(path: data).records
        } else {
            let task = try ArithmeticTask()
            records = (0..<20000).map { i in let p = task.problem(seed: 0, index: i); return .qa(question: p.question, answer: p.answer) }
        }
        let sequences = records.map { Array(tokenizer.encode(PromptTemplate.standard.render($0)).prefix(seqLen)) }
        var settings = TrainingSettings(steps: steps, batchSize: batchSize, learningRate: lr)
        settings.seed = seed
        settings.warmup = min(steps / 10, 100)
        let checkpointDir = (out as NSString).appendingPathComponent("checkpoint")
        var start: (Model, AdamW, Checkpoint.State)? = nil
        var ledger: [LedgerEntry] = []
        if !fresh, let found = try Checkpoint.newest(checkpointDir, logger: logger) {
            start = try Checkpoint.load(from: found, settings: settings.adamW)
            ledger = try LedgerEntry.parse(Data(contentsOf: URL(fileURLWithPath: found).appendingPathComponent("ledger.jsonl")))
            say("resuming from \(found) at step \(start!.2.step)")
        }
        let m = try start?.0 ?? ModelSource.loadModel(model)
        say("\(sequences.count) lines, \(steps) steps of \(batchSize) lines in \(shards) shards")
        return { coordinator, status in try train(coordinator: coordinator, status: status, model: m, sequences: sequences, settings: settings,
                                                  start: start, ledger: ledger) }
    }

    func train(coordinator: Coordinator, status: StatusLine, model m: Model, sequences: [[Int]], settings: TrainingSettings,
               start: (Model, AdamW, Checkpoint.State)?, ledger: [LedgerEntry]) throws {
        let checkpointDir = (out as NSString).appendingPathComponent("checkpoint")
        let trainer = try DistributedTrainer(coordinator: coordinator, model: m, sequences: sequences, settings: settings, shards: shards)
        if let (_, opt, state) = start { trainer.resume(optimizer: opt, step: state.step, ledger: ledger) }
        let metricsURL = URL(fileURLWithPath: out).appendingPathComponent("metrics.jsonl")
        if !FileManager.default.fileExists(atPath: metricsURL.path) { FileManager.default.createFile(atPath: metricsURL.path, contents: nil) }
        let metrics = try FileHandle(forWritingTo: metricsURL)
        metrics.seekToEndOfFile()
        let source = ModelSource.isGGUF(model) ? nil : model
        func save() throws {
            try Checkpoint.save(model: m, optimizer: trainer.optimizer,
                                state: Checkpoint.State(step: trainer.step, optimizerStep: trainer.optimizer.step, run: "run"),
                                to: checkpointDir, copyTokenizerFrom: source, extraFiles: ["ledger.jsonl": LedgerEntry.jsonl(trainer.ledger)])
        }
        while trainer.step < steps && !terminateRequested {
            let t0 = Date()
            status.context = "train step \(trainer.step + 1)/\(steps)"
            let r: (loss: Double, gradNorm: Double, tokens: Int)
            do { r = try trainer.runStep() } catch is Interrupted {
                try save()
                break
            }
            var row: [String: Any] = ["step": trainer.step, "loss": r.loss, "grad_norm": r.gradNorm, "tokens": r.tokens,
                                      "workers": coordinator.scheduler.workers.count, "seconds": Date().timeIntervalSince(t0)]
            for (k, v) in coordinator.counters { row[k] = v }
            let t = coordinator.lastStepTiming
            row["coordinator_seconds"] = t.coordinatorBusy
            row["profile"] = coordinator.profile
            row["timing"] = ["publish": t.publish, "phase": t.phase, "idle": t.idle, "reduce": t.reduce, "update": t.update,
                             "worker_compute": t.workerCompute]
            metrics.write(try JSONSerialization.data(withJSONObject: row, options: [.sortedKeys]) + Data("\n".utf8))
            logger.info("\(String(format: "step %d/%d loss %.4f (%d workers)", trainer.step, steps, r.loss, coordinator.scheduler.workers.count))",
                        metadata: ["step": "\(trainer.step)", "loss": .stringConvertible(r.loss), "grad_norm": .stringConvertible(r.gradNorm),
                                   "tokens": "\(r.tokens)", "workers": "\(coordinator.scheduler.workers.count)",
                                   "seconds": .stringConvertible(Date().timeIntervalSince(t0))])
            if trainer.step % checkpointEvery == 0 || trainer.step == steps || terminateRequested { try save() }
        }
        if terminateRequested { say("terminated after step \(trainer.step); checkpoint written"); return }
        let final = (out as NSString).appendingPathComponent("final")
        try HFModel.save(m, to: final, copyFrom: source)
        try LedgerEntry.jsonl(trainer.ledger).write(to: URL(fileURLWithPath: out).appendingPathComponent("ledger.jsonl"), options: .atomic)
        say("wrote \(final) and \(out)/ledger.jsonl (\(trainer.ledger.count) applied results)")
    }

    /// The Prune–Tune Loop (or a baseline) over the cluster.
    func prepareLoop(tokenizer: Tokenizer, tokenizerJSON: String) throws -> (Coordinator, StatusLine) throws -> Void {
        var ls = LoopSettings()
        ls.method = PruneMethod(rawValue: method)!
        ls.target = targetParams
        ls.removeLayers = removeLayers
        ls.step = step
        ls.widthMultiple = widthMultiple
        ls.layersPerRound = layersPerRound
        ls.order = PruneOrder(rawValue: order)!
        ls.neuronScore = NeuronScore(rawValue: score)!
        ls.layerScore = LayerScore(rawValue: layerScore)!
        ls.budget = BudgetKind(rawValue: budget)!
        ls.layerRemoval = LayerRemoval(rawValue: layerRemoval)!
        ls.minRoundSteps = minRoundSteps
        ls.annealRounds = annealRounds
        ls.optimizer = OptimizerCarry(rawValue: optimizer)!
        ls.tuneSteps = tuneSteps
        ls.learningRate = lr
        ls.batchSize = batchSize
        ls.shards = shards
        ls.seed = seed
        ls.checkpointEvery = checkpointEvery
        ls.evalMaxNewTokens = maxNewTokens
        ls.roundEvalCount = roundEvalCount
        let start = try ModelSource.loadModel(model)
        // The PTL plan fixes the total tune budget of every method; enough fresh lines for it.
        let ptlRounds = try PrunePlan.make(config: start.config, method: .ptl, target: targetParams, removeLayers: removeLayers, step: step,
                                           widthMultiple: widthMultiple, layersPerRound: layersPerRound, order: ls.order).rounds.count
        let needed = tuneSteps * ptlRounds * batchSize
        let template = PromptTemplate.standard
        func encode(_ r: CorpusRecord) -> [Int] { Array(tokenizer.encode(template.render(r)).prefix(seqLen)) }
        func calib(_ r: CorpusRecord) -> [Int] {
            if calibrateOn == "answer", case .qa(_, let a) = r { return Array(tokenizer.encode(a).prefix(seqLen)) }
            return encode(r)
        }
        var tune: [CorpusRecord], calibration: [CorpusRecord], heldOut: [CorpusRecord], eval: [CorpusRecord]
        if let data {
            var records = try Corpus.load(path: data).records
            if let evalData { eval = Array(try Corpus.load(path: evalData).records.prefix(evalCount)) } else {
                eval = Array(records.suffix(evalCount)); records.removeLast(eval.count)
            }
            calibration = Array(records.suffix(calibrationLines)); records.removeLast(calibration.count)
            heldOut = Array(records.suffix(heldoutLines)); records.removeLast(heldOut.count)
            tune = records
        } else {
            // The shipped task: fresh problems of other seeds than the demo model was trained on
            // (seed 0); the eval set is the recipe's held-out test split.
            let task = try ArithmeticTask()
            func problems(_ seed: UInt64, _ n: Int) -> [CorpusRecord] {
                (0..<n).map { let p = task.problem(seed: seed, index: $0); return .qa(question: p.question, answer: p.answer) }
            }
            tune = problems(1, needed)
            calibration = problems(2, calibrationLines)
            heldOut = problems(3, heldoutLines)
            eval = problems(ArithmeticTask.testSeed(0), evalCount)
            if let evalData { eval = Array(try Corpus.load(path: evalData).records.prefix(evalCount)) }
        }
        let evalLines = try eval.map { r -> String in
            guard case .qa(let q, let a) = r else { throw ValidationError("eval records need a question and an answer") }
            return String(decoding: try JSONSerialization.data(withJSONObject: ["question": q, "answer": a], options: [.sortedKeys]), as: UTF8.self)
        }
        let loopData = LoopData(tune: tune.map(encode), calibration: calibration.map(calib), heldOut: heldOut.map(encode),
                                evalLines: evalLines, tokenizerJSON: tokenizerJSON)
        var source = model
        if ModelSource.isGGUF(model) {
            source = (out as NSString).appendingPathComponent("tokenizer")
            try ModelSource.writeTokenizerFiles(model, to: source)
        }
        let savedSource = source
        return { coordinator, status in
            let loop = try PruneTuneLoop(coordinator: coordinator, model: start, data: loopData, settings: ls, out: out,
                                         tokenizerSource: savedSource, fresh: fresh)
            loop.progress = { round, rounds, activity, _ in status.context = "round \(round)/\(rounds) \(activity)" }
            say("\(ls.method.rawValue): \(loop.rounds) round(s), \(tune.count) tuning lines, \(calibration.count) calibration, \(heldOut.count) held-out, \(eval.count) eval")
            let finished: Bool
            do { finished = try loop.runLoop { terminateRequested } } catch is Interrupted { finished = false }
            status.finish()
            if !finished { say("stopped; checkpoint written to \(out)/checkpoint — run the same command to resume"); return }
            say("done: \(out)/report.md, \(out)/final")
        }
    }
}

/// The local worker processes: started together, restarted when one dies, stopped at exit.
final class LocalWorkers {
    let executable: URL
    let arguments: [[String]]
    let logger: Logger
    var processes: [Process?]
    private(set) var restarts = 0

    init(executable: URL, arguments: [[String]], logger: Logger) {
        self.executable = executable
        self.arguments = arguments
        self.logger = logger
        processes = Array(repeating: nil, count: arguments.count)
    }

    func start(_ i: Int) throws {
        let p = Process()
        p.executableURL = executable
        p.arguments = arguments[i]
        try p.run()
        processes[i] = p
    }

    func startAll() throws { for i in arguments.indices { try start(i) } }

    func restartDead() {
        for (i, p) in processes.enumerated() where p.map({ !$0.isRunning }) ?? false {
            logger.warning("local worker \(i) exited (status \(p!.terminationStatus)): starting it again",
                           metadata: ["worker": "local-\(i)", "status": "\(p!.terminationStatus)"])
            restarts += 1
            do { try start(i) } catch { logger.error("could not restart local worker \(i): \(error)", metadata: ["worker": "local-\(i)"]) }
        }
    }

    func stopAll() {
        for case let p? in processes where p.isRunning { p.terminate() }
        for case let p? in processes { p.waitUntilExit() }
    }
}

/// The first line of a key file (Z85).
func readKey(_ path: String) throws -> String {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8),
          let line = text.split(whereSeparator: \.isNewline).first.map({ $0.trimmingCharacters(in: .whitespaces) }),
          line.utf8.count == 40 else {
        throw ValidationError("\(path): expected a 40-character Z85 CURVE key")
    }
    return line
}

/// Writes a key file readable by its owner only.
func writeKey(_ key: String, to path: String) throws {
    FileManager.default.createFile(atPath: path, contents: Data((key + "\n").utf8), attributes: [.posixPermissions: 0o600])
}
