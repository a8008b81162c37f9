import Foundation
import PTLFormats
import PTLLoop
import Testing
@testable import PTLCluster

/// Raw bytes of fp32 values.
func rawBytes(_ v: [Float]) -> [UInt8] { v.withUnsafeBytes { Array($0) } }

/// Seeded weights like a trained model's (about N(0, 0.05)) and the same after an AdamW-sized
/// step (each weight moves by about `lr`, some not at all).
func weightsAndStep(count: Int, lr: Float, seed: UInt64) -> (old: [Float], new: [Float]) {
    var s = seed
    func uniform() -> Float { s = s &* 6364136223846793005 &+ 1442695040888963407; return Float(s >> 40) / Float(1 << 24) }
    let old = (0..<count).map { _ in (uniform() + uniform() + uniform() - 1.5) * 0.1 }
    let new = old.map { w -> Float in
        let u = uniform()
        return u < 0.05 ? w : w - lr * (2 * u - 1) - lr * 0.01 * w
    }
    return (old, new)
}

@Suite struct ModelDeltaTests {
    @Test func anUpdateReproducesTheNewWeightsBitForBit() throws {
        // Sizes around the tag byte (4 words) and the block; special values among the words.
        for count in [1, 3, 4, 5, 1000, ModelDelta.block - 1, ModelDelta.block, ModelDelta.block + 7, 3 * ModelDelta.block + 1] {
            var (old, new) = weightsAndStep(count: count, lr: 3e-4, seed: UInt64(count))
            if count > 8 {
                new[1] = -old[1]; new[2] = .nan; new[3] = .infinity; new[4] = 0; old[5] = -0.0; new[6] = .leastNonzeroMagnitude
                new[count - 1] = Float(bitPattern: 0xFFFF_FFFF)
            }
            let frames = ModelDelta.encode(old: rawBytes(old), new: rawBytes(new))
            var applied = old
            try ModelDelta.apply(frames, to: &applied)
            #expect(rawBytes(applied) == rawBytes(new), "count \(count)")
        }
        // Equal versions: one byte a word plus the tags.
        let same = weightsAndStep(count: 4096, lr: 0, seed: 9).old
        let frames = ModelDelta.encode(old: rawBytes(same), new: rawBytes(same))
        #expect(frames.first { $0.name == "delta_payload" }!.bytes.count == 4096)
    }

    /// The point of an update: a tuning step's is about half the weights' size (the low
    /// mantissa bits move, the sign, exponent and high mantissa mostly do not).
    @Test func aTuningStepsUpdateIsAboutHalfTheWeights() throws {
        for lr: Float in [2e-5, 3e-4] {
            let (old, new) = weightsAndStep(count: 1 << 18, lr: lr, seed: 1)
            let bytes = ModelDelta.encode(old: rawBytes(old), new: rawBytes(new)).reduce(0) { $0 + $1.bytes.count }
            let ratio = Double(bytes) / Double(4 << 18)
            #expect(ratio < (lr < 1e-4 ? 0.6 : 0.75), "lr \(lr): update is \(ratio) of the weights")
        }
    }

    @Test func damagedUpdatesAreRejectedWithTheirReason() throws {
        let (old, new) = weightsAndStep(count: ModelDelta.block + 100, lr: 3e-4, seed: 3)
        let frames = ModelDelta.encode(old: rawBytes(old), new: rawBytes(new))
        func attempt(_ edit: (inout [WireTensor]) -> Void) -> String? {
            var f = frames
            edit(&f)
            var w = old
            do { try ModelDelta.apply(f, to: &w); return nil } catch { return "\(error)" }
        }
        #expect(attempt { $0.removeAll { $0.name == "delta_payload" } }?.contains("no delta_payload") == true)
        #expect(attempt { $0[2].bytes.removeLast() }?.contains("do not fit") == true)
        #expect(attempt { $0[0].bytes.removeLast() }?.contains("do not fit") == true)
        // Offsets that add up but split the payload wrongly between the blocks.
        #expect(attempt { f in
            var o = f[1].bytes.withUnsafeBytes { r in (0..<(r.count / 8)).map { r.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self) } }
            o[1] -= 1
            f[1].bytes = o.withUnsafeBytes { Array($0) }
        }?.contains("does not match its tags") == true)
        var short = old
        short.removeLast()
        #expect(throws: WireError.self) { try ModelDelta.apply(frames, to: &short) }
    }
}
