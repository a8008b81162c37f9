import Foundation

/// A Hugging Face `tokenizer.json` byte-level BPE tokenizer (GPT-2, Llama-3, Qwen2, SmolLM
/// families) that gives the same ids as the `tokenizers` library.
///
/// Encoding follows the library's pipeline: split out added tokens that match the original
/// text, normalize the rest, split out added tokens that match normalized text, pre-tokenize
/// (hand-written scanners for the known split regexes), run BPE on the raw bytes of each
/// pre-token (with a per-caller word cache), and wrap the result with the post-processor's
/// special tokens. Safe to use from several threads at once.
public final class Tokenizer: Sendable {
    private let model: BPEModel
    private let normalizer: Normalizer
    private let preTokenizer: PreTokenizer
    private let postProcessor: PostProcessor
    /// Added tokens matched in the original text, and in the normalized text.
    private let originalMatcher: AddedTokenMatcher
    private let normalizedMatcher: AddedTokenMatcher
    private let addedIds: [String: Int]
    private let addedTokens: [Int: String]
    /// The decoder's output for each id (indexed by id), and whether the id is a special token.
    private let decodedTokens: [[UInt8]?]
    private let specialIds: [Bool]
    private let byteLevelDecoder: Bool
    private let table = UnicodeClassTable.shared
    private let states = EncodeStatePool()

    /// The number of ids, added tokens included (the largest id + 1).
    public let vocabSize: Int

