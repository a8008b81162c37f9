/// The split regexes of byte-level BPE tokenizers, as hand-written scanners over UTF-8.
///
/// Each pattern is an alternation that matches at every position of any string, so a
/// scanner only has to say where the match starting at `i` ends; the matches then tile
/// the input. The scanners follow the leftmost-first (backtracking) semantics of the
/// regex engines behind `tokenizers`, including the `\s+(?!\S)` look-ahead.
enum SplitPattern: Sendable, Equatable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case llama3
    /// The Llama-3 pattern with `\p{N}` (one number character) instead of `\p{N}{1,3}`.
    case qwen2

    static let gpt2Source =
        #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Source =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Source =
        #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Recognises a pattern string from `tokenizer.json`; `nil` for any other regex.
    init?(source: String) {
        switch source {
        case Self.gpt2Source: self = .gpt2
        case Self.llama3Source: self = .llama3
        case Self.qwen2Source: self = .qwen2
        default: return nil
        }
    }

    /// The end of the match that starts at `i` (`i < end`); always greater than `i`.
    @inline(__always)
    func matchEnd(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int, _ table: UnicodeClassTable) -> Int {
        switch self {
        case .gpt2: return gpt2MatchEnd(p, i, end, table)
        case .llama3: return llamaMatchEnd(p, i, end, table, maxDigits: 3)
        case .qwen2: return llamaMatchEnd(p, i, end, table, maxDigits: 1)
        }
    }
}

private let letter = CharClass.letter
private let number = CharClass.number
private let space = CharClass.space

/// Flags of the scalar at `i`, and its length; ASCII without a table load from the BMP table.
@inline(__always)
private func classify(_ p: UnsafePointer<UInt8>, _ i: Int, _ table: UnicodeClassTable)
    -> (flags: UInt8, value: UInt32, length: Int) {
    let (value, length) = decodeScalar(p, i)
    return (table.flags(value), value, length)
}

/// Extends a run of scalars whose flags satisfy `accept` from `i`.
@inline(__always)
private func run(_ p: UnsafePointer<UInt8>, from i: Int, _ end: Int, _ table: UnicodeClassTable,
                 _ accept: (UInt8) -> Bool) -> Int {
    var j = i
    while j < end {
        let (flags, _, length) = classify(p, j, table)
        if !accept(flags) { break }
        j += length
    }
    return j
}

/// `'s|'t|'re|'ve|'m|'ll|'d` (case-sensitive, or with `(?i:…)` when `ignoringCase`):
/// the match length, or 0.
@inline(__always)
private func contractionLength(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int, ignoringCase: Bool) -> Int {
    guard p[i] == UInt8(ascii: "'"), i + 1 < end else { return 0 }
    var c1 = p[i + 1]
    if ignoringCase {
        // U+017F LATIN SMALL LETTER LONG S folds to "s".
        if c1 == 0xC5 && i + 2 < end && p[i + 2] == 0xBF { return 3 }
        if c1 >= 0x41 && c1 <= 0x5A { c1 |= 0x20 }
    }
    switch c1 {
    case UInt8(ascii: "s"), UInt8(ascii: "t"), UInt8(ascii: "m"), UInt8(ascii: "d"): return 2
    default: break
    }
    guard i + 2 < end else { return 0 }
    var c2 = p[i + 2]
    if ignoringCase && c2 >= 0x41 && c2 <= 0x5A { c2 |= 0x20 }
    switch (c1, c2) {
    case (UInt8(ascii: "r"), UInt8(ascii: "e")), (UInt8(ascii: "v"), UInt8(ascii: "e")),
         (UInt8(ascii: "l"), UInt8(ascii: "l")):
        return 3
    default:
        return 0
    }
}

