import ArgumentParser
import Foundation
import Logging
import PTLCluster
import PTLCommandLine
import PTLTensor

nonisolated(unsafe) var stopRequested = false

@main
struct PTLWorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ptl-worker",
        abstract: "A ptl compute worker: connects to ptl-coordinator and runs its tasks.",
        discussion: "Registers with READY, heartbeats, fetches the model versions it lacks, reconnects with back-off (one heartbeat interval doubling to 32 s) and re-registers after a coordinator restart. SIGTERM/SIGINT stop it.")

    @Option(help: "The coordinator's endpoint, e.g. tcp://127.0.0.1:5555.")
    var connect: String

    @Option(help: "Compute threads.")
    var threads: Int = 1

    @Option(help: "Worker id (default: host name and process id).")
    var id: String?

    @OptionGroup(title: "Heartbeats") var heartbeats: HeartbeatOptions

    @Option(help: "Exit when this process (the coordinator that started us) is gone.")
    var parentPid: Int32?

    @Option(help: "CURVE: a file holding the coordinator's public key (Z85).")
    var curveServerKey: String?

    @Option(help: "CURVE: a file holding this worker's secret key (Z85, from `ptl keys generate`).")
    var curveSecretKey: String?

    @Option(help: "Keep the last model version in this directory so a restarted worker need not fetch it again.")
    var cache: String?

    @Option(help: "Fault injection (tests): seed of the faults this worker stages at every protocol point.")
    var faultSeed: UInt64?

    @Option(help: "Fault injection: probability that a task attempt meets a fault (with --fault-seed).")
    var faultRate: Double = 0.3

    @Option(help: "Fault injection: milliseconds every task waits before computing (with --fault-seed).")
    var faultDelayMs: Int = 0

    @Option(help: "Fault injection: only tasks of this phase meet faults (stats, grad, eval, rollout or trace; with --fault-seed).")
    var faultPhase: String?

    @Option(help: "Fault injection (the chaos soak): every task of this shard fails, on every attempt (a poison shard).")
    var faultFailShard: UInt32?

    @Option(help: ArgumentHelp("Fault injection (the chaos soak): instead of working, send this many seeded garbage messages (seed: --fault-seed, default 0) to the coordinator as a fake peer, then exit.", visibility: .hidden))
    var faultFlood: Int?

    @OptionGroup(title: "Logging") var log: LogOptions

    func validate() throws {
        if !(faultRate >= 0 && faultRate <= 1) { throw ValidationError("--fault-rate must be between 0 and 1") }
        if let faultFlood, faultFlood < 0 || faultFlood > 1_000_000 { throw ValidationError("--fault-flood must be between 0 and 1000000") }
        if faultDelayMs < 0 { throw ValidationError("--fault-delay-ms must not be negative") }
        if let faultPhase, FaultPlan.phase(named: faultPhase) == nil { throw ValidationError("--fault-phase must be stats, grad, eval, rollout or trace") }
        if threads < 1 { throw ValidationError("--threads must be at least 1") }
        if let id, id.isEmpty || id.utf8.count > 255 { throw ValidationError("--id must be 1 to 255 bytes (it is the ZeroMQ routing id)") }
        if (curveServerKey == nil) != (curveSecretKey == nil) { throw ValidationError("--curve-server-key and --curve-secret-key go together") }
    }

    func run() throws {
        ComputeThreads.set(threads)
        installStopSignals { stopRequested = true }
        var settings = WorkerSettings()
        settings.threads = threads
        settings.heartbeatInterval = heartbeats.heartbeat
        settings.liveness = heartbeats.liveness
        settings.minBackoff = heartbeats.heartbeat          // back-off: one heartbeat, doubling to 32 s
        settings.cacheDirectory = cache
        if let faultSeed {
            settings.faults = FaultPlan(seed: faultSeed, rate: faultRate, delayMilliseconds: faultDelayMs)
            settings.faults?.phase = faultPhase.flatMap(FaultPlan.phase(named:))
        }
        if let faultFailShard {
            if settings.faults == nil { settings.faults = FaultPlan(seed: 0, rate: 0) }
            settings.faults?.failShard = faultFailShard
        }
        if let curveServerKey, let curveSecretKey {
            settings.curve = (try KeyFiles.read(curveServerKey), try KeyFiles.read(curveSecretKey))
        }
        let name = id ?? "\(ProcessInfo.processInfo.hostName)-\(getpid())"
        var logger = log.logger(name)
        logger[metadataKey: "worker"] = .string(name)
        if let faultFlood {
            try GarbageFlood.run(endpoint: connect, context: try ZMQContext(), id: name, count: faultFlood, seed: faultSeed ?? 0, logger: logger)
            return
        }
        let worker = try WorkerClient(id: name, connect: connect, context: try ZMQContext(), settings: settings,
                                      handler: WorkerTasks.handler(logger: logger))
        worker.logger = logger
        logger.info("connecting to \(connect) with \(threads) thread(s); bf16: \(Messages.bf16Capability)",
                    metadata: ["endpoint": .string(connect), "threads": "\(threads)", "bf16": .string(Messages.bf16Capability)])
        let parent = parentPid
        try worker.run(shouldStop: { stopRequested || (parent != nil && getppid() != parent) })
    }
}
