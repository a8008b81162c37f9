/// GPT-2's reversible map between bytes and printable characters, which byte-level BPE
/// vocabularies are written in (`Ġ` is the space byte, `Ċ` the newline byte).
///
/// The tokenizer works on raw bytes throughout; this map is only used to translate the
/// vocabulary once at load time and to decode tokens back to bytes.
enum ByteLevel {
    /// The character for each byte value.
    static let byteToScalar: [Unicode.Scalar] = {
        var map = [Unicode.Scalar](repeating: " ", count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            let printable = (33...126).contains(byte) || (161...172).contains(byte) || (174...255).contains(byte)
            if printable {
                map[byte] = Unicode.Scalar(UInt32(byte))!
            } else {
                map[byte] = Unicode.Scalar(next)!
                next += 1
            }
        }
        return map
    }()

    /// The byte for each character of the map (indexed by scalar value < 324), or -1.
    static let scalarToByte: [Int16] = {
        var inverse = [Int16](repeating: -1, count: 324)
        for (byte, scalar) in byteToScalar.enumerated() { inverse[Int(scalar.value)] = Int16(byte) }
        return inverse
    }()

    /// The raw bytes a vocabulary token stands for, or `nil` when a character is outside the
    /// map (such a token can never come out of byte-level BPE).
    static func bytes(ofToken token: String) -> [UInt8]? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(token.unicodeScalars.count)
        for scalar in token.unicodeScalars {
            let value = Int(scalar.value)
            guard value < scalarToByte.count, scalarToByte[value] >= 0 else { return nil }
            bytes.append(UInt8(scalarToByte[value]))
        }
        return bytes
    }

    /// The vocabulary spelling of raw bytes (`" a"` → `"Ġa"`).
    static func token(ofBytes bytes: some Sequence<UInt8>) -> String {
        var token = String.UnicodeScalarView()
        for byte in bytes { token.append(byteToScalar[Int(byte)]) }
        return String(token)
    }
}
