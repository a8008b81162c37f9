import Foundation
import Logging

/// What a worker computes for one task: the model version it needs, given as (config, weights).
/// `teacher` is the distillation teacher the task names (`spec.teacherHash`), nil when it names none.
public typealias TaskHandler = @Sendable (_ key: Ptl_V1_TaskKey, _ spec: Ptl_V1_Task, _ inputs: [WireTensor],
                                          _ model: ModelVersion, _ teacher: ModelVersion?) throws -> (Ptl_V1_Result, [WireTensor])

/// A model version as workers receive it.
public struct ModelVersion: Sendable {
    public let hash: String
    public let config: String
    public let weights: [Float]
    /// tokenizer.json (empty when the coordinator has none).
    public let tokenizer: String
}

/// Settings of a worker's loop.
public struct WorkerSettings: Sendable {
    public var heartbeatInterval: Double = 1
    /// Heartbeat intervals the coordinator may be silent before we reconnect (while no task of
    /// ours computes: a busy worker waits for its result, which a restarted coordinator answers
    /// with DISCONNECT anyway). Ten, not the ZeroMQ Guide's three: between steps the coordinator
    /// reduces and updates without listening, and on a loaded machine its messages queue behind
    /// half-gigabyte frames.
    public var liveness: Double = 10
    /// Reconnect back-off: starts here, doubles to `maxBackoff`.
    public var minBackoff: Double = 1
    public var maxBackoff: Double = 32
    public var threads = 1
    /// CURVE: the coordinator's public key and this worker's secret key (Z85); nil means plain TCP.
    public var curve: (serverPublicKey: String, secretKey: String)?
    /// A directory where the last model version received is kept (config, weights,
    /// tokenizer), so a restarted worker does not fetch it again; nil keeps it in memory only.
    public var cacheDirectory: String?
    /// A version is written to the cache once it has been current this long with the worker
    /// idle: tuning replaces the version every step, and writing each (hundreds of MB) would
    /// take the cores from the computing; the version of a stats or eval phase, or of the
    /// pause while the coordinator prunes, is the one worth keeping.
    public var cacheQuietSeconds: Double = 10
    /// Fault injection (tests only).
    public var faults: FaultPlan?
    public init() {}
}

/// A worker: a DEALER that registers (READY), heartbeats, runs tasks on a background thread
/// while it keeps heartbeating, fetches model versions it lacks, and reconnects with back-off
/// when the coordinator falls silent (re-registering after a restart).
public final class WorkerClient: @unchecked Sendable {
    public let id: String
    let endpoint: String
    let context: ZMQContext
    let settings: WorkerSettings
    let clock: Clock
    let handler: TaskHandler
    var socket: ZMQSocket
    var models: [String: ModelVersion] = [:]
    /// The distillation teacher of the run (fetched whole once, checked against its hash).
    var teacher: ModelVersion?
    var waiting: (key: Ptl_V1_TaskKey, spec: Ptl_V1_Task, inputs: [WireTensor])?
    let done = DoneBox()
    var busy = false
    /// The held version not yet written to the disk cache, and when it arrived.
    var unstored: (hash: String, since: Double)?
    /// When the pending model request went out.
    var requestedAt = 0.0
    /// Records carry the task (`task`, `phase`, `round`, `step`, `measurement`, `shard`, `attempt`) where there is one.
    public var logger = Logger.silent
    public private(set) var reconnects = 0
    public private(set) var tasksRun = 0
    /// Model versions received as updates on top of the one held (not fetched whole).
    public private(set) var updatesApplied = 0

    final class DoneBox: @unchecked Sendable {
        let lock = NSLock()
        var value: (message: WireMessage, seconds: Double)?
        func put(_ m: WireMessage, seconds: Double) { lock.lock(); value = (m, seconds); lock.unlock() }
        func take() -> (message: WireMessage, seconds: Double)? { lock.lock(); defer { value = nil; lock.unlock() }; return value }
    }

    public init(id: String, connect endpoint: String, context: ZMQContext, settings: WorkerSettings = WorkerSettings(),
                clock: Clock = SystemClock(), handler: @escaping TaskHandler) throws {
        self.id = id
        self.endpoint = endpoint
        self.context = context
        self.settings = settings
        self.clock = clock
        self.handler = handler
        socket = try WorkerClient.connect(id: id, endpoint: endpoint, context: context, curve: settings.curve)
    }

