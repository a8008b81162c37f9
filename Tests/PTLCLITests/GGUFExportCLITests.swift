import Foundation
import Testing

@Suite struct GGUFExportCLITests {
    /// HF → GGUF → HF through the command line, the sizes printed.
    @Test func exportsBothWays() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let demo = packageRoot.appendingPathComponent("models/demo").path
        let gguf = dir.appendingPathComponent("demo.gguf").path
        let r = try runPTL(["export", "--model", demo, "--out", gguf, "--type", "q4_k_m"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("q4_k_m: 17 F32, 4 Q4_K, 45 Q5_0, 4 Q6_K, 5 Q8_0"))
        #expect(r.stdout.contains(" MB)"))
        let back = dir.appendingPathComponent("back").path
        let r2 = try runPTL(["export", "--model", gguf, "--out", back])
        #expect(r2.status == 0, "\(r2.stderr)")
        #expect(FileManager.default.fileExists(atPath: back + "/model.safetensors"))
        #expect(FileManager.default.fileExists(atPath: back + "/tokenizer.json"))
        let bad = try runPTL(["export", "--model", demo, "--out", gguf, "--type", "q3_k"])
        #expect(bad.status != 0 && bad.stderr.contains("--type must be one of f32, f16, bf16, q8_0, q4_k_m"))
    }

    /// A disk that fills up mid-write (here: a file-size limit, which fails the write the way a
    /// full disk does): one clear error, and nothing under the final name or beside it.
    @Test func aWriteThatFailsMidwayLeavesNoFile() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let demo = packageRoot.appendingPathComponent("models/demo").path
        let out = dir.appendingPathComponent("demo.gguf").path
        let buildDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        var exe = buildDir.appendingPathComponent("ptl")
        if !FileManager.default.fileExists(atPath: exe.path) { exe = buildDir.deletingLastPathComponent().appendingPathComponent("ptl") }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        // dash counts ulimit -f in 512-byte blocks: 1 MB of an 8.3 MB file.
        p.arguments = ["-c", "ulimit -f 2048 && exec \"$0\" \"$@\"", exe.path, "export", "--model", demo, "--out", out, "--type", "f32"]
        let err = Pipe()
        p.standardError = err
        p.standardOutput = Pipe()
        try p.run()
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationReason == .exit && p.terminationStatus != 0)
        #expect(stderr.contains("\(out): write failed after") && stderr.contains("File too large"), "\(stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).isEmpty)
    }
}
