/// Character classes the split patterns need, as bit flags.
///
/// `letter` is `\p{L}` (general categories Lu, Ll, Lt, Lm, Lo), `number` is `\p{N}`
/// (Nd, Nl, No — also Rust's `char::is_numeric`, which `Digits` uses), `space` is `\s`
/// (the White_Space property, as the regex engines behind `tokenizers` define it), and
/// `word` is Rust regex's Unicode `\w` (Alphabetic, marks, Nd, Pc, Join_Control), which the
/// `single_word` rule for added tokens uses.
struct CharClass {
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 4
    static let word: UInt8 = 8

    /// Computes the flags of one scalar from the standard library's Unicode data.
    static func compute(_ value: UInt32) -> UInt8 {
        guard let scalar = Unicode.Scalar(value) else { return 0 }  // surrogates
        let properties = scalar.properties
        var flags: UInt8 = 0
        switch properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            flags |= letter
        case .decimalNumber, .letterNumber, .otherNumber:
            flags |= number
        default:
            break
        }
        if properties.isWhitespace { flags |= space }
        switch properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation:
            flags |= word
        default:
            if properties.isAlphabetic || properties.isJoinControl { flags |= word }
        }
        return flags
    }
}

/// A precomputed class table for the Basic Multilingual Plane (64 KiB, built once);
/// scalars above it are computed on demand, as they are rare in text.
final class UnicodeClassTable: @unchecked Sendable {
    /// Immutable after `init`, shared by all tokenizers.
    let bmp: UnsafeMutablePointer<UInt8>

    static let shared = UnicodeClassTable()

    private init() {
        bmp = .allocate(capacity: 0x10000)
        for value in 0..<UInt32(0x10000) { bmp[Int(value)] = CharClass.compute(value) }
    }

    @inline(__always)
    func flags(_ value: UInt32) -> UInt8 {
        value < 0x10000 ? bmp[Int(value)] : CharClass.compute(value)
    }
}

/// Decodes the scalar that starts at `i` in valid UTF-8 (Swift strings are always valid).
@inline(__always)
func decodeScalar(_ p: UnsafePointer<UInt8>, _ i: Int) -> (value: UInt32, length: Int) {
    let b0 = UInt32(p[i])
    if b0 < 0x80 { return (b0, 1) }
    if b0 < 0xE0 { return (((b0 & 0x1F) << 6) | (UInt32(p[i + 1]) & 0x3F), 2) }
    if b0 < 0xF0 {
        return (((b0 & 0x0F) << 12) | ((UInt32(p[i + 1]) & 0x3F) << 6) | (UInt32(p[i + 2]) & 0x3F), 3)
    }
    return (((b0 & 0x07) << 18) | ((UInt32(p[i + 1]) & 0x3F) << 12)
            | ((UInt32(p[i + 2]) & 0x3F) << 6) | (UInt32(p[i + 3]) & 0x3F), 4)
}

/// The start of the scalar that ends just before `i` (`i > lowerBound`).
@inline(__always)
func previousScalarStart(_ p: UnsafePointer<UInt8>, _ i: Int, lowerBound: Int) -> Int {
    var j = i - 1
    while j > lowerBound && (p[j] & 0xC0) == 0x80 { j -= 1 }
    return j
}
