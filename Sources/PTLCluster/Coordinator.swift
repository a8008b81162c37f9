import Foundation
import Logging
import PTLLoop

/// A phase that cannot finish: a task fails on every attempt.
public struct PhaseError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// Settings of the coordinator's event loop.
public struct CoordinatorSettings: Sendable {
    /// Seconds between heartbeats to idle workers (and the poll timeout).
    public var heartbeatInterval: Double = 1
    /// Heartbeats a worker may miss before it is dropped. Ten: measured on the SmolLM2 bench (2
    /// cores, two workers, 538 MB gradients), three dropped a busy worker in most steps — its
    /// heartbeats queued behind a result frame while every core computed — and its task ran twice.
    public var liveness: Double = 10
    /// Seconds a task may run before it is leased again.
    public var leaseSeconds: Double = 600
    /// Largest tensor frame accepted.
    public var maxTensorBytes = 1 << 31
    /// CURVE: the server's secret key (Z85); nil means plain TCP.
    public var curveSecretKey: String?
    /// When a worker holding the previous model version gets an update instead of the weights.
    public var modelUpdates = ModelUpdates.auto
    /// Robust aggregation: leave out of a step a shard whose gradient norm is more than this many
    /// robust deviations above the median (nil: every shard counts).
    public var rejectOutlierShards: Double?
    /// Largest envelope (frame 0) accepted from a worker: results and heartbeats are small.
    public var maxEnvelopeBytes = 1 << 20
    /// Workers registered at once; further READYs are refused.
    public var maxWorkers = 1024
    /// Accept workers whose numeric fingerprint differs from the first one's (the result then
    /// depends on which worker computed which shard).
    public var allowMixedKernels = false
    public init() {}
}

/// How new model versions reach workers that hold the previous one.
public enum ModelUpdates: String, Sendable, CaseIterable {
    /// Updates to workers on other hosts; the whole weights over loopback, where copying
    /// (GB/s) costs less than coding the update.
    case auto
    /// Always updates (about half the bytes of the weights; see `ModelDelta`).
    case always
    /// Always the whole weights.
    case never

    /// Whether a worker at `peer` (an IP address; nil when unknown) gets updates.
    public func updates(peer: String?) -> Bool {
        switch self {
        case .always: return true
        case .never: return false
        case .auto:
            guard let peer else { return false }
            return !(peer.hasPrefix("127.") || peer == "::1" || peer.hasPrefix("::ffff:127."))
        }
    }
}

/// The coordinator: a ROUTER socket, the task scheduler, and the model versions it serves.
/// `runPhase` leases tasks to workers, follows their liveness, and returns the results in
/// shard order once every task has one.
public final class Coordinator: @unchecked Sendable {
    public let socket: ZMQSocket
    public let settings: CoordinatorSettings
    public let scheduler: TaskScheduler<WireMessage>
    let clock: Clock
    var specs: [TaskID: Ptl_V1_Task] = [:]
    var inputs: [TaskID: [WireTensor]] = [:]
    /// Model versions by hash: config JSON and the flat fp32 weights as raw bytes — the one
    /// `serve` made current and the one before it (workers holding that one get an update).
    public private(set) var models: [String: (config: String, weights: [UInt8])] = [:] {
        didSet { encodedModels = encodedModels.filter { models[$0.key.hash] != nil && ($0.key.base.isEmpty || models[$0.key.base] != nil) } }
    }
    /// The version tasks run on now.
    public private(set) var currentModel: String?
    /// Versions served for the whole run besides the current one (the teacher of distillation),
    /// always sent whole.
    public private(set) var pinnedModels: [String: (config: String, weights: [UInt8])] = [:]
    /// MODEL_RESPONSE frames by (version, base: "" for the whole weights), encoded (and
    /// checksummed) once however many workers ask for them.
    var encodedModels: [ModelKey: [Frame]] = [:]
    struct ModelKey: Hashable { var hash: String; var base: String }
    /// Bytes of model versions sent: whole weights and updates (tensor frames), and their counts.
    public private(set) var modelTraffic = (fullBytes: 0, fullCount: 0, updateBytes: 0, updateCount: 0)
    /// Seconds spent waiting in poll (idle) and handling messages, for the phase-time split.
    public private(set) var waitSeconds = 0.0
    /// Seconds by activity (receive, handle, …) over the coordinator's life, for profiling.
    public var profile: [String: Double] = [:]
    /// The split of the last data-parallel step's time.
    public var lastStepTiming = StepTiming()
    /// tokenizer.json sent with every model version (the eval phase needs it).
    public var tokenizerJSON = ""
    public private(set) var rejected: [String: Int] = [:]
    /// Records carry the worker and the task (`worker`, `task`, `phase`, `round`, `step`, `shard`, `attempt`).
    public var logger = Logger.silent
    /// Called as a phase starts, when a result is accepted (the last one completes the phase) and
    /// on turns of the event loop at most once a heartbeat interval.
    public var onProgress: (PhaseProgress) -> Void = { _ in }
    /// The running phase's progress.
    public private(set) var progress: PhaseProgress?
    private var phaseStart = 0.0, lastProgress = 0.0
    /// Polled while a phase runs: true (e.g. after SIGTERM) abandons the phase with `Interrupted`.
    public var shouldStop: () -> Bool = { false }
    private var lastHeartbeat = 0.0
    /// Called on every turn of the event loop (the local-worker supervisor restarts dead workers here).
    public var onPump: () -> Void = {}

