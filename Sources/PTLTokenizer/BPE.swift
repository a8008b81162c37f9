import Foundation

/// The `BPE` model of `tokenizer.json`: a vocabulary and ranked merges, applied to the raw
/// bytes of one pre-token exactly as `tokenizers` does (a heap of candidate merges, lowest
/// rank first and then leftmost, stale candidates skipped).
struct BPEModel: Sendable {
    /// Token spelling (byte-level characters) → id.
    let vocab: [String: Int32]
    /// Id → token spelling.
    let tokens: [Int32: String]
    /// The id of each single byte, or -1 when the vocabulary lacks it.
    let byteIds: [Int32]
    /// Raw bytes of every token → id, for `ignore_merges`.
    let vocabByBytes: ByteStringTable
    let merges: PairTable
    let ignoreMerges: Bool
    let unknownId: Int32?
    let fuseUnknown: Bool

    init(json: [String: Any]) throws(TokenizerError) {
        let type = json["type"] as? String ?? "BPE"
        guard type == "BPE" else { throw .unsupported("model type \"\(type)\" (only BPE)") }
        if let dropout = json["dropout"], !(dropout is NSNull) {
            throw .unsupported("BPE dropout (encoding would not be deterministic)")
        }
        if let fallback = json["byte_fallback"] as? Bool, fallback {
            throw .unsupported("BPE byte_fallback")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let value = json[key] as? String, !value.isEmpty { throw .unsupported("BPE \(key)") }
        }
        guard let rawVocab = json["vocab"] as? [String: Any] else { throw .invalid("model.vocab is missing") }
        var vocab: [String: Int32] = [:]
        vocab.reserveCapacity(rawVocab.count)
        var tokens: [Int32: String] = [:]
        tokens.reserveCapacity(rawVocab.count)
        let byBytes = ByteStringTable(capacity: rawVocab.count)
        var byteIds = [Int32](repeating: -1, count: 256)
        for (token, value) in rawVocab {
            guard let id = tokenId(value) else {
                throw .invalid("model.vocab[\"\(token)\"] is \(value), expected an integer id from 0 to \(Tokenizer.maxTokenId)")
            }
            if let other = tokens[id] {
                throw .invalid("model.vocab gives id \(id) to both \"\(min(other, token))\" and \"\(max(other, token))\"")
            }
            vocab[token] = id
            tokens[id] = token
            if let bytes = ByteLevel.bytes(ofToken: token), byBytes.find(bytes) == nil {
                byBytes.insert(bytes, values: [id])
                if bytes.count == 1 { byteIds[Int(bytes[0])] = id }
            }
        }
        self.vocab = vocab
        self.tokens = tokens
        self.byteIds = byteIds
        self.vocabByBytes = byBytes
        self.ignoreMerges = json["ignore_merges"] as? Bool ?? false
        self.fuseUnknown = json["fuse_unk"] as? Bool ?? false
        if let unknown = json["unk_token"] as? String {
            guard let id = vocab[unknown] else { throw .invalid("unk_token \"\(unknown)\" is not in the vocabulary") }
            unknownId = id
        } else {
            unknownId = nil
        }

        guard let rawMerges = json["merges"] as? [Any] else { throw .invalid("model.merges is missing") }
        let merges = PairTable(capacity: rawMerges.count)
        for (rank, merge) in rawMerges.enumerated() {
            let pair: (String, String)
            if let line = merge as? String {
                // Legacy form "a b"; byte-level tokens never contain a space.
                let parts = line.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw .invalid("merge \(rank + 1) \"\(line)\" is not two tokens") }
                pair = (String(parts[0]), String(parts[1]))
            } else if let parts = merge as? [Any], parts.count == 2,
                      let a = parts[0] as? String, let b = parts[1] as? String {
                pair = (a, b)
            } else {
                throw .invalid("merge \(rank + 1) is neither \"a b\" nor [a, b]")
            }
            guard let a = vocab[pair.0], let b = vocab[pair.1] else {
                throw .invalid("merge \(rank + 1) (\(pair.0), \(pair.1)) uses a token outside the vocabulary")
            }
            guard let merged = vocab[pair.0 + pair.1] else {
                throw .invalid("merge \(rank + 1) makes \"\(pair.0 + pair.1)\", which is not in the vocabulary")
            }
            merges.set(a, b, rank: Int32(rank), id: merged)  // a later duplicate wins, as in a HashMap
        }
        self.merges = merges
    }

    /// Appends the ids of one pre-token (raw bytes) to `out`.
    func tokenize(_ p: UnsafePointer<UInt8>, _ n: Int, into out: inout [Int32]) {
        if ignoreMerges, let (start, _) = vocabByBytes.find(p, n, hash: ByteStringTable.hash(p, n)) {
            out.append(vocabByBytes.value(at: start))
            return
        }
        var word = Word(capacity: n)
        var pendingUnknown = false
        for i in 0..<n {
            let id = byteIds[Int(p[i])]
            if id >= 0 {
                if pendingUnknown { word.append(unknownId!); pendingUnknown = false }
                word.append(id)
            } else if let unknownId {
                if pendingUnknown && !fuseUnknown { word.append(unknownId) }
                pendingUnknown = true
            }
            // Without unk_token an unknown byte is dropped, as in `tokenizers`.
        }
        if pendingUnknown { word.append(unknownId!) }
        word.mergeAll(merges)
        word.appendIds(to: &out)
    }
}

