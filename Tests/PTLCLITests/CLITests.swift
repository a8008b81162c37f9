import Foundation
import Testing

/// Runs the built `ptl` executable (it sits beside the test bundle) and returns its output.
func runPTL(_ args: [String], environment: [String: String] = [:]) throws -> (status: Int32, stdout: String, stderr: String) {
    let buildDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    var exe = buildDir.appendingPathComponent("ptl")
    if !FileManager.default.fileExists(atPath: exe.path) {
        // `swift test` may run from inside the .xctest bundle directory.
        exe = buildDir.deletingLastPathComponent().appendingPathComponent("ptl")
    }
    let p = Process()
    p.executableURL = exe
    p.arguments = args
    if !environment.isEmpty {
        p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self))
}

let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let fixtures = packageRoot.appendingPathComponent("Tests/Fixtures")

func json(_ path: URL) throws -> [String: Any] {
    try JSONSerialization.jsonObject(with: Data(contentsOf: path)) as! [String: Any]
}

func scratchDirectory() -> URL {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-cli-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: d, withIntermediateDirectories: true)
    return d
}

@Suite struct CLITests {
    /// A CPU without AVX512-BF16 or AMX, forced two ways: oneDNN held to AVX512_CORE (its ISA
    /// check then finds no bf16), or ptl's own switch. `--precision bf16` says what it runs
    /// instead, and gives exactly the fp32 answer.
    @Test(arguments: [["ONEDNN_MAX_CPU_ISA": "AVX512_CORE"], ["PTL_NO_BF16": "1"]])
    func bf16FallsBackToFP32WhereTheCPUHasNoBF16(environment: [String: String]) throws {
        let args = ["generate", "--model", fixtures.appendingPathComponent("tiny-llama").path, "--prompt", "Question: 2+3?",
                    "--max-new-tokens", "12", "--ignore-eos", "--json"]
        let forced = try runPTL(args + ["--precision", "bf16"], environment: environment)
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(forced.stderr.contains("bf16 was asked for, but") && forced.stderr.contains("running fp32 (OpenBLAS) instead"), "\(forced.stderr)")
        let fp32 = try runPTL(args + ["--precision", "fp32"])
        #expect(fp32.status == 0 && forced.stdout == fp32.stdout)
        #expect(!fp32.stderr.contains("bf16 was asked for"))
    }