    /// Loads a tokenizer from the contents of a `tokenizer.json`.
    ///
    /// - Throws: `TokenizerError` naming the component or value that is malformed or not
    ///   supported (only byte-level BPE is).
    public init(data: Data) throws(TokenizerError) {
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: data)
        } catch {
            throw TokenizerError(.malformedJSON, "tokenizer.json is not valid JSON: \(error.localizedDescription)")
        }
        guard let json = parsed as? [String: Any] else {
            throw TokenizerError(.malformedJSON, "tokenizer.json is not a JSON object")
        }
        guard let modelJSON = json["model"] as? [String: Any] else { throw .invalid("model is missing") }
        if let truncation = json["truncation"], !(truncation is NSNull) { throw .unsupported("truncation") }
        if let padding = json["padding"], !(padding is NSNull) { throw .unsupported("padding") }

        let model = try BPEModel(json: modelJSON)
        let normalizer = try Normalizer(json: json["normalizer"])
        self.model = model
        self.normalizer = normalizer
        preTokenizer = try PreTokenizer(json: json["pre_tokenizer"])
        postProcessor = try PostProcessor(json: json["post_processor"])

        var added: [AddedToken] = []
        for item in json["added_tokens"] as? [Any] ?? [] {
            guard let object = item as? [String: Any] else { throw .invalid("added_tokens holds a non-object") }
            added.append(try AddedToken(json: object))
        }
        originalMatcher = AddedTokenMatcher(tokens: added.filter { !$0.normalized })
        normalizedMatcher = AddedTokenMatcher(tokens: added.filter { $0.normalized }) { normalizer.normalize($0) }
        var addedIds: [String: Int] = [:]
        var addedTokens: [Int: String] = [:]
        for token in added {
            let id = Int(token.id)
            if let other = addedTokens[id], other != token.content {
                throw .invalid("added_tokens give id \(id) to both \"\(other)\" and \"\(token.content)\"")
            }
            if let other = addedIds[token.content], other != id {
                throw .invalid("added token \"\(token.content)\" appears with ids \(other) and \(id)")
            }
            if let spelling = model.tokens[token.id], spelling != token.content {
                throw .invalid("added token \"\(token.content)\" has id \(id), which model.vocab gives to \"\(spelling)\"")
            }
            if let vocabId = model.vocab[token.content], Int(vocabId) != id {
                throw .invalid("added token \"\(token.content)\" has id \(id) but model.vocab gives it id \(vocabId)")
            }
            addedIds[token.content] = id
            addedTokens[id] = token.content
        }
        self.addedIds = addedIds
        self.addedTokens = addedTokens

        byteLevelDecoder = try Self.decoderIsByteLevel(json["decoder"])
        let maxId = max(Int(model.tokens.keys.max() ?? -1), addedTokens.keys.max() ?? -1)
        vocabSize = maxId + 1
        let specialContents = Set(added.filter(\.special).map(\.content))
        var decodedTokens = [[UInt8]?](repeating: nil, count: vocabSize)
        var specialIds = [Bool](repeating: false, count: vocabSize)
        for id in 0..<vocabSize {
            guard let token = addedTokens[id] ?? model.tokens[Int32(id)] else { continue }
            // ByteLevel decoding: the token's bytes if every character is in the byte map,
            // else the token's own UTF-8 (as `tokenizers` does for added tokens).
            decodedTokens[id] = byteLevelDecoder ? (ByteLevel.bytes(ofToken: token) ?? Array(token.utf8)) : Array(token.utf8)
            specialIds[id] = specialContents.contains(token)
        }
        self.decodedTokens = decodedTokens
        self.specialIds = specialIds
        for id in postProcessor.prefix + postProcessor.suffix where id >= vocabSize || decodedTokens[id] == nil {
            throw .invalid("post_processor adds id \(id), which is neither in model.vocab nor in added_tokens")
        }
    }

    /// Ids above this are refused when loading: the decode table is indexed by id, so a lying
    /// id would otherwise allocate gigabytes. Four times the largest vocabulary in use.
    public static let maxTokenId = (1 << 22) - 1

    /// The largest id the tokenizer can produce or decode (added tokens included), -1 when empty.
    public var largestTokenId: Int { vocabSize - 1 }

    /// Checks that every id this tokenizer can produce indexes a model's embedding, so a
    /// tokenizer.json from another model fails here rather than in the embedding kernel.
    ///
    /// - Throws: `TokenizerError` (`.invalid`) naming both sizes.
    public func validate(modelVocabularySize: Int) throws(TokenizerError) {
        guard largestTokenId < modelVocabularySize else {
            throw .invalid("the tokenizer has ids up to \(largestTokenId) but the model's vocab_size is \(modelVocabularySize)")
        }
    }

    /// Loads `tokenizer.json` from a file.
    ///
    /// - Throws: `TokenizerError` whose message starts with the path.
    public convenience init(path: String) throws(TokenizerError) {
        let data: Data
        do {
            data = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw TokenizerError(.unreadableFile, "\(path): cannot read tokenizer file (\(error.localizedDescription))")
        }
        do {
            try self.init(data: data)
        } catch {
            throw error.inFile(path)
        }
    }

    /// Parses tokenizer.json contents; errors name `source` (a path, or where the JSON came from).
    public convenience init(data: Data, source: String) throws(TokenizerError) {
        do {
            try self.init(data: data)
        } catch {
            throw error.inFile(source)
        }
    }

    /// Ids of a generation prompt: the post-processor's leading special tokens (BOS) and the
    /// text, without the trailing ones (an EOS after a prompt would end the answer at once).
    public func encodePrompt(_ text: String) -> [Int] {
        postProcessor.prefix + encode(text, addSpecialTokens: false)
    }

    private static func decoderIsByteLevel(_ json: Any?) throws(TokenizerError) -> Bool {
        guard let json, !(json is NSNull) else { return false }
        guard let object = json as? [String: Any], let type = object["type"] as? String else {
            throw .invalid("decoder has no type")
        }
        guard type == "ByteLevel" else { throw .unsupported("decoder type \"\(type)\"") }
        return true
    }

    // MARK: Encoding

    /// The ids of `text`, as `tokenizers` gives them by default.
    ///
    /// - Parameter addSpecialTokens: wrap the ids with the post-processor's template (e.g. a
    ///   leading `<|endoftext|>`), like `add_special_tokens=True`. Added tokens written in
    ///   the text are recognised either way.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(text.utf8.count / 3 + postProcessor.prefix.count + postProcessor.suffix.count)
        if addSpecialTokens { ids.append(contentsOf: postProcessor.prefix) }
        let state = states.take()
        var text = text
        text.withUTF8 { buffer in
            guard let base = buffer.baseAddress, buffer.count > 0 else { return }
            encodeOriginal(base, buffer.count, state, &ids)
        }
        states.give(state)
        if addSpecialTokens { ids.append(contentsOf: postProcessor.suffix) }
        return ids
    }

    /// Added tokens that match the original text, then the rest.
    private func encodeOriginal(_ p: UnsafePointer<UInt8>, _ n: Int, _ state: EncodeState, _ ids: inout [Int]) {
        if originalMatcher.isEmpty {
            encodeNormalizing(p, 0, n, state, &ids)
            return
        }
        var segments = state.takeSegments()
        originalMatcher.split(p, 0, n, table, into: &segments)
        for segment in segments {
            if segment.id >= 0 {
                ids.append(Int(segment.id))
            } else {
                encodeNormalizing(p, segment.start, segment.end, state, &ids)
            }
        }
        state.giveSegments(segments)
    }

    /// Normalizes a span, then splits out added tokens that match normalized text.
    private func encodeNormalizing(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, _ state: EncodeState,
                                   _ ids: inout [Int]) {
        if normalizer.leavesUnchanged(p, start, end) {
            encodeNormalized(p, start, end, state, &ids)
            return
        }
        var normalized = normalizer.normalize(String(decoding: UnsafeBufferPointer(start: p + start, count: end - start),
                                                     as: UTF8.self))
        normalized.withUTF8 { buffer in
            guard let base = buffer.baseAddress, buffer.count > 0 else { return }
            encodeNormalized(base, 0, buffer.count, state, &ids)
        }
    }

    private func encodeNormalized(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, _ state: EncodeState,
                                  _ ids: inout [Int]) {
        if normalizedMatcher.isEmpty {
            encodeWords(p, start, end, state, &ids)
            return
        }
        var segments = state.takeSegments()
        normalizedMatcher.split(p, start, end, table, into: &segments)
        for segment in segments {
            if segment.id >= 0 {
                ids.append(Int(segment.id))
            } else {
                encodeWords(p, segment.start, segment.end, state, &ids)
            }
        }
        state.giveSegments(segments)
    }

    /// Pre-tokenizes a span of text (no added tokens inside) and runs BPE on every piece.
    private func encodeWords(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, _ state: EncodeState,
                             _ ids: inout [Int]) {
        preTokenizer.split(p, start, end, state, table) { base in modelPieces(base, state, &ids) }
    }

    /// BPE on each piece through the word cache.
    private func modelPieces(_ p: UnsafePointer<UInt8>, _ state: EncodeState, _ ids: inout [Int]) {
        let cache = state.cache
        let pieces = state.pieces
        var k = 0
        while k < pieces.count {
            let start = pieces[k]
            let n = pieces[k + 1] - start
            k += 2
            let word = p + start
            let hash = ByteStringTable.hash(word, n)
            if let (valueStart, count) = cache.find(word, n, hash: hash) {
                cache.appendValues(start: valueStart, count: count, to: &ids)
                continue
            }
            state.word.removeAll(keepingCapacity: true)
            model.tokenize(word, n, into: &state.word)
            for id in state.word { ids.append(Int(id)) }
            if cache.footprint > EncodeState.cacheLimit { cache.removeAll() }
            state.word.withUnsafeBufferPointer { cache.insert(word, n, hash: hash, values: $0) }
        }
    }

    // MARK: Decoding and vocabulary

    /// The text of `ids`, as `tokenizers`' `decode` gives it (ByteLevel decoder: the bytes of
    /// the tokens, invalid UTF-8 replaced by U+FFFD; without a decoder: tokens joined by spaces).
    ///
    /// - Parameter skipSpecialTokens: leave out special added tokens (`<|endoftext|>`, …).
    ///   Unknown ids are always left out.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(ids.count * 4)
        var first = true
        for id in ids where id >= 0 && id < vocabSize {
            guard let token = decodedTokens[id], !(skipSpecialTokens && specialIds[id]) else { continue }
            if !byteLevelDecoder && !first { bytes.append(0x20) }
            bytes.append(contentsOf: token)
            first = false
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The id of a token spelled as in the vocabulary (`"Ġthe"`, `"<|endoftext|>"`), or `nil`.
    public func id(of token: String) -> Int? {
        if let id = addedIds[token] { return id }
        return model.vocab[token].map(Int.init)
    }

    /// The vocabulary spelling of an id, or `nil` for an id outside the vocabulary.
    public func token(of id: Int) -> String? {
        if let token = addedTokens[id] { return token }
        guard let id32 = Int32(exactly: id) else { return nil }
        return model.tokens[id32]
    }
}

