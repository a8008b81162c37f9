import Foundation
import PTLModel
import PTLTensor

/// A model of `config` with random weights (normal, `std`) and norms and biases moved off their
/// defaults, so that their gradients and their surgery are checked too.
public func randomModel(_ config: ModelConfig, seed: UInt64, std: Float = 0.3) -> Model {
    let m = Model(config: config)
    m.initializeRandomly(seed: seed, std: std)
    var rng = SplitMix64(seed: seed &+ 1)
    for e in m.layout.entries where e.shape.count == 1 {
        let p = m.parameters.at(e.offset)
        for i in 0..<e.count { p[i] += 0.2 * rng.nextGaussian() }
    }
    return m
}

/// The package's root directory (fixtures, the shipped demo model).
public let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// A fresh directory under the temporary directory.
public func temporaryDirectory(_ prefix: String) -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}
