import Foundation
import PTLFormats
import PTLLoop
import Testing
import PTLTestSupport

/// The built executables sit beside the test bundle.
func executable(_ name: String) -> URL {
    let dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    let beside = dir.appendingPathComponent(name)
    return FileManager.default.fileExists(atPath: beside.path) ? beside : dir.deletingLastPathComponent().appendingPathComponent(name)
}

func coordinatorArgs(out: String, steps: Int = 6) -> [String] {
    let fixtures = packageRoot.appendingPathComponent("Tests/Fixtures")
    return ["--method", "train", "--model", fixtures.appendingPathComponent("tiny-llama").path,
            "--data", fixtures.appendingPathComponent("golden/perplexity.jsonl").path,
            "--steps", "\(steps)", "--batch-size", "4", "--shards", "3", "--lr", "1e-3",
            "--bind", "tcp://127.0.0.1:0", "--heartbeat", "0.1", "--checkpoint-every", "1", "--out", out]
}

@discardableResult
func runCoordinator(_ args: [String], killAfterSteps: Int? = nil) throws -> Int32 {
    let p = Process()
    p.executableURL = executable("ptl-coordinator")
    p.arguments = args
    p.standardError = FileHandle.nullDevice
    p.standardOutput = FileHandle.nullDevice
    try p.run()
    if let k = killAfterSteps, let out = args.last {
        let metrics = URL(fileURLWithPath: out).appendingPathComponent("metrics.jsonl")
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            let lines = (try? String(contentsOf: metrics, encoding: .utf8))?.split(separator: "\n").count ?? 0
            if lines >= k { break }
            usleep(20_000)
        }
        kill(p.processIdentifier, SIGKILL)
    }
    p.waitUntilExit()
    return p.terminationStatus
}

func finalWeights(_ out: String) throws -> Data {
    try Data(contentsOf: URL(fileURLWithPath: out).appendingPathComponent("final/model.safetensors"))
}

@Suite(.serialized) struct ClusterProcessTests {
    @Test func oneTwoAndThreeLocalWorkersGiveBitIdenticalModels() throws {
        var results: [Data] = []
        for n in [1, 2, 3] {
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-cluster-\(UUID().uuidString)").path
            #expect(try runCoordinator(coordinatorArgs(out: out) .dropLast(2) + ["--local-workers", "\(n)", "--out", out]) == 0)
            results.append(try finalWeights(out))
        }
        #expect(results[0] == results[1] && results[0] == results[2])
    }

    @Test func aKilledCoordinatorResumesFromItsCheckpointToTheSameModel() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-resume-\(UUID().uuidString)")
        let straight = base.appendingPathComponent("straight").path, resumed = base.appendingPathComponent("resumed").path
        #expect(try runCoordinator(coordinatorArgs(out: straight).dropLast(2) + ["--local-workers", "2", "--out", straight]) == 0)
        // SIGKILL after 3 steps, then start again: it resumes from the checkpoint.
        try runCoordinator(coordinatorArgs(out: resumed).dropLast(2) + ["--local-workers", "2", "--out", resumed], killAfterSteps: 3)
        #expect(!FileManager.default.fileExists(atPath: URL(fileURLWithPath: resumed).appendingPathComponent("final").path))
        #expect(try runCoordinator(coordinatorArgs(out: resumed).dropLast(2) + ["--local-workers", "2", "--out", resumed]) == 0)
        #expect(try finalWeights(straight) == finalWeights(resumed))
    }
}

@Suite struct DockerComposeTests {
    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/usr/bin/docker-compose"), "docker-compose not installed: scripts/setup.sh installs it"))
    func theComposeFileIsValid() throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/docker-compose")
        p.arguments = ["-f", packageRoot.appendingPathComponent("docker/docker-compose.yml").path, "config", "-q"]
        let err = Pipe()
        p.standardError = err
        try p.run()
        let msg = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "\(msg)")
    }
}
