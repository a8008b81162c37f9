import Foundation
import PTLTensor
import PTLFormats
import PTLLoop
import Testing
import PTLTestSupport
@testable import PTLCluster

/// The fault-tolerance acceptance tests of the cluster, with the real binaries: `--method train`
/// on the tiny Llama fixture, 8 steps of 4 lines in 4 shards (32 (step, shard) results), every
/// run compared by its final weights with an undisturbed one-worker run, and its ledger (which
/// result of which worker went into the weights) checked to hold every (step, shard) once.
enum FaultRun {
    static let steps = 8, shards = 4

    static func args(out: String, extra: [String] = []) -> [String] {
        let fixtures = packageRoot.appendingPathComponent("Tests/Fixtures")
        return ["--method", "train", "--model", fixtures.appendingPathComponent("tiny-llama").path,
                "--data", fixtures.appendingPathComponent("golden/perplexity.jsonl").path,
                "--steps", "\(steps)", "--batch-size", "4", "--shards", "\(shards)", "--lr", "1e-3",
                "--bind", "tcp://127.0.0.1:0", "--heartbeat", "0.1", "--checkpoint-every", "1"] + extra + ["--out", out]
    }

    static func tempDir(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("ptl-\(name)-\(UUID().uuidString)").path
    }

    /// The undisturbed run's final weights (one local worker).
    static let reference: Data = {
        let out = tempDir("reference")
        let p = try! start(args(out: out, extra: ["--local-workers", "1"]))
        p.process.waitUntilExit()
        return try! finalWeights(out)
    }()

    final class Started {
        let process: Process
        let log: URL
        init(process: Process, log: URL) { self.process = process; self.log = log }
        var text: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }
    }

    /// Starts a binary with its stderr in a file (tests read what it logged).
    static func start(_ args: [String], binary: String = "ptl-coordinator") throws -> Started {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-log-\(UUID().uuidString).txt")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let p = Process()
        p.executableURL = binary.hasPrefix("/") ? URL(fileURLWithPath: binary) : executable(binary)
        p.arguments = args
        p.standardError = try FileHandle(forWritingTo: log)
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        return Started(process: p, log: log)
    }

    static func worker(_ out: String, id: String, extra: [String] = []) throws -> Started {
        try start(["--connect", try endpoint(out), "--id", id, "--heartbeat", "0.1"] + extra, binary: "ptl-worker")
    }

    /// The endpoint the coordinator bound (it writes OUT/endpoint), waiting for it to appear.
    static func endpoint(_ out: String) throws -> String {
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            if let s = try? String(contentsOfFile: out + "/endpoint", encoding: .utf8), s.hasSuffix("\n") {
                return s.trimmingCharacters(in: .whitespacesAndNewlines)
            }
            usleep(20_000)
        }
        throw LoopError("the coordinator wrote no endpoint")
    }

    /// The metrics lines written so far.
    static func metrics(_ out: String) -> [[String: Any]] {
        ((try? String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8)) ?? "").split(separator: "\n")
            .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    static func waitForSteps(_ out: String, _ n: Int, timeout: Double = 60) {
        let deadline = Date().addingTimeInterval(timeout)
        while metrics(out).count < n && Date() < deadline { usleep(10_000) }
    }

    /// The counter `name` of the last metrics line.
    static func counter(_ out: String, _ name: String) -> Int { metrics(out).last?[name] as? Int ?? 0 }

    /// Checks the ledger: every (step, shard) applied exactly once; returns its entries.
    @discardableResult
    static func expectLedgerExactlyOnce(_ out: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> [LedgerEntry] {
        let entries = try LedgerEntry.parse(Data(contentsOf: URL(fileURLWithPath: out + "/ledger.jsonl")))
        let keys = entries.map { "\($0.step)/\($0.shard)" }
        let expected = (0..<steps).flatMap { s in (0..<shards).map { "\(s)/\($0)" } }
        #expect(keys == expected, "the ledger does not hold every (step, shard) once", sourceLocation: sourceLocation)
        #expect(entries.allSatisfy { !$0.worker.isEmpty }, sourceLocation: sourceLocation)
        return entries
    }
}

