import PTLTensor
/// A padded batch of next-token examples: `tokens[b·seq + t]` predicts `targets[b·seq + t]`.
public struct TokenBatch: Sendable, Equatable {
    public var batch: Int
    public var seq: Int
    public var tokens: [Int32]
    /// Next-token targets; -1 marks padding (ignored by the loss).
    public var targets: [Int32]
    /// Scored targets.
    public var count: Int { targets.reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }

    /// Builds a batch from token sequences: each contributes `ids[..<n-1]` as inputs and
    /// `ids[1...]` as targets, right-padded to the longest (rounded up to `multiple`).
    public init(sequences: [[Int]], multiple: Int = 1) {
        precondition(!sequences.isEmpty)
        let longest = max(1, sequences.map { $0.count - 1 }.max() ?? 1)
        let seq = (longest + multiple - 1) / multiple * multiple
        batch = sequences.count
        self.seq = seq
        tokens = [Int32](repeating: 0, count: batch * seq)
        targets = [Int32](repeating: -1, count: batch * seq)
        for (b, ids) in sequences.enumerated() where ids.count >= 2 {
            for t in 0..<(ids.count - 1) {
                tokens[b * seq + t] = Int32(ids[t])
                targets[b * seq + t] = Int32(ids[t + 1])
            }
        }
    }
}

/// A deterministic order over `count` examples: a fresh seeded shuffle each epoch.
public struct EpochOrder: Sendable {
    public let count: Int
    public let seed: UInt64

    public init(count: Int, seed: UInt64) {
        self.count = count
        self.seed = seed
    }

    /// The example indices of batch `step` of size `batchSize`, wrapping into later epochs.
    public func indices(step: Int, batchSize: Int) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(batchSize)
        var position = step * batchSize
        var cachedEpoch = -1
        var perm: [Int] = []
        while out.count < batchSize {
            let epoch = position / count
            if epoch != cachedEpoch { perm = permutation(epoch: epoch); cachedEpoch = epoch }
            out.append(perm[position % count])
            position += 1
        }
        return out
    }

    /// Fisher–Yates with SplitMix64 seeded by (seed, epoch).
    public func permutation(epoch: Int) -> [Int] {
        var p = Array(0..<count)
        var rng = SplitMix64(seed: seed ^ (UInt64(epoch) &* 0x9E37_79B9_7F4A_7C15))
        if count > 1 {
            for i in stride(from: count - 1, to: 0, by: -1) {
                let j = Int(rng.next() % UInt64(i + 1))
                p.swapAt(i, j)
            }
        }
        return p
    }
}
