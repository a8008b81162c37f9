import Foundation
import PTLLoop
import Testing
import PTLTestSupport
import PTLModel
import PTLTensor
import PTLTokenizer
@testable import PTLCluster

/// A worker sent hostile tasks — token ids outside the vocabulary, negative and huge lengths,
/// descriptors that disagree with their frames, absurd sizes — answers each with an error that
/// names the problem (the task fails on every attempt and the phase says why) and keeps serving:
/// a good task on the same worker afterwards is computed.
@Suite(.serialized) struct HostileTaskTests {
    typealias TaskSpec = (key: Ptl_V1_TaskKey, spec: Ptl_V1_Task, inputs: [WireTensor])

    static func i32(_ name: String, _ xs: [Int32]) -> WireTensor {
        WireTensor(name: name, dtype: .i32, shape: [xs.count], bytes: xs.withUnsafeBytes { Array($0) })
    }

    static func task(_ phase: Ptl_V1_Phase, step: UInt64, hash: String, inputs: [WireTensor], seqLen: UInt32 = 16,
                     edit: (inout Ptl_V1_Task) -> Void = { _ in }) -> TaskSpec {
        var key = Ptl_V1_TaskKey()
        key.run = "hostile"; key.phase = phase; key.step = step
        var spec = Ptl_V1_Task()
        spec.modelHash = hash
        spec.seqLen = seqLen
        spec.lossScale = 0.01
        edit(&spec)
        return (key, spec, inputs)
    }

