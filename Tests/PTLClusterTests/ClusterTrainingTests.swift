import Foundation
import PTLFormats
import PTLLoop
import Testing
import PTLTestSupport
import PTLModel
import PTLTensor
import PTLTune
@testable import PTLCluster
import PTLData
import PTLEval
import PTLTokenizer

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var stopped = false
    func stop() { lock.lock(); stopped = true; lock.unlock() }
    var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }
}

func clusterModel() throws -> Model {
    let c = try ModelConfig(vocabSize: 40, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 2,
                            numAttentionHeads: 2, numKeyValueHeads: 1, maxPositionEmbeddings: 64)
    let m = Model(config: c)
    m.initializeRandomly(seed: 11, std: 0.1)
    return m
}

let clusterLines: [[Int]] = (0..<24).map { k in (0..<(6 + k % 7)).map { ($0 * 5 + k) % 40 } }

func clusterSettings(precision: Precision = .fp32) -> TrainingSettings {
    var s = TrainingSettings(steps: 3, batchSize: 6, learningRate: 1e-2)
    s.warmup = 1
    s.precision = precision
    return s
}

/// Trains 3 steps over `workers` in-process workers (real sockets on loopback); `vanishingWorker`
/// makes worker 0 vanish after its first task.
func trainOverCluster(workers: Int, shards: Int = 3, vanishingWorker: Bool = false, updates: ModelUpdates = .always,
                      precision: Precision = .fp32) throws -> (weights: [Float], losses: [Double], dropped: Int, fullSends: Int, updateSends: Int) {
    let ctx = try ZMQContext()
    var cs = CoordinatorSettings()
    cs.heartbeatInterval = 0.05
    cs.liveness = 4
    cs.modelUpdates = updates
    let coordinator = try Coordinator(context: ctx, bind: "tcp://127.0.0.1:*", settings: cs)
    let stop = StopFlag()
    let group = DispatchGroup()
    for w in 0..<workers {
        var ws = WorkerSettings()
        ws.heartbeatInterval = 0.05
        ws.liveness = 4
        ws.minBackoff = 0.05
        let handler = WorkerTasks.handler()
        let vanish = vanishingWorker && w == 0
        let tasks = Counter()
        let client = try WorkerClient(id: "w\(w)", connect: coordinator.endpoint, context: ctx, settings: ws) { key, spec, inputs, model, teacher in
            if vanish && tasks.increment() > 1 { Thread.sleep(forTimeInterval: 3600) }   // hangs: never answers again
            return try handler(key, spec, inputs, model, teacher)
        }
        DispatchQueue.global().async(group: group) {
            // The vanishing worker's loop hangs too (no heartbeat, no goodbye) until the test ends.
            try? client.run(shouldStop: {
                if vanish && tasks.value > 1 { while !stop.isStopped { usleep(10_000) } }
                return stop.isStopped
            })
        }
    }
    let model = try clusterModel()
    let trainer = try DistributedTrainer(coordinator: coordinator, model: model, sequences: clusterLines,
                                         settings: clusterSettings(precision: precision), shards: shards)
    let losses = try (0..<3).map { _ in try trainer.runStep().loss }
    stop.stop()
    _ = group.wait(timeout: .now() + 2)
    let c = coordinator.counters
    return (model.parameters.array(), losses, coordinator.scheduler.expiredWorkers, c["model_sends_full"]!, c["model_sends_update"]!)
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func increment() -> Int { lock.lock(); defer { lock.unlock() }; n += 1; return n }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}

