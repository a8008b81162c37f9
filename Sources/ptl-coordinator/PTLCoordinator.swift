import ArgumentParser
import Foundation
import PTLCluster
import PTLData
import PTLModel
import PTLTokenizer
import PTLTune

nonisolated(unsafe) var terminateRequested = false

@main
struct PTLCoordinatorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ptl-coordinator",
        abstract: "Runs a job over ptl-worker processes: data-parallel continual pre-training (grad phases).",
        discussion: """
        Splits each step's batch into --shards micro-batches (independent of the worker count), leases
        them to workers, reduces the gradients in shard order (bit-identical for any number of
        workers and any failures), updates the weights, and checkpoints OUT/checkpoint atomically
        every --checkpoint-every steps. A restarted coordinator resumes from the checkpoint; workers
        re-register by themselves. --local-workers N starts N ptl-worker processes on loopback.
        """)

    @Option(help: "Endpoint to bind.")
    var bind: String = "tcp://127.0.0.1:5555"

    @Option(help: "The model to train (HF directory or .gguf).")
    var model: String = "models/demo"

    @Option(help: "JSONL training data (default: the arithmetic task, seed 0, generated in memory).")
    var data: String?

    @Option(help: "Output directory (checkpoint/, final/, metrics.jsonl).")
    var out: String = "out/cluster"

    @Option(help: "Optimizer steps.")
    var steps: Int = 20

    @Option(help: "Peak learning rate.")
    var lr: Float = 3e-4

    @Option(help: "Lines per step.")
    var batchSize: Int = 16

    @Option(help: "Shards (micro-batches) per step: fixed by the job, not by the worker count.")
    var shards: Int = 4

    @Option(help: "Tokens kept of each line.")
    var seqLen: Int = 256

    @Option(help: "Seed of the line order.")
    var seed: UInt64 = 0

    @Option(help: "Write a checkpoint every K steps.")
    var checkpointEvery: Int = 5

    @Option(help: "Start this many ptl-worker processes on loopback.")
    var localWorkers: Int = 0

    @Option(help: "Threads of each local worker.")
    var threadsPerWorker: Int = 1

    @Option(help: "Heartbeat interval in seconds.")
    var heartbeat: Double = 1

    @Flag(help: "Ignore an existing checkpoint and start over.")
    var fresh = false

    @Option(help: "CURVE: a file holding the coordinator's secret key (Z85, from `ptl keys generate`). Enables encryption.")
    var curveSecretKey: String?

    @Option(help: "CURVE: a file of worker public keys (Z85, one a line) allowed to connect.")
    var allowKeys: String?

    func validate() throws {
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
        if shards < 1 || shards > batchSize { throw ValidationError("--shards must be between 1 and --batch-size") }
        if localWorkers < 0 { throw ValidationError("--local-workers must not be negative") }
        if checkpointEvery < 1 { throw ValidationError("--checkpoint-every must be at least 1") }
        if (curveSecretKey == nil) != (allowKeys == nil) { throw ValidationError("--curve-secret-key and --allow-keys go together") }
    }

    func say(_ s: String) { FileHandle.standardError.write(Data("[coordinator] \(s)\n".utf8)) }

    func run() throws {
        installStopSignals { terminateRequested = true }
        let tokenizer = try ModelSource.loadTokenizer(model)
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
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        var start: (Model, AdamW, Checkpoint.State)? = nil
        if !fresh && FileManager.default.fileExists(atPath: (checkpointDir as NSString).appendingPathComponent("state.json")) {
            start = try Checkpoint.load(from: checkpointDir, settings: settings.adamW)
            say("resuming from \(checkpointDir) at step \(start!.2.step)")
        }
        let m = try start?.0 ?? ModelSource.loadModel(model)
        let context = try ZMQContext()
        var cs = CoordinatorSettings()
        cs.heartbeatInterval = heartbeat
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
            authenticator?.log = { s in FileHandle.standardError.write(Data("[coordinator] \(s)\n".utf8)) }
            cs.curveSecretKey = secret
        }
        defer { authenticator?.stop() }
        let coordinator = try Coordinator(context: context, bind: bind, settings: cs)
        coordinator.log = { say($0) }
        say("bound \(coordinator.endpoint); \(sequences.count) lines, \(steps) steps of \(batchSize) lines in \(shards) shards")
        var children: [Process] = []
        defer {
            for c in children where c.isRunning { c.terminate() }
            for c in children { c.waitUntilExit() }
        }
        let workerExe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("ptl-worker")
        let keyDir = URL(fileURLWithPath: out).appendingPathComponent("keys")
        if let localKey, let curveSecretKey {
            try FileManager.default.createDirectory(at: keyDir, withIntermediateDirectories: true)
            try writeKey(localKey.secret, to: keyDir.appendingPathComponent("local-worker.key").path)
            try writeKey(try CurveKeys.publicKey(fromSecret: try readKey(curveSecretKey)), to: keyDir.appendingPathComponent("coordinator.pub").path)
        }
        for i in 0..<localWorkers {
            let p = Process()
            p.executableURL = workerExe
            p.arguments = ["--connect", coordinator.endpoint, "--threads", "\(threadsPerWorker)", "--id", "local-\(i)", "--heartbeat", "\(heartbeat)",
                           "--parent-pid", "\(getpid())"]
            if localKey != nil {
                p.arguments! += ["--curve-server-key", keyDir.appendingPathComponent("coordinator.pub").path,
                                 "--curve-secret-key", keyDir.appendingPathComponent("local-worker.key").path]
            }
            try p.run()
            children.append(p)
        }
        let trainer = try DistributedTrainer(coordinator: coordinator, model: m, sequences: sequences, settings: settings, shards: shards)
        if let (_, opt, state) = start { trainer.resume(optimizer: opt, step: state.step) }
        let metricsURL = URL(fileURLWithPath: out).appendingPathComponent("metrics.jsonl")
        if !FileManager.default.fileExists(atPath: metricsURL.path) { FileManager.default.createFile(atPath: metricsURL.path, contents: nil) }
        let metrics = try FileHandle(forWritingTo: metricsURL)
        metrics.seekToEndOfFile()
        let source = ModelSource.isGGUF(model) ? nil : model
        while trainer.step < steps && !terminateRequested {
            let t0 = Date()
            let r = try trainer.runStep()
            let line = String(format: "{\"step\":%d,\"loss\":%.6f,\"grad_norm\":%.6f,\"tokens\":%d,\"workers\":%d,\"seconds\":%.3f,\"requeued\":%d,\"dropped_workers\":%d,\"rejected\":%d}\n",
                              trainer.step, r.loss, r.gradNorm, r.tokens, coordinator.scheduler.workers.count, Date().timeIntervalSince(t0),
                              coordinator.scheduler.requeued, coordinator.scheduler.expiredWorkers, coordinator.rejected.values.reduce(0, +))
            metrics.write(Data(line.utf8))
            say(String(format: "step %d/%d loss %.4f (%d workers)", trainer.step, steps, r.loss, coordinator.scheduler.workers.count))
            if trainer.step % checkpointEvery == 0 || trainer.step == steps || terminateRequested {
                try Checkpoint.save(model: m, optimizer: trainer.optimizer,
                                    state: Checkpoint.State(step: trainer.step, optimizerStep: trainer.optimizer.step, run: "run"),
                                    to: checkpointDir, copyTokenizerFrom: source)
            }
        }
        if terminateRequested { say("terminated after step \(trainer.step); checkpoint written"); return }
        let final = (out as NSString).appendingPathComponent("final")
        try HFModel.save(m, to: final, copyFrom: source)
        say("wrote \(final)")
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