    @Test func aWorkerRejectsEachHostileTaskByNameAndKeepsServing() throws {
        let cluster = try InProcessCluster(workers: 1)
        defer { cluster.shutdown() }
        let coordinator = cluster.coordinator
        coordinator.tokenizerJSON = try String(contentsOf: packageRoot.appendingPathComponent("Tests/Fixtures/tiny-llama/tokenizer.json"), encoding: .utf8)

        let model = try clusterModel()   // vocabulary 40, 2 blocks
        let hash = TaskCoding.publish(model, on: coordinator)
        let good = TaskCoding.encode([[1, 2, 3, 4], [5, 6, 7]])
        let cases: [(String, TaskSpec)] = [
            ("outside the vocabulary", Self.task(.grad, step: 1, hash: hash, inputs: [Self.i32("lengths", [3]), Self.i32("ids", [1, 40, 2])])),
            ("outside the vocabulary", Self.task(.stats, step: 2, hash: hash, inputs: [Self.i32("lengths", [2]), Self.i32("ids", [-7, 2])])),
            ("negative length", Self.task(.grad, step: 3, hash: hash, inputs: [Self.i32("lengths", [-3, 3]), Self.i32("ids", [])])),
            ("add up", Self.task(.grad, step: 4, hash: hash, inputs: [Self.i32("lengths", [Int32.max, 2]), Self.i32("ids", [1, 2])])),
            ("add up", Self.task(.stats, step: 5, hash: hash, inputs: [Self.i32("lengths", [5]), Self.i32("ids", [1, 2])])),
            ("I32 tensors lengths and ids", Self.task(.grad, step: 6, hash: hash,
                                                       inputs: [WireTensor(name: "lengths", shape: [1], floats: [2]), Self.i32("ids", [1, 2])])),
            ("I32 tensors lengths and ids", Self.task(.stats, step: 7, hash: hash, inputs: [Self.i32("ids", [1, 2])])),
            ("seq_len", Self.task(.grad, step: 8, hash: hash, inputs: good, seqLen: UInt32.max)),
            ("branch_scale", Self.task(.stats, step: 9, hash: hash, inputs: good + [WireTensor(name: "branch_scale", shape: [3], floats: [1, 1, 1])])),
            ("branch_scale", Self.task(.stats, step: 10, hash: hash, inputs: good + [WireTensor(name: "branch_scale", shape: [2], floats: [1, .nan])])),
            ("loss scale", Self.task(.grad, step: 11, hash: hash, inputs: good) { $0.lossScale = .infinity }),
            ("max_new_tokens", Self.task(.eval, step: 12, hash: hash, inputs: []) {
                $0.recordsJsonl = "{\"question\":\"1+1?\",\"answer\":\"#### 2\"}"; $0.maxNewTokens = 1 << 30; $0.batchSize = 1 }),
            ("vocab_size", Self.task(.eval, step: 13, hash: hash, inputs: []) {   // the tiny tokenizer has more ids than the model
                $0.recordsJsonl = "{\"question\":\"1+1?\",\"answer\":\"#### 2\"}"; $0.maxNewTokens = 4; $0.batchSize = 1 }),
            ("not run by this worker", Self.task(.unspecified, step: 14, hash: hash, inputs: good)),
            // GRPO's ROLLOUT tasks: sampling without its seeds, seeds that do not fit the prompts,
            // a gradient whose prompt is longer than its sequence, advantages missing or not finite.
            ("seeds", Self.task(.rollout, step: 20, hash: hash, inputs: []) {
                $0.recordsJsonl = "{\"question\":\"1+1?\",\"answer\":\"#### 2\"}"; $0.maxNewTokens = 4; $0.batchSize = 1
                $0.samplesPerPrompt = 2; $0.temperature = 1; $0.topP = 1 }),
            ("seeds", Self.task(.rollout, step: 21, hash: hash, inputs: [WireTensor(name: "seeds", dtype: .i64, shape: [1], bytes: [UInt8](repeating: 1, count: 8))]) {
                $0.recordsJsonl = "{\"question\":\"1+1?\",\"answer\":\"#### 2\"}"; $0.maxNewTokens = 4; $0.batchSize = 1
                $0.samplesPerPrompt = 2; $0.temperature = 1; $0.topP = 1 }),
            ("prompt of", Self.task(.rollout, step: 22, hash: hash, inputs: good + [Self.i32("prompt_lengths", [9, 1]),
                                                                                    WireTensor(name: "advantages", shape: [2], floats: [1, -1])]) { $0.grpoGradient = true }),
            ("advantages", Self.task(.rollout, step: 23, hash: hash, inputs: good + [Self.i32("prompt_lengths", [1, 1])]) { $0.grpoGradient = true }),
            ("advantage is not finite", Self.task(.rollout, step: 24, hash: hash, inputs: good + [Self.i32("prompt_lengths", [1, 1]),
                                                                                                  WireTensor(name: "advantages", shape: [2], floats: [1, .nan])]) { $0.grpoGradient = true }),
            // Hashes name files in the worker's cache: a path is refused before it is built.
            ("invalid model hash", Self.task(.stats, step: 15, hash: "../../../tmp/escape", inputs: good)),
            ("invalid model hash", Self.task(.grad, step: 16, hash: hash, inputs: good) { $0.teacherHash = "/etc/passwd" }),
            // Whole weights that do not hash to the version asked for (a lying coordinator).
            ("arrived damaged", Self.task(.stats, step: 17, hash: "abcdef12", inputs: good)),
        ]
        coordinator.pin("abcdef12", config: String(decoding: model.config.jsonData(), as: UTF8.self),
                        weights: UnsafeRawBufferPointer(start: model.parameters.pointer, count: 4 * model.parameters.count))
        for (expected, t) in cases {
            do {
                _ = try coordinator.runPhase([t], until: SystemClock().now() + 60)
                Issue.record("the hostile task (\(expected)) was accepted")
            } catch let e as PhaseError {
                #expect(e.message.contains(expected), "\(e.message)")
            }
        }
        // Still serving: a good task on the same worker.
        let results = try coordinator.runPhase([Self.task(.stats, step: 99, hash: hash, inputs: good)])
        #expect(results.count == 1 && results[0].result.envelope.result.tokenCount == 5)
        #expect(coordinator.scheduler.workers.keys.contains("w0"))
    }
}