/// A token id read from JSON: a whole number from 0 to `Tokenizer.maxTokenId` (a fraction, a
/// negative or a huge value is refused, not truncated).
func tokenId(_ value: Any?) -> Int32? {
    guard let number = value as? NSNumber, let id = Int(exactly: number.doubleValue),
          id >= 0, id <= Tokenizer.maxTokenId else { return nil }
    return Int32(id)
}

/// A pre-token being merged: symbols in a doubly linked list over an array.
private struct Word {
    var ids: [Int32] = []
    var prev: [Int32] = []
    var next: [Int32] = []
    var alive: [Bool] = []

    init(capacity: Int) {
        ids.reserveCapacity(capacity)
        prev.reserveCapacity(capacity)
        next.reserveCapacity(capacity)
        alive.reserveCapacity(capacity)
    }

    mutating func append(_ id: Int32) {
        let index = Int32(ids.count)
        ids.append(id)
        prev.append(index - 1)
        next.append(index + 1)
        alive.append(true)
    }

    func appendIds(to out: inout [Int32]) {
        for i in 0..<ids.count where alive[i] { out.append(ids[i]) }
    }

    /// `Word::merge_all` of `tokenizers` without dropout.
    mutating func mergeAll(_ merges: PairTable) {
        let count = ids.count
        guard count > 1 else { return }
        var queue = MergeQueue()
        for i in 0..<(count - 1) {
            if let (rank, id) = merges.get(ids[i], ids[i + 1]) {
                queue.push(MergeCandidate(rank: rank, position: Int32(i), id: id))
            }
        }
        while let top = queue.pop() {
            let position = Int(top.position)
            guard alive[position], next[position] < Int32(count) else { continue }
            let rightIndex = Int(next[position])
            // Skip a candidate whose pair has changed since it was queued.
            guard let (_, id) = merges.get(ids[position], ids[rightIndex]), id == top.id else { continue }
            ids[position] = top.id
            alive[rightIndex] = false
            next[position] = next[rightIndex]
            if Int(next[rightIndex]) < count { prev[Int(next[rightIndex])] = Int32(position) }
            let left = prev[position]
            if left >= 0, let (rank, id) = merges.get(ids[Int(left)], ids[position]) {
                queue.push(MergeCandidate(rank: rank, position: left, id: id))
            }
            let right = Int(next[position])
            if right < count, let (rank, id) = merges.get(ids[position], ids[right]) {
                queue.push(MergeCandidate(rank: rank, position: Int32(position), id: id))
            }
        }
    }
}

private struct MergeCandidate {
    var rank: Int32
    var position: Int32
    var id: Int32

    /// Order of the queue: lower rank first, then leftmost.
    @inline(__always)
    var key: UInt64 { UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: position)) }
}

/// A binary min-heap of merge candidates.
private struct MergeQueue {
    var items: [MergeCandidate] = []

    mutating func push(_ item: MergeCandidate) {
        items.append(item)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            if items[parent].key <= items[child].key { break }
            items.swapAt(parent, child)
            child = parent
        }
    }

    mutating func pop() -> MergeCandidate? {
        guard let last = items.popLast() else { return nil }
        guard !items.isEmpty else { return last }
        let top = items[0]
        items[0] = last
        var parent = 0
        let count = items.count
        while true {
            let left = 2 * parent + 1
            if left >= count { break }
            var smallest = left
            if left + 1 < count && items[left + 1].key < items[left].key { smallest = left + 1 }
            if items[parent].key <= items[smallest].key { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return top
    }
}

/// Open-addressing map from a pair of ids to (rank, merged id).
final class PairTable: @unchecked Sendable {
    private var keys: [UInt64]
    private var entries: [(rank: Int32, id: Int32)]
    private let mask: Int
    private static let empty = UInt64.max

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size *= 2 }
        keys = [UInt64](repeating: Self.empty, count: size)
        entries = [(rank: Int32, id: Int32)](repeating: (0, 0), count: size)
        mask = size - 1
    }

    @inline(__always)
    private static func slot(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32)
    }

    func set(_ a: Int32, _ b: Int32, rank: Int32, id: Int32) {
        let key = UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
        var index = Self.slot(key) & mask
        while keys[index] != Self.empty && keys[index] != key { index = (index + 1) & mask }
        keys[index] = key
        entries[index] = (rank, id)
    }

    @inline(__always)
    func get(_ a: Int32, _ b: Int32) -> (rank: Int32, id: Int32)? {
        let key = UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
        var index = Self.slot(key) & mask
        while true {
            let found = keys[index]
            if found == key { return entries[index] }
            if found == Self.empty { return nil }
            index = (index + 1) & mask
        }
    }
}
