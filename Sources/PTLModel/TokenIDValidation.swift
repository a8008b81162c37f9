/// A token id that would index outside a model's embedding or output rows, found at the
/// boundary where ids come in (a corpus, a task from the coordinator, a prompt).
public struct TokenIDError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Sendable, Equatable {
        /// A negative id where every id must be a token.
        case negative
        /// An id at or above the vocabulary size.
        case outOfVocabulary
    }

    public let kind: Kind
    /// Where the ids came from (a file, a task, …), as the caller named it.
    public let source: String
    /// Position of the first bad id in the collection.
    public let position: Int
    public let id: Int
    public let vocabularySize: Int

    public var description: String {
        "\(source): token id \(id) at position \(position) is outside the vocabulary (expected 0 to \(vocabularySize - 1))"
    }
}

/// Checks that every id indexes the vocabulary, before any kernel sees them.
///
/// The embedding and cross-entropy kernels check ids with `precondition`, which release builds
/// may compile out; callers that take ids from outside the process validate them here and get a
/// thrown error naming the source, position and id instead.
///
/// - Parameters:
///   - negativeMeansIgnored: for targets, where a negative id marks a position not scored.
/// - Throws: `TokenIDError` for the first id out of range.
public func validateTokenIDs<C: Collection>(_ ids: C, vocabularySize: Int, source: String,
                                            negativeMeansIgnored: Bool = false) throws where C.Element: BinaryInteger {
    for (position, id) in ids.enumerated() {
        if id < 0 {
            if negativeMeansIgnored { continue }
            throw TokenIDError(kind: .negative, source: source, position: position, id: Int(clamping: id),
                               vocabularySize: vocabularySize)
        }
        if id >= vocabularySize {
            throw TokenIDError(kind: .outOfVocabulary, source: source, position: position, id: Int(clamping: id),
                               vocabularySize: vocabularySize)
        }
    }
}
