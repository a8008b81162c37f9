/// Why a `tokenizer.json` could not be loaded; `description` says what to fix.
public struct TokenizerError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The kind of failure, for callers that branch on it.
    public enum Kind: Sendable, Equatable {
        /// The file could not be read.
        case unreadableFile
        /// The contents are not JSON, or not a JSON object.
        case malformedJSON
        /// A component (model, pre-tokenizer, normalizer, …) or option this library does not implement.
        case unsupported
        /// A value is missing or inconsistent (a merge outside the vocabulary, …).
        case invalid
    }

    public let kind: Kind
    /// A message naming the file or component at fault.
    public let message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { message }

    static func unsupported(_ what: String) -> TokenizerError {
        TokenizerError(.unsupported, "unsupported \(what)")
    }

    static func invalid(_ what: String) -> TokenizerError {
        TokenizerError(.invalid, "invalid tokenizer.json: \(what)")
    }

    /// The same error with the file it came from in front.
    func inFile(_ path: String) -> TokenizerError {
        TokenizerError(kind, "\(path): \(message)")
    }
}
