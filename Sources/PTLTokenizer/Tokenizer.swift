import Foundation

/// A problem with a tokenizer.json, naming the file and the component.
public struct TokenizerError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One pre-tokenizer of the pipeline.
enum PreTokenizer: Sendable {
    /// Byte-level: optionally prefix a space, optionally split with the GPT-2 pattern.
    case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
    case split(SplitPattern, SplitBehavior, invert: Bool)
    case digits(individual: Bool)
}

/// A text normaliser.
enum Normalizer: Sendable {
    case nfc, nfd, nfkc, nfkd

    func apply(_ s: String) -> String {
        switch self {
        case .nfc: return s.precomposedStringWithCanonicalMapping
        case .nfd: return s.decomposedStringWithCanonicalMapping
        case .nfkc: return s.precomposedStringWithCompatibilityMapping
        case .nfkd: return s.decomposedStringWithCompatibilityMapping
        }
    }
}

/// An entry of `added_tokens`.
struct AddedToken: Sendable {
    let id: Int
    let content: [UInt32]
    let special: Bool
    let singleWord: Bool
    let lstrip: Bool
    let rstrip: Bool
}

/// A Hugging Face `tokenizer.json` byte-level BPE tokenizer, giving the same ids as the
/// `tokenizers` library: added tokens, normaliser, pre-tokenizers (`ByteLevel`, `Split` with the
/// GPT-2 / Llama-3 / Qwen2 patterns, `Digits`, `Sequence`), BPE, `TemplateProcessing`, and the
/// `ByteLevel` decoder.
public final class Tokenizer: @unchecked Sendable {
    let model: BytePairModel
    let normalizers: [Normalizer]
    let preTokenizers: [PreTokenizer]
    let addedTokens: [AddedToken]
    let addedByFirst: [UInt32: [AddedToken]]
    let addedIds: [Int: AddedToken]
    /// Ids the post-processor puts before and after the sequence.
    let prefixIds: [Int]
    let suffixIds: [Int]
    let byteLevelDecoder: Bool