@Suite(.serialized) struct FaultProcessTests {
    /// Workers die before computing, while computing and right after sending; drop results and
    /// send them twice — each at points a seed picks. Local workers that die are restarted.
    /// The seed stages every kind at least 4 times on first attempts alone (checked below), so
    /// every kind happens however the tasks interleave (a first attempt leased to a worker that
    /// is dying is lost and the task's later attempts meet other faults).
    @Test func faultsAtEveryProtocolPointChangeNothing() throws {
        let seed: UInt64 = 178, rate = 0.5
        let plan = FaultPlan(seed: seed, rate: rate)
        var firstAttempts: [FaultPlan.Kind: Int] = [:]
        for step in 0..<FaultRun.steps {
            for shard in 0..<FaultRun.shards {
                var key = Ptl_V1_TaskKey()
                key.phase = .grad; key.step = UInt64(step); key.shard = UInt32(shard); key.attempt = 1
                if let kind = plan.fault(for: key) { firstAttempts[kind, default: 0] += 1 }
            }
        }
        #expect(FaultPlan.Kind.allCases.allSatisfy { firstAttempts[$0, default: 0] >= 4 }, "\(firstAttempts)")
        let out = FaultRun.tempDir("faults")
        let run = try FaultRun.start(FaultRun.args(out: out, extra: ["--local-workers", "2", "--lease", "1",
                                                                      "--worker-fault-seed", "\(seed)", "--worker-fault-rate", "\(rate)"]))
        run.process.waitUntilExit()
        #expect(run.process.terminationStatus == 0, "\(run.text.suffix(2000))")
        let log = run.text
        for kind in ["dying before computing", "dying while computing", "dying right after sending", "dropping the result", "sending the result"] {
            #expect(log.contains("fault injection: \(kind)"), "no fault '\(kind)' was staged")
        }
        #expect(log.contains("starting it again"))
        #expect(FaultRun.counter(out, "duplicate_results") >= 1)
        #expect(try finalWeights(out) == FaultRun.reference)
        try FaultRun.expectLedgerExactlyOnce(out)
    }

