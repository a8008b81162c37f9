import Foundation

/// What a worker computes for one task: the model version it needs, given as (config, weights).
public typealias TaskHandler = @Sendable (_ key: Ptl_V1_TaskKey, _ spec: Ptl_V1_Task, _ inputs: [WireTensor],
                                          _ model: ModelVersion) throws -> (Ptl_V1_Result, [WireTensor])

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
    public var liveness: Double = 3
    /// Reconnect back-off: starts here, doubles to `maxBackoff`.
    public var minBackoff: Double = 1
    public var maxBackoff: Double = 32
    public var threads = 1
    /// CURVE: the coordinator's public key and this worker's secret key (Z85); nil means plain TCP.
    public var curve: (serverPublicKey: String, secretKey: String)?
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
    var waiting: (key: Ptl_V1_TaskKey, spec: Ptl_V1_Task, inputs: [WireTensor])?
    let done = DoneBox()
    var busy = false
    public var log: (String) -> Void = { _ in }
    public private(set) var reconnects = 0
    public private(set) var tasksRun = 0

    final class DoneBox: @unchecked Sendable {
        let lock = NSLock()
        var value: WireMessage?
        func put(_ m: WireMessage) { lock.lock(); value = m; lock.unlock() }
        func take() -> WireMessage? { lock.lock(); defer { value = nil; lock.unlock() }; return value }
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

    func send(_ m: WireMessage) throws { try socket.send(try Wire.encode(m), dontWait: true) }

    /// The error a worker answers a task with while it still computes another.
    public static let busyMessage = "busy"

    /// Runs until `shouldStop` returns true.
    public func run(shouldStop: () -> Bool) throws {
        try send(Messages.ready(workerID: id, threads: settings.threads))
        var lastHeard = clock.now(), lastSent = clock.now()
        var backoff = settings.minBackoff
        while !shouldStop() {
            // While a task computes, wake often so its result leaves as soon as it is ready.
            if try socket.poll(milliseconds: busy ? 2 : Int(settings.heartbeatInterval * 1000 / 4)) {
                while let frames = try socket.receive(dontWait: true) {
                    lastHeard = clock.now()
                    backoff = settings.minBackoff
                    try handle(frames)
                }
            }
            if let result = done.take() {
                busy = false
                tasksRun += 1
                try send(result)
                lastSent = clock.now()
            }
            let now = clock.now()
            if now - lastSent >= settings.heartbeatInterval {
                try send(Messages.heartbeat())
                lastSent = now
            }
            if now - lastHeard > settings.heartbeatInterval * settings.liveness {
                // The coordinator is gone: wait, reconnect, register again.
                log("coordinator silent for \(Int(now - lastHeard)) s: reconnecting in \(Int(backoff)) s")
                let until = clock.now() + backoff
                while clock.now() < until && !shouldStop() { usleep(20_000) }
                backoff = min(settings.maxBackoff, backoff * 2)
                socket = try WorkerClient.connect(id: id, endpoint: endpoint, context: context, curve: settings.curve)
                reconnects += 1
                try send(Messages.ready(workerID: id, threads: settings.threads))
                lastHeard = clock.now()
                lastSent = lastHeard
            }
        }
    }

    func handle(_ frames: [[UInt8]]) throws {
        let message: WireMessage
        do { message = try Wire.decode(frames) } catch {
            log("bad message from the coordinator: \(error)")
            return
        }
        let env = message.envelope
        switch env.type {
        case .disconnect:
            try send(Messages.ready(workerID: id, threads: settings.threads))
        case .task:
            guard !busy else { try send(Messages.error(env.task, WorkerClient.busyMessage)); return }
            if models[env.taskSpec.modelHash] == nil {
                waiting = (env.task, env.taskSpec, message.tensors)
                var e = Messages.envelope(.modelRequest)
                var r = Ptl_V1_ModelRequest()
                r.modelHash = env.taskSpec.modelHash
                e.modelRequest = r
                try send(WireMessage(envelope: e))
            } else {
                start(env.task, env.taskSpec, message.tensors)
            }
        case .modelResponse:
            guard let w = message.tensor("weights")?.floats else { log("model response without weights"); return }
            let r = env.modelResponse
            models = [r.modelHash: ModelVersion(hash: r.modelHash, config: r.configJson, weights: w, tokenizer: r.tokenizerJson)]   // keep one version
            if let t = waiting, t.spec.modelHash == env.modelResponse.modelHash {
                waiting = nil
                start(t.key, t.spec, t.inputs)
            }
        case .error:
            log("coordinator error: \(env.error.message)")
            if let t = waiting { waiting = nil; try send(Messages.error(t.key, env.error.message)) }
        default:
            break
        }
    }

    func start(_ key: Ptl_V1_TaskKey, _ spec: Ptl_V1_Task, _ inputs: [WireTensor]) {
        busy = true
        let model = models[spec.modelHash]!
        let handler = self.handler, done = self.done
        DispatchQueue.global().async {
            let reply: WireMessage
            do {
                let (result, tensors) = try handler(key, spec, inputs, model)
                var e = Messages.envelope(.result, run: key.run)
                e.task = key
                e.result = result
                reply = WireMessage(envelope: e, tensors: tensors)
            } catch {
                reply = Messages.error(key, "\(error)")
            }
            done.put(reply)
        }
    }
}