    static func connect(id: String, endpoint: String, context: ZMQContext,
                        curve: (serverPublicKey: String, secretKey: String)?) throws -> ZMQSocket {
        let s = try ZMQSocket(context: context, type: .dealer)
        try s.setRoutingID(Array(id.utf8))
        if let curve {
            try s.setCurveClient(serverPublicKey: try CurveKeys.decode(curve.serverPublicKey),
                                 publicKey: try CurveKeys.decode(try CurveKeys.publicKey(fromSecret: curve.secretKey)),
                                 secretKey: try CurveKeys.decode(curve.secretKey))
        }
        try s.connect(endpoint)
        return s
    }

    func send(_ m: WireMessage) throws { try socket.send(try Wire.frames(m), dontWait: true) }

    /// Runs until `shouldStop` returns true.
    public func run(shouldStop: () -> Bool) throws {
        try send(Messages.ready(workerID: id, threads: settings.threads, cachedModel: cachedHash ?? ""))
        var lastHeard = clock.now(), lastSent = clock.now()
        var backoff = settings.minBackoff
        while !shouldStop() {
            // While a task computes, wake often so its result leaves as soon as it is ready.
            if try socket.poll(milliseconds: busy ? 2 : Int(settings.heartbeatInterval * 1000 / 4)) {
                while let frames = try socket.receiveFrames(dontWait: true) {
                    lastHeard = clock.now()
                    backoff = settings.minBackoff
                    try handle(frames)
                }
            }
            if let (result, handlerSeconds) = done.take() {
                busy = false
                let sendStart = clock.now()
                tasksRun += 1
                let fault = result.envelope.type == .result ? settings.faults?.fault(for: result.envelope.task) : nil
                switch fault {
                case .dropResult:
                    logger.notice("fault injection: dropping the result of \(TaskID(result.envelope.task)) attempt \(result.envelope.task.attempt & 0xFFF)",
                                  metadata: result.envelope.task.logMetadata)
                case .duplicateResult:
                    logger.notice("fault injection: sending the result of \(TaskID(result.envelope.task)) twice", metadata: result.envelope.task.logMetadata)
                    try send(result)
                    try send(result)
                case .dieAfterSend:
                    try send(result)
                    logger.notice("fault injection: dying right after sending the result of \(TaskID(result.envelope.task))", metadata: result.envelope.task.logMetadata)
                    usleep(20_000)
                    _exit(70)
                default:
                    try send(result)
                    var m = result.envelope.task.logMetadata
                    if result.envelope.type == .result {
                        let send = clock.now() - sendStart
                        m["seconds"] = .stringConvertible(handlerSeconds)
                        m["compute_seconds"] = .stringConvertible(result.envelope.result.seconds)
                        m["send_seconds"] = .stringConvertible(send)
                        m["tokens"] = "\(result.envelope.result.tokenCount)"
                        logger.info("\(String(format: "task %@ attempt %u: result sent (%.2f s in the task, %.2f s of it compute; %.2f s to send)", "\(TaskID(result.envelope.task))", result.envelope.task.attempt, handlerSeconds, result.envelope.result.seconds, send))", metadata: m)
                    } else {
                        logger.warning("task \(TaskID(result.envelope.task)) attempt \(result.envelope.task.attempt): failed: \(result.envelope.error.message)", metadata: m)
                    }
                }
                lastSent = clock.now()
            }
            let now = clock.now()
            if !busy, let u = unstored, now - u.since >= settings.cacheQuietSeconds {
                unstored = nil
                if let v = models[u.hash] { store(v) }
            }
            if now - lastSent >= settings.heartbeatInterval {
                try send(Messages.heartbeat())
                lastSent = now
            }
            if !busy && now - lastHeard > settings.heartbeatInterval * settings.liveness {
                // The coordinator is gone: wait, reconnect, register again.
                logger.warning("coordinator silent for \(Int(now - lastHeard)) s: reconnecting in \(Int(backoff)) s")
                let until = clock.now() + backoff
                while clock.now() < until && !shouldStop() { usleep(20_000) }
                backoff = min(settings.maxBackoff, backoff * 2)
                socket = try WorkerClient.connect(id: id, endpoint: endpoint, context: context, curve: settings.curve)
                reconnects += 1
                try send(Messages.ready(workerID: id, threads: settings.threads, cachedModel: cachedHash ?? ""))
                lastHeard = clock.now()
                lastSent = lastHeard
            }
        }
        // Leaving on purpose: say so, so the coordinator requeues our task at once.
        try? socket.setLinger(milliseconds: 200)
        try? send(WireMessage(envelope: Messages.envelope(.disconnect)))
    }

