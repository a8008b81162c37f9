import Dispatch
import Foundation
import PTLLoop
import PTLFormats
import Testing
import PTLTestSupport
import PTLModel
import PTLData
import PTLTensor
import PTLTokenizer
@testable import PTLCluster

/// Peers that are not honest workers, against a coordinator in the middle of a phase (issue 15,
/// findings 1 and 2): a stranger's message whose tensor descriptor would overflow (shape [2^62]
/// or [2^63, 0]) is answered, not trapped on; failures reported by anyone but the lease holder
/// — results that fail decoding, ERRORs — are ignored, so no peer can make another's task
/// hopeless; the phase ends with the honest worker's results, bit for bit.
@Suite(.serialized) struct HostilePeerTests {
    /// A RESULT whose only descriptor claims `shape` (F32) over an empty frame.
    static func overflowingResult(_ key: Ptl_V1_TaskKey, shape: [UInt64]) throws -> [[UInt8]] {
        var e = Messages.envelope(.result)
        e.protocolVersion = Wire.protocolVersion
        e.task = key
        var d = Ptl_V1_TensorDescriptor()
        d.name = "grad"
        d.dtype = .f32
        d.shape = shape
        d.byteLength = 0
        d.crc32C = CRC32C.checksum(UnsafeRawBufferPointer(start: nil, count: 0))
        e.tensors = [d]
        return [try e.serializedBytes(), []]
    }

    @Test func decodingChecksEveryProductOfAShape() throws {
        for shape: [UInt64] in [[1 << 62], [1 << 63, 0], [0, 1 << 63], [1 << 40, 1 << 40, 1 << 40], Array(repeating: 1, count: 9)] {
            let frames = try Self.overflowingResult(Ptl_V1_TaskKey(), shape: shape)
            do {
                _ = try Wire.decode(frames)
                Issue.record("shape \(shape) decoded")
            } catch let e as WireError {
                #expect(e.kind == .descriptorMismatch, "\(shape): \(e)")
            }
        }
    }

