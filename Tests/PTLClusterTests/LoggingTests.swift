import Foundation
import PTLFormats
import PTLLoop
import Logging
import Testing
@testable import PTLCluster

/// Item 8 of the cluster issue: structured logs (swift-log) with worker/task/phase metadata and
/// a per-phase status (tasks done/total, workers alive, tokens/s).
@Suite struct LoggingTests {
    /// A record into a pipe, read back.
    func record(_ format: LogFormat, _ body: (Logger) -> Void) throws -> String {
        let pipe = Pipe()
        let output = LogOutput(fd: pipe.fileHandleForWriting.fileDescriptor)
        var logger = Logger.ptl("local-0", format: format, level: .info, output: output)
        logger[metadataKey: "worker"] = "local-0"
        body(logger)
        try pipe.fileHandleForWriting.close()
        return String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    @Test func textRecordsCarryLevelLabelMessageAndSortedMetadata() throws {
        var key = Ptl_V1_TaskKey()
        key.run = "run"; key.round = 2; key.phase = .grad; key.step = 41; key.shard = 3; key.attempt = 7
        let out = try record(.text) { $0.warning("task done", metadata: key.logMetadata) }
        let line = try #require(out.split(separator: "\n").first.map(String.init))
        #expect(line.range(of: #"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z warning \[local-0\] task done "#, options: .regularExpression) != nil, "\(line)")
        #expect(line.hasSuffix("attempt=7 measurement=0 phase=grad round=2 shard=3 step=41 task=run/r2/p2/s41/m0/shard3"), "\(line)")
    }

    @Test func jsonRecordsAreOneObjectALineWithNumbersAsNumbers() throws {
        let p = PhaseProgress(phase: .stats, round: 1, step: 0, done: 3, total: 4, workers: 2, tokens: 3000, seconds: 1.5)
        let out = try record(.json) { logger in
            logger.info("status: \(p)", metadata: p.logMetadata)
            logger.debug("not shown at level info")
            logger.error("a \"quoted\"\nmessage")
        }
        let lines = out.split(separator: "\n")
        #expect(lines.count == 2)
        let first = try #require(try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
        #expect(first["level"] as? String == "info" && first["label"] as? String == "local-0" && first["worker"] as? String == "local-0")
        #expect(first["message"] as? String == "status: stats round 1 step 0: 3/4 tasks, 2 workers alive, 2000 tokens/s, 1.5 s")
        #expect(first["phase"] as? String == "stats" && first["tasks_done"] as? String == "3" && first["tokens_per_second"] as? Double == 2000)
        let second = try #require(try JSONSerialization.jsonObject(with: Data(lines[1].utf8)) as? [String: Any])
        #expect(second["message"] as? String == "a \"quoted\"\nmessage" && second["level"] as? String == "error")
    }

    @Test func statusIsLoggedAtMostOncePerIntervalOffATerminal() throws {
        let out = try record(.text) { logger in
            let status = StatusLine(logger: logger, output: LogOutput(fd: -1), interval: 10)
            status.context = "train step 1/2"
            for (i, t) in [0.0, 1, 9.9, 10, 25].enumerated() {
                status.show(PhaseProgress(phase: .grad, round: 0, step: 0, done: i, total: 4, workers: 1, tokens: 0, seconds: t), now: 100 + t)
            }
        }
        let lines = out.split(separator: "\n")
        #expect(lines.count == 3, "\(out)")
        #expect(lines[0].contains("status: train step 1/2 · grad round 0 step 0: 0/4 tasks, 1 worker alive"))
        #expect(lines[1].contains("3/4 tasks") && lines[2].contains("4/4 tasks"))
    }

    /// The real binaries with `--log-format json`: every line either process writes is a JSON
    /// record; the workers' carry their id, their task records the task's key; the coordinator's
    /// status records count tasks and tokens and end each phase complete.
    @Test func theBinariesLogJSONWithWorkerTaskAndPhaseMetadata() throws {
        let out = FaultRun.tempDir("logs")
        let run = try FaultRun.start(FaultRun.args(out: out, extra: ["--local-workers", "2", "--log-format", "json", "--status-interval", "0"]))
        run.process.waitUntilExit()
        #expect(run.process.terminationStatus == 0)
        let lines = run.text.split(separator: "\n")
        var records: [[String: Any]] = []
        for line in lines {
            let r = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(r != nil, "not a JSON record: \(line)")
            if let r { records.append(r) }
        }
        for r in records { #expect(r["ts"] is String && r["level"] is String && r["label"] is String && r["message"] is String) }
        let computing = records.filter { ($0["message"] as? String)?.hasSuffix(": computing") == true }
        #expect(computing.count >= FaultRun.steps * FaultRun.shards)
        for r in computing {
            #expect(["local-0", "local-1"].contains(r["worker"] as? String) && r["label"] as? String == r["worker"] as? String)
            #expect(r["phase"] as? String == "grad" && r["shard"] != nil && r["step"] != nil && r["attempt"] != nil && r["task"] != nil)
        }
        #expect(records.contains { $0["label"] as? String == "coordinator" && ($0["message"] as? String)?.contains("worker local-1 ready") == true && $0["worker"] as? String == "local-1" })
        let status = records.filter { $0["label"] as? String == "coordinator" && ($0["message"] as? String)?.hasPrefix("status: ") == true }
        let complete = status.filter { $0["tasks_done"] as? String == "\(FaultRun.shards)" && $0["tasks"] as? String == "\(FaultRun.shards)" }
        #expect(complete.count == FaultRun.steps, "one complete status a step")
        #expect(complete.allSatisfy { ($0["tokens_per_second"] as? Double ?? 0) > 0 && ($0["context"] as? String)?.hasPrefix("train step ") == true })
        #expect(status.allSatisfy { ["1", "2"].contains($0["workers"] as? String) || $0["tasks_done"] as? String == "0" })
    }
}
