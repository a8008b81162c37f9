import Foundation

/// A byte-level BPE model: vocabulary, merge ranks, and a cache of encoded pieces.
final class BytePairModel: @unchecked Sendable {
    let vocab: [String: Int]
    let idToToken: [String?]
    /// Token id of each single byte (-1 when the vocabulary lacks it).
    let byteIds: [Int32]
    /// (left id << 32 | right id) → (rank, merged id).
    let merges: [UInt64: (rank: Int32, id: Int32)]
    let ignoreMerges: Bool
    private var cache: [[UInt8]: [Int32]] = [:]
    private let lock = NSLock()

    init(vocab: [String: Int], merges mergeList: [(String, String)], ignoreMerges: Bool, source: String) throws {
        self.vocab = vocab
        let maxId = vocab.values.max() ?? -1
        var idToToken = [String?](repeating: nil, count: maxId + 1)
        for (t, i) in vocab where i >= 0 { idToToken[i] = t }
        self.idToToken = idToToken
        byteIds = ByteLevel.byteToScalar.map { s in Int32(vocab[String(Unicode.Scalar(s)!)] ?? -1) }
        var merges: [UInt64: (rank: Int32, id: Int32)] = [:]
        merges.reserveCapacity(mergeList.count)
        for (rank, (a, b)) in mergeList.enumerated() {
            guard let ia = vocab[a], let ib = vocab[b] else {
                throw TokenizerError("\(source): merge \(rank) (\"\(a)\" \"\(b)\") names a token missing from the vocabulary")
            }
            guard let merged = vocab[a + b] else {
                throw TokenizerError("\(source): merge \(rank) makes \"\(a + b)\", which is not in the vocabulary")
            }
            let key = UInt64(UInt32(ia)) << 32 | UInt64(UInt32(ib))
            if merges[key] == nil { merges[key] = (Int32(rank), Int32(merged)) }
        }
        self.merges = merges
        self.ignoreMerges = ignoreMerges
    }

    /// Appends the ids of one pre-tokenized piece (its UTF-8 bytes).
    func encode(_ bytes: ArraySlice<UInt8>, into out: inout [Int]) {
        let key = Array(bytes)
        lock.lock()
        let hit = cache[key]
        lock.unlock()
        if let hit {
            for id in hit { out.append(Int(id)) }
            return
        }
        let ids = merge(key)
        lock.lock()
        if cache.count > 200_000 { cache.removeAll(keepingCapacity: true) }
        cache[key] = ids
        lock.unlock()
        for id in ids { out.append(Int(id)) }
    }

    private func merge(_ bytes: [UInt8]) -> [Int32] {
        if ignoreMerges, let whole = vocab[ByteLevel.string(of: bytes)] { return [Int32(whole)] }
        var symbols = bytes.compactMap { b -> Int32? in
            let id = byteIds[Int(b)]
            return id >= 0 ? id : nil
        }
        while symbols.count > 1 {
            var bestRank = Int32.max, bestAt = -1, bestId: Int32 = 0
            for i in 0..<(symbols.count - 1) {
                let key = UInt64(UInt32(symbols[i])) << 32 | UInt64(UInt32(symbols[i + 1]))
                if let m = merges[key], m.rank < bestRank { bestRank = m.rank; bestAt = i; bestId = m.id }
            }
            if bestAt < 0 { break }
            symbols[bestAt] = bestId
            symbols.remove(at: bestAt + 1)
        }
        return symbols
    }
}