    /// Finding 8: the envelope's size and the number of frames are bounded before parsing.
    @Test func envelopesAndFrameCountsAreBoundedBeforeParsing() throws {
        var e = Messages.envelope(.result)
        e.protocolVersion = Wire.protocolVersion
        e.runID = String(repeating: "x", count: 2 << 20)
        do { _ = try Wire.decode([try e.serializedBytes()], maxEnvelopeBytes: 1 << 20); Issue.record("a 2 MB envelope decoded") }
        catch let err as WireError { #expect(err.kind == .oversized && err.message.contains("envelope of")) }
        let many = [try Messages.envelope(.heartbeat).serializedBytes()] + Array(repeating: [UInt8](), count: Wire.maxTensors + 1)
        do { _ = try Wire.decode(many); Issue.record("\(many.count) frames decoded") }
        catch let err as WireError { #expect(err.kind == .oversized && err.message.contains("tensor frames > limit")) }
    }

    @Test func registrationsBeyondTheLimitAreRefused() throws {
        let cluster = try InProcessCluster(workers: 1, configure: { $0.maxWorkers = 1 })
        defer { cluster.shutdown() }
        let coordinator = cluster.coordinator
        let model = try clusterModel()
        let hash = TaskCoding.publish(model, on: coordinator)
        _ = try coordinator.runPhase([HostileTaskTests.task(.stats, step: 1, hash: hash, inputs: TaskCoding.encode([[1, 2, 3]]))])
        let ctx = try ZMQContext()
        let extra = try ZMQSocket(context: ctx, type: .dealer)
        try extra.setRoutingID(Array("extra".utf8))
        try extra.connect(coordinator.endpoint)
        try extra.send(try Wire.encode(Messages.ready(workerID: "extra", threads: 1)))
        usleep(200_000)
        _ = try coordinator.runPhase([HostileTaskTests.task(.stats, step: 2, hash: hash, inputs: TaskCoding.encode([[1, 2, 3]]))])
        #expect(coordinator.counters["too_many_workers", default: 0] >= 1, "\(coordinator.counters)")
        #expect(!coordinator.scheduler.isKnown("extra") && coordinator.scheduler.workers.count == 1)
    }

    @Test func strangersAndForeignFailuresCannotCrashOrFailAPhase() throws {
        let firstKey = LockedBox<Ptl_V1_TaskKey?>(nil)
        let release = DispatchSemaphore(value: 0)
        let honest = WorkerTasks.handler()
        let cluster = try InProcessCluster(workers: 0)
        defer { cluster.shutdown() }
        // The honest worker holds its first task until the hostile peers have had their say.
        try cluster.addWorker(id: "honest") { key, spec, inputs, version, teacher in
            if firstKey.value == nil {
                firstKey.value = key
                _ = release.wait(timeout: .now() + 20)
            }
            return try honest(key, spec, inputs, version, teacher)
        }
        let coordinator = cluster.coordinator
        nonisolated(unsafe) let backend = ClusterBackend(coordinator: coordinator, tokenizerJSON: "")
        nonisolated(unsafe) let model = try clusterModel()
        let reduced = FloatBuffer(count: model.layout.count)
        let outcome = LockedBox<Result<Double, Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            outcome.value = Result { try backend.gradients(model: model, batch: Array(clusterLines.prefix(6)), shards: 3, branchScale: nil,
                                                           key: WorkKey(run: "hostile-peers", step: 1), into: reduced).lossSum }
            done.signal()
        }
        let deadline = Date().addingTimeInterval(20)
        while firstKey.value == nil && Date() < deadline { usleep(10_000) }
        let key = try #require(firstKey.value)

        let ctx = try ZMQContext()
        // A stranger (never said READY).
        let eve = try ZMQSocket(context: ctx, type: .dealer)
        try eve.setRoutingID(Array("eve".utf8))
        try eve.connect(coordinator.endpoint)
        try eve.send(try Self.overflowingResult(key, shape: [1 << 62]))
        try eve.send(try Self.overflowingResult(key, shape: [1 << 63, 0]))
        for _ in 0..<5 {
            var bad = try Wire.encode(WireMessage(envelope: { var e = Messages.envelope(.result); e.task = key; return e }(),
                                                  tensors: [WireTensor(name: "grad", shape: [4], floats: [1, 2, 3, 4])]))
            bad[1][0] ^= 1                                              // CRC mismatch
            try eve.send(bad)
            try eve.send(try Wire.encode(Messages.error(key, "forged failure")))
        }
        // A registered peer that reports failures of the honest worker's task.
        let mallory = try ZMQSocket(context: ctx, type: .dealer)
        try mallory.setRoutingID(Array("mallory".utf8))
        try mallory.connect(coordinator.endpoint)
        try mallory.send(try Wire.encode(Messages.ready(workerID: "mallory", threads: 1)))
        usleep(200_000)
        for _ in 0..<5 {
            try mallory.send(try Wire.encode(Messages.error(key, "forged failure")))
            var bad = try Wire.encode(WireMessage(envelope: { var e = Messages.envelope(.result); e.task = key; return e }(),
                                                  tensors: [WireTensor(name: "grad", shape: [4], floats: [1, 2, 3, 4])]))
            bad[1][0] ^= 1
            try mallory.send(bad)
        }
        try mallory.send(try Wire.encode(WireMessage(envelope: Messages.envelope(.disconnect))))
        usleep(300_000)
        release.signal()
        #expect(done.wait(timeout: .now() + 30) == .success)

        let lossSum = try #require(outcome.value).get()
        let local = FloatBuffer(count: model.layout.count)
        let expected = try tinyLocalBackend()
            .gradients(model: model, batch: Array(clusterLines.prefix(6)), shards: 3, branchScale: nil, key: WorkKey(run: "hostile-peers", step: 1), into: local)
        #expect(lossSum == expected.lossSum && reduced.array() == local.array())
        let c = coordinator.counters
        #expect(c["stale_results", default: 0] >= 7, "\(c)")                   // eve's results, dropped unread
        #expect(c["foreign_error", default: 0] >= 5, "\(c)")                    // mallory's ERRORs
        #expect(c["checksum", default: 0] >= 5, "\(c)")                         // mallory's broken results, decoded and refused
        #expect(c["ignored_failures", default: 0] == 0, "\(c)")                 // none even reached the scheduler
        #expect(coordinator.scheduler.acceptedFrom.values.allSatisfy { $0.worker == "honest" })
    }
}

/// Finding 3: well-formed results from the registered lease holder that would abort the run
/// after acceptance — gradients of ±3e38 on two shards (finite each, infinite summed), token
/// counts of 2^63 (an Int conversion trap), stats sums that overflow — are failed attempts,
/// recomputed; the phases end with the honest numbers.
@Suite(.serialized) struct OverflowingResultTests {
    @Test func resultsThatWouldOverflowAreFailedAttempts() throws {
        let honest = WorkerTasks.handler()
        let grads = LockedBox(0), stats = LockedBox(0), evals = LockedBox(0)
        let cluster = try InProcessCluster(workers: 1, handler: { _ in { key, spec, inputs, version, teacher in
            var (result, tensors) = try honest(key, spec, inputs, version, teacher)
            switch key.phase {
            case .grad:
                grads.value += 1
                if grads.value <= 2, let i = tensors.firstIndex(where: { $0.name == "grad" }) {
                    tensors[i] = WireTensor(name: "grad", shape: tensors[i].shape, floats: [Float](repeating: 3e38, count: tensors[i].byteCount / 4))
                }
            case .stats:
                stats.value += 1
                if stats.value == 1 { result.tokenCount = 1 << 63 }
                if stats.value == 2, let i = tensors.firstIndex(where: { $0.name == "abs_sum" }) {
                    tensors[i] = WireTensor(name: "abs_sum", dtype: .f64, shape: tensors[i].shape,
                                            bytes: [Double](repeating: 1.7e308, count: tensors[i].byteCount / 8).withUnsafeBytes { Array($0) })
                }
            case .eval:
                evals.value += 1
                if evals.value == 1 { result.tokenCount = UInt64.max }
            default: break
            }
            return (result, tensors)
        } })
        defer { cluster.shutdown() }
        let coordinator = cluster.coordinator
        let backend = ClusterBackend(coordinator: coordinator, tokenizerJSON: "")
        let local = try tinyLocalBackend()
        let model = try clusterModel()
        let reduced = FloatBuffer(count: model.layout.count), expected = FloatBuffer(count: model.layout.count)
        let r = try backend.gradients(model: model, batch: Array(clusterLines.prefix(6)), shards: 3, branchScale: nil, key: WorkKey(run: "big", step: 1), into: reduced)
        let e = try local.gradients(model: model, batch: Array(clusterLines.prefix(6)), shards: 3, branchScale: nil, key: WorkKey(run: "big", step: 1), into: expected)
        #expect(r.lossSum == e.lossSum && r.tokens == e.tokens && reduced.array() == expected.array())
        let measured = try backend.statistics(model: model, sequences: clusterLines, shards: 2, branchScale: nil, key: WorkKey(run: "big", measurement: 1))
        let honestStats = try local.statistics(model: model, sequences: clusterLines, shards: 2, branchScale: nil, key: WorkKey(run: "big", measurement: 1))
        #expect(measured.statistics == honestStats.statistics && measured.loss == honestStats.loss)
        #expect(coordinator.counters["bad_result"] == 4, "\(coordinator.counters)")

        // Eval: a generated-token count no shard can produce.
        let demo = packageRoot.appendingPathComponent("models/demo").path
        let demoModel = try HFModel.load(directory: demo)
        let tokenizerJSON = try String(contentsOfFile: demo + "/tokenizer.json", encoding: .utf8)
        let lines = try ArithmeticTask().jsonl(seed: 77, count: 6).split(separator: "\n").map(String.init)
        let counts = try ClusterBackend(coordinator: coordinator, tokenizerJSON: tokenizerJSON)
            .evaluate(model: demoModel, jsonlLines: lines, shards: 2, maxNewTokens: 160, batchSize: 8, key: WorkKey(run: "big-eval"))
        let here = try LocalBackend(tokenizer: try Tokenizer(data: Data(tokenizerJSON.utf8)))
            .evaluate(model: demoModel, jsonlLines: lines, shards: 2, maxNewTokens: 160, batchSize: 8, key: WorkKey(run: "big-eval"))
        #expect(counts.correct == here.correct && counts.total == 6 && counts.generatedTokens == here.generatedTokens)
        #expect(coordinator.counters["bad_result"] == 5, "\(coordinator.counters)")
    }
}

/// Numeric fingerprints (issue 15): the first worker's kernels are the job's; a READY with
/// other kernels is refused (counted, told why, never registered) unless the coordinator
/// allows mixing.
@Suite(.serialized) struct FingerprintTests {
    func ready(_ id: String, fingerprint: String, to endpoint: String, ctx: ZMQContext) throws -> (ZMQSocket, WireMessage?) {
        let s = try ZMQSocket(context: ctx, type: .dealer)
        try s.setRoutingID(Array(id.utf8))
        try s.connect(endpoint)
        var m = Messages.ready(workerID: id, threads: 1)
        m.envelope.ready.fingerprint = fingerprint
        try s.send(try Wire.encode(m))
        let deadline = Date().addingTimeInterval(5)
        while Date() < deadline {
            if try s.poll(milliseconds: 50), let frames = try s.receive(dontWait: true), let reply = try? Wire.decode(frames),
               reply.envelope.type == .error || reply.envelope.type == .task { return (s, reply) }
        }
        return (s, nil)
    }

