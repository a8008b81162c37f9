import Foundation
import Testing
import PTLLoop
import PTLModel
import PTLTune
import PTLTestSupport

/// Checkpoint rotation (issue 15, finding 11): the previous checkpoint stays as `.old` after a
/// save, so a newest checkpoint damaged later is replaced by its predecessor instead of forcing
/// `--fresh`; with both damaged the error names each.
@Suite struct CheckpointTests {
    @Test func aDamagedNewestCheckpointFallsBackToThePreviousOne() throws {
        let base = temporaryDirectory("ptl-checkpoint")
        defer { try? FileManager.default.removeItem(atPath: base) }
        let dir = base + "/checkpoint"
        let config = try ModelConfig(vocabSize: 40, hiddenSize: 16, intermediateSize: 32, numHiddenLayers: 2,
                                     numAttentionHeads: 2, numKeyValueHeads: 1, maxPositionEmbeddings: 64)
        let model = Model(config: config)
        model.initializeRandomly(seed: 3)
        let optimizer = AdamW(layout: model.layout, settings: AdamWSettings())
        try Checkpoint.save(model: model, optimizer: optimizer, state: .init(step: 1, optimizerStep: 1, run: "r"), to: dir, copyTokenizerFrom: nil)
        model.parameters.pointer[0] += 1
        try Checkpoint.save(model: model, optimizer: optimizer, state: .init(step: 2, optimizerStep: 2, run: "r"), to: dir, copyTokenizerFrom: nil)
        let old = base + "/.checkpoint.old"
        #expect(FileManager.default.fileExists(atPath: old))            // kept after the save
        #expect(try Checkpoint.newest(dir) == dir)
        #expect(try Checkpoint.load(from: old, settings: AdamWSettings()).2.step == 1)
        // The newest one damaged after the fact: its predecessor is used.
        let weights = URL(fileURLWithPath: dir + "/model.safetensors")
        var bytes = try Data(contentsOf: weights)
        bytes[bytes.count - 1] ^= 0xFF
        try bytes.write(to: weights)
        #expect(try Checkpoint.newest(dir) == old)
        // A third save rotates: the damaged one becomes .old, the new one is complete.
        try Checkpoint.save(model: model, optimizer: optimizer, state: .init(step: 3, optimizerStep: 3, run: "r"), to: dir, copyTokenizerFrom: nil)
        #expect(try Checkpoint.newest(dir) == dir)
        #expect(try Checkpoint.load(from: dir, settings: AdamWSettings()).2.step == 3)
        // Both damaged: one error naming each.
        var b2 = try Data(contentsOf: weights)
        b2[b2.count - 1] ^= 0xFF
        try b2.write(to: weights)
        var message = ""
        do { _ = try Checkpoint.newest(dir) } catch { message = "\(error)" }
        #expect(message.contains("no usable checkpoint") && message.contains("checkpoint/model.safetensors fails its CRC-32C")
                && message.contains(".checkpoint.old/model.safetensors fails its CRC-32C"), "\(message)")
    }
}