    public init(context: ZMQContext, bind endpoint: String, settings: CoordinatorSettings = CoordinatorSettings(),
                clock: Clock = SystemClock()) throws {
        socket = try ZMQSocket(context: context, type: .router)
        try socket.setMaxMessageSize(Int64(settings.maxTensorBytes) + (1 << 20))
        try socket.setRouterHandover(true)
        if let secret = settings.curveSecretKey { try socket.setCurveServer(secretKey: try CurveKeys.decode(secret)) }
        try socket.bind(endpoint)
        self.settings = settings
        self.clock = clock
        scheduler = TaskScheduler(clock: clock, workerTimeout: settings.heartbeatInterval * settings.liveness,
                                  leaseSeconds: settings.leaseSeconds)
        // Attempt tokens unique to this process (2^12 attempts a task a phase before they wrap).
        scheduler.attemptBase = UInt32(truncatingIfNeeded: UInt64(Date().timeIntervalSince1970 * 10) & 0xF_FFFF) << 12
    }

    public var endpoint: String { socket.lastEndpoint }

    /// Makes `hash` (config JSON, fp32 weights as raw bytes) the version tasks run on, keeping
    /// the previous one so that workers holding it can be sent an update instead of the weights.
    /// The storage of the version that drops out is reused for the new one: a fresh array of
    /// the model's size costs more in page faults here than the copy itself.
    public func serve(_ hash: String, config: String, weights raw: UnsafeRawBufferPointer) {
        guard hash != currentModel else { return }
        if let m = models[hash] {
            models = models.filter { $0.key == currentModel }
            models[hash] = m
        } else {
            var recycled = models.first { $0.key != currentModel }?.value.weights
            models = models.filter { $0.key == currentModel }   // drops the evicted version's encoded frames too
            var w = recycled ?? []
            recycled = nil
            if w.count == raw.count {
                w.withUnsafeMutableBytes { $0.copyMemory(from: raw) }   // in place unless ZeroMQ still sends the old frames
            } else {
                w = Array(raw)
            }
            models[hash] = (config, w)
        }
        currentModel = hash
    }

    /// Keeps `hash` servable for the rest of the run (a distillation teacher workers fetch once).
    public func pin(_ hash: String, config: String, weights raw: UnsafeRawBufferPointer) {
        guard pinnedModels[hash] == nil else { return }
        pinnedModels[hash] = (config, Array(raw))
    }