    @Test(arguments: [false, true])
    func workersWithOtherKernelsAreRefusedUnlessMixingIsAllowed(_ allow: Bool) throws {
        let honest = WorkerTasks.handler()
        // w0 takes its time over step 2, so the coordinator is polling when the stranger says READY.
        let cluster = try InProcessCluster(workers: 1, configure: { $0.allowMixedKernels = allow }, handler: { _ in { key, spec, inputs, version, teacher in
            if key.step == 2 { usleep(1_500_000) }
            return try honest(key, spec, inputs, version, teacher)
        } })
        defer { cluster.shutdown() }
        let coordinator = cluster.coordinator
        let model = try clusterModel()
        let hash = TaskCoding.publish(model, on: coordinator)
        // w0 (this machine's kernels) registers and becomes the job's fingerprint.
        _ = try coordinator.runPhase([HostileTaskTests.task(.stats, step: 1, hash: hash, inputs: TaskCoding.encode([[1, 2, 3]]))])
        #expect(coordinator.jobFingerprint == Messages.numericFingerprint)
        let ctx = try ZMQContext()
        let pump = DispatchSemaphore(value: 0)
        let phase = LockedBox<Int>(0)
        DispatchQueue.global().async {   // the coordinator handles messages while a phase runs
            _ = try? coordinator.runPhase([HostileTaskTests.task(.stats, step: 2, hash: hash, inputs: TaskCoding.encode([[1, 2, 3]]))],
                                          until: SystemClock().now() + 3)
            phase.value = 1
            pump.signal()
        }
        let (_, reply) = try ready("zen5", fingerprint: "openblas SkylakeX; oneDNN 2.6.3 avx512_core_amx", to: coordinator.endpoint, ctx: ctx)
        _ = pump.wait(timeout: .now() + 10)
        if allow {
            #expect(coordinator.counters["mixed_kernels"] == nil)
            // Registered, not merely unheard (it never heartbeats, so it may since have been dropped as silent).
            #expect(coordinator.scheduler.isKnown("zen5") || coordinator.counters["dropped_workers", default: 0] >= 1, "\(coordinator.counters)")
        } else {
            #expect(coordinator.counters["mixed_kernels"] == 1, "\(coordinator.counters)")
            let r = try #require(reply)
            #expect(r.envelope.type == .error && r.envelope.error.message.contains("refused: this job's workers compute with openblas")
                    && !r.envelope.error.retryable)
            #expect(!coordinator.scheduler.isKnown("zen5"))
        }
    }
}

