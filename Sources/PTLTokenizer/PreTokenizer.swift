import Foundation

/// What `Split` does with the pieces a pattern matches (`SplitDelimiterBehavior`).
enum SplitBehavior: String, Sendable {
    case removed = "Removed"
    case isolated = "Isolated"
    case mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext"
    case contiguous = "Contiguous"
}

/// What a `Split` looks for: one of the known regexes, or a literal string.
enum SplitMatcher: Sendable, Equatable {
    case pattern(SplitPattern)
    case literal([UInt8])
}

/// The `pre_tokenizer` of `tokenizer.json`, flattened into steps that each split every piece.
///
/// Supported: `ByteLevel` (which must come last, as it maps bytes to characters), `Split`,
/// `Digits` and `Sequence` of them. `ByteLevel` becomes "prefix a space" (when
/// `add_prefix_space`) followed by a split on the GPT-2 pattern (when `use_regex`); its byte
/// mapping is implicit because the BPE model works on raw bytes.
struct PreTokenizer: Sendable {
    enum Step: Sendable, Equatable {
        case split(SplitMatcher, SplitBehavior, invert: Bool)
        case digits(individual: Bool)
        case prefixSpace
    }

    let steps: [Step]

    init(steps: [Step]) { self.steps = steps }

    init(json: Any?) throws(TokenizerError) {
        guard let json, !(json is NSNull) else {
            throw .unsupported("a tokenizer without pre_tokenizer (byte-level BPE needs ByteLevel)")
        }
        var steps: [Step] = []
        var byteLevelSeen = false
        try Self.collect(json, into: &steps, byteLevelSeen: &byteLevelSeen)
        guard byteLevelSeen else { throw .unsupported("a pre_tokenizer without ByteLevel (byte-level BPE only)") }
        self.steps = steps
    }

    private static func collect(_ json: Any, into steps: inout [Step], byteLevelSeen: inout Bool) throws(TokenizerError) {
        guard let object = json as? [String: Any], let type = object["type"] as? String else {
            throw .invalid("pre_tokenizer has no type")
        }
        if byteLevelSeen {
            throw .unsupported("pre-tokenizer \(type) after ByteLevel (ByteLevel must come last)")
        }
        switch type {
        case "Sequence":
            guard let list = object["pretokenizers"] as? [Any] else {
                throw .invalid("pre_tokenizer Sequence has no pretokenizers")
            }
            for item in list { try collect(item, into: &steps, byteLevelSeen: &byteLevelSeen) }
        case "ByteLevel":
            if object["add_prefix_space"] as? Bool ?? true { steps.append(.prefixSpace) }
            if object["use_regex"] as? Bool ?? true { steps.append(.split(.pattern(.gpt2), .isolated, invert: false)) }
            byteLevelSeen = true
        case "Digits":
            steps.append(.digits(individual: object["individual_digits"] as? Bool ?? false))
        case "Split":
            guard let pattern = object["pattern"] as? [String: Any] else { throw .invalid("Split has no pattern") }
            let matcher: SplitMatcher
            if let source = pattern["Regex"] as? String {
                guard let known = SplitPattern(source: source) else {
                    throw .unsupported("Split regex `\(source)` (known: the GPT-2, Llama-3 and Qwen2 patterns)")
                }
                matcher = .pattern(known)
            } else if let literal = pattern["String"] as? String, !literal.isEmpty {
                matcher = .literal(Array(literal.utf8))
            } else {
                throw .invalid("Split pattern is neither Regex nor a non-empty String")
            }
            let name = object["behavior"] as? String ?? "Isolated"
            guard let behavior = SplitBehavior(rawValue: name) else {
                throw .unsupported("Split behavior \"\(name)\"")
            }
            steps.append(.split(matcher, behavior, invert: object["invert"] as? Bool ?? false))
        default:
            throw .unsupported("pre_tokenizer type \"\(type)\"")
        }
    }

