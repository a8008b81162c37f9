import Foundation

/// A problem with a data file, naming the file and line.
public struct DataError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// One corpus line: a question with its worked answer, or a plain text.
public enum CorpusRecord: Sendable, Equatable {
    case qa(question: String, answer: String)
    case text(String)
}

/// Field names to read from each JSONL object.
public struct CorpusFields: Sendable {
    public var question = "question"
    public var answer = "answer"
    public var text = "text"
    public init(question: String = "question", answer: String = "answer", text: String = "text") {
        self.question = question; self.answer = answer; self.text = text
    }
}

/// A JSONL corpus: one `{"question", "answer"}` (or `{"text"}`) object a line.
public struct Corpus: Sendable {
    public let path: String
    public let records: [CorpusRecord]

    public init(path: String, records: [CorpusRecord]) {
        self.path = path
        self.records = records
    }

    /// Reads a JSONL file; a malformed, truncated or incomplete line is an error naming the file
    /// and line number. Blank lines are skipped.
    public static func load(path: String, fields: CorpusFields = CorpusFields(), limit: Int? = nil) throws -> Corpus {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DataError("\(path): cannot read the file")
        }
        return try parse(data, source: path, fields: fields, limit: limit)
    }

    /// Parses JSONL bytes; `source` names them in errors.
    public static func parse(_ data: Data, source path: String, fields: CorpusFields = CorpusFields(), limit: Int? = nil) throws -> Corpus {
        var records: [CorpusRecord] = []
        var lineNumber = 0
        for raw in data.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
            lineNumber += 1
            if let limit, records.count >= limit { break }
            var line = raw
            if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
            if line.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { continue }
            let object: Any
            do {
                object = try JSONSerialization.jsonObject(with: Data(line))
            } catch {
                let preview = String(decoding: line.prefix(60), as: UTF8.self)
                throw DataError("\(path):\(lineNumber): not a complete JSON object (truncated or malformed line starting \"\(preview)\")")
            }
            guard let dict = object as? [String: Any] else {
                throw DataError("\(path):\(lineNumber): expected a JSON object")
            }
            if let q = dict[fields.question] {
                guard let question = q as? String else {
                    throw DataError("\(path):\(lineNumber): field \"\(fields.question)\" must be a string")
                }
                guard let answer = dict[fields.answer] as? String else {
                    throw DataError("\(path):\(lineNumber): missing string field \"\(fields.answer)\"")
                }
                records.append(.qa(question: question, answer: answer))
            } else if let t = dict[fields.text] {
                guard let text = t as? String else {
                    throw DataError("\(path):\(lineNumber): field \"\(fields.text)\" must be a string")
                }
                records.append(.text(text))
            } else {
                throw DataError("\(path):\(lineNumber): needs \"\(fields.question)\" and \"\(fields.answer)\", or \"\(fields.text)\" (found: \(dict.keys.sorted().joined(separator: ", ")))")
            }
        }
        if records.isEmpty { throw DataError("\(path): no records") }
        return Corpus(path: path, records: records)
    }
}

/// A prompt template with `{question}` and `{answer}` placeholders.
public struct PromptTemplate: Sendable, Equatable {
    public static let standard = PromptTemplate(unchecked: "Question: {question}\nAnswer: {answer}")
    public let template: String

    /// Checks that the template holds both placeholders, `{question}` before `{answer}`.
    public init(_ template: String) throws {
        guard let q = template.range(of: "{question}"), let a = template.range(of: "{answer}"), q.upperBound <= a.lowerBound else {
            throw DataError("template \"\(template)\" must contain {question} followed by {answer}")
        }
        self.template = template
    }

    init(unchecked template: String) { self.template = template }

    /// The full training text of a record (a text record is used as is).
    public func render(_ record: CorpusRecord) -> String {
        switch record {
        case .text(let t): return t
        case .qa(let q, let a):
            return template.replacingOccurrences(of: "{question}", with: q).replacingOccurrences(of: "{answer}", with: a)
        }
    }

    /// The text before the answer: what a model is prompted with at evaluation.
    public func prompt(question: String) -> String {
        let head = template.components(separatedBy: "{answer}")[0]
        return head.replacingOccurrences(of: "{question}", with: question)
    }
}
