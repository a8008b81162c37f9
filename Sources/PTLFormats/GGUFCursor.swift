import Foundation

/// A bounds-checked reader over the GGUF header: every length and count is checked against the
/// bytes that remain before anything is allocated for it.
struct GGUFCursor {
    let data: Data
    let path: String
    var position = 0
    /// Arrays of arrays deeper than this are refused (real files nest at most once).
    static let maxNesting = 4

    var remaining: Int { data.count - position }

    mutating func bytes(_ n: Int) throws -> UnsafeRawBufferPointer {
        guard n >= 0, n <= remaining else {
            throw GGUFError(.truncated, "\(path): truncated header (needed \(n) bytes at offset \(position) of \(data.count))")
        }
        defer { position += n }
        return data.withUnsafeBytes { UnsafeRawBufferPointer(rebasing: $0[position..<(position + n)]) }
    }
    mutating func u32() throws -> UInt32 { UInt32(littleEndian: try bytes(4).loadUnaligned(as: UInt32.self)) }
    mutating func u64() throws -> UInt64 { UInt64(littleEndian: try bytes(8).loadUnaligned(as: UInt64.self)) }
    mutating func string() throws -> String {
        let at = position
        let n = try u64()
        guard n <= UInt64(remaining) else {
            throw GGUFError(.truncated, "\(path): string at offset \(at) declares \(n) bytes but \(remaining) remain")
        }
        return String(decoding: try bytes(Int(n)), as: UTF8.self)
    }

    /// Smallest encoding of a value of `type` (strings: the length; arrays: type and count).
    static func minimumSize(_ type: UInt32) -> Int? {
        switch type {
        case 0, 1, 7: return 1
        case 2, 3: return 2
        case 4, 5, 6: return 4
        case 8, 10, 11, 12: return 8
        case 9: return 12
        default: return nil
        }
    }

    mutating func value(type: UInt32, key: String, depth: Int) throws -> GGUFValue {
        switch type {
        case 0: return .uint(UInt64(try bytes(1).load(as: UInt8.self)))
        case 1: return .int(Int64(try bytes(1).load(as: Int8.self)))
        case 2: return .uint(UInt64(try bytes(2).loadUnaligned(as: UInt16.self)))
        case 3: return .int(Int64(try bytes(2).loadUnaligned(as: Int16.self)))
        case 4: return .uint(UInt64(try u32()))
        case 5: return .int(Int64(Int32(bitPattern: try u32())))
        case 6: return .float(Double(Float(bitPattern: try u32())))
        case 7: return .bool(try bytes(1).load(as: UInt8.self) != 0)
        case 8: return .string(try string())
        case 9:
            guard depth < Self.maxNesting else {
                throw GGUFError(.malformedHeader, "\(path): metadata \(key): arrays nested deeper than \(Self.maxNesting)")
            }
            let itemType = try u32()
            guard let itemSize = Self.minimumSize(itemType) else {
                throw GGUFError(.malformedHeader, "\(path): metadata \(key): array of unknown value type \(itemType)")
            }
            let at = position
            let count = try u64()
            guard count <= UInt64(remaining / itemSize) else {
                throw GGUFError(.truncated, "\(path): metadata \(key): array at offset \(at) declares \(count) items of at least \(itemSize) bytes but \(remaining) bytes remain")
            }
            var items: [GGUFValue] = []
            items.reserveCapacity(Int(count))
            for _ in 0..<count { items.append(try value(type: itemType, key: key, depth: depth + 1)) }
            return .array(items)
        case 10: return .uint(try u64())
        case 11: return .int(Int64(bitPattern: try u64()))
        case 12: return .float(Double(bitPattern: try u64()))
        default: throw GGUFError(.malformedHeader, "\(path): metadata \(key) has unknown value type \(type)")
        }
    }
}