    var needsPrefixSpace: Bool { steps.contains(.prefixSpace) }

    /// Splits `p[start..<end]` into `state.pieces` (flat (start, end) pairs), then calls `body`
    /// with the pointer the pieces are offsets into (`p`, or a copy when spaces are prefixed).
    func split(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, _ state: EncodeState,
               _ table: UnicodeClassTable, _ body: (UnsafePointer<UInt8>) -> Void) {
        guard start < end else { return }
        state.pieces.removeAll(keepingCapacity: true)
        if needsPrefixSpace {
            // A prefix space changes the bytes, so work on a copy that can grow.
            state.work.removeAll(keepingCapacity: true)
            state.work.append(contentsOf: UnsafeBufferPointer(start: p + start, count: end - start))
            state.pieces.append(0)
            state.pieces.append(end - start)
            for step in steps {
                if step == .prefixSpace {
                    addPrefixSpaces(state)
                } else {
                    let work = state.work
                    work.withUnsafeBufferPointer { run(step, $0.baseAddress!, state, table) }
                }
            }
            let work = state.work
            work.withUnsafeBufferPointer { body($0.baseAddress!) }
        } else {
            state.pieces.append(start)
            state.pieces.append(end)
            for step in steps { run(step, p, state, table) }
            body(p)
        }
    }

    /// The pre-tokens of a text as strings, like `pre_tokenize_str` but with raw text instead
    /// of byte-level characters; for tests and debugging.
    func preTokenize(_ text: String) -> [String] {
        let bytes = Array(text.utf8)
        let state = EncodeState()
        var result: [String] = []
        bytes.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress else { return }
            split(base, 0, buffer.count, state, .shared) { p in
                var k = 0
                while k < state.pieces.count {
                    let piece = UnsafeBufferPointer(start: p + state.pieces[k], count: state.pieces[k + 1] - state.pieces[k])
                    result.append(String(decoding: piece, as: UTF8.self))
                    k += 2
                }
            }
        }
        return result
    }

    private func run(_ step: Step, _ p: UnsafePointer<UInt8>, _ state: EncodeState, _ table: UnicodeClassTable) {
        var next = state.takePieces()
        let pieces = state.pieces
        var matches = state.matches
        state.matches = []
        defer { state.matches = matches }
        var k = 0
        while k < pieces.count {
            let (s, e) = (pieces[k], pieces[k + 1])
            k += 2
            switch step {
            case .split(let matcher, let behavior, let invert):
                applySplit(matcher, behavior, invert: invert, p, s, e, table, pieces: &next, matches: &matches)
            case .digits(let individual):
                applyDigits(individual: individual, p, s, e, table, pieces: &next)
            case .prefixSpace:
                break  // see addPrefixSpaces
            }
        }
        state.givePieces(pieces)
        state.pieces = next
    }

    /// ByteLevel's `add_prefix_space`: every piece that does not start with a space gets one.
    private func addPrefixSpaces(_ state: EncodeState) {
        var pieces = state.pieces
        state.pieces = []
        var k = 0
        while k < pieces.count {
            let (s, e) = (pieces[k], pieces[k + 1])
            if state.work[s] != 0x20 {
                let newStart = state.work.count
                state.work.append(0x20)
                for i in s..<e { state.work.append(state.work[i]) }
                pieces[k] = newStart
                pieces[k + 1] = state.work.count
            }
            k += 2
        }
        state.pieces = pieces
    }
}