@Suite(.serialized) struct ClusterTrainingTests {
    @Test func weightsAreBitIdenticalForOneTwoAndThreeWorkersAndEqualSingleProcessTraining() throws {
        let one = try trainOverCluster(workers: 1)
        let two = try trainOverCluster(workers: 2)
        let three = try trainOverCluster(workers: 3)
        #expect(one.weights == two.weights && one.losses == two.losses)
        #expect(one.weights == three.weights && one.losses == three.losses)
        // The weights travel whole once; each later step's version goes as an update.
        #expect(one.fullSends == 1 && one.updateSends == 2, "\(one.fullSends) whole, \(one.updateSends) updates")
        #expect(three.updateSends >= 1)
        // Single-process `ptl train` on the same batches: the same losses up to float summation
        // order; weights within a quarter of the learning rate (Adam magnifies last-bit gradient
        // differences of near-zero gradients, as in the PyTorch golden test).
        let model = try clusterModel()
        let trainer = try Trainer(model: model, sequences: clusterLines, settings: clusterSettings())
        let losses = try (0..<3).map { _ in try trainer.runStep().loss }
        for (a, b) in zip(losses, one.losses) { #expect(abs(a - b) / b < 1e-5, "loss \(a) vs \(b)") }
        let single = model.parameters.array()
        let worst = zip(single, one.weights).reduce(Float(0)) { max($0, abs($1.0 - $1.1)) }
        #expect(worst <= clusterSettings().learningRate / 4, "largest difference \(worst)")
        #expect(one.weights != (try clusterModel().parameters.array()))      // training did move the weights
    }

    /// Over loopback `auto` sends the whole weights every step (copying beats coding there);
    /// the weights are the same either way.
    /// bf16 tasks: every worker computes the same bits for a shard, so 1, 2 and 3 workers train
    /// the same model; and it is not the fp32 model (the tasks did run bf16).
    @Test(.enabled(if: BF16Support.available, "needs AVX512-BF16 or AMX"))
    func bf16WeightsAreBitIdenticalForOneTwoAndThreeWorkers() throws {
        let one = try trainOverCluster(workers: 1, precision: .bf16)
        let two = try trainOverCluster(workers: 2, precision: .bf16)
        let three = try trainOverCluster(workers: 3, precision: .bf16)
        #expect(one.weights == two.weights && one.losses == two.losses)
        #expect(one.weights == three.weights && one.losses == three.losses)
        let fp32 = try trainOverCluster(workers: 1)
        #expect(fp32.weights != one.weights)
        // Both moved the weights the same way: Adam turns a small gradient's sign into a full
        // step, so single weights may differ by a few learning rates; the moves as a whole agree.
        let start = try clusterModel().parameters.array()
        var diff = 0.0, moved = 0.0
        for i in start.indices {
            let a = Double(one.weights[i] - start[i]), b = Double(fp32.weights[i] - start[i])
            diff += (a - b) * (a - b); moved += b * b
        }
        #expect((diff / moved).squareRoot() < 0.25, "bf16's update differs from fp32's by \((diff / moved).squareRoot()) of its size")
    }

    @Test func theWholeWeightsAndUpdatesGiveTheSameRun() throws {
        let updates = try trainOverCluster(workers: 1, updates: .always)
        let whole = try trainOverCluster(workers: 1, updates: .auto)
        #expect(whole.fullSends == 3 && whole.updateSends == 0, "\(whole.fullSends) whole, \(whole.updateSends) updates")
        #expect(whole.weights == updates.weights && whole.losses == updates.losses)
        #expect(ModelUpdates.auto.updates(peer: "10.1.2.3") && !ModelUpdates.auto.updates(peer: "127.0.0.1")
                && !ModelUpdates.auto.updates(peer: nil) && !ModelUpdates.never.updates(peer: "10.1.2.3"))
    }

    @Test func aWorkerThatVanishesChangesNothing() throws {
        let reference = try trainOverCluster(workers: 2)
        let survived = try trainOverCluster(workers: 2, vanishingWorker: true)
        #expect(survived.dropped >= 1, "the vanished worker was never dropped")
        #expect(survived.weights == reference.weights && survived.losses == reference.losses)
    }
}

/// Runs the stats phase over `workers` in-process workers.
func statsOverCluster(workers: Int, shards: Int) throws -> ActivationStatistics {
    try InProcessCluster.with(workers: workers) { cluster in
        try ClusterBackend(coordinator: cluster.coordinator, tokenizerJSON: "")
            .statistics(model: try clusterModel(), sequences: clusterLines, shards: shards, branchScale: nil, key: WorkKey(run: "run")).statistics
    }
}

@Suite(.serialized) struct StatsPhaseTests {
    @Test func statisticsAreBitIdenticalForAnyWorkerCountAndEqualLocalShards() throws {
        let one = try statsOverCluster(workers: 1, shards: 3)
        let three = try statsOverCluster(workers: 3, shards: 3)
        #expect(one == three)
        // The same shards computed in this process and added in order.
        let model = try clusterModel()
        var local = ActivationStatistics(layers: 2, intermediate: 32, hidden: 16)
        for s in 0..<3 {
            let part = Array(clusterLines[(s * clusterLines.count / 3)..<((s + 1) * clusterLines.count / 3)])
            let batch = TokenBatch(sequences: part, multiple: 8)
            let pass = TrainingPass(model: model, batch: batch.batch, seq: batch.seq)
            pass.forward(tokens: batch.tokens, targets: batch.targets)
            local.add(pass.statistics())
        }
        #expect(local == one)
        #expect(one.tokens == clusterLines.reduce(0) { $0 + $1.count - 1 })
        let scores = one.neuronScores(model: model)
        #expect(scores.count == 64 && scores.allSatisfy { $0.isFinite && $0 >= 0 } && Set(scores).count > 1)
        #expect(one.blockInfluence.allSatisfy { $0 >= 0 && $0 <= 2 } && one.relativeChange.allSatisfy { $0 > 0 })
        for i in one.absSum.indices {
            #expect(one.squareSum[i] <= Double(one.maxAbs[i]) * one.absSum[i] * (1 + 1e-9))   // Σa² ≤ max|a|·Σ|a|
        }
    }
}

