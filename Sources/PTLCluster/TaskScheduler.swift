import Foundation

/// Seconds on some monotonic clock; injectable so failure handling is tested without sleeps.
public protocol Clock: Sendable {
    func now() -> Double
}

/// The process's monotonic clock.
public struct SystemClock: Clock {
    public init() {}
    public func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
}


/// The identity of a task's result: its key without the attempt number.
public struct TaskID: Hashable, Sendable, CustomStringConvertible {
    public let run: String
    public let round: UInt32
    public let phase: Int
    public let step: UInt64
    public let measurement: UInt64
    public let shard: UInt32

    public init(_ key: Ptl_V1_TaskKey) {
        run = key.run; round = key.round; phase = key.phase.rawValue; step = key.step; measurement = key.measurement; shard = key.shard
    }
    /// `run/r2/p2/s41/m0/shard3`; a GRPO step's gradient tasks (the measurement's bit 62) read
    /// `…/mgrad/…`, not `m4611686018427387904`.
    public var description: String {
        let g = ClusterBackend.grpoGradientMeasurement
        let m = measurement & g != 0 ? (measurement == g ? "grad" : "grad+\(measurement & ~g)") : "\(measurement)"
        return "\(run)/r\(round)/p\(phase)/s\(step)/m\(m)/shard\(shard)"
    }
}

/// The coordinator's bookkeeping, apart from sockets: workers and their liveness, the tasks of
/// the current phase, leases, requeues, and deduplicated results (Paranoid Pirate style).
public final class TaskScheduler<Output>: @unchecked Sendable {
    public struct WorkerState {
        public var lastSeen: Double
        public var threads: Int
        public var task: TaskID?
        public var leaseDeadline: Double
        /// Still computing a task we no longer lease to it (it was dropped and came back): no
        /// new task until it reports a result.
        public var occupied = false
    }

    public let clock: Clock
    /// A worker silent this long is dead: heartbeat interval × liveness.
    public let workerTimeout: Double
    /// A task not finished this long after it was leased goes back to the queue.
    public let leaseSeconds: Double
    public private(set) var workers: [String: WorkerState] = [:]
    private var keys: [TaskID: Ptl_V1_TaskKey] = [:]
    private var pending: [TaskID] = []            // in leasing order: costliest first, ties in shard order
    private var attempts: [TaskID: UInt32] = [:]
    /// Leases still valid: task → attempt token → the worker it was leased to. A lease is
    /// revoked when it expires, its worker is dropped or re-registers, or the worker refuses or
    /// fails the task; a result is accepted only under a valid lease.
    private var leases: [TaskID: [UInt32: String]] = [:]
    public private(set) var results: [TaskID: Output] = [:]
    /// Who produced each accepted result of this phase, with the attempt token.
    public private(set) var acceptedFrom: [TaskID: (worker: String, attempt: UInt32)] = [:]
    /// Counters for the metrics line (over the scheduler's life, not per phase).
    public private(set) var requeued = 0, duplicates = 0, expiredWorkers = 0, stale = 0
    /// Attempt tokens of this scheduler start above this base, so a result computed for an
    /// earlier coordinator process (same task key, attempt from before a restart) never
    /// matches a lease of this one.
    public var attemptBase: UInt32 = 0

    public init(clock: Clock, workerTimeout: Double, leaseSeconds: Double) {
        self.clock = clock
        self.workerTimeout = workerTimeout
        self.leaseSeconds = leaseSeconds
    }

    /// Starts a phase: these tasks, none finished. With `costs` (one per task, e.g. its tokens),
    /// the costliest are leased first — longest-processing-time-first, which evens out the
    /// workers' loads at the end of the phase; equal costs keep the given order. Only the order
    /// of leasing changes: results are still returned and reduced in shard order.
    public func startPhase(_ tasks: [Ptl_V1_TaskKey], costs: [Double]? = nil) {
        keys = [:]; pending = []; attempts = [:]; results = [:]; failures = [:]; hopeless = []; leases = [:]; acceptedFrom = [:]
        lastFailedOn = [:]
        var order = Array(tasks.indices)
        if let costs, costs.count == tasks.count {
            order.sort { costs[$0] != costs[$1] ? costs[$0] > costs[$1] : $0 < $1 }
        }
        for i in order {
            let id = TaskID(tasks[i])
            keys[id] = tasks[i]
            pending.append(id)
        }
        for w in workers.keys { workers[w]?.task = nil }
    }