/// A worker whose results lie — a gradient of the wrong size, a stats result missing a tensor —
/// fails those attempts (counted as `bad_result`), the
/// tasks run again, and the phase ends with the honest answer: the coordinator never reduces a
/// bad result and never stops because of one.
@Suite(.serialized) struct BadResultTests {
    /// Gradients, statistics and FFN Gram matrices (a NaN in one, one block missing in another).
    @Test func lyingResultsAreFailedAttemptsAndThePhaseEndsHonestly() throws {
        let honest = WorkerTasks.handler()
        let grads = Counter(), stats = Counter(), grams = Counter()
        // The only worker lies on the first task of each phase, then answers honestly.
        let cluster = try InProcessCluster(workers: 1, handler: { _ in { key, spec, inputs, version, teacher in
            var (result, tensors) = try honest(key, spec, inputs, version, teacher)
            switch key.phase {
            case .grad where grads.increment() == 1: tensors = [WireTensor(name: "grad", shape: [3], floats: [1, 2, 3])]
            case .stats where spec.ffnGram:   // a Gram matrix with a NaN, then one missing
                switch grams.increment() {
                case 1: tensors[0] = WireTensor(name: "gram.0", dtype: .f64, shape: tensors[0].shape,
                                                bytes: [Double](repeating: .nan, count: tensors[0].byteCount / 8).withUnsafeBytes { Array($0) })
                case 2: tensors.removeLast()
                default: break
                }
            case .stats:   // abs_sum missing, then the residual channels' square sums NaN (5 lies in all)
                switch stats.increment() {
                case 1: tensors = tensors.filter { $0.name != "abs_sum" }
                case 2:
                    let i = tensors.firstIndex { $0.name == "channel_square_sum" }!
                    tensors[i] = WireTensor(name: "channel_square_sum", dtype: .f64, shape: tensors[i].shape,
                                            bytes: [Double](repeating: .nan, count: tensors[i].byteCount / 8).withUnsafeBytes { Array($0) })
                default: break
                }
            default: break
            }
            return (result, tensors)
        } })
        defer { cluster.shutdown() }
        let coordinator = cluster.coordinator
        let backend = ClusterBackend(coordinator: coordinator, tokenizerJSON: "")
        let model = try clusterModel()
        let reduced = FloatBuffer(count: model.layout.count)
        let r = try backend.gradients(model: model, batch: Array(clusterLines.prefix(6)), shards: 3, branchScale: nil,
                                      key: WorkKey(run: "liar", step: 1), into: reduced)
        // The same gradient as this process computes.
        let local = FloatBuffer(count: model.layout.count)
        let expected = try LocalBackend(tokenizer: try Tokenizer(data: Data(contentsOf: packageRoot.appendingPathComponent("Tests/Fixtures/tiny-llama/tokenizer.json"))))
            .gradients(model: model, batch: Array(clusterLines.prefix(6)), shards: 3, branchScale: nil, key: WorkKey(run: "liar", step: 1), into: local)
        #expect(r.lossSum == expected.lossSum && reduced.array() == local.array())
        let measured = try backend.statistics(model: model, sequences: clusterLines, shards: 2, branchScale: nil, key: WorkKey(run: "liar", measurement: 1))
        let honestStats = try LocalBackend(tokenizer: try Tokenizer(data: Data(contentsOf: packageRoot.appendingPathComponent("Tests/Fixtures/tiny-llama/tokenizer.json"))))
            .statistics(model: model, sequences: clusterLines, shards: 2, branchScale: nil, key: WorkKey(run: "liar", measurement: 1))
        #expect(measured.statistics == honestStats.statistics && measured.loss == honestStats.loss)
        let gram = try backend.ffnGram(model: model, sequences: clusterLines, shards: 2, branchScale: nil, key: WorkKey(run: "liar", measurement: 2))
        let honestGram = try LocalBackend(tokenizer: try Tokenizer(data: Data(contentsOf: packageRoot.appendingPathComponent("Tests/Fixtures/tiny-llama/tokenizer.json"))))
            .ffnGram(model: model, sequences: clusterLines, shards: 2, branchScale: nil, key: WorkKey(run: "liar", measurement: 2))
        #expect(gram == honestGram)
        #expect(coordinator.counters["bad_result"] == 5, "\(coordinator.counters)")
    }
}