/// Scratch buffers and the word cache of one encoding in progress.
final class EncodeState {
    /// Clear the cache beyond this many bytes of keys, ids and slots (about 100k words).
    static let cacheLimit = 8 << 20

    let cache = ByteStringTable(capacity: 8192)
    var pieces: [Int] = []
    var matches: [Int] = []
    var work: [UInt8] = []
    var word: [Int32] = []
    private var spareSegments: [[Segment]] = []
    private var sparePieces: [[Int]] = []

    func takeSegments() -> [Segment] {
        var segments = spareSegments.popLast() ?? []
        segments.removeAll(keepingCapacity: true)
        return segments
    }

    func giveSegments(_ segments: [Segment]) { spareSegments.append(segments) }

    func takePieces() -> [Int] {
        var pieces = sparePieces.popLast() ?? []
        pieces.removeAll(keepingCapacity: true)
        return pieces
    }

    func givePieces(_ pieces: [Int]) { sparePieces.append(pieces) }
}

/// Encode states for concurrent callers: each call borrows one, so its cache needs no lock
/// on the hot path.
final class EncodeStatePool: @unchecked Sendable {
    private let lock = NSLock()
    private var states: [EncodeState] = []

    func take() -> EncodeState {
        lock.lock()
        defer { lock.unlock() }
        return states.popLast() ?? EncodeState()
    }

    func give(_ state: EncodeState) {
        lock.lock()
        defer { lock.unlock() }
        if states.count < 8 { states.append(state) }  // bounds memory: 8 caches at most
    }
}