    public var isPhaseComplete: Bool { results.count == keys.count }
    public var taskCount: Int { keys.count }

    /// A READY (or any message) from a worker: registers it or refreshes its liveness.
    public func seen(_ worker: String, threads: Int? = nil) {
        let now = clock.now()
        if workers[worker] == nil {
            workers[worker] = WorkerState(lastSeen: now, threads: threads ?? 1, task: nil, leaseDeadline: 0)
        } else if threads != nil {
            // READY again: the worker reconnected and forgot what it had; its task goes back.
            if let t = workers[worker]!.task { revoke(t, from: worker); if results[t] == nil { requeue(t) } }
            workers[worker] = WorkerState(lastSeen: now, threads: threads!, task: nil, leaseDeadline: 0)
        } else {
            workers[worker]!.lastSeen = now
            if let threads { workers[worker]!.threads = threads }
        }
    }

    public func isKnown(_ worker: String) -> Bool { workers[worker] != nil }

    /// Drops a worker (it said goodbye, or errored fatally) and requeues its task.
    public func remove(_ worker: String) {
        if let t = workers[worker]?.task { revoke(t, from: worker); if results[t] == nil { requeue(t) } }
        workers[worker] = nil
    }

    /// Leases the next pending task to each idle worker; returns (worker, key with attempt).
    public func assign() -> [(worker: String, key: Ptl_V1_TaskKey)] {
        var out: [(String, Ptl_V1_TaskKey)] = []
        let idle = workers.keys.sorted().filter { workers[$0]!.task == nil && !workers[$0]!.occupied }
        for w in idle {
            guard !pending.isEmpty else { break }
            // The first pending task this worker did not just fail, unless no other worker is
            // there to take it.
            let others = workers.count > 1
            guard let index = pending.firstIndex(where: { lastFailedOn[$0] != w || !others }) else { continue }
            let id = pending.remove(at: index)
            let attempt = (attempts[id] ?? attemptBase) + 1
            attempts[id] = attempt
            leases[id, default: [:]][attempt] = w
            var key = keys[id]!
            key.attempt = attempt
            workers[w]!.task = id
            workers[w]!.leaseDeadline = clock.now() + leaseSeconds
            out.append((w, key))
        }
        return out
    }

    /// How a result was taken.
    public enum Verdict: String, Sendable {
        case accepted
        /// The result already taken, sent again.
        case duplicate
        /// The attempt token is not a valid lease held by the sender (expired, revoked, of
        /// another phase or another coordinator process): a zombie's result.
        case stale
    }

    /// A result arrived: accepted only for a task of this phase without a result yet, under a
    /// valid lease (attempt token) held by `worker`; otherwise dropped and counted.
    @discardableResult
    public func complete(_ key: Ptl_V1_TaskKey, from worker: String, output: Output) -> Verdict {
        let id = TaskID(key)
        // Only the answer to the lease the worker holds frees it from its task: a stale result of
        // the same task (an older attempt, or an earlier phase's task under the same key) must
        // not, or the lease it holds would never run out and a lost result would stall the phase.
        if workers[worker]?.task == id, leases[id]?[key.attempt] == worker { workers[worker]!.task = nil }
        workers[worker]?.occupied = false
        if let a = acceptedFrom[id], a.worker == worker, a.attempt == key.attempt { duplicates += 1; return .duplicate }
        guard keys[id] != nil, results[id] == nil, leases[id]?[key.attempt] == worker else { stale += 1; return .stale }
        results[id] = output
        acceptedFrom[id] = (worker, key.attempt)
        leases[id] = nil
        pending.removeAll { $0 == id }
        return .accepted
    }

    /// A result from a sender that is not a registered worker: dropped unread and counted.
    public func noteStale() { stale += 1 }

    /// Whether `worker` holds the lease of `key`'s attempt on a task still waiting for its result.
    public func holdsLease(_ key: Ptl_V1_TaskKey, worker: String) -> Bool {
        let id = TaskID(key)
        return keys[id] != nil && results[id] == nil && leases[id]?[key.attempt] == worker
    }