    func handle(_ frames: [Frame]) throws {
        let message: WireMessage
        do { message = try Wire.decode(frames: frames) } catch {
            logger.warning("bad message from the coordinator: \(error)")
            return
        }
        let env = message.envelope
        switch env.type {
        case .disconnect:
            try send(Messages.ready(workerID: id, threads: settings.threads))
        case .task:
            guard !busy else { try send(Messages.busy(env.task)); return }
            if settings.faults?.fault(for: env.task) == .dieBeforeCompute {
                logger.notice("fault injection: dying before computing \(TaskID(env.task))", metadata: env.task.logMetadata)
                _exit(70)
            }
            // Hashes name cache files: anything but what modelHash produces is refused before a
            // path is built from it.
            let hashes = [env.taskSpec.modelHash] + (env.taskSpec.teacherHash.isEmpty ? [] : [env.taskSpec.teacherHash])
            if let h = hashes.first(where: { !isModelHash($0) }) {
                logger.warning("task \(TaskID(env.task)) names an invalid model hash \(h.prefix(40).debugDescription): refused")
                try send(Messages.error(env.task, "invalid model hash \(h.prefix(40).debugDescription) (expected 1 to 16 lowercase hex digits)"))
                return
            }
            if models[env.taskSpec.modelHash] == nil, let cached = loadCached(env.taskSpec.modelHash) {
                models = [cached.hash: cached]
            }
            waiting = (env.task, env.taskSpec, message.tensors)
            try startOrFetch()
        case .modelResponse:
            let r = env.modelResponse
            guard isModelHash(r.modelHash), r.baseModelHash.isEmpty || isModelHash(r.baseModelHash) else {
                logger.warning("model response for an invalid hash \(r.modelHash.prefix(40).debugDescription): ignored")
                return
            }
            if let t = waiting, !t.spec.teacherHash.isEmpty, r.modelHash == t.spec.teacherHash, r.modelHash != t.spec.modelHash {
                // The teacher: always whole, kept beside the student's version.
                guard r.baseModelHash.isEmpty, let w = message.tensor("weights")?.floats,
                      w.withUnsafeBufferPointer({ modelHash(configJSON: r.configJson, weights: $0) }) == r.modelHash else {
                    logger.warning("the teacher \(r.modelHash) came damaged or as an update: task \(TaskID(t.key)) fails")
                    waiting = nil
                    try send(Messages.error(t.key, "the teacher \(r.modelHash) arrived damaged"))
                    return
                }
                let version = ModelVersion(hash: r.modelHash, config: r.configJson, weights: w, tokenizer: r.tokenizerJson)
                teacher = version
                logger.info("\(String(format: "teacher %@ received (%.1f MB) in %.2f s", r.modelHash, Double(4 * w.count) / 1e6, clock.now() - requestedAt))")
                if settings.cacheDirectory != nil {   // once a run: a restarted worker loads it from the disk cache
                    DispatchQueue.global(qos: .utility).async { [self] in write(version, suffix: "teacher") }
                }
                try startOrFetch()
                return
            }
            var w: [Float]
            if r.baseModelHash.isEmpty {
                guard let t = message.tensor("weights"), t.dtype == .f32, t.byteCount % 4 == 0 else { logger.warning("model response without weights"); return }
                // Into the held version's storage when the size matches (no fresh model-sized array).
                w = models.count == 1 && models.first!.value.weights.count == t.byteCount / 4 ? models.removeValue(forKey: models.first!.key)!.weights : []
                models = [:]
                if w.count == t.byteCount / 4 {
                    w.withUnsafeMutableBytes { dst in t.withBytes { dst.copyMemory(from: $0) } }
                } else {
                    w = t.floats!
                }
                // Whole weights are checked against the hash they were asked by, like updates.
                let hash = w.withUnsafeBufferPointer { modelHash(configJSON: r.configJson, weights: $0) }
                guard hash == r.modelHash else {
                    logger.warning("model \(r.modelHash) arrived as version \(hash): rejected")
                    if let t = waiting, t.spec.modelHash == r.modelHash {
                        waiting = nil
                        try send(Messages.error(t.key, "model \(r.modelHash) arrived damaged (its weights hash to \(hash))"))
                    }
                    return
                }
            } else {
                // An update on top of the version we hold: applied, then checked against the new hash.
                guard models[r.baseModelHash] != nil else {
                    logger.notice("model update on top of \(r.baseModelHash), which we do not hold: fetching \(r.modelHash) whole")
                    try requestModel(r.modelHash, base: nil)
                    return
                }
                w = models.removeValue(forKey: r.baseModelHash)!.weights   // its storage becomes the new version's: no copy
                models = [:]
                do {
                    try ModelDelta.apply(message.tensors, to: &w)
                    let hash = w.withUnsafeBufferPointer { modelHash(configJSON: r.configJson, weights: $0) }
                    guard hash == r.modelHash else {
                        throw WireError(kind: .checksum, message: "the update gave version \(hash), not \(r.modelHash)")
                    }
                } catch {
                    logger.warning("model update to \(r.modelHash) rejected (\(error)): fetching it whole")
                    try requestModel(r.modelHash, base: nil)
                    return
                }
                updatesApplied += 1
            }
            let version = ModelVersion(hash: r.modelHash, config: r.configJson, weights: w, tokenizer: r.tokenizerJson)
            models = [r.modelHash: version]   // keep one version
            let mb = Double(message.tensors.reduce(0) { $0 + $1.byteCount }) / 1e6
            logger.info("\(String(format: "model %@ received %@ (%.1f MB) in %.2f s", r.modelHash, r.baseModelHash.isEmpty ? "whole" : "as an update on \(r.baseModelHash)", mb, clock.now() - requestedAt))",
                        metadata: ["model": .string(r.modelHash), "update": "\(!r.baseModelHash.isEmpty)"])
            if settings.cacheDirectory != nil { unstored = (r.modelHash, clock.now()) }
            if let t = waiting, t.spec.modelHash == env.modelResponse.modelHash { try startOrFetch() }
        case .error:
            logger.warning("coordinator error: \(env.error.message)")
            if let t = waiting { waiting = nil; try send(Messages.error(t.key, env.error.message)) }
            // Refused for good (another protocol, other kernels): saying READY again cannot help.
            if !env.hasTask && !env.error.retryable && env.error.message.hasPrefix("refused:") {
                throw WorkerRefused(message: env.error.message)
            }
        default:
            break
        }
    }

