import Testing
import PTLData

/// GRPO's rewards (issue 17) on the edge cases a policy produces: no answer, two answers, commas,
/// `\boxed{}`, negative numbers, trailing text — accuracy by the evaluator's extraction, format
/// by the expected form.
struct RewardTests {
    let spec = RewardSpec.standard

    func scored(_ completion: String, _ gold: String = "#### 42") -> (Double, Bool, Bool) {
        let s = spec.score(completion: completion, gold: gold)
        return (s.total, s.accurate, s.formatted)
    }

    @Test func aRightAnswerInFormEarnsBoth() {
        #expect(scored("6 * 7 = 42\n#### 42") == (1.0, true, true))
        #expect(scored("6 * 7 = 42\n#### 42\n") == (1.0, true, true))
        // The gold may be a worked solution: its answer is extracted the same way.
        #expect(spec.score(completion: "#### 42", gold: "She has 6 * 7 = 42.\n#### 42").accurate)
    }

    @Test func noAnswer() {
        #expect(scored("I am not sure how to solve this.") == (0, false, false))
        #expect(scored("") == (0, false, false))
        #expect(scored("#### ") == (0, false, false))
        // A bare number is what the evaluator extracts (accurate) but not the expected form.
        #expect(scored("The answer is 42") == (0.9, true, false))
    }

    @Test func twoAnswers() {
        // The evaluator takes the last ####; two final answers are never well formatted.
        #expect(scored("#### 41\n#### 42") == (0.9, true, false))
        #expect(scored("#### 42\n#### 41") == (0, false, false))
        #expect(scored("#### 42 and \\boxed{42}").2 == false)
    }

    @Test func commasAndNegativeNumbers() {
        #expect(scored("#### 1,234", "#### 1234") == (1.0, true, true))
        #expect(scored("#### 1234", "#### 1,234") == (1.0, true, true))
        #expect(scored("#### 12,34", "#### 1234").2 == false, "commas only between groups of three")
        #expect(scored("#### -5", "#### -5") == (1.0, true, true))
        #expect(scored("#### 5", "#### -5") == (0.1, false, true))
        #expect(scored("#### -3.5", "#### -3.50") == (1.0, true, true))
    }

    @Test func boxedAnswers() {
        #expect(scored("so the answer is $\\boxed{42}$.") == (1.0, true, true))
        #expect(scored("\\boxed{-7}", "#### -7") == (1.0, true, true))
        #expect(scored("\\boxed{x + 1}").2 == false)
        #expect(scored("\\boxed{42").2 == false, "an unclosed box")
    }

    @Test func trailingText() {
        // Accurate (the evaluator reads the number after ####) but not in form.
        #expect(scored("#### 42 apples") == (0.9, true, false))
        #expect(scored("#### 42\nLet me check again: 6 * 7 = 42.") == (0.9, true, false))
        #expect(scored("\\boxed{42} because 6 * 7 = 42").2 == false)
    }

    @Test func weightsParseAndBadSpecsAreNamed() throws {
        #expect(try RewardSpec(parsing: "accuracy:0.9,format:0.1") == .standard)
        #expect(try RewardSpec(parsing: "accuracy").terms == [RewardTerm(.accuracy, 1)])
        let onlyFormat = try RewardSpec(parsing: "format:2")
        #expect(onlyFormat.score(completion: "#### 1", gold: "#### 42").total == 2)
        for bad in ["", "speed:1", "accuracy:x", "accuracy:-1", "accuracy:0", "accuracy:1,accuracy:2", "accuracy:inf", "accuracy:1:2"] {
            #expect(throws: DataError.self, "\(bad)") { try RewardSpec(parsing: bad) }
        }
    }
}