    private func revoke(_ id: TaskID, from worker: String) {
        leases[id] = leases[id]?.filter { $0.value != worker }
    }

    /// The worker refused a task (BUSY) because it is still computing an earlier one: the task goes
    /// back to the queue (not a failure) and the worker gets nothing until it reports.
    public func busy(_ key: Ptl_V1_TaskKey, on worker: String) {
        let id = TaskID(key)
        if workers[worker]?.task == id { workers[worker]!.task = nil }
        revoke(id, from: worker)
        workers[worker]?.occupied = true
        if keys[id] != nil, results[id] == nil { requeue(id) }
    }

    /// Tasks that failed on workers `maxFailures` times (a deterministic error, not a lost
    /// worker), with the last reason: the phase cannot finish.
    public private(set) var hopeless: [(key: Ptl_V1_TaskKey, reason: String)] = []
    public var maxFailures = 4
    private var failures: [TaskID: Int] = [:]

    /// A task failed on a worker: back to the queue, until it has failed `maxFailures` times.
    /// Counted only when `worker` holds the lease of `key`'s attempt: a failure reported by
    /// anyone else (a stranger, another worker, a stale attempt) is ignored and counted in
    /// `ignoredFailures`, so no peer can make another's task hopeless.
    public func failed(_ key: Ptl_V1_TaskKey, on worker: String, reason: String = "") {
        let id = TaskID(key)
        guard keys[id] != nil, results[id] == nil, leases[id]?[key.attempt] == worker else {
            ignoredFailures += 1
            return
        }
        if workers[worker]?.task == id { workers[worker]!.task = nil }
        revoke(id, from: worker)
        countFailure(id, on: worker, reason: reason)
    }

    /// Failures reported for tasks the reporter did not hold (ignored).
    public private(set) var ignoredFailures = 0
    /// Leases that ran out (each counted as a failure of the worker that held it).
    public private(set) var expiredLeases = 0
    /// The worker a task last failed on: it is not given that task again while another
    /// worker could take it.
    private var lastFailedOn: [TaskID: String] = [:]

    private func countFailure(_ id: TaskID, on worker: String, reason: String) {
        failures[id, default: 0] += 1
        lastFailedOn[id] = worker
        if failures[id]! >= maxFailures {
            pending.removeAll { $0 == id }
            if !hopeless.contains(where: { TaskID($0.key) == id }) { hopeless.append((keys[id]!, reason)) }
        } else {
            requeue(id)
        }
    }

    /// Drops silent workers and requeues expired leases; returns the workers dropped.
    public func expire() -> [String] {
        let now = clock.now()
        var dropped: [String] = []
        for (w, s) in workers {
            if now - s.lastSeen > workerTimeout {
                dropped.append(w)
                expiredWorkers += 1
                remove(w)
            } else if let t = s.task, now > s.leaseDeadline {
                // A worker that heartbeats but never answers holds the task no longer than a
                // lease, and each lease it lets run out counts as one of the task's failures.
                workers[w]!.task = nil
                revoke(t, from: w)
                expiredLeases += 1
                if results[t] == nil {
                    countFailure(t, on: w, reason: "the lease of \(t) held by \(w) ran out (\(Int(leaseSeconds)) s) \(failures[t, default: 0] + 1) time(s)")
                }
            }
        }
        return dropped.sorted()
    }

    private func requeue(_ id: TaskID) {
        guard !pending.contains(id) else { return }
        requeued += 1
        // A requeued task goes before the later shards still pending: deterministic, and it runs soon.
        let at = pending.firstIndex { ($0.step, $0.measurement, $0.shard) > (id.step, id.measurement, id.shard) } ?? pending.endIndex
        pending.insert(id, at: at)
    }

    /// Results in shard order (for a deterministic reduce); nil until the phase is complete.
    public func orderedResults() -> [(key: Ptl_V1_TaskKey, output: Output)]? {
        guard isPhaseComplete else { return nil }
        return keys.keys.sorted { ($0.step, $0.measurement, $0.shard) < ($1.step, $1.measurement, $1.shard) }.map { (keys[$0]!, results[$0]!) }
    }
}
