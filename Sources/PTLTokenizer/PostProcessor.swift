import Foundation

/// The `post_processor` of `tokenizer.json` for a single sequence: the ids put before and
/// after the encoded text when special tokens are added.
///
/// Supported: `TemplateProcessing` (its `single` template), `ByteLevel` (nothing to do for
/// ids), `RobertaProcessing` / `BertProcessing` (`cls $A sep`), and `Sequence` of them.
struct PostProcessor: Sendable {
    let prefix: [Int]
    let suffix: [Int]

    init(json: Any?) throws(TokenizerError) {
        var prefix: [Int] = []
        var suffix: [Int] = []
        try Self.collect(json, prefix: &prefix, suffix: &suffix)
        self.prefix = prefix
        self.suffix = suffix
    }

    /// Each processor wraps the output of the previous one.
    private static func collect(_ json: Any?, prefix: inout [Int], suffix: inout [Int]) throws(TokenizerError) {
        guard let json, !(json is NSNull) else { return }
        guard let object = json as? [String: Any], let type = object["type"] as? String else {
            throw .invalid("post_processor has no type")
        }
        switch type {
        case "ByteLevel":
            return
        case "Sequence":
            guard let list = object["processors"] as? [Any] else { throw .invalid("post_processor Sequence has no processors") }
            for item in list { try collect(item, prefix: &prefix, suffix: &suffix) }
        case "RobertaProcessing", "BertProcessing":
            guard let cls = object["cls"] as? [Any], cls.count == 2, let clsId = tokenId(cls[1]).map(Int.init),
                  let sep = object["sep"] as? [Any], sep.count == 2, let sepId = tokenId(sep[1]).map(Int.init) else {
                throw .invalid("\(type) needs cls and sep as [token, id]")
            }
            prefix = [clsId] + prefix
            suffix += [sepId]
        case "TemplateProcessing":
            guard let single = object["single"] as? [Any] else { throw .invalid("TemplateProcessing has no single template") }
            let specials = object["special_tokens"] as? [String: Any] ?? [:]
            var before: [Int] = []
            var after: [Int] = []
            var sequenceSeen = false
            for piece in single {
                guard let piece = piece as? [String: Any] else { throw .invalid("TemplateProcessing piece is not an object") }
                if let sequence = piece["Sequence"] as? [String: Any] {
                    guard sequence["id"] as? String == "A", !sequenceSeen else {
                        throw .unsupported("TemplateProcessing single template other than one $A")
                    }
                    sequenceSeen = true
                } else if let special = piece["SpecialToken"] as? [String: Any], let name = special["id"] as? String {
                    guard let entry = specials[name] as? [String: Any], let rawIds = entry["ids"] as? [Any] else {
                        throw .invalid("TemplateProcessing special token \"\(name)\" is missing from special_tokens")
                    }
                    var ids: [Int] = []
                    for raw in rawIds {
                        guard let id = tokenId(raw) else {
                            throw .invalid("TemplateProcessing special token \"\(name)\" has id \(raw), expected an integer from 0 to \(Tokenizer.maxTokenId)")
                        }
                        ids.append(Int(id))
                    }
                    if sequenceSeen { after += ids } else { before += ids }
                } else {
                    throw .invalid("TemplateProcessing piece is neither Sequence nor SpecialToken")
                }
            }
            guard sequenceSeen else { throw .unsupported("TemplateProcessing single template without $A") }
            prefix = before + prefix
            suffix += after
        default:
            throw .unsupported("post_processor type \"\(type)\"")
        }
    }
}
