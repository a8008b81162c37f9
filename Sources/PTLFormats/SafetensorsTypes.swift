import Foundation

/// A tensor decoded to fp32, row-major.
public struct TensorF32: Sendable, Equatable {
    public var shape: [Int]
    public var values: [Float]
    public init(shape: [Int], values: [Float]) {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not hold \(values.count) values")
        self.shape = shape
        self.values = values
    }
    public var count: Int { values.count }
}

/// Element types of safetensors files.
public enum SafetensorsDType: String, Sendable, CaseIterable {
    case f32 = "F32", f16 = "F16", bf16 = "BF16", f64 = "F64", i64 = "I64", i32 = "I32", bool = "BOOL"
    /// Bytes per element.
    public var size: Int {
        switch self {
        case .bool: return 1
        case .f32, .i32: return 4
        case .f16, .bf16: return 2
        case .f64, .i64: return 8
        }
    }
}

/// A problem with a safetensors file, naming the file (and tensor), what was expected and
/// what was found.
public struct SafetensorsError: Error, CustomStringConvertible, Equatable, Sendable {
    /// The kind of failure, for callers and tests that branch on it.
    public enum Kind: Sendable, Equatable {
        /// The file is missing or cannot be read or written.
        case unreadableFile
        /// The file ends before the header or a tensor's data does.
        case truncated
        /// The header length or the header JSON is not what the format prescribes.
        case malformedHeader
        /// A dtype this reader does not decode.
        case unsupportedDType
        /// A tensor's shape or data_offsets are invalid, inconsistent or overlap another tensor.
        case invalidTensor
        /// A sharded model's index disagrees with its shards.
        case inconsistentIndex
    }

    public let kind: Kind
    public let message: String
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
    public var description: String { message }
}

/// The number of elements of `shape`, or nil when a dimension is negative or the product
/// overflows (a hostile header must not trap or wrap around).
public func checkedElementCount(_ shape: [Int]) -> Int? {
    var n = 1
    for d in shape {
        guard d >= 0 else { return nil }
        let (p, overflow) = n.multipliedReportingOverflow(by: d)
        guard !overflow else { return nil }
        n = p
    }
    return n
}

/// One tensor's entry in a safetensors header.
public struct SafetensorsEntry: Sendable, Equatable {
    public let name: String
    public let dtype: SafetensorsDType
    public let shape: [Int]
    /// Byte range within the data section (after the header).
    public let dataOffsets: Range<Int>
}

/// The parsed header of a safetensors file.
public struct SafetensorsHeader: Sendable {
    /// Entries in data order.
    public let entries: [SafetensorsEntry]
    public let metadata: [String: String]
    /// Byte offset of the data section in the file (8 + header length).
    public let dataStart: Int
}


/// IEEE half → float, including subnormals, infinities and NaN.
@inline(__always)
public func halfToFloat(_ h: UInt16) -> Float {
    let sign = UInt32(h & 0x8000) << 16
    let exp = Int((h >> 10) & 0x1F)
    let mant = UInt32(h & 0x3FF)
    if exp == 0 {
        if mant == 0 { return Float(bitPattern: sign) }
        let v = Float(mant) * Float(sign: .plus, exponent: -24, significand: 1)
        return sign != 0 ? -v : v
    }
    if exp == 31 { return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13)) }
    return Float(bitPattern: sign | UInt32(exp - 15 + 127) << 23 | (mant << 13))
}

/// float → bfloat16 bits, rounding to nearest even (torch's conversion); NaN stays NaN.
@inline(__always)
public func bfloat16Bits(_ f: Float) -> UInt16 {
    let bits = f.bitPattern
    if f.isNaN { return UInt16(bits >> 16) | 0x0040 }
    let rounding = 0x7FFF + ((bits >> 16) & 1)
    return UInt16((bits &+ rounding) >> 16)
}
