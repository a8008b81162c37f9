import Foundation
import Testing

/// `ptl keys generate` (issue 15, finding 12): the secret key is created 0600 (never readable by
/// others, not even between a write and a chmod), an existing key is never overwritten, and a
/// failure is reported as one, not as "wrote".
@Suite struct KeyFileTests {
    func mode(_ path: String) throws -> Int {
        (try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as! NSNumber).intValue
    }

    @Test func keysAreCreatedPrivateAndNeverOverwritten() throws {
        let dir = scratchDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try runPTL(["keys", "generate", "--out", dir.path, "--name", "w"])
        #expect(r.status == 0, "\(r.stderr)")
        let secret = dir.appendingPathComponent("w.key").path, pub = dir.appendingPathComponent("w.pub").path
        #expect(try mode(secret) == 0o600 && mode(pub) == 0o644)
        let before = try String(contentsOfFile: secret, encoding: .utf8)
        #expect(before.utf8.count == 41)
        let again = try runPTL(["keys", "generate", "--out", dir.path, "--name", "w"])
        #expect(again.status != 0 && again.stderr.contains("w.key: already exists; refusing to overwrite a key file"), "\(again.stderr)")
        #expect(!again.stdout.contains("wrote"))
        #expect(try String(contentsOfFile: secret, encoding: .utf8) == before)
        // An unwritable place: the error names it, nothing is left.
        let blocker = dir.appendingPathComponent("file")
        try Data("x".utf8).write(to: blocker)
        let bad = try runPTL(["keys", "generate", "--out", blocker.path, "--name", "w"])
        #expect(bad.status != 0 && !bad.stdout.contains("wrote"))
    }

    /// Secure by default: a bind beyond loopback without CURVE is refused unless --insecure.
    @Test func aBindBeyondLoopbackNeedsCurveOrInsecure() throws {
        func coordinator(_ args: [String]) throws -> (Int32, String) {
            let buildDir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            var exe = buildDir.appendingPathComponent("ptl-coordinator")
            if !FileManager.default.fileExists(atPath: exe.path) { exe = buildDir.deletingLastPathComponent().appendingPathComponent("ptl-coordinator") }
            let p = Process()
            p.executableURL = exe
            p.arguments = args
            let err = Pipe()
            p.standardError = err
            p.standardOutput = Pipe()
            try p.run()
            let e = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            p.waitUntilExit()
            return (p.terminationStatus, e)
        }
        for bind in ["tcp://*:0", "tcp://0.0.0.0:5555", "tcp://10.1.2.3:5555", "tcp://eth0:5555", "tcp://[::]:5555"] {
            let (status, err) = try coordinator(["--bind", bind, "--out", "/nonexistent/never"])
            #expect(status != 0 && err.contains("listens beyond this machine without CURVE"), "\(bind): \(err)")
        }
        // Loopback, or --insecure, passes that check (and fails on the next bad option instead).
        for args in [["--bind", "tcp://127.0.0.1:0"], ["--bind", "tcp://localhost:0"], ["--bind", "tcp://*:0", "--insecure"]] {
            let (status, err) = try coordinator(args + ["--local-workers=-1"])
            #expect(status != 0 && err.contains("--local-workers must be between 0 and 256") && !err.contains("CURVE"), "\(args): \(err)")
        }
    }
}
