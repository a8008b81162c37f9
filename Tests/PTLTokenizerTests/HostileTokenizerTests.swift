import Foundation
import Testing
@testable import PTLTokenizer

// tiny-llama's tokenizer.json with one field patched: ids that are negative, fractional, huge,
// duplicated or disagree between the vocabulary, the added tokens and the post-processor.

let tinyLlamaTokenizer = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/tiny-llama/tokenizer.json")

func tokenizerJSON() throws -> [String: Any] {
    try JSONSerialization.jsonObject(with: Data(contentsOf: tinyLlamaTokenizer)) as! [String: Any]
}

/// The error loading the fixture with `patch` applied gives (nil when it loads).
func tokenizerError(_ patch: (inout [String: Any], inout [String: Any]) -> Void) throws -> TokenizerError? {
    var json = try tokenizerJSON()
    var model = json["model"] as! [String: Any]
    patch(&json, &model)
    json["model"] = model
    let data = try JSONSerialization.data(withJSONObject: json)
    do {
        _ = try Tokenizer(data: data, source: "hostile/tokenizer.json")
        return nil
    } catch {
        return error
    }
}

func patchVocab(_ model: inout [String: Any], _ token: String, _ id: Any) {
    var vocab = model["vocab"] as! [String: Any]
    vocab[token] = id
    model["vocab"] = vocab
}

@Suite struct HostileTokenizerTests {
    @Test func theUnpatchedFixtureLoadsAndReportsItsLargestId() throws {
        #expect(try tokenizerError { _, _ in } == nil)
        let tokenizer = try Tokenizer(path: tinyLlamaTokenizer.path)
        #expect(tokenizer.largestTokenId == 383)
        try tokenizer.validate(modelVocabularySize: 384)
        let e = #expect(throws: TokenizerError.self) { try tokenizer.validate(modelVocabularySize: 300) }
        #expect(e?.kind == .invalid && e?.message.contains("ids up to 383 but the model's vocab_size is 300") == true)
    }

    @Test func vocabularyIdsMustBeExactSmallAndUnique() throws {
        var e = try tokenizerError { _, m in patchVocab(&m, "he", -4) }
        #expect(e?.kind == .invalid && e?.message.contains("hostile/tokenizer.json: invalid tokenizer.json: model.vocab[\"he\"] is -4, expected an integer id from 0 to 4194303") == true)

        // int32Value used to truncate 2^32 + 5 to 5.
        e = try tokenizerError { _, m in patchVocab(&m, "he", 4_294_967_301) }
        #expect(e?.kind == .invalid && e?.message.contains("model.vocab[\"he\"] is 4294967301") == true)

        e = try tokenizerError { _, m in patchVocab(&m, "he", 1.5) }
        #expect(e?.kind == .invalid && e?.message.contains("model.vocab[\"he\"] is 1.5") == true)

        e = try tokenizerError { _, m in patchVocab(&m, "he", "12") }
        #expect(e?.kind == .invalid && e?.message.contains("model.vocab[\"he\"]") == true)

        // An id within int32 but far above any vocabulary would allocate the decode table.
        e = try tokenizerError { _, m in patchVocab(&m, "he", 2_000_000_000) }
        #expect(e?.kind == .invalid && e?.message.contains("is 2000000000, expected an integer id from 0 to 4194303") == true)

        let vocab = (try tokenizerJSON()["model"] as! [String: Any])["vocab"] as! [String: Int]
        let idOfT = vocab["t"]!
        e = try tokenizerError { _, m in patchVocab(&m, "he", idOfT) }
        #expect(e?.kind == .invalid && e?.message.contains("model.vocab gives id \(idOfT) to both \"he\" and \"t\"") == true)
    }

