import Foundation
import Testing
@testable import PTLTokenizer

let tokenizerFixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/tokenizers")
let gsm8kTest = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("shared/data/gsm8k/test.jsonl")

/// GSM8K test lines rendered with the standard template.
func renderedGSM8K() throws -> [String] {
    let text = try String(contentsOf: gsm8kTest, encoding: .utf8)
    return try text.split(separator: "\n").map { line in
        let d = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: String]
        return "Question: \(d["question"]!)\nAnswer: \(d["answer"]!)"
    }
}

func hardCases() throws -> [String] {
    let text = try String(contentsOf: tokenizerFixtures.appendingPathComponent("hard_cases.jsonl"), encoding: .utf8)
    return try text.split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8), options: .fragmentsAllowed) as! String }
}

func expectedIds(_ variant: String, _ file: String) throws -> [[Int]] {
    let text = try String(contentsOf: tokenizerFixtures.appendingPathComponent("\(variant)/\(file)"), encoding: .utf8)
    return text.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map { $0.split(separator: " ").map { Int($0)! } }
}

@Suite struct TokenizerFixtureTests {
    @Test(arguments: ["bytelevel", "digits", "llama3", "qwen2"])
    func matchesTheTokenizersLibraryExactly(variant: String) throws {
        let tokenizer = try Tokenizer(path: tokenizerFixtures.appendingPathComponent("\(variant)/tokenizer.json").path)
        for (file, texts) in [("gsm8k_test.ids", try renderedGSM8K()), ("hard_cases.ids", try hardCases())] {
            let expected = try expectedIds(variant, file)
            #expect(expected.count == texts.count)
            var mismatches = 0
            for (text, want) in zip(texts, expected) {
                let got = tokenizer.encode(text)
                if got != want {
                    mismatches += 1
                    if mismatches <= 3 {
                        Issue.record("\(variant)/\(file): \(text.debugDescription)\n ours \(got)\n lib  \(want)")
                    }
                }
            }
            #expect(mismatches == 0, "\(variant)/\(file): \(mismatches) of \(texts.count) lines differ")
        }
    }

    @Test(arguments: ["bytelevel", "llama3"])
    func decodeInvertsEncode(variant: String) throws {
        let tokenizer = try Tokenizer(path: tokenizerFixtures.appendingPathComponent("\(variant)/tokenizer.json").path)
        for text in try hardCases() + (try renderedGSM8K().prefix(50)) {
            let ids = tokenizer.encode(text, addSpecialTokens: false)
            #expect(tokenizer.decode(ids) == text)
        }
        let withBOS = tokenizer.encode("Hi <|endoftext|> there")
        #expect(withBOS.first == 0)
        #expect(tokenizer.decode(withBOS, skipSpecialTokens: true) == "Hi  there")
        #expect(tokenizer.decode(withBOS) == "<|endoftext|>Hi <|endoftext|> there")
    }

    @Test func reportsBadFilesAndUnsupportedComponents() throws {
        func message(_ json: String) -> String? {
            do { _ = try Tokenizer(data: Data(json.utf8), source: "t.json"); return nil } catch { return "\(error)" }
        }
        #expect(message("{oops")?.contains("t.json: tokenizer.json is not valid JSON") == true)
        let model = #""model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}"#
        #expect(message(#"{\#(model), "pre_tokenizer": {"type": "Whitespace"}}"#)?.contains("t.json: unsupported pre_tokenizer type \"Whitespace\"") == true)
        #expect(message(#"{\#(model), "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated"}}"#)?.contains("unsupported Split regex") == true)
        #expect(message(#"{\#(model), "pre_tokenizer": {"type": "ByteLevel"}, "normalizer": {"type": "Lowercase"}}"#)?.contains("unsupported normalizer type \"Lowercase\"") == true)
        #expect(message(#"{"model": {"type": "Unigram", "vocab": []}}"#)?.contains("unsupported model type \"Unigram\"") == true)
        #expect(message(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}, "pre_tokenizer": {"type": "ByteLevel"}}"#)?.contains("merge 1 (a, b) uses a token outside the vocabulary") == true)
        #expect(throws: TokenizerError.self) { try Tokenizer(path: "/nonexistent/tokenizer.json") }
    }

    @Test func patternsSplitLikeTheRegexes() {
        func pieces(_ p: SplitPattern, _ text: String) -> [String] {
            PreTokenizer(steps: [.split(.pattern(p), .isolated, invert: false)]).preTokenize(text)
        }
        // Checked against the `tokenizers` library (pre_tokenizer.pre_tokenize_str).
        #expect(pieces(.gpt2, "Hello world's  end\n\n x") == ["Hello", " world", "'s", " ", " end", "\n\n", " x"])
        #expect(pieces(.gpt2, "x  y 123!!") == ["x", " ", " y", " 123", "!!"])
        #expect(pieces(.llama3, "I'M 12345 $x\n\n  y") == ["I", "'M", " ", "123", "45", " $", "x", "\n\n", " ", " y"])
        #expect(pieces(.qwen2, "a 12") == ["a", " ", "1", "2"])
    }
}