/// A split of `p[start..<end]` into pieces, as flat (start, end) pairs appended to `pieces`.
/// `matches` is scratch for the general behaviours: flat (start, end, isMatch) triples.
func applySplit(_ matcher: SplitMatcher, _ behavior: SplitBehavior, invert: Bool,
                _ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int, _ table: UnicodeClassTable,
                pieces: inout [Int], matches: inout [Int]) {
    if case .pattern(let pattern) = matcher, behavior == .isolated {
        // The patterns tile the input, so the pieces are the matches.
        var i = start
        while i < end {
            let j = pattern.matchEnd(p, i, end, table)
            pieces.append(i)
            pieces.append(j)
            i = j
        }
        return
    }
    matches.removeAll(keepingCapacity: true)
    let matchFlag = invert ? 0 : 1
    let gapFlag = 1 - matchFlag
    switch matcher {
    case .pattern(let pattern):
        var i = start
        while i < end {
            let j = pattern.matchEnd(p, i, end, table)
            matches.append(contentsOf: [i, j, matchFlag])
            i = j
        }
    case .literal(let literal):
        var previous = start
        var i = start
        let n = literal.count
        literal.withUnsafeBufferPointer { needle in
            while i + n <= end {
                if p[i] == needle[0] && memcmp(p + i, needle.baseAddress!, n) == 0 {
                    if previous < i { matches.append(contentsOf: [previous, i, gapFlag]) }
                    matches.append(contentsOf: [i, i + n, matchFlag])
                    i += n
                    previous = i
                } else {
                    i += 1
                }
            }
        }
        if previous < end { matches.append(contentsOf: [previous, end, gapFlag]) }
    }
    applyBehavior(behavior, matches: matches, pieces: &pieces)
}

/// `Digits`: every number character (`\p{N}`) alone, or runs of them (`individual: false`).
func applyDigits(individual: Bool, _ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int,
                 _ table: UnicodeClassTable, pieces: inout [Int]) {
    var runStart = start
    var runIsNumber = false
    var i = start
    while i < end {
        let (value, length) = decodeScalar(p, i)
        let isNumber = table.flags(value) & CharClass.number != 0
        if isNumber && individual {
            if runStart < i { pieces.append(runStart); pieces.append(i) }
            pieces.append(i)
            pieces.append(i + length)
            runStart = i + length
        } else if i > runStart && isNumber != runIsNumber {
            pieces.append(runStart)
            pieces.append(i)
            runStart = i
        }
        runIsNumber = isNumber
        i += length
    }
    if runStart < end { pieces.append(runStart); pieces.append(end) }
}

/// `NormalizedString::split` of `tokenizers`: turns (start, end, isMatch) triples that cover
/// a piece into pieces, dropping empty ones.
func applyBehavior(_ behavior: SplitBehavior, matches: [Int], pieces: inout [Int]) {
    let count = matches.count / 3
    func emit(_ s: Int, _ e: Int) {
        if s < e { pieces.append(s); pieces.append(e) }
    }
    switch behavior {
    case .isolated:
        for k in 0..<count { emit(matches[3 * k], matches[3 * k + 1]) }
    case .removed:
        for k in 0..<count where matches[3 * k + 2] == 0 { emit(matches[3 * k], matches[3 * k + 1]) }
    case .contiguous, .mergedWithPrevious:
        var merged: [(Int, Int)] = []
        var previousMatch = false
        for k in 0..<count {
            let isMatch = matches[3 * k + 2] != 0
            let joins = behavior == .contiguous ? isMatch == previousMatch : isMatch && !previousMatch
            if joins, !merged.isEmpty {
                merged[merged.count - 1].1 = matches[3 * k + 1]
            } else {
                merged.append((matches[3 * k], matches[3 * k + 1]))
            }
            previousMatch = isMatch
        }
        for (s, e) in merged { emit(s, e) }
    case .mergedWithNext:
        var merged: [(Int, Int)] = []
        var previousMatch = false
        for k in stride(from: count - 1, through: 0, by: -1) {
            let isMatch = matches[3 * k + 2] != 0
            if isMatch && !previousMatch, !merged.isEmpty {
                merged[merged.count - 1].0 = matches[3 * k]
            } else {
                merged.append((matches[3 * k], matches[3 * k + 1]))
            }
            previousMatch = isMatch
        }
        for (s, e) in merged.reversed() { emit(s, e) }
    }
}
