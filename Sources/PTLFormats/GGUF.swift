import Foundation

/// A llama.cpp GGUF file (versions 2 and 3): metadata, tensor index, and fp32 dequantisation of
/// F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q5_K and Q6_K tensors.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    let data: Data
    let dataStart: Int

    /// Limits on the header's counts, far above any real model's (llama.cpp's own checks are
    /// against the bytes present, which are applied as well).
    public static let maxTensors = 1_000_000
    public static let maxKeys = 1_000_000
    public static let maxDimensions = 4
    public static let maxAlignment = 1 << 16

    public init(path: String) throws {
        self.path = path
        guard FileManager.default.fileExists(atPath: path) else { throw GGUFError(.unreadableFile, "\(path): no such file") }
        do { data = try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped) } catch {
            throw GGUFError(.unreadableFile, "\(path): cannot read (\(error.localizedDescription))")
        }
        var r = GGUFCursor(data: data, path: path)
        let magic = try r.u32()
        guard magic == 0x4655_4747 else {
            throw GGUFError(.notGGUF, "\(path): not a GGUF file (magic \(String(magic, radix: 16)), expected 46554747 \"GGUF\")")
        }
        version = try r.u32()
        guard version == 2 || version == 3 else { throw GGUFError(.notGGUF, "\(path): GGUF version \(version) is not supported (2 or 3)") }
        let tensorCount = try r.u64(), kvCount = try r.u64()
        guard tensorCount <= UInt64(Self.maxTensors), kvCount <= UInt64(Self.maxKeys) else {
            throw GGUFError(.malformedHeader, "\(path): implausible counts (\(tensorCount) tensors, \(kvCount) keys; limits \(Self.maxTensors) and \(Self.maxKeys))")
        }
        // Each key takes at least 13 bytes (length, type, one byte of value) and each tensor 32
        // (name length, n_dims, one dimension, type, offset): a count the file cannot hold is a lie.
        let needed = kvCount * 13 + tensorCount * 32
        guard needed <= UInt64(r.remaining) else {
            throw GGUFError(.truncated, "\(path): truncated header: \(kvCount) keys and \(tensorCount) tensors need at least \(needed) bytes but \(r.remaining) follow")
        }
        var metadata: [String: GGUFValue] = [:]
        for _ in 0..<kvCount {
            let key = try r.string()
            let type = try r.u32()
            guard metadata[key] == nil else { throw GGUFError(.malformedHeader, "\(path): metadata key \(key) appears twice") }
            metadata[key] = try r.value(type: type, key: key, depth: 0)
        }
        self.metadata = metadata
        var tensors: [GGUFTensorInfo] = []
        var names = Set<String>()
        for _ in 0..<tensorCount {
            let name = try r.string()
            guard names.insert(name).inserted else { throw GGUFError(.invalidTensor, "\(path): tensor \(name) appears twice") }
            let nDims = try r.u32()
            guard nDims >= 1, nDims <= UInt32(Self.maxDimensions) else {
                throw GGUFError(.invalidTensor, "\(path): tensor \(name) has \(nDims) dimensions, expected 1 to \(Self.maxDimensions)")
            }
            var dims: [Int] = []
            for _ in 0..<nDims {
                let d = try r.u64()
                guard d < 1 << 40 else { throw GGUFError(.invalidTensor, "\(path): tensor \(name) has an implausible dimension \(d)") }
                dims.append(Int(d))
            }
            guard checkedElementCount(dims) != nil else {
                throw GGUFError(.invalidTensor, "\(path): tensor \(name) has dimensions \(dims) whose product overflows")
            }
            let type = try r.u32()
            let offset = try r.u64()
            guard offset < UInt64(data.count) else {
                throw GGUFError(.invalidTensor, "\(path): tensor \(name) has offset \(offset), past the end of the file (\(data.count) bytes)")
            }
            tensors.append(GGUFTensorInfo(name: name, dims: dims, typeRaw: type, offset: Int(offset)))
        }
        self.tensors = tensors
        let alignmentValue = metadata["general.alignment"] ?? .uint(32)
        guard let alignment = alignmentValue.int, alignment > 0, alignment <= Self.maxAlignment, alignment & (alignment - 1) == 0 else {
            throw GGUFError(.malformedHeader, "\(path): general.alignment is \(alignmentValue), expected a power of two up to \(Self.maxAlignment)")
        }
        self.alignment = alignment
        dataStart = (r.position + alignment - 1) / alignment * alignment
        let dataSize = data.count - min(dataStart, data.count)
        var extents: [(range: Range<Int>, name: String)] = []
        for t in tensors {
            guard t.offset % alignment == 0 else {
                throw GGUFError(.invalidTensor, "\(path): tensor \(t.name) has offset \(t.offset), expected a multiple of the alignment \(alignment)")
            }
            guard let type = GGMLType(rawValue: t.typeRaw) else { continue }   // reported when read
            let (be, bb) = type.block
            guard t.dims[0] % be == 0 else {
                throw GGUFError(.invalidTensor, "\(path): tensor \(t.name): row length \(t.dims[0]) is not a multiple of the \(type.name) block (\(be))")
            }
            // elementCount was checked at parse time; the byte count is no larger than it times 4.
            let (bytes, overflow) = (t.elementCount / be).multipliedReportingOverflow(by: bb)
            guard !overflow, bytes <= dataSize, t.offset <= dataSize - bytes else {
                throw GGUFError(.truncated, "\(path): tensor \(t.name) ends past the end of the file (\(type.name) \(t.dims), \(bytes) bytes at data offset \(t.offset), \(dataSize) data bytes): truncated")
            }
            extents.append((t.offset..<(t.offset + bytes), t.name))
        }
        extents.sort { $0.range.lowerBound != $1.range.lowerBound ? $0.range.lowerBound < $1.range.lowerBound : $0.name < $1.name }
        for i in extents.indices.dropFirst() where extents[i].range.lowerBound < extents[i - 1].range.upperBound {
            throw GGUFError(.invalidTensor, "\(path): tensors \(extents[i - 1].name) and \(extents[i].name) overlap (data bytes \(extents[i - 1].range) and \(extents[i].range))")
        }
    }

    /// The tensor named `name`, dequantised to fp32, with its HF shape.
    public func tensor(_ info: GGUFTensorInfo) throws -> TensorF32 {
        guard let type = GGMLType(rawValue: info.typeRaw) else {
            throw GGUFError(.unsupportedType, "\(path): tensor \(info.name) has unsupported type \(GGMLType.name(info.typeRaw)) (supported: \(GGMLType.allCases.map(\.name).joined(separator: ", ")))")
        }
        let n = info.elementCount
        let values = [Float](unsafeUninitializedCapacity: n) { dst, count in
            data.withUnsafeBytes { raw in
                GGUFFile.dequantize(type, raw.baseAddress! + dataStart + info.offset, dst.baseAddress!, n)
            }
            count = n
        }
        return TensorF32(shape: info.shape, values: values)
    }

    /// Dequantises `n` elements of `type` at `src` into `dst` (llama.cpp's dequantize_row_*).
    static func dequantize(_ type: GGMLType, _ src: UnsafeRawPointer, _ dst: UnsafeMutablePointer<Float>, _ n: Int) {
        let (be, bb) = type.block
        let blocks = n / be
        @inline(__always) func f16(_ p: UnsafeRawPointer, _ o: Int) -> Float { halfToFloat(p.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
        @inline(__always) func u8(_ p: UnsafeRawPointer, _ o: Int) -> UInt8 { p.load(fromByteOffset: o, as: UInt8.self) }
        switch type {
        case .f32:
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: n * 4)
            return
        case .f16:
            for i in 0..<n { dst[i] = f16(src, 2 * i) }
            return
        case .bf16:
            for i in 0..<n { dst[i] = Float(bitPattern: UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16) }
            return
        default: break
        }
        do {
            for b in 0..<blocks {
                let x = src + b * bb
                let y = dst + b * be
                switch type {
                case .q4_0:
                    let d = f16(x, 0)
                    for j in 0..<16 {
                        let q = u8(x, 2 + j)
                        y[j] = Float(Int(q & 0xF) - 8) * d
                        y[j + 16] = Float(Int(q >> 4) - 8) * d
                    }
                case .q4_1:
                    let d = f16(x, 0), m = f16(x, 2)
                    for j in 0..<16 {
                        let q = u8(x, 4 + j)
                        y[j] = Float(q & 0xF) * d + m
                        y[j + 16] = Float(q >> 4) * d + m
                    }
                case .q5_0:
                    let d = f16(x, 0)
                    let qh = x.loadUnaligned(fromByteOffset: 2, as: UInt32.self).littleEndian
                    for j in 0..<16 {
                        let q = u8(x, 6 + j)
                        let h0 = Int((qh >> UInt32(j)) & 1) << 4, h1 = Int((qh >> UInt32(j + 16)) & 1) << 4
                        y[j] = Float((Int(q & 0xF) | h0) - 16) * d
                        y[j + 16] = Float((Int(q >> 4) | h1) - 16) * d
                    }
                case .q8_0:
                    let d = f16(x, 0)
                    for j in 0..<32 { y[j] = Float(x.load(fromByteOffset: 2 + j, as: Int8.self)) * d }
                case .q4_K, .q5_K:
                    let d = f16(x, 0), dmin = f16(x, 2)
                    let scales = x + 4
                    let qh = x + 16                       // Q5_K only
                    let qs = x + (type == .q4_K ? 16 : 48)
                    var u1: UInt8 = 1, u2: UInt8 = 2
                    for (chunk, j) in stride(from: 0, to: 256, by: 64).enumerated() {
                        let (sc1, m1) = scaleMinK4(2 * chunk, scales), (sc2, m2) = scaleMinK4(2 * chunk + 1, scales)
                        let d1 = d * Float(sc1), mm1 = dmin * Float(m1), d2 = d * Float(sc2), mm2 = dmin * Float(m2)
                        let q = qs + 32 * chunk
                        for l in 0..<32 {
                            let v = q.load(fromByteOffset: l, as: UInt8.self)
                            var lo = Float(v & 0xF), hi = Float(v >> 4)
                            if type == .q5_K {
                                let h = qh.load(fromByteOffset: l, as: UInt8.self)
                                if h & u1 != 0 { lo += 16 }
                                if h & u2 != 0 { hi += 16 }
                            }
                            y[j + l] = d1 * lo - mm1
                            y[j + 32 + l] = d2 * hi - mm2
                        }
                        u1 <<= 2; u2 <<= 2
                    }
                case .q6_K:
                    let ql = x, qh = x + 128, sc = x + 192
                    let d = f16(x, 208)
                    for half in 0..<2 {
                        let qlh = ql + 64 * half, qhh = qh + 32 * half, sch = sc + 8 * half
                        let yy = y + 128 * half
                        for l in 0..<32 {
                            let isc = l / 16
                            let a = qlh.load(fromByteOffset: l, as: UInt8.self), b = qlh.load(fromByteOffset: l + 32, as: UInt8.self)
                            let h = qhh.load(fromByteOffset: l, as: UInt8.self)
                            let q1 = Int(a & 0xF | ((h >> 0) & 3) << 4) - 32
                            let q2 = Int(b & 0xF | ((h >> 2) & 3) << 4) - 32
                            let q3 = Int(a >> 4 | ((h >> 4) & 3) << 4) - 32
                            let q4 = Int(b >> 4 | ((h >> 6) & 3) << 4) - 32
                            func s(_ k: Int) -> Float { Float(sch.load(fromByteOffset: k, as: Int8.self)) }
                            yy[l] = d * s(isc) * Float(q1)
                            yy[l + 32] = d * s(isc + 2) * Float(q2)
                            yy[l + 64] = d * s(isc + 4) * Float(q3)
                            yy[l + 96] = d * s(isc + 6) * Float(q4)
                        }
                    }
                default: break
                }
            }
        }
    }

    /// llama.cpp's get_scale_min_k4: 6-bit scale and min j of a K-quant super-block.
    @inline(__always)
    static func scaleMinK4(_ j: Int, _ q: UnsafeRawPointer) -> (UInt8, UInt8) {
        func b(_ i: Int) -> UInt8 { q.load(fromByteOffset: i, as: UInt8.self) }
        if j < 4 { return (b(j) & 63, b(j + 4) & 63) }
        return ((b(j + 4) & 0xF) | ((b(j - 4) >> 6) << 4), (b(j + 4) >> 4) | ((b(j) >> 6) << 4))
    }
}
