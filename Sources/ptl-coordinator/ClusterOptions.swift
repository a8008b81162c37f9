import ArgumentParser
import Foundation
import PTLCluster
import PTLCommandLine

extension ModelUpdates: ExpressibleByArgument {}

/// The coordinator's socket, its workers and how they are kept.
struct ClusterOptions: ParsableArguments {
    @Option(help: "Endpoint to bind.")
    var bind: String = "tcp://127.0.0.1:5555"

    @Option(help: "Start this many ptl-worker processes on loopback.")
    var localWorkers: Int = 0

    @Option(help: "Threads of each local worker.")
    var threadsPerWorker: Int = 1

    @Option(help: "Local workers keep their last model version under OUT/workers/ID (a restarted worker need not fetch it).")
    var localWorkerCache = true

    @Option(help: "Seconds a task may run before it is leased to another worker.")
    var lease: Double = 600

    @Option(help: "Largest tensor frame accepted from a worker, in bytes (bigger messages are refused).")
    var maxTensorBytes: Int = 1 << 31

    @Option(help: "How a worker holding the previous model version gets the next: auto (as an update — the XOR of the two versions, about half the bytes — to workers on other hosts, the whole weights over loopback), always (updates), never (the whole weights).")
    var modelUpdates: ModelUpdates = .auto

    @Option(help: "CURVE: a file holding the coordinator's secret key (Z85, from `ptl keys generate`). Enables encryption.")
    var curveSecretKey: String?

    @Option(help: "CURVE: a file of worker public keys (Z85, one a line) allowed to connect.")
    var allowKeys: String?

    @Option(help: "Robust aggregation: leave out of a step every shard whose gradient norm lies more than Z robust deviations (1.4826·MAD) above the median of the step's shards, rescaling to the tokens kept; logged and counted as outlier_shard. Off by default (honest runs with Z ≥ 6 are unaffected in practice).")
    var rejectOutlierShards: Double?

    @Flag(help: "Accept workers whose kernels (OpenBLAS core, oneDNN ISA) differ from the first worker's. Machines of different CPU kinds round differently, so the model then depends on which worker computed which shard: it is no longer reproducible bit for bit.")
    var allowMixedKernels = false

    @Flag(help: "Allow binding beyond loopback without CURVE (anyone who reaches the port can join, read the data and weights, and send gradients).")
    var insecure = false

    /// Whether `endpoint` is reachable from this machine only (loopback TCP, ipc, inproc).
    static func isLocal(_ endpoint: String) -> Bool {
        if endpoint.hasPrefix("ipc://") || endpoint.hasPrefix("inproc://") { return true }
        guard endpoint.hasPrefix("tcp://") else { return false }
        var host = String(endpoint.dropFirst(6))
        if host.hasPrefix("[") { host = String(host.dropFirst().prefix { $0 != "]" }) } else { host = String(host.prefix { $0 != ":" }) }
        // An interface name (tcp://eth0:5555) or a wildcard is not loopback.
        return host == "localhost" || host == "::1" || host.split(separator: ".").first == "127" && host.split(separator: ".").count == 4
    }

    func validate() throws {
        if let z = rejectOutlierShards, !(z >= 1 && z <= 1000) { throw ValidationError("--reject-outlier-shards must be between 1 and 1000") }
        if curveSecretKey == nil && !insecure && !Self.isLocal(bind) {
            throw ValidationError("--bind \(bind) listens beyond this machine without CURVE: anyone who reaches the port can join, read the data and weights, and send gradients. Give --curve-secret-key and --allow-keys (keys from `ptl keys generate`), or --insecure to accept that.")
        }
        if localWorkers < 0 || localWorkers > 256 { throw ValidationError("--local-workers must be between 0 and 256") }
        if threadsPerWorker < 1 { throw ValidationError("--threads-per-worker must be at least 1") }
        if !(lease > 0) || maxTensorBytes < 1024 { throw ValidationError("--lease must be > 0 and --max-tensor-bytes ≥ 1024") }
        if (curveSecretKey == nil) != (allowKeys == nil) { throw ValidationError("--curve-secret-key and --allow-keys go together") }
    }
}

/// Fault injection, for the tests that prove nothing is lost.
struct CoordinatorFaultOptions: ParsableArguments {
    @Option(help: "Fault injection (tests): the local workers stage faults with this seed (see ptl-worker --fault-seed).")
    var workerFaultSeed: UInt64?

    @Option(help: "Fault injection: the local workers' fault rate.")
    var workerFaultRate: Double = 0.3

    @Option(help: "Fault injection: the local workers' delay before computing, ms.")
    var workerFaultDelayMs: Int = 0

    @Option(help: "Fault injection: only the local workers' tasks of this phase meet faults (stats, grad, eval, rollout or trace).")
    var workerFaultPhase: String?

    @Option(help: "Fault injection (tests): SIGKILL this process in the middle of its Nth checkpoint write.")
    var faultKillInCheckpoint: Int?

    /// Arguments of a local worker that stages these faults.
    var workerArguments: [String] {
        guard let workerFaultSeed else { return [] }
        return ["--fault-seed", "\(workerFaultSeed)", "--fault-rate", "\(workerFaultRate)", "--fault-delay-ms", "\(workerFaultDelayMs)"]
            + (workerFaultPhase.map { ["--fault-phase", $0] } ?? [])
    }
}
