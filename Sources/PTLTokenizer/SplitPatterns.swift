/// The regular expressions of the byte-level BPE families, as hand-written scanners over
/// Unicode scalars (leftmost-first alternation with backtracking, like `fancy-regex`).
public enum SplitPattern: Sendable, Equatable {
    /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` (GPT-2)
    case gpt2
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    case llama3
    /// The Llama-3 pattern with `\p{N}` for `\p{N}{1,3}` (Qwen2).
    case qwen2
    /// A literal string.
    case literal([UInt32])

    static let gpt2Source = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Source = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Source = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The scanner for a regex from tokenizer.json, or nil when it is not one we know.
    static func regex(_ source: String) -> SplitPattern? {
        switch source {
        case gpt2Source: return .gpt2
        case llama3Source: return .llama3
        case qwen2Source: return .qwen2
        default: return nil
        }
    }

    /// Appends the matches in `s[start..<end]` to `out` as (start, end) pairs.
    func matches(_ s: UnsafeBufferPointer<UInt32>, _ start: Int, _ end: Int, into out: inout [(Int, Int)]) {
        var i = start
        switch self {
        case .literal(let lit):
            guard !lit.isEmpty else { return }
            while i + lit.count <= end {
                var ok = true
                for k in 0..<lit.count where s[i + k] != lit[k] { ok = false; break }
                if ok { out.append((i, i + lit.count)); i += lit.count } else { i += 1 }
            }
        case .gpt2:
            while i < end {
                let j = SplitPattern.gpt2Match(s, i, end)
                out.append((i, j))
                i = j
            }
        case .llama3, .qwen2:
            let maxDigits = self == .llama3 ? 3 : 1
            while i < end {
                let j = SplitPattern.llamaMatch(s, i, end, maxDigits: maxDigits)
                out.append((i, j))
                i = j
            }
        }
    }

    /// Length of an English contraction at i (`'s` …), case-insensitive or not; 0 if none.
    @inline(__always)
    static func contraction(_ s: UnsafeBufferPointer<UInt32>, _ i: Int, _ end: Int, ignoreCase: Bool) -> Int {
        guard s[i] == 0x27, i + 1 < end else { return 0 }
        func lower(_ v: UInt32) -> UInt32 { ignoreCase && v >= 0x41 && v <= 0x5A ? v + 32 : v }
        let a = lower(s[i + 1])
        if a == 0x73 || a == 0x74 || a == 0x6D || a == 0x64 { return 2 }          // s t m d
        if i + 2 < end {
            let b = lower(s[i + 2])
            if (a == 0x72 && b == 0x65) || (a == 0x76 && b == 0x65) || (a == 0x6C && b == 0x6C) { return 3 }  // re ve ll
        }
        return 0
    }

    @inline(__always)
    static func run(_ s: UnsafeBufferPointer<UInt32>, from i: Int, _ end: Int, _ pred: (UInt32) -> Bool) -> Int {
        var j = i
        while j < end && pred(s[j]) { j += 1 }
        return j
    }

    /// `\s+(?!\S)|\s+` from a whitespace at i.
    @inline(__always)
    static func whitespace(_ s: UnsafeBufferPointer<UInt32>, _ i: Int, _ end: Int) -> Int {
        let j = run(s, from: i, end, isSpace)
        if j == end { return j }
        return j - i >= 2 ? j - 1 : j
    }

    static func gpt2Match(_ s: UnsafeBufferPointer<UInt32>, _ i: Int, _ end: Int) -> Int {
        let c = s[i]
        let k = contraction(s, i, end, ignoreCase: false)
        if k > 0 { return i + k }
        if c == 0x20 && i + 1 < end {          // ' ?' before a letter, number or other run
            let d = s[i + 1]
            if isLetter(d) { return run(s, from: i + 1, end, isLetter) }
            if isNumber(d) { return run(s, from: i + 1, end, isNumber) }
            if isOther(d) { return run(s, from: i + 1, end, isOther) }
        }
        if isLetter(c) { return run(s, from: i, end, isLetter) }
        if isNumber(c) { return run(s, from: i, end, isNumber) }
        if isOther(c) { return run(s, from: i, end, isOther) }
        return whitespace(s, i, end)
    }

    static func llamaMatch(_ s: UnsafeBufferPointer<UInt32>, _ i: Int, _ end: Int, maxDigits: Int) -> Int {
        let c = s[i]
        let k = contraction(s, i, end, ignoreCase: true)
        if k > 0 { return i + k }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        if !isNewline(c) && !isLetter(c) && !isNumber(c) && i + 1 < end && isLetter(s[i + 1]) {
            return run(s, from: i + 1, end, isLetter)
        }
        if isLetter(c) { return run(s, from: i, end, isLetter) }
        // \p{N}{1,maxDigits}
        if isNumber(c) {
            var j = i
            while j < end && j - i < maxDigits && isNumber(s[j]) { j += 1 }
            return j
        }
        // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
        var p = i
        if c == 0x20 && i + 1 < end && isOther(s[i + 1]) { p = i + 1 }
        if isOther(s[p]) {
            let j = run(s, from: p, end, isOther)
            return run(s, from: j, end, isNewline)
        }
        // \s*[\r\n]+ : up to the last newline of the whitespace run
        let j = run(s, from: i, end, isSpace)
        var last = -1
        var q = i
        while q < j { if isNewline(s[q]) { last = q }; q += 1 }
        if last >= 0 { return last + 1 }
        if j > i { return whitespace(s, i, end) }
        return i + 1
    }
}

/// How a Split pre-tokenizer turns matches into pieces.
enum SplitBehavior: String, Sendable {
    case removed = "Removed", isolated = "Isolated", mergedWithPrevious = "MergedWithPrevious"
    case mergedWithNext = "MergedWithNext", contiguous = "Contiguous"

    /// Splits `[start, end)` given the matches inside it (in order, non-overlapping).
    func apply(matches: [(Int, Int)], start: Int, end: Int, invert: Bool, into out: inout [(Int, Int)]) {
        // Mark each sub-range as matched or not.
        var segments: [(Int, Int, Bool)] = []
        var pos = start
        for (a, b) in matches where b > a {
            if a > pos { segments.append((pos, a, false)) }
            segments.append((a, b, true))
            pos = b
        }
        if pos < end { segments.append((pos, end, false)) }
        if invert { segments = segments.map { ($0.0, $0.1, !$0.2) } }
        switch self {
        case .isolated:
            for seg in segments { out.append((seg.0, seg.1)) }
        case .removed:
            for seg in segments where !seg.2 { out.append((seg.0, seg.1)) }
        case .mergedWithPrevious:
            var cur: (Int, Int)? = nil
            for seg in segments {
                if seg.2, let c = cur { cur = (c.0, seg.1) } else { if let c = cur { out.append(c) }; cur = (seg.0, seg.1) }
            }
            if let c = cur { out.append(c) }
        case .mergedWithNext:
            var pending: Int? = nil
            for seg in segments {
                if seg.2 { if pending == nil { pending = seg.0 } }
                else { out.append((pending ?? seg.0, seg.1)); pending = nil }
            }
            if let p = pending { out.append((p, end)) }
        case .contiguous:
            var cur: (Int, Int, Bool)? = nil
            for seg in segments {
                if let c = cur, c.2 && seg.2 { cur = (c.0, seg.1, true) }
                else { if let c = cur { out.append((c.0, c.1)) }; cur = seg }
            }
            if let c = cur { out.append((c.0, c.1)) }
        }
    }
}
