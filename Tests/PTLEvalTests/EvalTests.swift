import Foundation
import Testing
import PTLData
@testable import PTLEval

@Suite struct AnswerExtractionTests {
    @Test func extractsLikeGSM8KGraders() {
        #expect(AnswerExtraction.extract("so 5 + 3 = 8\n#### 8") == "8")
        #expect(AnswerExtraction.extract("#### $1,234.0") == "1234")
        #expect(AnswerExtraction.extract("The answer is \\boxed{42}.") == "42")
        #expect(AnswerExtraction.extract("\\boxed{\\frac{1}{2}} then") == "\\frac{1}{2}")
        #expect(AnswerExtraction.extract("first 3 then 7.") == "7")
        #expect(AnswerExtraction.extract("owes -12 dollars") == "-12")
        #expect(AnswerExtraction.extract("no numbers here") == nil)
        #expect(AnswerExtraction.matches("18", "18.0"))
        #expect(AnswerExtraction.matches("1234", AnswerExtraction.extract("#### 1,234")))
        #expect(!AnswerExtraction.matches("17", "18"))
        #expect(!AnswerExtraction.matches(nil, "18"))
    }

    @Test func gsm8kReferencesAllParse() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let corpus = try Corpus.load(path: root.deletingLastPathComponent().appendingPathComponent("shared/data/gsm8k/test.jsonl").path)
        for r in corpus.records {
            guard case .qa(_, let a) = r else { continue }
            let x = AnswerExtraction.extract(a)
            #expect(x != nil && Double(x!) != nil, "unparsed reference in \(a.suffix(30))")
        }
    }

    @Test func generationStopsAtABlankLineOrTheNextQuestion() {
        #expect(Evaluator.cut("a\n#### 5\n\nQuestion: b").text == "a\n#### 5")
        #expect(Evaluator.cut("x Question: y").text == "x ")
        #expect(!Evaluator.cut("still going").stopped)
        var s = EvalSettings()
        s.fewShot = [.qa(question: "1+1?", answer: "#### 2")]
        #expect(Evaluator.prompt(question: "2+2?", settings: s) == "Question: 1+1?\nAnswer: #### 2\n\nQuestion: 2+2?\nAnswer:")
    }
}

@Suite struct ArithmeticTaskTests {
    @Test func problemsAreDeterministicAndTheirArithmeticIsRight() throws {
        let task = try ArithmeticTask()
        #expect(task.jsonl(seed: 3, count: 50) == task.jsonl(seed: 3, count: 50))
        #expect(task.jsonl(seed: 3, count: 5) != task.jsonl(seed: 4, count: 5))
        #expect(task.jsonl(seed: 3, start: 10, count: 5) == String(task.jsonl(seed: 3, count: 15).split(separator: "\n", omittingEmptySubsequences: false)[10..<15].joined(separator: "\n") + "\n"))
        for i in 0..<500 {
            let p = task.problem(seed: 1, index: i)
            #expect(AnswerExtraction.extract(p.answer) == "\(p.result)")
            #expect(p.result >= 0)
            // Every <<a op b = c>> annotation is correct.
            for m in p.answer.split(separator: "<<").dropFirst() {
                let expr = m.split(separator: ">>")[0]
                let parts = expr.split(separator: "=")
                let lhs = parts[0], rhs = Int(parts[1])!
                for op in ["+", "-", "*"] where lhs.contains(op) {
                    let xs = lhs.split(separator: Character(op)).map { Int($0)! }
                    let v = op == "+" ? xs[0] + xs[1] : op == "-" ? xs[0] - xs[1] : xs[0] * xs[1]
                    #expect(v == rhs, "\(expr)")
                }
            }
        }
    }

    @Test func rejectsBadSettings() {
        var s = ArithmeticTaskSettings()
        s.operations = ["/"]
        #expect(throws: DataError.self) { try ArithmeticTask(settings: s) }
        s = ArithmeticTaskSettings()
        s.minSteps = 3; s.maxSteps = 2
        #expect(throws: DataError.self) { try ArithmeticTask(settings: s) }
    }
}