    /// Runs one phase to completion: `tasks` (key, spec, input tensors) → results in shard order.
    /// `check` vets each result before it is accepted: one that throws is a failed attempt of the
    /// worker that sent it (logged, counted as `bad_result`, the task leased again), so a bad
    /// result never reaches the reduce.
    public func runPhase(_ tasks: [(key: Ptl_V1_TaskKey, spec: Ptl_V1_Task, inputs: [WireTensor])],
                         until deadline: Double = .infinity,
                         check: @escaping (Ptl_V1_TaskKey, WireMessage) throws -> Void = { _, _ in }) throws -> [(key: Ptl_V1_TaskKey, result: WireMessage)] {
        resultCheck = check
        defer { resultCheck = { _, _ in } }
        specs = [:]; inputs = [:]
        for t in tasks { specs[TaskID(t.key)] = t.spec; inputs[TaskID(t.key)] = t.inputs }
        // The tasks with the most input (tokens) first, so that no worker starts a long task
        // while the others run out of work.
        scheduler.startPhase(tasks.map(\.key), costs: tasks.map { Double($0.inputs.reduce(0) { $0 + $1.byteCount }) })
        phaseStart = clock.now()
        if let k = tasks.first?.key {
            progress = PhaseProgress(phase: k.phase, round: k.round, step: k.step, done: 0, total: tasks.count,
                                     workers: scheduler.workers.count, tokens: 0, seconds: 0)
            reportProgress()
        }
        defer { progress = nil }
        while !scheduler.isPhaseComplete {
            guard clock.now() < deadline else { throw ZMQError(operation: "phase timed out", code: ETIMEDOUT) }
            if shouldStop() { throw Interrupted() }
            if let h = scheduler.hopeless.first {
                throw PhaseError(message: "task \(TaskID(h.key)) failed \(scheduler.maxFailures) times (last: \(h.reason)); the phase cannot finish")
            }
            try pump(milliseconds: Int(settings.heartbeatInterval * 1000))
        }
        return scheduler.orderedResults()!.map { ($0.key, $0.output) }
    }