/// Identities bound to CURVE keys (issue 15, finding 9): a worker identity belongs to the key
/// that registered it; another allowed key using the same routing id is refused.
@Suite(.serialized) struct IdentityTests {
    @Test func anotherKeyCannotTakeOverAWorkersIdentity() throws {
        let ctx = try ZMQContext()
        let server = try CurveKeys.generate(), owner = try CurveKeys.generate(), thief = try CurveKeys.generate()
        let auth = try CurveAuthenticator(context: ctx, allowedPublicKeys: [owner.publicKey, thief.publicKey])
        defer { auth.stop() }
        var cs = CoordinatorSettings()
        cs.heartbeatInterval = 0.05
        cs.curveSecretKey = server.secretKey
        let coordinator = try Coordinator(context: ctx, bind: "tcp://127.0.0.1:*", settings: cs)
        func client(_ keys: (publicKey: String, secretKey: String)) throws -> ZMQSocket {
            let s = try ZMQSocket(context: ctx, type: .dealer)
            try s.setRoutingID(Array("w".utf8))
            try s.setCurveClient(serverPublicKey: try CurveKeys.decode(server.publicKey), publicKey: try CurveKeys.decode(keys.publicKey),
                                 secretKey: try CurveKeys.decode(keys.secretKey))
            try s.connect(coordinator.endpoint)
            return s
        }
        // The coordinator polls while a phase with no worker to run it waits.
        let model = try clusterModel()
        let hash = TaskCoding.publish(model, on: coordinator)
        nonisolated(unsafe) let c = coordinator
        let done = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            _ = try? c.runPhase([HostileTaskTests.task(.stats, step: 1, hash: hash, inputs: TaskCoding.encode([[1, 2, 3]]))],
                                until: SystemClock().now() + 3)
            done.signal()
        }
        let a = try client(owner)
        try a.send(try Wire.encode(Messages.ready(workerID: "w", threads: 1)))
        var gotTask = false
        let deadline = Date().addingTimeInterval(2)
        while !gotTask && Date() < deadline {
            if try a.poll(milliseconds: 50), let f = try a.receive(dontWait: true), let m = try? Wire.decode(f), m.envelope.type == .task { gotTask = true }
        }
        #expect(gotTask)                                       // the owner registered and was leased the task
        let b = try client(thief)
        try b.send(try Wire.encode(Messages.ready(workerID: "w", threads: 1)))
        var refusal: String?
        let d2 = Date().addingTimeInterval(2)
        while refusal == nil && Date() < d2 {
            if try b.poll(milliseconds: 50), let f = try b.receive(dontWait: true), let m = try? Wire.decode(f), m.envelope.type == .error {
                refusal = m.envelope.error.message
            }
        }
        _ = done.wait(timeout: .now() + 10)
        #expect(refusal?.contains("refused: the identity w belongs to another key") == true, "\(String(describing: refusal))")
        #expect(c.counters["identity_taken", default: 0] >= 1, "\(c.counters)")
        #expect(c.identityKeys["w"] == owner.publicKey)
    }
}

