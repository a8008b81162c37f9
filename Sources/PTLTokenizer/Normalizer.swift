import Foundation

/// The `normalizer` of `tokenizer.json`: `null`, a Unicode normal form, or a `Sequence` of them.
struct Normalizer: Sendable {
    enum Form: Sendable { case nfc, nfd, nfkc, nfkd }

    /// Applied in order; empty for `null`.
    let forms: [Form]

    init(json: Any?) throws(TokenizerError) {
        var forms: [Form] = []
        try Self.collect(json, into: &forms)
        self.forms = forms
    }

    var isIdentity: Bool { forms.isEmpty }

    private static func collect(_ json: Any?, into forms: inout [Form]) throws(TokenizerError) {
        guard let json, !(json is NSNull) else { return }
        guard let object = json as? [String: Any], let type = object["type"] as? String else {
            throw .invalid("normalizer has no type")
        }
        switch type {
        case "NFC": forms.append(.nfc)
        case "NFD": forms.append(.nfd)
        case "NFKC": forms.append(.nfkc)
        case "NFKD": forms.append(.nfkd)
        case "Sequence":
            guard let list = object["normalizers"] as? [Any] else { throw .invalid("normalizer Sequence has no list") }
            for item in list { try collect(item, into: &forms) }
        default:
            throw .unsupported("normalizer type \"\(type)\"")
        }
    }

    /// Whether the bytes are certainly unchanged: ASCII is invariant under every form, and
    /// text below U+0300 (lead bytes below 0xCC) is already NFC.
    func leavesUnchanged(_ p: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> Bool {
        if forms.isEmpty { return true }
        let limit: UInt8 = forms.allSatisfy { $0 == .nfc } ? 0xCC : 0x80
        for i in start..<end where p[i] >= limit { return false }
        return true
    }

    func normalize(_ text: String) -> String {
        var text = text
        for form in forms {
            switch form {
            case .nfc: text = text.precomposedStringWithCanonicalMapping
            case .nfd: text = text.decomposedStringWithCanonicalMapping
            case .nfkc: text = text.precomposedStringWithCompatibilityMapping
            case .nfkd: text = text.decomposedStringWithCompatibilityMapping
            }
        }
        return text
    }
}
