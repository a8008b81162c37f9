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
}