    /// Reads the tokenizer.json at `path`.
    public convenience init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw TokenizerError("\(path): cannot read the file")
        }
        try self.init(data: data, source: path)
    }

    /// Parses tokenizer.json contents; `source` names the file in errors.
    public init(data: Data, source: String = "tokenizer.json") throws {
        guard let root = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
            throw TokenizerError("\(source): not a JSON object")
        }
        // Model.
        guard let m = root["model"] as? [String: Any] else { throw TokenizerError("\(source): missing \"model\"") }
        let type = m["type"] as? String ?? "BPE"
        guard type == "BPE" else { throw TokenizerError("\(source): unsupported model type \(type) (only BPE)") }
        guard let vocabAny = m["vocab"] as? [String: Any] else { throw TokenizerError("\(source): model.vocab missing") }
        var vocab: [String: Int] = [:]
        vocab.reserveCapacity(vocabAny.count)
        for (k, v) in vocabAny {
            guard let n = v as? Int else { throw TokenizerError("\(source): vocab entry \"\(k)\" is not an integer id") }
            vocab[k] = n
        }
        var merges: [(String, String)] = []
        for (i, item) in (m["merges"] as? [Any] ?? []).enumerated() {
            if let s = item as? String {
                let parts = s.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
                guard parts.count == 2 else { throw TokenizerError("\(source): merge \(i) \"\(s)\" is not two tokens") }
                merges.append((String(parts[0]), String(parts[1])))
            } else if let pair = item as? [String], pair.count == 2 {
                merges.append((pair[0], pair[1]))
            } else {
                throw TokenizerError("\(source): merge \(i) is neither \"a b\" nor [a, b]")
            }
        }
        if (m["byte_fallback"] as? Bool) == true { throw TokenizerError("\(source): BPE byte_fallback is not supported (byte-level BPE only)") }
        // Added tokens (their ids may extend the vocabulary).
        var added: [AddedToken] = []
        let knownIds = Set(vocab.values)
        for (i, a) in (root["added_tokens"] as? [[String: Any]] ?? []).enumerated() {
            guard let id = a["id"] as? Int, let content = a["content"] as? String else {
                throw TokenizerError("\(source): added_tokens[\(i)] needs an id and a content")
            }
            added.append(AddedToken(id: id, content: content.unicodeScalars.map(\.value), special: a["special"] as? Bool ?? false,
                                    singleWord: a["single_word"] as? Bool ?? false, lstrip: a["lstrip"] as? Bool ?? false,
                                    rstrip: a["rstrip"] as? Bool ?? false))
            if !knownIds.contains(id) { vocab[content] = vocab[content] ?? id }
        }
        model = try BytePairModel(vocab: vocab, merges: merges, ignoreMerges: m["ignore_merges"] as? Bool ?? false, source: source)
        addedTokens = added.filter { !$0.content.isEmpty }.sorted { $0.content.count > $1.content.count }
        var byFirst: [UInt32: [AddedToken]] = [:]
        for t in addedTokens { byFirst[t.content[0], default: []].append(t) }
        addedByFirst = byFirst
        addedIds = Dictionary(added.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        // Normaliser.
        normalizers = try Tokenizer.parseNormalizer(root["normalizer"], source: source)
        // Pre-tokenizers.
        preTokenizers = try Tokenizer.parsePreTokenizer(root["pre_tokenizer"], source: source)
        guard preTokenizers.contains(where: { if case .byteLevel = $0 { return true }; return false }) else {
            throw TokenizerError("\(source): no ByteLevel pre-tokenizer: only byte-level BPE tokenizers are supported")
        }
        // Post-processor.
        (prefixIds, suffixIds) = try Tokenizer.parsePostProcessor(root["post_processor"], source: source)
        // Decoder.
        byteLevelDecoder = try Tokenizer.parseDecoder(root["decoder"], source: source)
    }

    /// Number of ids (the largest id + 1).
    public var vocabSize: Int { max(model.idToToken.count, (addedIds.keys.max() ?? -1) + 1) }

    /// The id of a token string.
    public func id(of token: String) -> Int? { model.vocab[token] }

    /// The token string of an id.
    public func token(of id: Int) -> String? {
        if let a = addedIds[id] { return String(String.UnicodeScalarView(a.content.compactMap(Unicode.Scalar.init))) }
        return id >= 0 && id < model.idToToken.count ? model.idToToken[id] : nil
    }

    /// Ids as `tokenizers` gives them by default (`add_special_tokens=True` applies the post-processor).
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var out: [Int] = addSpecialTokens ? prefixIds : []
        let scalars = Array(text.unicodeScalars.map(\.value))
        var segmentStart = 0
        var i = 0
        var bytes: [UInt8] = []
        while i < scalars.count {
            if let candidates = addedByFirst[scalars[i]], let (token, matchStart, matchEnd) = matchAdded(candidates, scalars, at: i, segmentStart: segmentStart) {
                encodeSegment(scalars[segmentStart..<matchStart], into: &out, bytes: &bytes)
                out.append(token.id)
                i = matchEnd
                segmentStart = matchEnd
            } else {
                i += 1
            }
        }
        encodeSegment(scalars[segmentStart..<scalars.count], into: &out, bytes: &bytes)
        if addSpecialTokens { out += suffixIds }
        return out
    }

    /// Ids of a generation prompt: the post-processor's leading special tokens (BOS) and the
    /// text, without the trailing ones (an EOS after a prompt would end the answer at once).
    public func encodePrompt(_ text: String) -> [Int] {
        prefixIds + encode(text, addSpecialTokens: false)
    }

    /// Text for ids: added tokens as their content, the rest through the ByteLevel decoder.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var out = ""
        var pending: [UInt8] = []
        func flush() {
            if !pending.isEmpty { out += String(decoding: pending, as: UTF8.self); pending.removeAll() }
        }
        for id in ids {
            if let a = addedIds[id] {
                if skipSpecialTokens && a.special { continue }
                flush()
                out += String(String.UnicodeScalarView(a.content.compactMap(Unicode.Scalar.init)))
                continue
            }
            guard id >= 0, id < model.idToToken.count, let t = model.idToToken[id] else { continue }
            if byteLevelDecoder, let b = ByteLevel.bytes(of: t) { pending += b } else { flush(); out += t }
        }
        flush()
        return out
    }

    // MARK: - Encoding

    /// The added token matching at i (longest first), with the range it consumes (lstrip/rstrip
    /// take neighbouring whitespace), or nil.
    private func matchAdded(_ candidates: [AddedToken], _ s: [UInt32], at i: Int, segmentStart: Int) -> (AddedToken, Int, Int)? {
        for t in candidates {
            let n = t.content.count
            guard i + n <= s.count else { continue }
            var ok = true
            for k in 0..<n where s[i + k] != t.content[k] { ok = false; break }
            guard ok else { continue }
            if t.singleWord {
                let before = i > 0 ? s[i - 1] : 0x20, after = i + n < s.count ? s[i + n] : 0x20
                if isLetter(before) || isNumber(before) || before == 0x5F || isLetter(after) || isNumber(after) || after == 0x5F { continue }
            }
            var start = i, end = i + n
            if t.lstrip { while start > segmentStart && isSpace(s[start - 1]) { start -= 1 } }
            if t.rstrip { while end < s.count && isSpace(s[end]) { end += 1 } }
            return (t, start, end)
        }
        return nil
    }

    private func encodeSegment(_ segment: ArraySlice<UInt32>, into out: inout [Int], bytes: inout [UInt8]) {
        guard !segment.isEmpty else { return }
        var scalars = Array(segment)
        if !normalizers.isEmpty {
            var s = String(String.UnicodeScalarView(scalars.compactMap(Unicode.Scalar.init)))
            for n in normalizers { s = n.apply(s) }
            scalars = s.unicodeScalars.map(\.value)
        }
        var pieces: [(Int, Int)] = [(0, scalars.count)]
        var next: [(Int, Int)] = []
        var matches: [(Int, Int)] = []
        for pre in preTokenizers {
            next.removeAll(keepingCapacity: true)
            switch pre {
            case .byteLevel(let addPrefixSpace, let useRegex):
                if addPrefixSpace {
                    // Each piece not starting with a space gets one: rebuild the buffer.
                    var rebuilt: [UInt32] = []
                    var shifted: [(Int, Int)] = []
                    for (a, b) in pieces {
                        let start = rebuilt.count
                        if b > a && scalars[a] != 0x20 || b == a { rebuilt.append(0x20) }
                        rebuilt += scalars[a..<b]
                        shifted.append((start, rebuilt.count))
                    }
                    scalars = rebuilt
                    pieces = shifted
                }
                if useRegex {
                    scalars.withUnsafeBufferPointer { s in
                        for (a, b) in pieces { SplitPattern.gpt2.matches(s, a, b, into: &next) }
                    }
                } else {
                    next = pieces
                }
            case .split(let pattern, let behavior, let invert):
                scalars.withUnsafeBufferPointer { s in
                    for (a, b) in pieces {
                        matches.removeAll(keepingCapacity: true)
                        pattern.matches(s, a, b, into: &matches)
                        behavior.apply(matches: matches, start: a, end: b, invert: invert, into: &next)
                    }
                }
            case .digits(let individual):
                for (a, b) in pieces {
                    matches.removeAll(keepingCapacity: true)
                    var i = a
                    while i < b {
                        // Rust's char::is_numeric: the N* categories, not only ASCII digits.
                        if isNumber(scalars[i]) {
                            var j = i + 1
                            if !individual { while j < b && isNumber(scalars[j]) { j += 1 } }
                            matches.append((i, j))
                            i = j
                        } else {
                            i += 1
                        }
                    }
                    SplitBehavior.isolated.apply(matches: matches, start: a, end: b, invert: false, into: &next)
                }
            }
            swap(&pieces, &next)
        }
        for (a, b) in pieces where b > a {
            bytes.removeAll(keepingCapacity: true)
            for k in a..<b { appendUTF8(scalars[k], to: &bytes) }
            model.encode(bytes[...], into: &out)
        }
    }

    @inline(__always)
    private func appendUTF8(_ v: UInt32, to out: inout [UInt8]) {
        if v < 0x80 { out.append(UInt8(v)) }
        else if v < 0x800 { out.append(UInt8(0xC0 | v >> 6)); out.append(UInt8(0x80 | v & 0x3F)) }
        else if v < 0x10000 {
            out.append(UInt8(0xE0 | v >> 12)); out.append(UInt8(0x80 | (v >> 6) & 0x3F)); out.append(UInt8(0x80 | v & 0x3F))
        } else {
            out.append(UInt8(0xF0 | v >> 18)); out.append(UInt8(0x80 | (v >> 12) & 0x3F))
            out.append(UInt8(0x80 | (v >> 6) & 0x3F)); out.append(UInt8(0x80 | v & 0x3F))
        }
    }

    // MARK: - Parsing the components

    static func parseNormalizer(_ value: Any?, source: String) throws -> [Normalizer] {
        guard let d = value as? [String: Any] else { return [] }
        switch d["type"] as? String {
        case "NFC": return [.nfc]
        case "NFD": return [.nfd]
        case "NFKC": return [.nfkc]
        case "NFKD": return [.nfkd]
        case "Sequence":
            return try (d["normalizers"] as? [Any] ?? []).flatMap { try parseNormalizer($0, source: source) }
        case let t:
            throw TokenizerError("\(source): unsupported normalizer \(t ?? "without a type") (supported: NFC, NFD, NFKC, NFKD, Sequence)")
        }
    }

    static func parsePreTokenizer(_ value: Any?, source: String) throws -> [PreTokenizer] {
        guard let d = value as? [String: Any] else { return [] }
        switch d["type"] as? String {
        case "ByteLevel":
            return [.byteLevel(addPrefixSpace: d["add_prefix_space"] as? Bool ?? true, useRegex: d["use_regex"] as? Bool ?? true)]
        case "Digits":
            return [.digits(individual: d["individual_digits"] as? Bool ?? false)]
        case "Split":
            let pattern: SplitPattern
            let p = d["pattern"] as? [String: Any]
            if let r = p?["Regex"] as? String {
                guard let known = SplitPattern.regex(r) else {
                    throw TokenizerError("\(source): unsupported Split regex \(r) (supported: the GPT-2, Llama-3 and Qwen2 patterns)")
                }
                pattern = known
            } else if let s = p?["String"] as? String {
                pattern = .literal(s.unicodeScalars.map(\.value))
            } else {
                throw TokenizerError("\(source): Split pre-tokenizer without a Regex or String pattern")
            }
            let name = d["behavior"] as? String ?? "Isolated"
            guard let behavior = SplitBehavior(rawValue: name) else { throw TokenizerError("\(source): unsupported Split behavior \(name)") }
            return [.split(pattern, behavior, invert: d["invert"] as? Bool ?? false)]
        case "Sequence":
            return try (d["pretokenizers"] as? [Any] ?? []).flatMap { try parsePreTokenizer($0, source: source) }
        case let t:
            throw TokenizerError("\(source): unsupported pre_tokenizer \(t ?? "without a type") (supported: ByteLevel, Split, Digits, Sequence)")
        }
    }

    static func parsePostProcessor(_ value: Any?, source: String) throws -> ([Int], [Int]) {
        guard let d = value as? [String: Any] else { return ([], []) }
        switch d["type"] as? String {
        case "ByteLevel":
            return ([], [])
        case "Sequence":
            var pre: [Int] = [], post: [Int] = []
            for p in d["processors"] as? [Any] ?? [] {
                let (a, b) = try parsePostProcessor(p, source: source)
                pre += a
                post = b + post
            }
            return (pre, post)
        case "TemplateProcessing":
            let specials = d["special_tokens"] as? [String: [String: Any]] ?? [:]
            var pre: [Int] = [], post: [Int] = []
            var seenSequence = false
            for item in d["single"] as? [[String: Any]] ?? [] {
                if let st = item["SpecialToken"] as? [String: Any], let name = st["id"] as? String {
                    guard let ids = specials[name]?["ids"] as? [Int] else {
                        throw TokenizerError("\(source): TemplateProcessing names special token \(name) without ids")
                    }
                    if seenSequence { post += ids } else { pre += ids }
                } else if item["Sequence"] != nil {
                    seenSequence = true
                }
            }
            return (pre, post)
        case let t:
            throw TokenizerError("\(source): unsupported post_processor \(t ?? "without a type") (supported: TemplateProcessing, ByteLevel, Sequence)")
        }
    }

    static func parseDecoder(_ value: Any?, source: String) throws -> Bool {
        guard let d = value as? [String: Any] else { return false }
        switch d["type"] as? String {
        case "ByteLevel": return true
        case "Sequence": return try (d["decoders"] as? [Any] ?? []).contains { try parseDecoder($0, source: source) }
        case let t: throw TokenizerError("\(source): unsupported decoder \(t ?? "without a type") (supported: ByteLevel)")
        }
    }
}
