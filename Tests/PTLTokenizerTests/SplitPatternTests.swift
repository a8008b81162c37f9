import Testing
@testable import PTLTokenizer

/// Pre-token expectations were produced by `tokenizers` 0.23.3 (`pre_tokenize_str` of a
/// `Split` with the same regex, `Isolated`), so each scanner is checked against the library.
struct SplitPatternTests {
    static let gpt2Cases: [(String, [String])] = [
        ("Hello world", ["Hello", " world"]),
        ("it's  I'LL 'd 're've", ["it", "'s", " ", " I", "'", "LL", " '", "d", " '", "re", "'ve"]),
        ("a  b\t\tc \n", ["a", " ", " b", "\t", "\t", "c", " \n"]),
        ("x\u{00A0}\u{00A0}y 123abc!!? ", ["x", "\u{00A0}", "\u{00A0}", "y", " 123", "abc", "!!?", " "]),
        ("  ..  9 ", [" ", " ..", " ", " 9", " "]),
        ("café's ünïcödé 中文 😀👍🏽!", ["café", "'s", " ünïcödé", " 中文", " 😀👍🏽!"]),
        ("'x ''s", ["'", "x", " ''", "s"]),
    ]

    static let llama3Cases: [(String, [String])] = [
        ("Hello, WORLD's 12345 x\r\n\r\n  y", ["Hello", ",", " WORLD", "'s", " ", "123", "45", " x", "\r\n\r\n", " ", " y"]),
        ("(word ((word\tword\n\nfoo  ", ["(word", " ((", "word", "\tword", "\n\n", "foo", "  "]),
        ("'ſ 'Re 'VE '' 'x", ["'ſ", " '", "Re", " '", "VE", " ''", " '", "x"]),
        ("   \n  x", ["   \n", " ", " x"]),
        ("a.\n\nb !?\r\n", ["a", ".\n\n", "b", " !?\r\n"]),
        ("1234567 ١٢٣٤ x²³", ["123", "456", "7", " ", "١٢٣", "٤", " x", "²³"]),
    ]

    static let qwen2Cases: [(String, [String])] = [
        ("Hello, WORLD's 12345 x\r\n\r\n  y", ["Hello", ",", " WORLD", "'s", " ", "1", "2", "3", "4", "5", " x", "\r\n\r\n", " ", " y"]),
        ("(word ((word\tword\n\nfoo  ", ["(word", " ((", "word", "\tword", "\n\n", "foo", "  "]),
        ("'ſ 'Re 'VE '' 'x", ["'ſ", " '", "Re", " '", "VE", " ''", " '", "x"]),
        ("   \n  x", ["   \n", " ", " x"]),
        ("a.\n\nb !?\r\n", ["a", ".\n\n", "b", " !?\r\n"]),
        ("1234567 ١٢٣٤ x²³", ["1", "2", "3", "4", "5", "6", "7", " ", "١", "٢", "٣", "٤", " x", "²", "³"]),
    ]

    private func pieces(_ pattern: SplitPattern, _ text: String) -> [String] {
        PreTokenizer(steps: [.split(.pattern(pattern), .isolated, invert: false)]).preTokenize(text)
    }

    @Test(arguments: gpt2Cases)
    func gpt2(text: String, expected: [String]) {
        #expect(pieces(.gpt2, text) == expected)
    }

    @Test(arguments: llama3Cases)
    func llama3(text: String, expected: [String]) {
        #expect(pieces(.llama3, text) == expected)
    }

    @Test(arguments: qwen2Cases)
    func qwen2(text: String, expected: [String]) {
        #expect(pieces(.qwen2, text) == expected)
    }

    @Test func recognisesPatternStrings() {
        #expect(SplitPattern(source: SplitPattern.gpt2Source) == .gpt2)
        #expect(SplitPattern(source: SplitPattern.llama3Source) == .llama3)
        #expect(SplitPattern(source: SplitPattern.qwen2Source) == .qwen2)
        #expect(SplitPattern(source: #"\s+"#) == nil)
    }

    @Test func unicodeClasses() {
        let table = UnicodeClassTable.shared
        for scalar in ["a", "é", "中", "ß", "ʰ", "𝔘"] as [Unicode.Scalar] {
            #expect(table.flags(scalar.value) & CharClass.letter != 0, "\(scalar)")
        }
        for scalar in ["7", "٣", "²", "Ⅻ", "½"] as [Unicode.Scalar] {
            #expect(table.flags(scalar.value) & CharClass.number != 0, "\(scalar)")
        }
        for value: UInt32 in [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x200A,
                              0x2028, 0x2029, 0x202F, 0x205F, 0x3000] {
            #expect(table.flags(value) & CharClass.space != 0, "U+\(String(value, radix: 16))")
        }
        for value: UInt32 in [0x180E, 0x200B, 0xFEFF, 0x1F600] {
            #expect(table.flags(value) & (CharClass.space | CharClass.letter | CharClass.number) == 0)
        }
    }
}
