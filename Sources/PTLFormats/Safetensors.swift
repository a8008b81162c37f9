import Foundation

/// Reading and writing the safetensors format: an 8-byte little-endian header length, a JSON
/// header of `name: {dtype, shape, data_offsets}` (plus `__metadata__`), then raw data.
public enum Safetensors {
    /// Parses and checks the header of the file at `path` without reading tensor data.
    public static func readHeader(path: String) throws -> SafetensorsHeader {
        let data = try mapped(path)
        return try parseHeader(data, path: path)
    }

    /// Reads every tensor of one .safetensors file, decoded to fp32.
    public static func read(path: String) throws -> [String: TensorF32] {
        let data = try mapped(path)
        let header = try parseHeader(data, path: path)
        var out: [String: TensorF32] = [:]
        out.reserveCapacity(header.entries.count)
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            let base = raw.baseAddress! + header.dataStart
            for e in header.entries {
                out[e.name] = decode(base + e.dataOffsets.lowerBound, e)
            }
        }
        return out
    }

    /// Reads a model directory: `model.safetensors`, or the shards listed in
    /// `model.safetensors.index.json`, checking each listed tensor is in its shard exactly once.
    public static func readModel(directory: String) throws -> [String: TensorF32] {
        let dir = URL(fileURLWithPath: directory)
        let index = dir.appendingPathComponent("model.safetensors.index.json")
        let single = dir.appendingPathComponent("model.safetensors")
        let fm = FileManager.default
        if fm.fileExists(atPath: index.path) {
            guard let data = fm.contents(atPath: index.path),
                  let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let weightMap = json["weight_map"] as? [String: String] else {
                throw SafetensorsError(.inconsistentIndex, "\(index.path): not a valid index (needs a \"weight_map\" object of tensor → file)")
            }
            var byShard: [String: [String]] = [:]
            for (tensor, file) in weightMap {
                guard !file.isEmpty, !file.contains("/"), file != ".", file != ".." else {
                    throw SafetensorsError(.inconsistentIndex, "\(index.path): tensor \(tensor) names shard \"\(file)\", expected a file name inside the model directory")
                }
                byShard[file, default: []].append(tensor)
            }
            var out: [String: TensorF32] = [:]
            for file in byShard.keys.sorted() {
                let path = dir.appendingPathComponent(file).path
                guard fm.fileExists(atPath: path) else {
                    throw SafetensorsError(.inconsistentIndex, "\(index.path): shard \(file) is listed but missing")
                }
                let tensors = try read(path: path)
                for name in (byShard[file] ?? []).sorted() {
                    guard let t = tensors[name] else {
                        throw SafetensorsError(.inconsistentIndex, "\(path): tensor \(name) is listed in the index but not in this shard")
                    }
                    out[name] = t
                }
                for name in tensors.keys where weightMap[name] != file {
                    if weightMap[name] == nil {
                        throw SafetensorsError(.inconsistentIndex, "\(path): tensor \(name) is not listed in \(index.lastPathComponent)")
                    }
                    throw SafetensorsError(.inconsistentIndex, "\(path): tensor \(name) also appears in shard \(weightMap[name] ?? "")")
                }
            }
            return out
        }
        if fm.fileExists(atPath: single.path) { return try read(path: single.path) }
        throw SafetensorsError(.unreadableFile, "\(directory): no model.safetensors or model.safetensors.index.json")
    }

    /// Writes tensors in the given order as F32 or BF16 (round-to-nearest-even like torch),
    /// header padded with spaces to a multiple of 8, `__metadata__` {"format": "pt", …}.
    /// Written to a temporary file beside `path`, then renamed.
    public static func write(_ tensors: [(name: String, tensor: TensorF32)], to path: String,
                             dtype: SafetensorsDType = .f32, metadata: [String: String] = [:]) throws {
        let file = try encode(tensors, dtype: dtype, metadata: metadata, path: path)
        let url = URL(fileURLWithPath: path)
        let temp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        do {
            try file.write(to: temp)
            if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
            try FileManager.default.moveItem(at: temp, to: url)
        } catch {
            try? FileManager.default.removeItem(at: temp)
            throw SafetensorsError(.unreadableFile, "\(path): cannot write (\(error.localizedDescription))")
        }
    }

    /// The 8-byte length and the header (padded with spaces to a multiple of 8) of a file holding
    /// `entries` in order, each `count` elements of `dtype`; checks names are unique and shapes hold
    /// their counts. Returns the bytes before the data and the data's length.
    static func prefix(_ entries: [(name: String, shape: [Int], count: Int)], dtype: SafetensorsDType, metadata: [String: String],
                       path: String) throws -> (bytes: Data, dataLength: Int) {
        var meta = metadata
        meta["format"] = meta["format"] ?? "pt"
        var header = "{\"__metadata__\":{" + meta.keys.sorted().map { "\(jsonString($0)):\(jsonString(meta[$0]!))" }.joined(separator: ",") + "}"
        var offset = 0
        var seen = Set<String>()
        for (name, shape, count) in entries {
            guard seen.insert(name).inserted else { throw SafetensorsError(.invalidTensor, "\(path): tensor \(name) given twice") }
            guard checkedElementCount(shape) == count else {
                throw SafetensorsError(.invalidTensor, "\(path): tensor \(name): shape \(shape) does not hold its \(count) values")
            }
            let bytes = count * dtype.size
            header += ",\(jsonString(name)):{\"dtype\":\"\(dtype.rawValue)\",\"shape\":[\(shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}"
            offset += bytes
        }
        header += "}"
        var headerBytes = Array(header.utf8)
        while headerBytes.count % 8 != 0 { headerBytes.append(0x20) }
        var out = Data(capacity: 8 + headerBytes.count)
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: headerBytes)
        return (out, offset)
    }

    /// Writes F32 tensors straight from memory the caller owns, header first and then each
    /// tensor's bytes, without copying them into one buffer (a model's parameters or an
    /// optimizer's moments: a copy of 10⁸ floats is what a checkpoint must not cost). Written to a
    /// temporary file beside `path`, then renamed; the bytes equal `write`'s.
    public static func writeF32(_ tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)], to path: String,
                                metadata: [String: String] = [:]) throws {
        let (prefix, _) = try prefix(tensors.map { ($0.name, $0.shape, $0.values.count) }, dtype: .f32, metadata: metadata, path: path)
        let url = URL(fileURLWithPath: path)
        let temp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())")
        do {
            guard FileManager.default.createFile(atPath: temp.path, contents: nil) else {
                throw SafetensorsError(.unreadableFile, "\(path): cannot create \(temp.path)")
            }
            let handle = try FileHandle(forWritingTo: temp)
            defer { try? handle.close() }
            try handle.write(contentsOf: prefix)
            let chunk = 1 << 24   // floats per write: 64 MB
            for (_, _, values) in tensors {
                var at = 0
                while at < values.count {
                    let n = min(chunk, values.count - at)
                    let raw = UnsafeRawPointer(values.baseAddress! + at)
                    try handle.write(contentsOf: Data(bytesNoCopy: UnsafeMutableRawPointer(mutating: raw), count: 4 * n, deallocator: .none))
                    at += n
                }
            }
            try handle.close()
            if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
            try FileManager.default.moveItem(at: temp, to: url)
        } catch let e as SafetensorsError {
            try? FileManager.default.removeItem(at: temp)
            throw e
        } catch {
            try? FileManager.default.removeItem(at: temp)
            throw SafetensorsError(.unreadableFile, "\(path): cannot write (\(error.localizedDescription))")
        }
    }

    /// A file of BOOL tensors (torch.bool: one byte, 0 or 1), built from the flags without a
    /// Float copy (masks of a 135M-parameter model are 10⁸ flags).
    public static func encodeBool(_ tensors: [(name: String, shape: [Int], values: [Bool])], metadata: [String: String] = [:],
                                  path: String = "safetensors") throws -> Data {
        let (prefix, length) = try prefix(tensors.map { ($0.name, $0.shape, $0.values.count) }, dtype: .bool, metadata: metadata, path: path)
        var file = Data(capacity: prefix.count + length)
        file.append(prefix)
        for (_, _, values) in tensors {
            values.withUnsafeBufferPointer { v in
                // Swift's Bool is one byte, 0 or 1: the layout torch.bool has.
                v.withMemoryRebound(to: UInt8.self) { file.append($0) }
            }
        }
        return file
    }

    /// The bytes `write` puts in a file: F32, BF16, or BOOL (a value is true when it is not 0).
    public static func encode(_ tensors: [(name: String, tensor: TensorF32)], dtype: SafetensorsDType = .f32,
                              metadata: [String: String] = [:], path: String = "safetensors") throws -> Data {
        guard dtype == .f32 || dtype == .bf16 || dtype == .bool else {
            throw SafetensorsError(.unsupportedDType, "\(path): writing \(dtype.rawValue) is not supported (F32, BF16 or BOOL)")
        }
        let (prefix, length) = try prefix(tensors.map { ($0.name, $0.tensor.shape, $0.tensor.values.count) }, dtype: dtype,
                                          metadata: metadata, path: path)
        var file = [UInt8](repeating: 0, count: prefix.count + length)
        file.withUnsafeMutableBytes { raw in
            let base = raw.baseAddress!
            prefix.withUnsafeBytes { base.copyMemory(from: $0.baseAddress!, byteCount: prefix.count) }
            var p = base + prefix.count
            for (_, t) in tensors {
                t.values.withUnsafeBufferPointer { src in
                    if dtype == .f32 {
                        if t.count > 0 { p.copyMemory(from: src.baseAddress!, byteCount: t.count * 4) }
                    } else if dtype == .bool {
                        let dst = p.bindMemory(to: UInt8.self, capacity: t.count)
                        for i in 0..<t.count { dst[i] = src[i] != 0 ? 1 : 0 }
                    } else {
                        let dst = p.bindMemory(to: UInt16.self, capacity: t.count)
                        for i in 0..<t.count { dst[i] = bfloat16Bits(src[i]) }
                    }
                }
                p += t.count * dtype.size
            }
        }
        return Data(file)
    }

    // MARK: - Decoding

    static func mapped(_ path: String) throws -> Data {
        guard FileManager.default.fileExists(atPath: path) else { throw SafetensorsError(.unreadableFile, "\(path): no such file") }
        do {
            return try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
        } catch {
            throw SafetensorsError(.unreadableFile, "\(path): cannot read (\(error.localizedDescription))")
        }
    }

    /// Header lengths above this are refused before the JSON is parsed (the library's own limit).
    static let maxHeaderLength = 100_000_000

    static func parseHeader(_ data: Data, path: String) throws -> SafetensorsHeader {
        guard data.count >= 8 else {
            throw SafetensorsError(.truncated, "\(path): truncated (\(data.count) bytes; a safetensors file starts with an 8-byte header length)")
        }
        let n = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n <= UInt64(data.count - 8) else {
            throw SafetensorsError(.truncated, "\(path): header length \(n) is larger than the file (\(data.count) bytes): truncated or not a safetensors file")
        }
        guard n <= UInt64(maxHeaderLength) else {
            throw SafetensorsError(.malformedHeader, "\(path): header length \(n) is implausibly large (limit \(maxHeaderLength))")
        }
        let dataStart = 8 + Int(n)
        let headerData = data.subdata(in: 8..<dataStart)
        guard let object = try? JSONSerialization.jsonObject(with: headerData), let dict = object as? [String: Any] else {
            throw SafetensorsError(.malformedHeader, "\(path): the header is not a JSON object")
        }
        let dataSize = data.count - dataStart
        var entries: [SafetensorsEntry] = []
        var metadata: [String: String] = [:]
        for (name, value) in dict {
            if name == "__metadata__" {
                guard let m = value as? [String: Any] else {
                    throw SafetensorsError(.malformedHeader, "\(path): __metadata__ is not an object")
                }
                for (k, v) in m {
                    guard let s = v as? String else {
                        throw SafetensorsError(.malformedHeader, "\(path): __metadata__ value for \(k) is not a string")
                    }
                    metadata[k] = s
                }
                continue
            }
            func invalid(_ what: String) -> SafetensorsError { SafetensorsError(.invalidTensor, "\(path): tensor \(name): \(what)") }
            guard let info = value as? [String: Any] else {
                throw SafetensorsError(.malformedHeader, "\(path): tensor \(name): header entry is not an object")
            }
            guard let dtypeName = info["dtype"] as? String else {
                throw SafetensorsError(.malformedHeader, "\(path): tensor \(name): missing dtype")
            }
            guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
                throw SafetensorsError(.unsupportedDType, "\(path): tensor \(name): unsupported dtype \(dtypeName) (supported: \(SafetensorsDType.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            guard let shapeAny = info["shape"] as? [Any], let shape = integers(shapeAny), shape.allSatisfy({ $0 >= 0 }) else {
                throw invalid("shape must be a list of non-negative integers, found \(info["shape"].map { "\($0)" } ?? "none")")
            }
            guard let count = checkedElementCount(shape) else {
                throw invalid("shape \(shape) has more elements than can be addressed")
            }
            guard let offAny = info["data_offsets"] as? [Any], let offs = integers(offAny), offs.count == 2, offs[0] >= 0, offs[0] <= offs[1] else {
                throw invalid("data_offsets must be [begin, end] with 0 ≤ begin ≤ end, found \(info["data_offsets"].map { "\($0)" } ?? "none")")
            }
            let (expected, overflow) = count.multipliedReportingOverflow(by: dtype.size)
            guard !overflow, offs[1] - offs[0] == expected else {
                throw invalid("\(offs[1] - offs[0]) bytes for \(dtype.rawValue) \(shape), expected \(overflow ? "more than can be addressed" : "\(expected)")")
            }
            guard offs[1] <= dataSize else {
                throw SafetensorsError(.truncated, "\(path): tensor \(name): data ends at byte \(offs[1]) but the file has \(dataSize) data bytes: truncated")
            }
            entries.append(SafetensorsEntry(name: name, dtype: dtype, shape: shape, dataOffsets: offs[0]..<offs[1]))
        }
        entries.sort { $0.dataOffsets.lowerBound != $1.dataOffsets.lowerBound ? $0.dataOffsets.lowerBound < $1.dataOffsets.lowerBound : $0.name < $1.name }
        for i in entries.indices.dropFirst() where entries[i].dataOffsets.lowerBound < entries[i - 1].dataOffsets.upperBound {
            throw SafetensorsError(.invalidTensor, "\(path): tensors \(entries[i - 1].name) and \(entries[i].name) overlap (bytes \(entries[i - 1].dataOffsets) and \(entries[i].dataOffsets))")
        }
        return SafetensorsHeader(entries: entries, metadata: metadata, dataStart: dataStart)
    }

    static func integers(_ xs: [Any]) -> [Int]? {
        var out: [Int] = []
        for x in xs {
            guard let n = x as? NSNumber, n.doubleValue == n.doubleValue.rounded(),
                  n.doubleValue >= -9e15, n.doubleValue <= 9e15 else { return nil }
            out.append(n.intValue)
        }
        return out
    }

    static func decode(_ src: UnsafeRawPointer, _ e: SafetensorsEntry) -> TensorF32 {
        let n = e.shape.reduce(1, *)
        let values = [Float](unsafeUninitializedCapacity: n) { dst, count in
            let d = dst.baseAddress!
            switch e.dtype {
            case .f32:
                if n > 0 { UnsafeMutableRawPointer(d).copyMemory(from: src, byteCount: n * 4) }
            case .bf16:
                for i in 0..<n {
                    let bits = UInt32(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16
                    d[i] = Float(bitPattern: bits)
                }
            case .f16:
                for i in 0..<n { d[i] = halfToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
            case .f64:
                for i in 0..<n { d[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
            case .i64:
                for i in 0..<n { d[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
            case .i32:
                for i in 0..<n { d[i] = Float(src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self)) }
            case .bool:
                // torch writes 0 or 1; any other byte reads as 2 so a checking caller sees it.
                for i in 0..<n { let b = src.load(fromByteOffset: i, as: UInt8.self); d[i] = b == 0 ? 0 : b == 1 ? 1 : 2 }
            }
            count = n
        }
        return TensorF32(shape: e.shape, values: values)
    }

    static func jsonString(_ s: String) -> String {
        let data = try! JSONSerialization.data(withJSONObject: [s], options: [.withoutEscapingSlashes])
        let text = String(decoding: data, as: UTF8.self)
        return String(text.dropFirst().dropLast())
    }
}

