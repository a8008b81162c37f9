import Foundation
import Testing
@testable import PTLData

func temporaryFile(_ contents: String, name: String = "data.jsonl") -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-data-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let path = dir.appendingPathComponent(name).path
    FileManager.default.createFile(atPath: path, contents: Data(contents.utf8))
    return path
}

@Suite struct CorpusTests {
    @Test func readsGSM8K() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let path = root.deletingLastPathComponent().appendingPathComponent("shared/data/gsm8k/test.jsonl").path
        let corpus = try Corpus.load(path: path)
        #expect(corpus.records.count == 1319)
        guard case .qa(let q, let a) = corpus.records[0] else { Issue.record("expected a QA record"); return }
        #expect(q.hasPrefix("Janet"))
        #expect(a.hasSuffix("#### 18"))
        let text = PromptTemplate.standard.render(corpus.records[0])
        #expect(text.hasPrefix("Question: Janet") && text.contains("\nAnswer: Janet sells"))
        #expect(PromptTemplate.standard.prompt(question: "Q?") == "Question: Q?\nAnswer: ")
    }

    @Test func reportsTheLineOfATruncatedOrBadRecord() throws {
        let truncated = temporaryFile("{\"question\": \"a\", \"answer\": \"b\"}\n{\"question\": \"c\", \"ans")
        #expect(throws: DataError.self) { try Corpus.load(path: truncated) }
        #expect(thrownMessage { _ = try Corpus.load(path: truncated) }?.contains("data.jsonl:2: not a complete JSON object") == true)
        let missing = temporaryFile("{\"question\": \"a\"}\n")
        #expect(thrownMessage { _ = try Corpus.load(path: missing) }?.contains(":1: missing string field \"answer\"") == true)
        let wrong = temporaryFile("\n{\"prompt\": \"a\"}\n")
        #expect(thrownMessage { _ = try Corpus.load(path: wrong) }?.contains(":2: needs \"question\" and \"answer\", or \"text\"") == true)
        #expect(throws: DataError.self) { try Corpus.load(path: "/nonexistent/file.jsonl") }
    }

    @Test func readsTextRecordsAndCustomFields() throws {
        let path = temporaryFile("{\"text\": \"hello\"}\n{\"q\": \"x\", \"a\": \"y\"}\n")
        let corpus = try Corpus.load(path: path, fields: CorpusFields(question: "q", answer: "a"))
        #expect(corpus.records == [.text("hello"), .qa(question: "x", answer: "y")])
        #expect(throws: DataError.self) { try PromptTemplate("no placeholders") }
    }

    @Test func batchesPadAndShiftTargets() {
        let b = TokenBatch(sequences: [[1, 2, 3, 4], [5, 6]], multiple: 4)
        #expect(b.seq == 4)
        #expect(b.tokens == [1, 2, 3, 0, 5, 0, 0, 0])
        #expect(b.targets == [2, 3, 4, -1, 6, -1, -1, -1])
        #expect(b.count == 4)
    }

    @Test func epochOrderIsASeededPermutation() {
        let order = EpochOrder(count: 10, seed: 3)
        let first = (0..<5).flatMap { order.indices(step: $0, batchSize: 2) }
        #expect(Set(first) == Set(0..<10))
        #expect(first == (0..<5).flatMap { EpochOrder(count: 10, seed: 3).indices(step: $0, batchSize: 2) })
        #expect(order.permutation(epoch: 0) != order.permutation(epoch: 1))
    }
}

/// The description of the error `body` throws, or nil when it does not throw.
func thrownMessage(_ body: () throws -> Void) -> String? {
    do { try body(); return nil } catch { return "\(error)" }
}