    /// Starts the waiting task when its model version (and teacher, if it names one) are here;
    /// else asks for the one missing (the student's version first).
    func startOrFetch() throws {
        guard let t = waiting else { return }
        if models[t.spec.modelHash] == nil {
            try requestModel(t.spec.modelHash, base: models.keys.first)
        } else if !t.spec.teacherHash.isEmpty, t.spec.teacherHash != t.spec.modelHash, teacher?.hash != t.spec.teacherHash {
            if let cached = loadCached(t.spec.teacherHash, suffix: "teacher") {
                teacher = cached
                try startOrFetch()
            } else {
                try requestModel(t.spec.teacherHash, base: nil)
            }
        } else {
            waiting = nil
            start(t.key, t.spec, t.inputs)
        }
    }

    /// Asks for model version `hash`, as an update on top of `base` when we hold one.
    func requestModel(_ hash: String, base: String?) throws {
        var e = Messages.envelope(.modelRequest)
        var r = Ptl_V1_ModelRequest()
        r.modelHash = hash
        if let base { r.baseModelHash = base }
        e.modelRequest = r
        requestedAt = clock.now()
        try send(WireMessage(envelope: e))
    }

    /// The hash of the model version in the disk cache, if any.
    var cachedHash: String? {
        guard let dir = settings.cacheDirectory else { return nil }
        return (try? FileManager.default.contentsOfDirectory(atPath: dir))?.first { $0.hasSuffix(".model") }.map { String($0.dropLast(6)) }
    }

    let storing = NSLock()

