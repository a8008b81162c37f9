import Foundation

/// A metadata value of a GGUF file.
public indirect enum GGUFValue: Sendable, Equatable {
    case uint(UInt64), int(Int64), float(Double), bool(Bool), string(String), array([GGUFValue])

    public var int: Int? {
        switch self {
        case .uint(let v): return Int(exactly: v)
        case .int(let v): return Int(exactly: v)
        case .float(let d): return Int(exactly: d)
        default: return nil
        }
    }
    public var double: Double? {
        switch self {
        case .uint(let v): return Double(v)
        case .int(let v): return Double(v)
        case .float(let d): return d
        default: return nil
        }
    }
    public var string: String? { if case .string(let s) = self { return s }; return nil }
    public var bool: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var array: [GGUFValue]? { if case .array(let a) = self { return a }; return nil }
}

/// A problem with a GGUF file, naming the file (and key or tensor), what was expected and what
/// was found.
public struct GGUFError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The kind of failure, for callers and tests that branch on it.
    public enum Kind: Sendable, Equatable {
        /// The file is missing or cannot be read.
        case unreadableFile
        /// The output file cannot be created, written in full (a full disk, a size limit) or renamed into place.
        case unwritableFile
        /// Not a GGUF file (magic), or a version this reader does not support.
        case notGGUF
        /// The file ends before the header, a value or a tensor's data does.
        case truncated
        /// A count, length, type id or nesting in the header is implausible or inconsistent.
        case malformedHeader
        /// A tensor's dimensions, type, offset or alignment are invalid.
        case invalidTensor
        /// A tensor type this reader does not dequantise.
        case unsupportedType
    }

    public let kind: Kind
    public let message: String
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
    public var description: String { message }
}

/// ggml tensor types we can read (and, see `GGMLQuantizer.writable`, write).
public enum GGMLType: UInt32, Sendable, CaseIterable {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q8_0 = 8, q4_K = 12, q5_K = 13, q6_K = 14, bf16 = 30

    /// (elements, bytes) per block.
    public var block: (elements: Int, bytes: Int) {
        switch self {
        case .f32: return (1, 4)
        case .f16, .bf16: return (1, 2)
        case .q4_0: return (32, 18)
        case .q4_1: return (32, 20)
        case .q5_0: return (32, 22)
        case .q8_0: return (32, 34)
        case .q4_K: return (256, 144)
        case .q5_K: return (256, 176)
        case .q6_K: return (256, 210)
        }
    }

    static let names: [UInt32: String] = [0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
                                          10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
                                          17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
                                          23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16"]
    public static func name(_ raw: UInt32) -> String { names[raw] ?? "type \(raw)" }
    public var name: String { GGMLType.name(rawValue) }
}

/// One tensor of a GGUF file.
public struct GGUFTensorInfo: Sendable {
    public let name: String
    /// ggml order: dims[0] varies fastest (the reverse of the PyTorch shape).
    public let dims: [Int]
    public let typeRaw: UInt32
    /// Offset from the start of the data section.
    public let offset: Int
    public var elementCount: Int { dims.reduce(1, *) }
    /// The PyTorch/HF shape.
    public var shape: [Int] { dims.reversed() }
}
