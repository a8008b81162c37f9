import Foundation
import PTLFuzzTargets
import Testing

/// The fuzz targets outside libFuzzer: every seed of the committed corpora is accepted (so a
/// target that rejects everything, and fuzzes nothing but its first check, fails here), and every
/// input a fuzzing finding was fixed for (Fuzz/regressions/TARGET/NAME) runs to a clean answer —
/// a trap or an out-of-bounds access there ends this test process.
@Suite struct FuzzRegressionTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func inputs(_ kind: String, _ target: FuzzTarget) -> [URL] {
        let dir = root.appendingPathComponent("Fuzz/\(kind)/\(target.rawValue)")
        return ((try? FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)) ?? [])
            .filter { !$0.lastPathComponent.hasPrefix(".") }.sorted { $0.path < $1.path }
    }

    @Test(arguments: FuzzTarget.allCases)
    func everySeedIsAccepted(_ target: FuzzTarget) throws {
        let seeds = Self.inputs("seeds", target)
        #expect(!seeds.isEmpty, "no seeds for \(target.rawValue) (scripts/fuzz.sh --seeds writes them)")
        for url in seeds {
            let bytes = try Data(contentsOf: url)
            let accepted = bytes.withUnsafeBytes { target.run($0) }
            #expect(accepted, "\(target.rawValue): seed \(url.lastPathComponent) was rejected")
        }
    }

    @Test(arguments: FuzzTarget.allCases)
    func everyFixedFindingIsHandled(_ target: FuzzTarget) throws {
        for url in Self.inputs("regressions", target) {
            let bytes = try Data(contentsOf: url)
            // The file name says what the right answer is: accepted-* or rejected-*.
            let accepted = bytes.withUnsafeBytes { target.run($0) }
            let name = url.lastPathComponent
            if name.hasPrefix("accepted-") { #expect(accepted, "\(target.rawValue)/\(name)") }
            if name.hasPrefix("rejected-") { #expect(!accepted, "\(target.rawValue)/\(name)") }
        }
    }
}