    /// Runs `body` on this thread while another turns the event loop, so that workers keep
    /// hearing from a coordinator that computes in-process between phases (the decode-speed
    /// measurement: 20–90 s on SmolLM2). Silent for longer than their liveness, idle workers
    /// reconnect and say READY again, and a task leased between two READYs queued here was
    /// computed twice (its first result stale); they also backed off up to 32 s before the next
    /// phase. No phase runs meanwhile, so the other thread only hears and heartbeats workers
    /// (and the supervisor's `onPump` restarts dead local ones); `body` must not use the
    /// coordinator.
    public func answeringWorkers<T>(_ body: () throws -> T) rethrows -> T {
        let stop = PumpFlag(), me = UncheckedCoordinator(self)
        let finished = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            while !stop.isSet {
                do { try me.value.pump(milliseconds: 50) } catch {
                    me.value.logger.warning("event loop beside in-process work: \(error)")
                    usleep(50_000)
                }
            }
            finished.signal()
        }
        defer { stop.set(); finished.wait() }
        return try body()
    }

    /// One turn of the event loop: receive what arrived, expire, lease, heartbeat.
    public func pump(milliseconds: Int) throws {
        onPump()
        // Idle workers get work before we wait: a new phase must not sit out a poll timeout.
        try dispatch()
        let t0 = clock.now()
        let ready = try socket.poll(milliseconds: milliseconds)
        waitSeconds += clock.now() - t0
        if ready {
            // At most a batch of messages a turn: a flood (or a burst of results) cannot starve
            // dispatch, heartbeats, lease expiry or a stop request.
            for _ in 0..<Self.messagesPerTurn {
                let r0 = clock.now()
                guard let frames = try socket.receiveFrames(dontWait: true) else { break }
                let r1 = clock.now()
                handle(frames, peer: socket.lastPeerAddress, user: socket.lastUserID)
                profile["receive", default: 0] += r1 - r0
                profile["handle", default: 0] += clock.now() - r1
            }
        }
        for w in scheduler.expire() { logger.warning("worker \(w) silent: dropped, its task requeued", metadata: ["worker": .string(w)]) }
        try dispatch()
        let now = clock.now()
        if progress != nil && now - lastProgress >= settings.heartbeatInterval { reportProgress() }
        if now - lastHeartbeat >= settings.heartbeatInterval {
            lastHeartbeat = now
            for w in scheduler.workers.keys.sorted() { try send(to: w, Messages.heartbeat()) }
        }
    }

    /// Brings the running phase's progress up to date and hands it to `onProgress`.
    func reportProgress() {
        guard var p = progress else { return }
        let now = clock.now()
        p.done = scheduler.results.count
        p.workers = scheduler.workers.count
        p.seconds = now - phaseStart
        progress = p
        lastProgress = now
        onProgress(p)
    }

    /// Leases pending tasks to idle workers.
    func dispatch() throws {
        for (worker, key) in scheduler.assign() {
            let id = TaskID(key)
            var e = Messages.envelope(.task, run: key.run)
            e.task = key
            e.taskSpec = specs[id]!
            try send(to: worker, WireMessage(envelope: e, tensors: inputs[id] ?? []))
        }
    }

    func send(to worker: String, _ message: WireMessage) throws {
        try socket.send([Frame(Array(worker.utf8))] + Wire.frames(message), dontWait: true)
    }

    func reject(_ kind: String, _ detail: String, worker: String? = nil) {
        rejected[kind, default: 0] += 1
        var m: Logger.Metadata = ["kind": .string(kind)]
        if let worker { m["worker"] = .string(worker) }
        logger.warning("rejected message: \(detail)", metadata: m)
    }

    /// Messages handled per turn of the event loop before it dispatches and heartbeats again.
    static let messagesPerTurn = 256

    /// The numeric fingerprint of the job's workers (the first worker's).
    public private(set) var jobFingerprint: String?

    /// The running phase's check of results (see `runPhase`).
    var resultCheck: (Ptl_V1_TaskKey, WireMessage) throws -> Void = { _, _ in }

    func take(_ key: Ptl_V1_TaskKey, from worker: String, _ message: WireMessage) {
        if scheduler.holdsLease(key, worker: worker) {   // only a lease holder's result can fail its task
            do { try resultCheck(key, message) } catch {
                reject("bad_result", "from \(worker): result of \(TaskID(key)): \(error)", worker: worker)
                scheduler.failed(key, on: worker, reason: "\(error)")
                return
            }
        }
        // Built only when a record is written (swift-log takes metadata as an autoclosure).
        func m() -> Logger.Metadata { key.logMetadata.merging(["worker": .string(worker)]) { $1 } }
        switch scheduler.complete(key, from: worker, output: message) {
        case .accepted:
            if progress != nil {
                progress!.tokens += Int(clamping: message.envelope.result.tokenCount)   // phases check counts; this is a display
                reportProgress()
            }
            logger.debug("result \(TaskID(key)) from \(worker) accepted", metadata: m())
        case .duplicate: logger.notice("duplicate result \(TaskID(key)) attempt \(key.attempt) from \(worker) dropped", metadata: m())
        case .stale: logger.warning("stale result \(TaskID(key)) from \(worker): attempt \(key.attempt) holds no valid lease; rejected", metadata: m())
        }
    }

    /// Counters for a metrics line: rejected messages by kind, duplicates, stale results,
    /// requeues, dropped workers, model versions sent whole and as updates (count and bytes).
    public var counters: [String: Int] {
        var c = rejected
        c["duplicate_results"] = scheduler.duplicates
        c["stale_results"] = scheduler.stale
        c["requeued"] = scheduler.requeued
        c["ignored_failures"] = scheduler.ignoredFailures
        c["expired_leases"] = scheduler.expiredLeases
        c["dropped_workers"] = scheduler.expiredWorkers
        c["model_sends_full"] = modelTraffic.fullCount
        c["model_bytes_full"] = modelTraffic.fullBytes
        c["model_sends_update"] = modelTraffic.updateCount
        c["model_bytes_update"] = modelTraffic.updateBytes
        return c
    }

    /// With CURVE: the key (ZAP user id) each worker identity registered with.
    var identityKeys: [String: String] = [:]

    func handle(_ frames: [Frame], peer: String? = nil, user: String? = nil) {
        guard frames.count >= 2 else { reject("malformed_envelope", "no envelope frame"); return }
        // A worker that reconnects takes its routing id over (ROUTER_HANDOVER) and libzmq renames
        // the replaced connection to a generated id (a zero byte, then 4 bytes): what that one
        // still delivers was queued on a connection the worker has dropped.
        let routingID = frames[0].array
        if routingID.first == 0 {
            rejected["replaced_connection", default: 0] += 1
            return
        }
        let worker = String(decoding: routingID, as: UTF8.self)
        // With CURVE an identity belongs to the key that registered it: another allowed key
        // saying the same routing id (ROUTER_HANDOVER would hand it the connection) is refused,
        // whatever it sends, until the owner leaves.
        if settings.curveSecretKey != nil, let owner = identityKeys[worker], owner != (user ?? "") {
            reject("identity_taken", "from \(worker): a connection with key \(user ?? "none") uses the identity of key \(owner); refused", worker: worker)
            try? send(to: worker, Messages.error(nil, "refused: the identity \(worker) belongs to another key", retryable: false))
            return
        }
        // A sender that is not a registered worker gets its envelope read and nothing else: only
        // READY registers; anything else (a zombie's result, a stranger's message) is answered
        // with DISCONNECT before a tensor descriptor or frame of it is looked at.
        if !scheduler.isKnown(worker) {
            guard let env = try? Ptl_V1_Envelope(serializedBytes: frames[1].array) else {
                reject("malformed_envelope", "from \(worker): frame 0 (\(frames[1].count) bytes) is not an Envelope", worker: worker)
                return
            }
            guard env.protocolVersion == Wire.protocolVersion else {
                let e = WireError(kind: .wrongVersion, message: "peer speaks protocol version \(env.protocolVersion), this build speaks \(Wire.protocolVersion): coordinator and workers must run the same protocol")
                reject(e.kind.rawValue, "from \(worker): \(e)", worker: worker)
                try? send(to: worker, Messages.error(nil, "\(e)", retryable: false))
                return
            }
            if env.type != .ready {
                if env.type == .result {
                    scheduler.noteStale()
                    logger.warning("result \(TaskID(env.task)) from \(worker), which is not a registered worker: dropped unread",
                                   metadata: env.task.logMetadata.merging(["worker": .string(worker)]) { $1 })
                }
                if env.type != .disconnect { try? send(to: worker, WireMessage(envelope: Messages.envelope(.disconnect))) }
                return
            }
        }
        let message: WireMessage
        do {
            message = try Wire.decode(frames: Array(frames.dropFirst()), maxTensorBytes: settings.maxTensorBytes, requireFinite: true,
                                      maxEnvelopeBytes: settings.maxEnvelopeBytes)
        } catch let e as WireError {
            reject(e.kind.rawValue, "from \(worker): \(e)", worker: worker)
            // A peer of another protocol version is told so (it logs a wrong_version of its own
            // if it cannot read our envelope either) instead of hearing nothing.
            if e.kind == .wrongVersion { try? send(to: worker, Messages.error(nil, "\(e)", retryable: false)) }
            // A result that fails its checks is a failed attempt of its lease holder (the
            // scheduler ignores anyone else's): run it again elsewhere.
            if let env = try? Ptl_V1_Envelope(serializedBytes: frames[1].array), env.hasTask, scheduler.holdsLease(env.task, worker: worker) {
                scheduler.failed(env.task, on: worker, reason: "\(e)")
            }
            return
        } catch {
            reject("malformed_envelope", "from \(worker): \(error)", worker: worker)
            return
        }
        let env = message.envelope
        if env.type == .ready && !scheduler.isKnown(worker) && scheduler.workers.count >= settings.maxWorkers {
            reject("too_many_workers", "from \(worker): \(scheduler.workers.count) workers registered (limit \(settings.maxWorkers))", worker: worker)
            try? send(to: worker, Messages.error(nil, "the coordinator has its \(settings.maxWorkers) workers; try later", retryable: true))
            return
        }
        if env.type == .ready {
            // One job, one kind of arithmetic: the first worker's kernels are the job's.
            let fp = env.ready.fingerprint.isEmpty ? "not reported" : env.ready.fingerprint
            if let job = jobFingerprint, fp != job, !settings.allowMixedKernels {
                reject("mixed_kernels", "from \(worker): it computes with \(fp), the job's workers with \(job); refused (--allow-mixed-kernels accepts it)", worker: worker)
                if scheduler.isKnown(worker) { scheduler.remove(worker) }
                try? send(to: worker, Messages.error(nil, "refused: this job's workers compute with \(job), this worker with \(fp); results would depend on which worker got which shard (the coordinator's --allow-mixed-kernels accepts it)", retryable: false))
                return
            }
            if settings.curveSecretKey != nil, let user { identityKeys[worker] = user }
            if jobFingerprint == nil {
                jobFingerprint = fp
                logger.info("the job computes with \(fp)", metadata: ["fingerprint": .string(fp)])
            }
        }
        scheduler.seen(worker, threads: env.type == .ready ? Int(env.ready.threads) : nil)
        switch env.type {
        case .ready:
            logger.info("worker \(worker) ready (\(env.ready.threads) threads; \(env.ready.fingerprint.isEmpty ? "kernels not reported" : env.ready.fingerprint))",
                        metadata: ["worker": .string(worker), "threads": "\(env.ready.threads)", "worker_version": .string(env.ready.version),
                                   "bf16": .string(env.ready.bf16)])
        case .result:
            take(env.task, from: worker, message)
        case .disconnect:
            logger.info("worker \(worker) left", metadata: ["worker": .string(worker)])
            scheduler.remove(worker)
            identityKeys[worker] = nil
        case .busy:
            logger.debug("worker \(worker) busy: \(TaskID(env.task)) goes back to the queue", metadata: env.task.logMetadata.merging(["worker": .string(worker)]) { $1 })
            scheduler.busy(env.task, on: worker)
        case .error:
            var m = env.task.logMetadata
            m["worker"] = .string(worker)
            guard env.hasTask else {
                logger.warning("worker \(worker) reports an error: \(env.error.message)", metadata: ["worker": .string(worker)])
                return
            }
            guard scheduler.holdsLease(env.task, worker: worker) else {
                reject("foreign_error", "from \(worker): an ERROR for \(TaskID(env.task)) attempt \(env.task.attempt), a task it does not hold: ignored", worker: worker)
                return
            }
            logger.warning("worker \(worker) failed \(TaskID(env.task)): \(env.error.message)", metadata: m)
            scheduler.failed(env.task, on: worker, reason: env.error.message)
        case .modelRequest:
            let hash = env.modelRequest.modelHash
            guard let m = models[hash] ?? pinnedModels[hash] else {
                try? send(to: worker, Messages.error(nil, "unknown model version \(hash)", retryable: false))
                return
            }
            // An update when the worker holds the version before this one (same shape), else the weights.
            let base = env.modelRequest.baseModelHash
            let update = !base.isEmpty && base != hash && models[hash] != nil && settings.modelUpdates.updates(peer: peer)
                && models[base].map { $0.config == m.config && $0.weights.count == m.weights.count } == true
            let key = ModelKey(hash: hash, base: update ? base : "")
            if encodedModels[key] == nil {
                var e = Messages.envelope(.modelResponse)
                var r = Ptl_V1_ModelResponse()
                r.modelHash = hash
                r.configJson = m.config
                r.tokenizerJson = tokenizerJSON
                if update { r.baseModelHash = base }
                e.modelResponse = r
                let tensors = update ? ModelDelta.encode(old: models[base]!.weights, new: m.weights)
                                     : [WireTensor(name: "weights", dtype: .f32, shape: [m.weights.count / 4], bytes: m.weights)]
                encodedModels[key] = try? Wire.frames(WireMessage(envelope: e, tensors: tensors))
            }
            guard let frames = encodedModels[key] else { return }
            let bytes = frames.dropFirst().reduce(0) { $0 + $1.count }
            if update { modelTraffic.updateBytes += bytes; modelTraffic.updateCount += 1 }
            else { modelTraffic.fullBytes += bytes; modelTraffic.fullCount += 1 }
            try? socket.send([Frame(Array(worker.utf8))] + frames, dontWait: true)
        default:
            break
        }
    }
}

/// A flag one thread sets and another polls.
final class PumpFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
}

/// The coordinator handed to the thread of `answeringWorkers`, which alone uses it meanwhile.
struct UncheckedCoordinator: @unchecked Sendable {
    let value: Coordinator
    init(_ value: Coordinator) { self.value = value }
}
