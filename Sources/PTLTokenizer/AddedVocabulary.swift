import Foundation

/// One entry of `added_tokens` in `tokenizer.json`.
struct AddedToken: Sendable {
    let id: Int32
    let content: String
    let special: Bool
    let singleWord: Bool
    let lstrip: Bool
    let rstrip: Bool
    /// Matched in the normalized text (true) or in the original text (false).
    let normalized: Bool

    init(json: [String: Any]) throws(TokenizerError) {
        guard let content = json["content"] as? String, !content.isEmpty else {
            throw .invalid("an added token has no content")
        }
        guard let id = tokenId(json["id"]) else {
            throw .invalid("added token \"\(content)\" has id \(json["id"].map { "\($0)" } ?? "none"), expected an integer from 0 to \(Tokenizer.maxTokenId)")
        }
        self.id = id
        self.content = content
        special = json["special"] as? Bool ?? false
        singleWord = json["single_word"] as? Bool ?? false
        lstrip = json["lstrip"] as? Bool ?? false
        rstrip = json["rstrip"] as? Bool ?? false
        normalized = json["normalized"] as? Bool ?? !special
    }
}

/// A span of a text: an added token (`id >= 0`) or text still to tokenize (`id == -1`).
struct Segment {
    var start: Int
    var end: Int
    var id: Int32
}

/// Finds added tokens in a text the way `tokenizers`' `AddedVocabulary` does: leftmost-longest
/// non-overlapping matches, then the `single_word`, `lstrip` and `rstrip` rules.
struct AddedTokenMatcher: Sendable {
    private struct Pattern: Sendable {
        let bytes: [UInt8]
        let token: AddedToken
    }

    /// Patterns by first byte, longest first.
    private let buckets: [[Pattern]]
    /// Whether a pattern starts with the byte, for a fast scan.
    private let firstBytes: [Bool]
    let isEmpty: Bool

    /// - Parameter normalize: the spelling to match (the normalizer's output for tokens with
    ///   `normalized`, as the library normalizes those contents too).
    init(tokens: [AddedToken], normalize: (String) -> String = { $0 }) {
        var buckets = [[Pattern]](repeating: [], count: 256)
        for token in tokens {
            let bytes = Array(normalize(token.content).utf8)
            guard let first = bytes.first else { continue }
            buckets[Int(first)].append(Pattern(bytes: bytes, token: token))
        }
        for i in 0..<256 { buckets[i].sort { $0.bytes.count > $1.bytes.count } }
        self.buckets = buckets
        firstBytes = buckets.map { !$0.isEmpty }
        isEmpty = tokens.isEmpty
    }

    /// Splits `p[start..<end]` into segments (appended to `segments`); without matches, one
    /// text segment. Empty text segments are not emitted.
    func split(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, _ table: UnicodeClassTable,
               into segments: inout [Segment]) {
        var offset = start
        var i = start
        while i < end {
            // Skip to the next byte that can start a token.
            let next: Int = firstBytes.withUnsafeBufferPointer { starts in
                var j = i
                while j < end && !starts[Int(p[j])] { j += 1 }
                return j
            }
            i = next
            if i == end { break }
            let bucket = buckets[Int(p[i])]
            var matched: Pattern?
            for pattern in bucket where pattern.bytes.count <= end - i {
                let equal = pattern.bytes.withUnsafeBufferPointer { memcmp($0.baseAddress!, p + i, $0.count) == 0 }
                if equal { matched = pattern; break }
            }
            guard let pattern = matched else { i += 1; continue }
            var matchStart = i
            var matchEnd = i + pattern.bytes.count
            i = matchEnd  // the search goes on after the match even if a rule discards it
            let token = pattern.token
            if token.singleWord {
                let startsWord = matchStart == start || !Self.isWordScalar(before: matchStart, p, start, table)
                let endsWord = matchEnd == end || !Self.isWordScalar(at: matchEnd, p, table)
                if !startsWord || !endsWord { continue }
            }
            if token.lstrip {
                var j = matchStart
                while j > start {
                    let previous = previousScalarStart(p, j, lowerBound: start)
                    if table.flags(decodeScalar(p, previous).value) & CharClass.space == 0 { break }
                    j = previous
                }
                matchStart = max(j, offset)
            }
            if token.rstrip {
                while matchEnd < end {
                    let (value, length) = decodeScalar(p, matchEnd)
                    if table.flags(value) & CharClass.space == 0 { break }
                    matchEnd += length
                }
            }
            if offset < matchStart { segments.append(Segment(start: offset, end: matchStart, id: -1)) }
            segments.append(Segment(start: matchStart, end: matchEnd, id: token.id))
            offset = matchEnd
        }
        if offset < end { segments.append(Segment(start: offset, end: end, id: -1)) }
    }

    private static func isWordScalar(before i: Int, _ p: UnsafePointer<UInt8>, _ lowerBound: Int,
                                     _ table: UnicodeClassTable) -> Bool {
        let previous = previousScalarStart(p, i, lowerBound: lowerBound)
        return table.flags(decodeScalar(p, previous).value) & CharClass.word != 0
    }

    private static func isWordScalar(at i: Int, _ p: UnsafePointer<UInt8>, _ table: UnicodeClassTable) -> Bool {
        table.flags(decodeScalar(p, i).value) & CharClass.word != 0
    }
}