/// `\s+(?!\S)|\s+` from `i`, where the scalar at `i` is whitespace.
/// When `stopAfterNewline`, also `\s*[\r\n]+` first (the Llama-3 alternative before them).
@inline(__always)
private func whitespaceMatchEnd(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int, _ table: UnicodeClassTable,
                                newlineAlternative: Bool) -> Int {
    var j = i
    var lastStart = i
    var afterLastNewline = -1
    while j < end {
        let (flags, value, length) = classify(p, j, table)
        if flags & space == 0 { break }
        if value == 0x0A || value == 0x0D { afterLastNewline = j + length }
        lastStart = j
        j += length
    }
    if newlineAlternative && afterLastNewline >= 0 { return afterLastNewline }  // \s*[\r\n]+
    if j == end { return end }                // \s+(?!\S) at the end of the input
    if lastStart > i { return lastStart }     // \s+(?!\S): give back the last space
    return j                                  // \s+
}

/// The GPT-2 pattern (ByteLevel's `use_regex`).
private func gpt2MatchEnd(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int, _ table: UnicodeClassTable) -> Int {
    let contraction = contractionLength(p, i, end, ignoringCase: false)
    if contraction > 0 { return i + contraction }
    if p[i] == 0x20 && i + 1 < end {
        let (flags, _, length) = classify(p, i + 1, table)
        if flags & letter != 0 {
            return run(p, from: i + 1 + length, end, table) { $0 & letter != 0 }
        }
        if flags & number != 0 {
            return run(p, from: i + 1 + length, end, table) { $0 & number != 0 }
        }
        if flags & (letter | number | space) == 0 {
            return run(p, from: i + 1 + length, end, table) { $0 & (letter | number | space) == 0 }
        }
    }
    let (flags, _, length) = classify(p, i, table)
    if flags & letter != 0 { return run(p, from: i + length, end, table) { $0 & letter != 0 } }
    if flags & number != 0 { return run(p, from: i + length, end, table) { $0 & number != 0 } }
    if flags & space == 0 {
        return run(p, from: i + length, end, table) { $0 & (letter | number | space) == 0 }
    }
    return whitespaceMatchEnd(p, i, end, table, newlineAlternative: false)
}

/// The Llama-3 pattern (`maxDigits` 3) and the Qwen2 pattern (`maxDigits` 1).
private func llamaMatchEnd(_ p: UnsafePointer<UInt8>, _ i: Int, _ end: Int, _ table: UnicodeClassTable,
                           maxDigits: Int) -> Int {
    let contraction = contractionLength(p, i, end, ignoringCase: true)
    if contraction > 0 { return i + contraction }
    let (flags, value, length) = classify(p, i, table)
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if flags & letter != 0 { return run(p, from: i + length, end, table) { $0 & letter != 0 } }
    let isNewline = value == 0x0A || value == 0x0D
    if !isNewline && flags & number == 0 && i + length < end {
        let (next, _, nextLength) = classify(p, i + length, table)
        if next & letter != 0 {
            return run(p, from: i + length + nextLength, end, table) { $0 & letter != 0 }
        }
    }
    // \p{N}{1,maxDigits}
    if flags & number != 0 {
        var j = i + length
        var count = 1
        while count < maxDigits && j < end {
            let (next, _, nextLength) = classify(p, j, table)
            if next & number == 0 { break }
            j += nextLength
            count += 1
        }
        return j
    }
    //  ?[^\s\p{L}\p{N}]+[\r\n]*
    var punctuationStart = -1
    if flags & space == 0 {
        punctuationStart = i + length
    } else if value == 0x20 && i + 1 < end {
        let (next, _, nextLength) = classify(p, i + 1, table)
        if next & (letter | number | space) == 0 { punctuationStart = i + 1 + nextLength }
    }
    if punctuationStart >= 0 {
        var j = run(p, from: punctuationStart, end, table) { $0 & (letter | number | space) == 0 }
        while j < end && (p[j] == 0x0A || p[j] == 0x0D) { j += 1 }
        return j
    }
    // \s*[\r\n]+|\s+(?!\S)|\s+
    return whitespaceMatchEnd(p, i, end, table, newlineAlternative: true)
}
