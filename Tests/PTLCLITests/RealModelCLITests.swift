import Foundation
import Testing

let repoCache = packageRoot.appendingPathComponent("cache/models/SmolLM2-135M-Instruct.Q4_1.gguf").path

@Suite struct TaskAndEvalCLITests {
    @Test func dataGenerateInitTrainEvalEndToEnd() throws {
        let dir = scratchDirectory()
        let data = dir.appendingPathComponent("data")
        var r = try runPTL(["data", "generate", "--out", data.path, "--train", "200", "--test", "20", "--seed", "5"])
        #expect(r.status == 0, "\(r.stderr)")
        let again = dir.appendingPathComponent("again")
        _ = try runPTL(["data", "generate", "--out", again.path, "--train", "200", "--test", "20", "--seed", "5"])
        #expect(try Data(contentsOf: data.appendingPathComponent("train.jsonl")) == Data(contentsOf: again.appendingPathComponent("train.jsonl")))
        let model = dir.appendingPathComponent("m")
        r = try runPTL(["init", "--config", packageRoot.appendingPathComponent("recipes/demo/config.json").path,
                        "--tokenizer", packageRoot.appendingPathComponent("recipes/demo/tokenizer.json").path, "--out", model.path, "--seed", "1"])
        #expect(r.status == 0, "\(r.stderr)")
        r = try runPTL(["eval", "--model", model.path, "--data", data.appendingPathComponent("test.jsonl").path,
                        "--max-new-tokens", "12", "--batch-size", "4", "--few-shot", "1", "--json", "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(report["total"] as! Int == 20)
        let predictions = report["predictions"] as! [[String: Any]]
        #expect(predictions.count == 20)
        #expect(predictions.allSatisfy { ($0["reference"] as? String) != nil })
        #expect((report["decode_tokens_per_s"] as! Double) > 0 && (report["flops_per_token"] as! Double) > 0)
        let b = try runPTL(["bench-decode", "--model", model.path, "--batch", "1", "2", "--new-tokens", "8", "--prompt-tokens", "8", "--reps", "1", "--json"])
        #expect(b.status == 0, "\(b.stderr)")
        let bench = try JSONSerialization.jsonObject(with: Data(b.stdout.utf8)) as! [String: Any]
        #expect((bench["batch_1_tokens_per_s"] as! Double) > 0 && (bench["batch_2_tokens_per_s"] as! Double) > 0)
    }

    @Test func theShippedDemoModelSolvesTheTask() throws {
        // The first 200 problems of the recipe's held-out stream (seed 0); the recipe reports 95.0 % on 500.
        let dir = scratchDirectory()
        _ = try runPTL(["data", "generate", "--out", dir.path, "--train", "1", "--test", "200", "--seed", "0"])
        let r = try runPTL(["eval", "--model", packageRoot.appendingPathComponent("models/demo").path,
                            "--data", dir.appendingPathComponent("test.jsonl").path, "--max-new-tokens", "160",
                            "--batch-size", "16", "--json", "--quiet"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(report["accuracy"] as! Double >= 0.9, "accuracy \(report["accuracy"]!)")
    }

    @Test func batchedEvalEqualsOneQuestionAtATime() throws {
        // Left padding must not change any answer: batch 5 and batch 1 give the same text.
        let dir = scratchDirectory()
        _ = try runPTL(["data", "generate", "--out", dir.path, "--train", "1", "--test", "7", "--seed", "9"])
        let model = fixtures.appendingPathComponent("tiny-qwen2").path   // no near-ties in its greedy choices
        func predictions(_ batch: Int) throws -> [String] {
            let r = try runPTL(["eval", "--model", model, "--data", dir.appendingPathComponent("test.jsonl").path,
                                "--max-new-tokens", "10", "--batch-size", "\(batch)", "--json", "--quiet"])
            #expect(r.status == 0, "\(r.stderr)")
            let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
            return (report["predictions"] as! [[String: Any]]).map { $0["generated"] as! String }
        }
        #expect(try predictions(5) == predictions(1))
    }

    @Test func exportWritesADirectoryThatLoadsAgain() throws {
        let out = scratchDirectory().appendingPathComponent("export")
        let gguf = fixtures.appendingPathComponent("gguf/tiny-llama.gguf").path
        let r = try runPTL(["export", "--model", gguf, "--out", out.path, "--dtype", "bf16"])
        #expect(r.status == 0, "\(r.stderr)")
        for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
            #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent(f).path), "\(f)")
        }
        let t1 = try runPTL(["tokenize", "--model", out.path, "--text", "Question: 12 apples"])
        let t2 = try runPTL(["tokenize", "--model", gguf, "--text", "Question: 12 apples"])
        #expect(t1.status == 0 && t1.stdout == t2.stdout)
        let i = try runPTL(["inspect", "--model", out.path, "--json"])
        #expect(i.status == 0, "\(i.stderr)")
    }

    @Test(.enabled(if: FileManager.default.fileExists(atPath: repoCache), "SmolLM2 not fetched: run scripts/setup.sh to enable"))
    func smolLM2GeneratesFluentText() throws {
        let r = try runPTL(["generate", "--model", repoCache, "--prompt", "The capital of France is", "--max-new-tokens", "6", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let out = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect((out["text"] as! String).hasPrefix(" Paris."))
    }
}
