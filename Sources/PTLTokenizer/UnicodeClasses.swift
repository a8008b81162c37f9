/// Character classes the pre-tokenizer patterns use: `\p{L}`, `\p{N}` and `\s` as the Rust
/// `regex` crate defines them (general categories L*, N*; the White_Space property).
enum CharClass {
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 4

    /// Classes of every BMP scalar, computed once.
    static let bmp: [UInt8] = (0..<0x10000).map { compute(UInt32($0)) }

    @inline(__always)
    static func of(_ v: UInt32) -> UInt8 {
        v < 0x10000 ? bmp[Int(v)] : compute(v)
    }

    static func compute(_ v: UInt32) -> UInt8 {
        guard let s = Unicode.Scalar(v) else { return 0 }
        let p = s.properties
        var c: UInt8 = 0
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: c |= letter
        case .decimalNumber, .letterNumber, .otherNumber: c |= number
        default: break
        }
        if p.isWhitespace { c |= space }
        return c
    }
}

@inline(__always) func isLetter(_ v: UInt32) -> Bool { CharClass.of(v) & CharClass.letter != 0 }
@inline(__always) func isNumber(_ v: UInt32) -> Bool { CharClass.of(v) & CharClass.number != 0 }
@inline(__always) func isSpace(_ v: UInt32) -> Bool { CharClass.of(v) & CharClass.space != 0 }
/// `[^\s\p{L}\p{N}]`
@inline(__always) func isOther(_ v: UInt32) -> Bool { CharClass.of(v) == 0 }
@inline(__always) func isNewline(_ v: UInt32) -> Bool { v == 0x0A || v == 0x0D }
