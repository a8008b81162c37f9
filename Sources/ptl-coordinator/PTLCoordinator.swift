import ArgumentParser
import Foundation
import Logging
import PTLCluster
import PTLCommandLine
import PTLLoop
import PTLModel
import PTLTokenizer

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
        Writes OUT/config.yaml (the recipe of the run), OUT/metrics.jsonl, OUT/report.md,
        OUT/accuracy_vs_size.png, OUT/summary.json, OUT/rounds/round-NN/ and OUT/final/ (plain HF
        directories). `ptl prune` runs the same job in one process, with the same bits.
        --method train: continual pre-training only (--steps); with --tune grpo, GRPO only (as `ptl
        grpo`: --prompts-per-step, --rollouts-per-prompt, --grpo-lr, --kl-beta, --rewards, …; held-out
        accuracy every --eval-every steps; OUT/metrics.jsonl, OUT/report.md, OUT/reward.png).

        Work is split into --shards tasks per phase (independent of the worker count), reduced in
        shard order (bit-identical for any number of workers and any failures). OUT/checkpoint is
        written atomically; a restarted coordinator resumes from it; workers re-register by
        themselves. --local-workers N starts N ptl-worker processes on loopback.
        """)

    @OptionGroup(title: "The loop") var loop: LoopOptions
    @OptionGroup(title: "Model and data") var data: LoopDataOptions
    @OptionGroup(title: "The run") var output: RunOptions
    @OptionGroup(title: "Cluster") var cluster: ClusterOptions
    @OptionGroup(title: "Heartbeats") var heartbeats: HeartbeatOptions
    @OptionGroup(title: "Logging") var log: LogOptions
    @OptionGroup(title: "Fault injection") var faults: CoordinatorFaultOptions

    @Option(help: "Optimizer steps (--method train).")
    var steps: Int = 20

    @Option(help: "--method train --tune grpo: measure held-out accuracy (--eval-count problems) every K steps.")
    var evalEvery: Int = 25

    static func main() {
        do {
            let args = try Recipe.expand(Array(CommandLine.arguments.dropFirst()), for: Self.self)
            var command = try parseAsRoot(args)
            try command.run()
        } catch {
            exit(withError: error)
        }
    }

    func validate() throws {
        if steps < 1 { throw ValidationError("--steps must be at least 1") }
        if evalEvery < 1 { throw ValidationError("--eval-every must be at least 1") }
    }

    var logger: Logger { log.logger("coordinator") }

    mutating func run() throws {
        installStopSignals { terminateRequested = true }
        try FileManager.default.createDirectory(atPath: output.out, withIntermediateDirectories: true)
        // Data and models are prepared before any worker starts.
        let job: (Coordinator, StatusLine) throws -> Void
        if loop.method == .train {
            job = try prepareTrain()
        } else {
            let loopRun = try LoopRun(loop: loop, data: data, run: output, command: self, commandName: "ptl-coordinator", logger: logger)
            job = { coordinator, status in
                let backend = ClusterBackend(coordinator: coordinator, tokenizerJSON: loopRun.inputs.tokenizerJSON)
                try loopRun.run(backend: backend, stop: { terminateRequested }, progress: { status.context = $0 })
                status.finish()
            }
        }
        try serve(job)
    }

    /// Binds, starts the local workers, and runs `job` over them.
    func serve(_ job: (Coordinator, StatusLine) throws -> Void) throws {
        let context = try ZMQContext()
        var cs = CoordinatorSettings()
        cs.heartbeatInterval = heartbeats.heartbeat
        cs.liveness = heartbeats.liveness
        cs.leaseSeconds = cluster.lease
        cs.maxTensorBytes = cluster.maxTensorBytes
        cs.modelUpdates = cluster.modelUpdates
        cs.allowMixedKernels = cluster.allowMixedKernels
        cs.rejectOutlierShards = cluster.rejectOutlierShards
        Checkpoint.killDuringWrite = faults.faultKillInCheckpoint
        var authenticator: CurveAuthenticator? = nil
        var localKey: (pub: String, secret: String)? = nil
        if let curveSecretKey = cluster.curveSecretKey, let allowKeys = cluster.allowKeys {
            let secret = try KeyFiles.read(curveSecretKey)
            guard let text = try? String(contentsOfFile: allowKeys, encoding: .utf8) else { throw ValidationError("\(allowKeys): cannot read the allowed keys") }
            var allowed = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty && !$0.hasPrefix("#") }
            if cluster.localWorkers > 0 {
                let k = try CurveKeys.generate()
                localKey = (k.publicKey, k.secretKey)
                allowed.append(k.publicKey)
            }
            authenticator = try CurveAuthenticator(context: context, allowedPublicKeys: allowed)
            authenticator?.logger = logger
            cs.curveSecretKey = secret
        }
        defer { authenticator?.stop() }
        let coordinator = try Coordinator(context: context, bind: cluster.bind, settings: cs)
        coordinator.logger = logger
        coordinator.shouldStop = { terminateRequested }
        let status = StatusLine(logger: logger, interval: log.statusInterval)
        defer { status.finish() }
        coordinator.onProgress = { status.show($0) }
        logger.info("bound \(coordinator.endpoint)")
        let out = URL(fileURLWithPath: output.out)
        // The endpoint actually bound (a port 0 or * bind picks one), for scripts and tests.
        try Data((coordinator.endpoint + "\n").utf8).write(to: out.appendingPathComponent("endpoint"), options: .atomic)
        let keyDir = out.appendingPathComponent("keys")
        if let localKey, let curveSecretKey = cluster.curveSecretKey {
            try FileManager.default.createDirectory(at: keyDir, withIntermediateDirectories: true)
            // This run's local-worker key replaces the last run's.
            try KeyFiles.write(localKey.secret, to: keyDir.appendingPathComponent("local-worker.key").path, replace: true)
            try KeyFiles.write(try CurveKeys.publicKey(fromSecret: try KeyFiles.read(curveSecretKey)),
                               to: keyDir.appendingPathComponent("coordinator.pub").path, mode: 0o644, replace: true)
        }
        let arguments = (0..<cluster.localWorkers).map { i -> [String] in
            var a = ["--connect", coordinator.endpoint, "--threads", "\(cluster.threadsPerWorker)", "--id", "local-\(i)",
                     "--heartbeat", "\(heartbeats.heartbeat)", "--parent-pid", "\(getpid())",
                     "--log-format", log.logFormat.rawValue, "--log-level", log.logLevel.rawValue]
            if cluster.localWorkerCache { a += ["--cache", out.appendingPathComponent("workers/local-\(i)").path] }
            if localKey != nil {
                a += ["--curve-server-key", keyDir.appendingPathComponent("coordinator.pub").path,
                      "--curve-secret-key", keyDir.appendingPathComponent("local-worker.key").path]
            }
            return a + faults.workerArguments
        }
        let supervisor = LocalWorkers(executable: LocalWorkers.workerExecutable, arguments: arguments, logger: logger)
        defer { supervisor.stopAll() }
        try supervisor.startAll()
        // A local worker that dies is started again, as the compose file's restart policy does.
        coordinator.onPump = { if !terminateRequested { supervisor.restartDead() } }
        try job(coordinator, status)
    }
}