@Suite(.serialized) struct EvalPhaseTests {
    @Test func evalCountsAreTheSameForOneAndThreeWorkersAndLocally() throws {
        let demo = packageRoot.appendingPathComponent("models/demo").path
        let model = try HFModel.load(directory: demo)
        let tokenizerJSON = try String(contentsOfFile: demo + "/tokenizer.json", encoding: .utf8)
        let lines = try ArithmeticTask().jsonl(seed: 77, count: 24).split(separator: "\n").map(String.init)
        func overCluster(_ workers: Int) throws -> EvalCounts {
            try InProcessCluster.with(workers: workers) { cluster in
                try ClusterBackend(coordinator: cluster.coordinator, tokenizerJSON: tokenizerJSON)
                    .evaluate(model: model, jsonlLines: lines, shards: 3, maxNewTokens: 160, batchSize: 8, key: WorkKey(run: "run"))
            }
        }
        let one = try overCluster(1), three = try overCluster(3)
        #expect(one.total == 24 && one.correct == three.correct && one.generatedTokens == three.generatedTokens)
        #expect(one.perExample == three.perExample)
        #expect(Double(one.correct) / 24 >= 0.8, "demo model accuracy \(one.correct)/24")
        // The same shards evaluated in this process.
        let tokenizer = try Tokenizer(path: demo + "/tokenizer.json")
        var local: [Bool] = []
        var settings = EvalSettings()
        settings.maxNewTokens = 160
        for s in 0..<3 {
            let part = lines[(s * 24 / 3)..<((s + 1) * 24 / 3)].joined(separator: "\n")
            let records = try Corpus.parse(Data(part.utf8), source: "shard").records
            local += Evaluator.run(model: model, tokenizer: tokenizer, records: records, settings: settings).1.map(\.correct)
        }
        #expect(local == one.perExample)
    }

    /// The trace phase of on-policy calibration: the model's own chains of thought for 24
    /// questions, bit-identical text over 1 and 3 workers and in this process (bf16 where the
    /// CPU has it, as the loop runs by default); the texts are the answers evaluation scores.
    @Test func tracesAreTheSameForOneAndThreeWorkersAndLocally() throws {
        let demo = packageRoot.appendingPathComponent("models/demo").path
        let model = try HFModel.load(directory: demo)
        let tokenizerJSON = try String(contentsOfFile: demo + "/tokenizer.json", encoding: .utf8)
        let lines = try ArithmeticTask().jsonl(seed: 78, count: 24).split(separator: "\n").map(String.init)
        func overCluster(_ workers: Int) throws -> (texts: [String], counts: EvalCounts) {
            try InProcessCluster.with(workers: workers) { cluster in
                let backend = ClusterBackend(coordinator: cluster.coordinator, tokenizerJSON: tokenizerJSON)
                backend.precision = .machineDefault
                return try backend.traces(model: model, jsonlLines: lines, shards: 3, maxNewTokens: 160, batchSize: 8, key: WorkKey(run: "run"))
            }
        }
        let one = try overCluster(1), three = try overCluster(3)
        #expect(one.texts.count == 24 && one.texts == three.texts && one.counts.perExample == three.counts.perExample)
        let local = LocalBackend(tokenizer: try Tokenizer(path: demo + "/tokenizer.json"), precision: .machineDefault)
        let here = try local.traces(model: model, jsonlLines: lines, shards: 3, maxNewTokens: 160, batchSize: 8, key: WorkKey(run: "run"))
        #expect(here.texts == one.texts && here.counts.perExample == one.counts.perExample)
        // Each text is a chain of thought ending in the final answer line, scored as evaluation scores it.
        #expect(one.texts.allSatisfy { $0.contains("####") })
        #expect(one.counts.correct >= 19, "demo model: \(one.counts.correct)/24 traces right")
    }

    /// In-process work between phases (the decode-speed measurement) outlasting the workers'
    /// liveness (10 heartbeats of 0.05 s): inside `answeringWorkers` the coordinator keeps
    /// heartbeating and they stay; outside it they give it up and reconnect (the control).
    @Test func workersWaitingOnInProcessWorkDoNotReconnect() throws {
        func reconnects(answering: Bool) throws -> Int {
            let cluster = try InProcessCluster(workers: 1)
            defer { cluster.shutdown() }
            let deadline = Date() + 10
            while cluster.coordinator.scheduler.workers.isEmpty && Date() < deadline { try cluster.coordinator.pump(milliseconds: 10) }
            #expect(cluster.coordinator.scheduler.workers.count == 1)
            let work = { () -> Int in Thread.sleep(forTimeInterval: 2); return 7 }
            let value = answering ? cluster.coordinator.answeringWorkers(work) : work()
            #expect(value == 7)
            try cluster.coordinator.pump(milliseconds: 10)   // the event loop is this thread's again
            cluster.shutdown()
            return cluster.clients[0].reconnects
        }
        #expect(try reconnects(answering: false) >= 1)
        #expect(try reconnects(answering: true) == 0)
    }
}