/// Robust aggregation (issue 15): a registered worker's finite but poisoned gradient (a
/// thousand times an honest shard's) is left out of the step, logged and counted; honest steps
/// are untouched.
@Suite(.serialized) struct OutlierShardTests {
    @Test func medianAndDeviation() {
        #expect(ClusterBackend.outliers([1, 1.1, 0.9, 1.05, 50], z: 6) == [4])
        #expect(ClusterBackend.outliers([1, 1, 1, 1], z: 6).isEmpty)            // no deviation: nothing flagged
        #expect(ClusterBackend.outliers([1, 1.2, 0.8, 1.1], z: 6).isEmpty)
    }

    @Test func aPoisonedShardIsLeftOut() throws {
        let honest = WorkerTasks.handler()
        let poison = LockedBox(false)
        let cluster = try InProcessCluster(workers: 1, configure: { $0.rejectOutlierShards = 6 }, handler: { _ in { key, spec, inputs, version, teacher in
            var (result, tensors) = try honest(key, spec, inputs, version, teacher)
            if poison.value, key.phase == .grad, key.shard == 2, let i = tensors.firstIndex(where: { $0.name == "grad" }) {
                tensors[i] = WireTensor(name: "grad", shape: tensors[i].shape, floats: tensors[i].floats!.map { $0 * -1000 })
            }
            return (result, tensors)
        } })
        defer { cluster.shutdown() }
        let coordinator = cluster.coordinator
        let backend = ClusterBackend(coordinator: coordinator, tokenizerJSON: "")
        let local = try tinyLocalBackend()
        let model = try clusterModel()
        let batch = Array(clusterLines.prefix(16))
        let honestGrads = FloatBuffer(count: model.layout.count), expected = FloatBuffer(count: model.layout.count)
        let r = try backend.gradients(model: model, batch: batch, shards: 8, branchScale: nil, key: WorkKey(run: "robust", step: 1), into: honestGrads)
        let e = try local.gradients(model: model, batch: batch, shards: 8, branchScale: nil, key: WorkKey(run: "robust", step: 1), into: expected)
        #expect(r.lossSum == e.lossSum && honestGrads.array() == expected.array())   // honest: untouched
        #expect(coordinator.counters["outlier_shard"] == nil)
        poison.value = true
        let poisoned = FloatBuffer(count: model.layout.count)
        _ = try backend.gradients(model: model, batch: batch, shards: 8, branchScale: nil, key: WorkKey(run: "robust", step: 2), into: poisoned)
        #expect(coordinator.counters["outlier_shard"] == 1, "\(coordinator.counters)")
        // Seven honest shards, rescaled: close to the honest gradient, nothing like the poison.
        let a = poisoned.array(), b = expected.array()
        let dot = zip(a, b).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let cos = dot / (sqrt(a.reduce(0.0) { $0 + Double($1) * Double($1) }) * sqrt(b.reduce(0.0) { $0 + Double($1) * Double($1) }))
        #expect(cos > 0.8, "cosine to the honest gradient \(cos)")
    }
}

/// The in-process backend of the cluster tests' tiny model (tiny-llama's tokenizer).
func tinyLocalBackend() throws -> LocalBackend {
    LocalBackend(tokenizer: try Tokenizer(data: Data(contentsOf: packageRoot.appendingPathComponent("Tests/Fixtures/tiny-llama/tokenizer.json"))))
}

/// A value shared between the test and a worker or phase thread.
final class LockedBox<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var v: T
    init(_ v: T) { self.v = v }
    var value: T {
        get { lock.withLock { v } }
        set { lock.withLock { v = newValue } }
    }
}