    @Test func mergesMustNameKnownTokens() throws {
        var e = try tokenizerError { _, m in m["merges"] = [["Ġ", "t"], ["q", "zzz"]] }
        #expect(e?.kind == .invalid && e?.message.contains("merge 2 (q, zzz) uses a token outside the vocabulary") == true)
        e = try tokenizerError { _, m in m["merges"] = ["Ġ t x"] }
        #expect(e?.kind == .invalid && e?.message.contains("merge 1 \"Ġ t x\" is not two tokens") == true)
        e = try tokenizerError { _, m in m["merges"] = [7] }
        #expect(e?.kind == .invalid && e?.message.contains("merge 1 is neither") == true)
    }

    @Test func addedTokensMustAgreeWithTheVocabulary() throws {
        func patchAdded(_ json: inout [String: Any], _ edit: (inout [String: Any]) -> Void) {
            var added = json["added_tokens"] as! [[String: Any]]
            edit(&added[0])
            json["added_tokens"] = added
        }
        var e = try tokenizerError { j, _ in patchAdded(&j) { $0["id"] = 1 << 30 } }
        #expect(e?.kind == .invalid && e?.message.contains("added token \"<|endoftext|>\" has id 1073741824, expected an integer from 0 to 4194303") == true)

        e = try tokenizerError { j, _ in patchAdded(&j) { $0["id"] = -1 } }
        #expect(e?.kind == .invalid && e?.message.contains("added token \"<|endoftext|>\" has id -1") == true)

        e = try tokenizerError { j, _ in patchAdded(&j) { $0["id"] = 5 } }
        #expect(e?.kind == .invalid && e?.message.contains("added token \"<|endoftext|>\" has id 5, which model.vocab gives to") == true)

        e = try tokenizerError { j, _ in
            var added = j["added_tokens"] as! [[String: Any]]
            var second = added[0]
            second["content"] = "<|other|>"
            added.append(second)
            j["added_tokens"] = added
        }
        #expect(e?.kind == .invalid && e?.message.contains("added_tokens give id 0 to both \"<|endoftext|>\" and \"<|other|>\"") == true)

        // A new added token beyond the vocabulary is fine, and raises the largest id.
        var json = try tokenizerJSON()
        var added = json["added_tokens"] as! [[String: Any]]
        added.append(["id": 400, "content": "<|pad|>", "special": true])
        json["added_tokens"] = added
        let tokenizer = try Tokenizer(data: JSONSerialization.data(withJSONObject: json), source: "padded")
        #expect(tokenizer.largestTokenId == 400)
        #expect(throws: TokenizerError.self) { try tokenizer.validate(modelVocabularySize: 384) }
    }

    @Test func postProcessorIdsMustBeTokens() throws {
        var e = try tokenizerError { j, _ in
            var post = j["post_processor"] as! [String: Any]
            post["special_tokens"] = ["<|endoftext|>": ["id": "<|endoftext|>", "ids": [9999], "tokens": ["<|endoftext|>"]]]
            j["post_processor"] = post
        }
        #expect(e?.kind == .invalid && e?.message.contains("post_processor adds id 9999, which is neither in model.vocab nor in added_tokens") == true)
        e = try tokenizerError { j, _ in
            var post = j["post_processor"] as! [String: Any]
            post["special_tokens"] = ["<|endoftext|>": ["id": "<|endoftext|>", "ids": [-3], "tokens": ["<|endoftext|>"]]]
            j["post_processor"] = post
        }
        #expect(e?.kind == .invalid && e?.message.contains("special token \"<|endoftext|>\" has id -3") == true)
        e = try tokenizerError { j, _ in j["post_processor"] = ["type": "BertProcessing", "cls": ["[CLS]", 1e12], "sep": ["[SEP]", 0]] }
        #expect(e?.kind == .invalid && e?.message.contains("BertProcessing needs cls and sep as [token, id]") == true)
    }

    @Test func truncationsThrow() throws {
        let bytes = try Data(contentsOf: tinyLlamaTokenizer)
        for n in stride(from: 0, to: bytes.count, by: 37) {
            #expect(throws: TokenizerError.self) { try Tokenizer(data: bytes.prefix(n), source: "cut") }
        }
    }
}