    /// A worker stopped (SIGSTOP) past the liveness timeout is dropped and its task done
    /// elsewhere; continued (SIGCONT), it hands in its old result, which its revoked attempt
    /// token gets rejected.
    @Test func aZombieWorkersResultIsRejected() throws {
        let out = FaultRun.tempDir("zombie")
        let run = try FaultRun.start(FaultRun.args(out: out, extra: ["--liveness", "3"]))
        defer { if run.process.isRunning { run.process.terminate() } }
        // Workers that wait 200 ms before each task are almost always inside one.
        let slow = ["--fault-seed", "0", "--fault-rate", "0", "--fault-delay-ms", "200"]
        let zombie = try FaultRun.worker(out, id: "zombie", extra: slow)
        let healthy = try FaultRun.worker(out, id: "healthy", extra: slow)
        defer { for w in [zombie, healthy] where w.process.isRunning { w.process.terminate() } }
        FaultRun.waitForSteps(out, 1)
        // Stop it while it computes a task (its log says "computing" and no result yet).
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let lines = zombie.text.split(separator: "\n").filter { $0.contains("computing") || $0.contains("result sent") }
            if lines.last?.contains("computing") == true { break }
            usleep(2_000)
        }
        kill(zombie.process.processIdentifier, SIGSTOP)
        usleep(1_200_000)                                    // liveness: 3 × 0.1 s
        kill(zombie.process.processIdentifier, SIGCONT)
        run.process.waitUntilExit()
        #expect(run.process.terminationStatus == 0, "\(run.text.suffix(2000))")
        #expect(run.text.contains("zombie silent: dropped"))
        #expect(FaultRun.counter(out, "stale_results") >= 1, "the zombie's result was not seen as stale: \(run.text.suffix(1500))")
        #expect(try finalWeights(out) == FaultRun.reference)
        try FaultRun.expectLedgerExactlyOnce(out)
    }

    /// The coordinator is killed in the middle of a checkpoint write (a torn checkpoint is left
    /// behind) and at seeded random moments, and started again each time: it loads only a
    /// complete, checksummed checkpoint and ends bit-identical. A checkpoint corrupted on disk
    /// is refused with a clear error.
    @Test func aCoordinatorKilledAtRandomMomentsEndsBitIdentical() throws {
        let out = FaultRun.tempDir("torn")
        let common = ["--local-workers", "2"]
        // Killed by itself inside its 3rd checkpoint write (the weights written, no manifest, not renamed).
        let torn = try FaultRun.start(FaultRun.args(out: out, extra: common + ["--fault-kill-in-checkpoint", "3"]))
        torn.process.waitUntilExit()
        #expect(torn.process.terminationReason == .uncaughtSignal && torn.process.terminationStatus == SIGKILL)
        #expect(FileManager.default.fileExists(atPath: out + "/.checkpoint.writing/model.safetensors"))
        #expect(!FileManager.default.fileExists(atPath: out + "/.checkpoint.writing/manifest.json"))
        try Checkpoint.verify(out + "/checkpoint")
        // SIGKILL at random moments (seeded), restarting each time.
        var rng = SplitMix64(seed: 42)
        var kills = 0
        while kills < 4 {
            let run = try FaultRun.start(FaultRun.args(out: out, extra: common))
            usleep(UInt32(30_000 + rng.next() % 300_000))   // within a resumed run's life: it can finish in under half a second
            guard run.process.isRunning else { break }
            kill(run.process.processIdentifier, SIGKILL)
            run.process.waitUntilExit()
            kills += 1
        }
        #expect(kills >= 1, "the run finished before any kill")
        if !FileManager.default.fileExists(atPath: out + "/final") {
            let last = try FaultRun.start(FaultRun.args(out: out, extra: common))
            last.process.waitUntilExit()
            #expect(last.process.terminationStatus == 0, "\(last.text.suffix(2000))")
        }
        #expect(try finalWeights(out) == FaultRun.reference)
        try FaultRun.expectLedgerExactlyOnce(out)

        // A flipped byte in the newest checkpoint's weights: rejected with the file named, and the
        // run resumes from the checkpoint before it (kept as .old) to the same model.
        func flip(_ path: String, at back: Int = 3) throws {
            let url = URL(fileURLWithPath: path)
            var bytes = try Data(contentsOf: url)
            bytes[bytes.count - back] ^= 0x40
            try bytes.write(to: url)
        }
        try flip(out + "/checkpoint/model.safetensors")
        try? FileManager.default.removeItem(atPath: out + "/final")
        let fallback = try FaultRun.start(FaultRun.args(out: out, extra: common))
        fallback.process.waitUntilExit()
        #expect(fallback.process.terminationStatus == 0, "\(fallback.text.suffix(1500))")
        #expect(fallback.text.contains("model.safetensors fails its CRC-32C check"), "\(fallback.text.suffix(1500))")
        #expect(try finalWeights(out) == FaultRun.reference)
        // Both damaged (at a byte not flipped before): refused, each named.
        try flip(out + "/checkpoint/model.safetensors", at: 7)
        try flip(out + "/.checkpoint.old/model.safetensors", at: 7)   // (if the resumed run saved, .old is the one damaged at -3)
        #expect(throws: (any Error).self) { try Checkpoint.verify(out + "/.checkpoint.old") }
        #expect(throws: (any Error).self) { try Checkpoint.verify(out + "/checkpoint") }
        try? FileManager.default.removeItem(atPath: out + "/final")
        let refused = try FaultRun.start(FaultRun.args(out: out, extra: common))
        refused.process.waitUntilExit()
        #expect(refused.process.terminationStatus != 0, "\(refused.text.suffix(3000))")
        #expect(refused.text.contains("no usable checkpoint") && refused.text.contains(".checkpoint.old/model.safetensors fails its CRC-32C check"),
                "\(refused.text.suffix(1500))")
    }

    /// Workers leave and join mid-run (3 → 2 → 3): nothing in the result changes.
    @Test func workersLeavingAndJoiningChangeNothing() throws {
        let out = FaultRun.tempDir("membership")
        let run = try FaultRun.start(FaultRun.args(out: out))
        defer { if run.process.isRunning { run.process.terminate() } }
        let slow = ["--fault-seed", "0", "--fault-rate", "0", "--fault-delay-ms", "100"]
        var workers = try (0..<3).map { try FaultRun.worker(out, id: "w\($0)", extra: slow) }
        defer { for w in workers where w.process.isRunning { w.process.terminate() } }
        FaultRun.waitForSteps(out, 2)
        workers[2].process.terminate()                       // 3 → 2
        FaultRun.waitForSteps(out, 4)
        workers.append(try FaultRun.worker(out, id: "w3", extra: slow))   // 2 → 3
        run.process.waitUntilExit()
        #expect(run.process.terminationStatus == 0, "\(run.text.suffix(2000))")
        let counts = FaultRun.metrics(out).compactMap { $0["workers"] as? Int }
        #expect(counts.contains(3) && counts.contains(2), "worker counts seen: \(counts)")
        #expect(try finalWeights(out) == FaultRun.reference)
        let ledger = try FaultRun.expectLedgerExactlyOnce(out)
        #expect(Set(ledger.map(\.worker)).isSuperset(of: ["w0", "w1"]))
    }

    /// A test client sends every kind of bad message to a running coordinator (and a NaN
    /// gradient as the answer to a real task): each is rejected, logged with the sender and
    /// counted; the run finishes bit-identical.
    @Test func badInputNeverStopsTheCoordinator() throws {
        let out = FaultRun.tempDir("bad-input")
        let run = try FaultRun.start(FaultRun.args(out: out, extra: ["--max-tensor-bytes", "1000000", "--liveness", "5"]))
        defer { if run.process.isRunning { run.process.terminate() } }
        let ctx = try ZMQContext()
        let client = try ZMQSocket(context: ctx, type: .dealer)
        try client.setRoutingID(Array("mallory".utf8))
        try client.connect(try FaultRun.endpoint(out))

        func envelope(_ type: Ptl_V1_MessageType) -> Ptl_V1_Envelope {
            var e = Messages.envelope(type); e.protocolVersion = Wire.protocolVersion; return e
        }
        func send(_ frames: [[UInt8]]) throws { try client.send(frames) }
        // Register, so the coordinator leases us a task we can answer with a NaN gradient.
        try send(try Wire.encode(Messages.ready(workerID: "mallory", threads: 1)))
        var task: WireMessage?
        let deadline = Date().addingTimeInterval(30)
        while task == nil && Date() < deadline {
            if try client.poll(milliseconds: 50), let frames = try client.receive(dontWait: true),
               let m = try? Wire.decode(frames), m.envelope.type == .task { task = m }
        }
        let key = try #require(task).envelope.task
        // A well-formed RESULT whose gradient holds a NaN: rejected, the task requeued.
        var nan = envelope(.result)
        nan.task = key
        var grad = [Float](repeating: 0.5, count: 64)
        grad[7] = .nan
        try send(try Wire.encode(WireMessage(envelope: nan, tensors: [WireTensor(name: "grad", shape: [64], floats: grad)])))
        // Frame 0 not a protobuf at all.
        try send([[0xFF, 0xFF, 0xFF, 0x13, 0x37]])
        // A wrong protocol version.
        var v = envelope(.heartbeat); v.protocolVersion = 99
        try send([try v.serializedBytes()])
        // An unknown message type.
        var u = envelope(.heartbeat); u.type = .UNRECOGNIZED(42)
        try send([try u.serializedBytes()])
        // A descriptor that disagrees with its frame (says 16 bytes, frame has 8).
        var d = try Wire.encode(WireMessage(envelope: envelope(.result), tensors: [WireTensor(name: "grad", shape: [4], floats: [1, 2, 3, 4])]))
        d[1] = Array(d[1].prefix(8))
        try send(d)
        // A frame whose CRC-32C fails.
        var c = try Wire.encode(WireMessage(envelope: envelope(.result), tensors: [WireTensor(name: "grad", shape: [4], floats: [1, 2, 3, 4])]))
        c[1][0] ^= 1
        try send(c)
        // A frame over --max-tensor-bytes.
        try send(try Wire.encode(WireMessage(envelope: envelope(.result), tensors: [WireTensor(name: "grad", shape: [300_000], floats: [Float](repeating: 1, count: 300_000))])))
        // A result for a task that does not exist.
        var ghost = envelope(.result)
        ghost.task = key; ghost.task.step = 999
        try send(try Wire.encode(WireMessage(envelope: ghost)))
        // Then the client goes silent (it is dropped); a real worker finishes the job.
        usleep(300_000)
        let worker = try FaultRun.worker(out, id: "honest")
        defer { if worker.process.isRunning { worker.process.terminate() } }
        run.process.waitUntilExit()
        #expect(run.process.terminationStatus == 0, "\(run.text.suffix(2000))")
        let log = run.text
        for kind in ["non_finite", "malformed_envelope", "wrong_version", "unknown_type", "descriptor_mismatch", "checksum", "oversized"] {
            #expect(FaultRun.counter(out, kind) >= 1, "\(kind) not counted")
            #expect(log.contains("rejected message: from mallory: \(kind)"), "\(kind) not logged with the sender")
        }
        #expect(FaultRun.counter(out, "stale_results") >= 1)    // the ghost
        #expect(try finalWeights(out) == FaultRun.reference)
        let ledger = try FaultRun.expectLedgerExactlyOnce(out)
        #expect(ledger.allSatisfy { $0.worker == "honest" })
    }

    /// With CURVE on, a worker with no key and one whose key is not on the allow-list complete
    /// no task; an allowed worker then finishes the run.
    @Test func aWorkerWithoutAnAllowedKeyCompletesNoTask() throws {
        let out = FaultRun.tempDir("curve")
        let keys = out + "-keys"
        for name in ["coordinator", "allowed", "stranger"] {
            let g = try FaultRun.start(["keys", "generate", "--out", keys, "--name", name], binary: "ptl")
            g.process.waitUntilExit()
            #expect(g.process.terminationStatus == 0)
        }
        try FileManager.default.copyItem(atPath: keys + "/allowed.pub", toPath: keys + "/allow-list")
        let run = try FaultRun.start(FaultRun.args(out: out, extra: ["--curve-secret-key", keys + "/coordinator.key", "--allow-keys", keys + "/allow-list"]))
        defer { if run.process.isRunning { run.process.terminate() } }
        let endpoint = try FaultRun.endpoint(out)
        let stranger = try FaultRun.start(["--connect", endpoint, "--id", "stranger", "--heartbeat", "0.1",
                                           "--curve-server-key", keys + "/coordinator.pub", "--curve-secret-key", keys + "/stranger.key"], binary: "ptl-worker")
        let plain = try FaultRun.start(["--connect", endpoint, "--id", "plain", "--heartbeat", "0.1"], binary: "ptl-worker")
        defer { for w in [stranger, plain] where w.process.isRunning { w.process.terminate() } }
        usleep(2_500_000)
        #expect(FaultRun.metrics(out).isEmpty, "a step finished without an allowed worker")
        #expect(!run.text.contains("worker stranger ready") && !run.text.contains("worker plain ready"))
        let allowed = try FaultRun.start(["--connect", endpoint, "--id", "allowed", "--heartbeat", "0.1",
                                          "--curve-server-key", keys + "/coordinator.pub", "--curve-secret-key", keys + "/allowed.key"], binary: "ptl-worker")
        defer { if allowed.process.isRunning { allowed.process.terminate() } }
        run.process.waitUntilExit()
        #expect(run.process.terminationStatus == 0, "\(run.text.suffix(2000))")
        #expect(try finalWeights(out) == FaultRun.reference)
        let ledger = try FaultRun.expectLedgerExactlyOnce(out)
        #expect(ledger.allSatisfy { $0.worker == "allowed" })
    }

    /// GRPO over the cluster (issue 17): `ptl-coordinator --method train --tune grpo` on the demo
    /// model with local workers that die while sampling — before computing, mid-rollout, right
    /// after sending, or drop or repeat their results, at rollout tasks only — and then with the
    /// coordinator SIGKILLed mid-run and started again: both end at `ptl grpo`'s model in one
    /// process, bit for bit, with the same rewards, accuracies and lengths every step.
    @Test func grpoWithWorkersDyingMidRolloutAndAKilledCoordinatorEndsBitIdentical() throws {
        let demo = packageRoot.appendingPathComponent("models/demo").path
        let common = ["--model", demo, "--steps", "4", "--prompts-per-step", "4", "--rollouts-per-prompt", "4", "--shards", "2",
                      "--eval-count", "4", "--eval-every", "2", "--max-new-tokens", "48", "--checkpoint-every", "1"]
        let reference = FaultRun.tempDir("grpo-one-process")
        let local = try runPTL(["grpo"] + common + ["--lr", "1e-4", "--out", reference])
        try #require(local.status == 0, "\(local.stderr)")
        let cluster = ["--method", "train", "--tune", "grpo", "--grpo-lr", "1e-4", "--bind", "tcp://127.0.0.1:0", "--heartbeat", "0.2"] + common
        // Faults at rollout tasks only; seed 3 at rate 0.5 stages deaths mid-rollout on first attempts.
        let faulty = FaultRun.tempDir("grpo-faults")
        let run = try FaultRun.start(cluster + ["--local-workers", "2", "--lease", "2", "--worker-fault-seed", "3", "--worker-fault-rate", "0.5",
                                                "--worker-fault-phase", "rollout", "--out", faulty])
        run.process.waitUntilExit()
        #expect(run.process.terminationStatus == 0, "\(run.text.suffix(2000))")
        let log = run.text
        #expect(log.contains("fault injection: dying while computing"), "no worker died mid-rollout")
        #expect(log.contains("starting it again"))
        let faultLines = log.split(separator: "\n").filter { $0.contains("fault injection:") }
        #expect(!faultLines.isEmpty && faultLines.allSatisfy { $0.contains("/p4/") }, "faults outside the rollout phase: \(faultLines.prefix(3))")
        // The coordinator SIGKILLed after step 2's checkpoint (metrics.jsonl: step 0 and steps 1–2), then resumed.
        let killed = FaultRun.tempDir("grpo-killed")
        try runCoordinator(cluster + ["--local-workers", "2", "--out", killed], killAfterSteps: 3)
        try #require(!FileManager.default.fileExists(atPath: killed + "/final"), "the run finished before the kill")
        #expect(try runCoordinator(cluster + ["--local-workers", "3", "--out", killed]) == 0)
        func figures(_ dir: String) throws -> [String] {
            try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
                .map { $0.replacingOccurrences(of: #""seconds":[0-9.e+-]+"#, with: "", options: .regularExpression) }
        }
        #expect(try figures(reference).count == 5)
        #expect(try figures(faulty) == figures(reference))
        #expect(try figures(killed) == figures(reference))
        #expect(try finalWeights(faulty) == finalWeights(reference))
        #expect(try finalWeights(killed) == finalWeights(reference))
    }
}
