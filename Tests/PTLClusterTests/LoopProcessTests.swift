import Foundation
import PTLFormats
import PTLLoop
import Testing
import PTLModel

/// The Prune–Tune Loop with the real binaries on the shipped demo model, in a short config:
/// two rounds (64 neurons per block, then one block) of two tune steps each, eval on 8 problems.
func loopArgs(out: String, bind: String = "tcp://127.0.0.1:0", extra: [String] = []) -> [String] {
    ["--model", clusterPackageRoot.appendingPathComponent("models/demo").path,
     "--target-params", "0.8", "--step", "0.1", "--remove-layers", "1", "--tune-steps", "2", "--batch-size", "4", "--shards", "2",
     "--calibration-lines", "8", "--heldout-lines", "8", "--eval-count", "8", "--max-new-tokens", "48", "--checkpoint-every", "1",
     "--heartbeat", "0.5", "--bind", bind] + extra + ["--out", out]
}

struct Row: Decodable {
    var round: Int
    var phase: String
    var params: Int
    var layers: Int
    var intermediate: Int
    var accuracy: Double?
    var loss: Double?
    var tuneSteps: Int?
    var seconds: Double
}

func rows(_ out: String) throws -> [Row] {
    let d = JSONDecoder()
    d.keyDecodingStrategy = .convertFromSnakeCase
    return try String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8).split(separator: "\n").map { try d.decode(Row.self, from: Data($0.utf8)) }
}

func startWorker(_ endpoint: String, id: String) throws -> Process {
    let p = Process()
    p.executableURL = executable("ptl-worker")
    p.arguments = ["--connect", endpoint, "--id", id, "--threads", "1", "--heartbeat", "0.5"]
    p.standardError = FileHandle.nullDevice
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    return p
}

func waitForRows(_ out: String, _ n: Int) {
    let deadline = Date().addingTimeInterval(120)
    while Date() < deadline {
        if let r = try? rows(out), r.count >= n { return }
        usleep(20_000)
    }
}

@Suite(.serialized) struct LoopProcessTests {
    @Test func theLoopShrinksTheModelEveryRoundAndMeasuresAccuracy() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-loop-\(UUID().uuidString)").path
        #expect(try runCoordinator(loopArgs(out: out, extra: ["--local-workers", "2"])) == 0)
        let r = try rows(out)
        let evals = r.filter { $0.phase == "eval" }
        #expect(evals.map(\.round) == [0, 1, 2])
        #expect(evals.allSatisfy { $0.accuracy != nil && $0.loss != nil })
        #expect(zip(evals, evals.dropFirst()).allSatisfy { $0.params > $1.params }, "parameters shrink every round")
        #expect(evals.map(\.intermediate) == [512, 448, 448] && evals.map(\.layers) == [8, 8, 7])
        #expect(r.filter { $0.phase == "tune" }.compactMap(\.tuneSteps).reduce(0, +) == 4)
        // The final model is a plain HF directory whose config agrees with its tensors.
        let final = try HFModel.load(directory: out + "/final")
        #expect(final.config.intermediateSize == 448 && final.config.numHiddenLayers == 7)
        #expect(final.parameterCount == evals.last!.params)
        #expect(FileManager.default.fileExists(atPath: out + "/final/tokenizer.json"))
        for f in ["report.md", "accuracy_vs_size.png", "summary.json", "rounds/round-01/model.safetensors", "rounds/round-02/config.json"] {
            #expect(FileManager.default.fileExists(atPath: out + "/" + f), "\(f) written")
        }
        let png = try Data(contentsOf: URL(fileURLWithPath: out + "/accuracy_vs_size.png"))
        #expect(png.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]))
        let report = try String(contentsOfFile: out + "/report.md", encoding: .utf8)
        #expect(report.contains("0 (original)") && report.contains("Final model against the original") && report.contains("block 0:"))
    }

    @Test func killingTheCoordinatorOrAWorkerChangesNothing() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-loop-kill-\(UUID().uuidString)").path
        let straight = base + "/straight", coordKilled = base + "/coordinator", workerKilled = base + "/worker"
        #expect(try runCoordinator(loopArgs(out: straight, extra: ["--local-workers", "2"])) == 0)
        // SIGKILL the coordinator during round 1's tuning, and again during round 2's, then let it finish.
        try runCoordinator(loopArgs(out: coordKilled, extra: ["--local-workers", "2"]), killAfterSteps: 3)
        let beforeKill = try rows(coordKilled)
        #expect(beforeKill.count >= 3 && !FileManager.default.fileExists(atPath: coordKilled + "/final"))
        try runCoordinator(loopArgs(out: coordKilled, extra: ["--local-workers", "2"]), killAfterSteps: 7)
        #expect(try runCoordinator(loopArgs(out: coordKilled, extra: ["--local-workers", "2"])) == 0)
        // External workers: SIGKILL one during round 1, start a new one.
        let port = 20000 + Int(getpid() % 20000)
        let endpoint = "tcp://127.0.0.1:\(port)"
        let coordinator = Process()
        coordinator.executableURL = executable("ptl-coordinator")
        coordinator.arguments = loopArgs(out: workerKilled, bind: endpoint)
        coordinator.standardError = FileHandle.nullDevice
        try coordinator.run()
        let a = try startWorker(endpoint, id: "a"), b = try startWorker(endpoint, id: "b")
        waitForRows(workerKilled, 3)
        kill(b.processIdentifier, SIGKILL)
        let c = try startWorker(endpoint, id: "c")
        coordinator.waitUntilExit()
        for w in [a, b, c] { if w.isRunning { w.terminate() }; w.waitUntilExit() }
        #expect(coordinator.terminationStatus == 0)
        let weights = { (out: String) in try Data(contentsOf: URL(fileURLWithPath: out + "/final/model.safetensors")) }
        #expect(try weights(straight) == weights(coordKilled))
        #expect(try weights(straight) == weights(workerKilled))
        #expect(try rows(straight).map(\.accuracy) == rows(coordKilled).map(\.accuracy))
        // It resumed rather than started over: the phases finished before the kill keep their
        // measured wall times (a fresh start would have timed them again).
        #expect(try rows(coordKilled).prefix(beforeKill.count).map(\.seconds) == beforeKill.map(\.seconds))
    }
}