    /// Keeps `version` as the only model in the disk cache (written to a temporary name, then
    /// renamed) on a background thread; a version due while one is written is skipped.
    func store(_ version: ModelVersion) {
        guard settings.cacheDirectory != nil, storing.try() else { return }
        DispatchQueue.global(qos: .utility).async { [self] in
            defer { storing.unlock() }
            write(version)
        }
    }

    /// Writes `version` as the cache's only `.model` (or, with `suffix` "teacher", its only `.teacher`).
    func write(_ version: ModelVersion, suffix: String = "model") {
        guard let dir = settings.cacheDirectory else { return }
        let fm = FileManager.default
        do {
            try fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let url = URL(fileURLWithPath: dir)
            let temp = url.appendingPathComponent(".\(version.hash).writing")
            try? fm.removeItem(at: temp)
            try fm.createDirectory(at: temp, withIntermediateDirectories: true)
            try Data(version.config.utf8).write(to: temp.appendingPathComponent("config.json"))
            try Data(version.tokenizer.utf8).write(to: temp.appendingPathComponent("tokenizer.json"))
            try version.weights.withUnsafeBytes { try Data($0).write(to: temp.appendingPathComponent("weights.f32")) }
            for old in try fm.contentsOfDirectory(atPath: dir) where old.hasSuffix(".\(suffix)") { try? fm.removeItem(at: url.appendingPathComponent(old)) }
            try fm.moveItem(at: temp, to: url.appendingPathComponent("\(version.hash).\(suffix)"))
        } catch {
            logger.warning("could not cache model \(version.hash) in \(dir): \(error)")
        }
    }

    /// The cached model version `hash`, checked against its content hash; nil when absent or damaged.
    func loadCached(_ hash: String, suffix: String = "model") -> ModelVersion? {
        guard let dir = settings.cacheDirectory else { return nil }
        let url = URL(fileURLWithPath: dir).appendingPathComponent("\(hash).\(suffix)")
        guard let config = try? String(contentsOf: url.appendingPathComponent("config.json"), encoding: .utf8),
              let tokenizer = try? String(contentsOf: url.appendingPathComponent("tokenizer.json"), encoding: .utf8),
              let raw = try? Data(contentsOf: url.appendingPathComponent("weights.f32")), raw.count % 4 == 0 else { return nil }
        let weights = raw.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        guard weights.withUnsafeBufferPointer({ modelHash(configJSON: config, weights: $0) }) == hash else {
            logger.warning("cached model \(hash) is damaged: fetching it again")
            return nil
        }
        logger.info("model \(hash) loaded from the cache \(dir)", metadata: ["model": .string(hash)])
        return ModelVersion(hash: hash, config: config, weights: weights, tokenizer: tokenizer)
    }

    func start(_ key: Ptl_V1_TaskKey, _ spec: Ptl_V1_Task, _ inputs: [WireTensor]) {
        busy = true
        logger.info("task \(TaskID(key)) attempt \(key.attempt): computing", metadata: key.logMetadata)
        let model = models[spec.modelHash]!
        let teacher = spec.teacherHash.isEmpty ? nil : spec.teacherHash == spec.modelHash ? model : self.teacher
        let handler = self.handler, done = self.done, faults = settings.faults, logger = self.logger
        DispatchQueue.global().async {
            let reply: WireMessage
            let t0 = Date()
            do {
                if let f = faults, f.delayMilliseconds > 0 { usleep(UInt32(f.delayMilliseconds) * 1000) }
                if let s = faults?.failShard, key.shard == s { throw PoisonShard(shard: s) }
                let (result, tensors) = try handler(key, spec, inputs, model, teacher)
                if faults?.fault(for: key) == .dieMidCompute {
                    logger.notice("fault injection: dying while computing \(TaskID(key))", metadata: key.logMetadata)
                    _exit(70)
                }
                var e = Messages.envelope(.result, run: key.run)
                e.task = key
                e.result = result
                reply = WireMessage(envelope: e, tensors: tensors)
            } catch {
                reply = Messages.error(key, "\(error)")
            }
            done.put(reply, seconds: Date().timeIntervalSince(t0))
        }
    }
}

/// The coordinator refused this worker for good (its kernels differ from the job's).
public struct WorkerRefused: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { "the coordinator refused this worker: \(message)" }
}