    /// fp32 follows PyTorch's fp32 trajectory to 1e-4. bf16 (where the CPU has it) follows it
    /// within bf16's rounding: each matmul input keeps 8 significant bits (2⁻⁹ relative), which
    /// moves the loss by ~1e-4 and the gradient norm by up to ~1 % (measured: 1.2 % at worst).
    @Test(arguments: ["tiny-llama", "tiny-qwen2"], ["fp32", "bf16"])
    func trainOnOneLineReproducesPyTorchsAdamWTrajectory(model: String, precision: String) throws {
        let (lossTolerance, normTolerance) = precision == "fp32" ? (1e-4, 1e-4) : (2e-3, 3e-2)
        let golden = try json(fixtures.appendingPathComponent("golden/train-one-line.json"))
        let s = golden["settings"] as! [String: Any], ref = golden[model] as! [String: Any]
        let out = scratchDirectory()
        let r = try runPTL(["train", "--model", fixtures.appendingPathComponent(model).path,
                            "--data", fixtures.appendingPathComponent("golden/one-line.jsonl").path,
                            "--batch-size", "1", "--seq-len", "\(s["seq_len"]!)", "--steps", "\(s["steps"]!)", "--lr", "\(s["lr"]!)",
                            "--warmup", "\(s["warmup"]!)", "--schedule", "cosine", "--clip", "\(s["clip"]!)",
                            "--weight-decay", "\(s["weight_decay"]!)", "--out", out.appendingPathComponent("m").path,
                            "--log", out.appendingPathComponent("log.jsonl").path, "--precision", precision])
        #expect(r.status == 0, "\(r.stderr)")
        let lines = try String(contentsOf: out.appendingPathComponent("log.jsonl"), encoding: .utf8).split(separator: "\n")
        let steps = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        let refLosses = ref["losses"] as! [Double], refLRs = ref["lrs"] as! [Double], refNorms = ref["grad_norms"] as! [Double]
        #expect(steps.count == refLosses.count)
        for (i, step) in steps.enumerated() {
            let loss = step["loss"] as! Double, lr = step["lr"] as! Double, norm = step["grad_norm"] as! Double
            #expect(abs(loss - refLosses[i]) / refLosses[i] <= lossTolerance, "step \(i + 1): loss \(loss) vs \(refLosses[i])")
            #expect(abs(lr - refLRs[i]) / refLRs[i] <= 1e-6)
            #expect(abs(norm - refNorms[i]) / refNorms[i] <= normTolerance, "step \(i + 1): grad norm \(norm) vs \(refNorms[i])")
            #expect(step["tokens_per_s"] is Double)
        }
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("m/model.safetensors").path))
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("m/tokenizer.json").path))
    }

    @Test(arguments: ["tiny-llama", "tiny-qwen2"])
    func perplexityAndGreedyGenerateAgreeWithTransformers(model: String) throws {
        let golden = try json(fixtures.appendingPathComponent("golden/\(model).json"))
        let dir = fixtures.appendingPathComponent(model).path
        let ppl = golden["perplexity"] as! [String: Any]
        let r = try runPTL(["perplexity", "--model", dir, "--data", fixtures.appendingPathComponent("golden/perplexity.jsonl").path, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let got = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(got["tokens"] as! Int == ppl["tokens"] as! Int)
        #expect(abs((got["loss"] as! Double) - (ppl["mean_nll"] as! Double)) / (ppl["mean_nll"] as! Double) <= 1e-5)
        #expect(abs((got["perplexity"] as! Double) - (ppl["ppl"] as! Double)) / (ppl["ppl"] as! Double) <= 1e-4)
        let gen = golden["generate"] as! [String: Any]
        let g = try runPTL(["generate", "--model", dir, "--prompt", gen["prompt"] as! String, "--max-new-tokens", "24",
                            "--temperature", "0", "--ignore-eos", "--json"])
        #expect(g.status == 0, "\(g.stderr)")
        let out = try JSONSerialization.jsonObject(with: Data(g.stdout.utf8)) as! [String: Any]
        #expect(out["prompt_ids"] as! [Int] == gen["prompt_ids"] as! [Int])
        #expect(out["generated_ids"] as! [Int] == gen["generated_ids"] as! [Int])
        #expect(out["text"] as! String == gen["text"] as! String)
    }

    @Test func samplingIsSeeded() throws {
        let dir = fixtures.appendingPathComponent("tiny-qwen2").path
        let args = ["generate", "--model", dir, "--prompt", "Question:", "--max-new-tokens", "12", "--temperature", "1.0",
                    "--top-p", "0.9", "--ignore-eos", "--json"]
        let a = try runPTL(args + ["--seed", "7"]), b = try runPTL(args + ["--seed", "7"]), c = try runPTL(args + ["--seed", "8"])
        #expect(a.status == 0 && a.stdout == b.stdout)
        #expect(a.stdout != c.stdout)
    }

    @Test func inspectAndTokenize() throws {
        let dir = fixtures.appendingPathComponent("tiny-llama").path
        let r = try runPTL(["inspect", "--model", dir, "--json"])
        #expect(r.status == 0)
        let info = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as! [String: Any]
        #expect(info["parameters"] as! Int == 206_272)
        #expect(info["non_embedding_parameters"] as! Int == 157_120)
        #expect((info["tensors"] as! [Any]).count == 30)
        let t = try runPTL(["tokenize", "--model", dir, "--text", "Hello world"])
        #expect(t.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0 40 69 298 79 274 295 76 68")
    }

    @Test func badInputsGiveOneClearErrorLine() throws {
        let good = fixtures.appendingPathComponent("tiny-llama")
        func broken(_ edit: (URL) throws -> Void) throws -> String {
            let d = scratchDirectory().appendingPathComponent("model")
            try FileManager.default.copyItem(at: good, to: d)
            try edit(d)
            return d.path
        }
        func expectError(_ args: [String], _ needle: String, usageFollows: Bool = false) throws {
            let r = try runPTL(args)
            #expect(r.status != 0, "expected failure for \(args)")
            let lines = r.stderr.split(separator: "\n")
            // Option mistakes are followed by the usage line; bad files get one line.
            #expect(usageFollows ? lines.first?.contains(needle) == true : lines.count == 1, "stderr: \(r.stderr)")
            #expect(r.stderr.contains(needle), "stderr \(r.stderr.debugDescription) lacks \(needle.debugDescription)")
        }
        let noConfig = try broken { try FileManager.default.removeItem(at: $0.appendingPathComponent("config.json")) }
        try expectError(["inspect", "--model", noConfig], "config.json: missing")
        let corrupt = try broken { try Data("{\"model_type\": \"llama\", ".utf8).write(to: $0.appendingPathComponent("config.json")) }
        try expectError(["inspect", "--model", corrupt], "config.json: not valid JSON")
        let unsupported = try broken { d in
            var c = try json(d.appendingPathComponent("config.json"))
            c["model_type"] = "gpt_neox"
            try JSONSerialization.data(withJSONObject: c).write(to: d.appendingPathComponent("config.json"))
        }
        try expectError(["inspect", "--model", unsupported], "unsupported model_type \"gpt_neox\"")
        let wrongShape = try broken { d in
            var c = try json(d.appendingPathComponent("config.json"))
            c["intermediate_size"] = 160
            try JSONSerialization.data(withJSONObject: c).write(to: d.appendingPathComponent("config.json"))
        }
        try expectError(["inspect", "--model", wrongShape], "model.layers.0.mlp.gate_proj.weight has shape [176, 64], expected [160, 64]")
        let truncated = try broken { d in
            let f = d.appendingPathComponent("model.safetensors")
            let data = try Data(contentsOf: f)
            try data.prefix(data.count / 2).write(to: f)
        }
        try expectError(["inspect", "--model", truncated], "truncated")
        let data = scratchDirectory().appendingPathComponent("bad.jsonl")
        try Data("{\"question\": \"a\", \"answer\": \"b\"}\n{\"question\": \"c\", \"answer\": \n".utf8).write(to: data)
        try expectError(["perplexity", "--model", good.path, "--data", data.path], "bad.jsonl:2: not a complete JSON object")
        try expectError(["train", "--model", good.path, "--data", data.path, "--steps", "0", "--lr", "1e-3", "--out", "/tmp/x"], "--steps must be at least 1", usageFollows: true)
    }
}
