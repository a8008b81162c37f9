import Foundation
import Testing
import PTLTensor
@testable import PTLFormats

// Crafted safetensors and GGUF files: the fixtures with one field patched in memory so the
// header lies (counts, lengths, offsets, shapes, types). Each must give one thrown error of
// the expected kind whose message names the problem; truncations and byte flips must never
// crash, only throw. Run under AddressSanitizer by scripts/test-asan.sh.

let fixtureRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

/// The error `body` throws, or nil.
func caught(_ body: () throws -> Void) -> (any Error)? {
    do { try body(); return nil } catch { return error }
}

func writeFile(_ bytes: [UInt8], _ name: String, in dir: URL) -> String {
    let path = dir.appendingPathComponent(name).path
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return path
}

/// A seeded generator, so a byte flip that fails can be replayed.

extension Array where Element == UInt8 {
    mutating func put<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        Swift.withUnsafeBytes(of: value.littleEndian) { replaceSubrange(offset..<(offset + $0.count), with: $0) }
    }
    func get<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var v = T.zero
        Swift.withUnsafeMutableBytes(of: &v) { $0.copyBytes(from: self[offset..<(offset + MemoryLayout<T>.size)]) }
        return T(littleEndian: v)
    }
}

// MARK: - safetensors

/// dtypes.safetensors split into its header (as a JSON object) and data section.
func safetensorsFixture() throws -> (header: [String: Any], data: [UInt8]) {
    let bytes = [UInt8](try Data(contentsOf: fixtureRoot.appendingPathComponent("safetensors/dtypes.safetensors")))
    let n = Int(bytes.get(UInt64.self, at: 0))
    let header = try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + n)])) as! [String: Any]
    return (header, Array(bytes[(8 + n)...]))
}

/// A safetensors file from a header object and data bytes.
func safetensorsBytes(_ header: [String: Any], _ data: [UInt8]) throws -> [UInt8] {
    let h = [UInt8](try JSONSerialization.data(withJSONObject: header))
    var out = [UInt8](repeating: 0, count: 8)
    out.put(UInt64(h.count), at: 0)
    return out + h + data
}

/// The fixture with tensor `name`'s entry changed by `patch`, read back; the error it gives.
func safetensorsError(_ name: String, in dir: URL, _ patch: (inout [String: Any]) -> Void) throws -> SafetensorsError? {
    var (header, data) = try safetensorsFixture()
    var entry = header[name] as! [String: Any]
    patch(&entry)
    header[name] = entry
    let path = writeFile(try safetensorsBytes(header, data), "patched.safetensors", in: dir)
    return caught { _ = try Safetensors.read(path: path) } as? SafetensorsError
}

@Suite struct HostileSafetensorsTests {
    @Test func theUnpatchedFixtureReads() throws {
        let (header, data) = try safetensorsFixture()
        let path = writeFile(try safetensorsBytes(header, data), "same.safetensors", in: temporaryDirectory())
        #expect(try Safetensors.read(path: path).count == header.count - 1)
    }

    @Test func headerLengthAndShapeLies() throws {
        let dir = temporaryDirectory()
        var bytes = [UInt8](try Data(contentsOf: fixtureRoot.appendingPathComponent("safetensors/dtypes.safetensors")))
        bytes.put(UInt64.max, at: 0)
        var e = caught { _ = try Safetensors.read(path: writeFile(bytes, "long.safetensors", in: dir)) } as? SafetensorsError
        #expect(e?.kind == .truncated && e?.message.contains("long.safetensors: header length 18446744073709551615 is larger than the file") == true)

        bytes.put(UInt64(0), at: 0)
        e = caught { _ = try Safetensors.read(path: writeFile(bytes, "zero.safetensors", in: dir)) } as? SafetensorsError
        #expect(e?.kind == .malformedHeader && e?.message.contains("the header is not a JSON object") == true)

        let array = [UInt8]("[1,2]".utf8)
        var list = [UInt8](repeating: 0, count: 8)
        list.put(UInt64(array.count), at: 0)
        e = caught { _ = try Safetensors.read(path: writeFile(list + array, "array.safetensors", in: dir)) } as? SafetensorsError
        #expect(e?.kind == .malformedHeader)
    }

    @Test func everyLieInATensorEntryIsNamed() throws {
        let dir = temporaryDirectory()
        var e = try safetensorsError("f32", in: dir) { $0["dtype"] = "F8_E4M3" }
        #expect(e?.kind == .unsupportedDType && e?.message.contains("tensor f32: unsupported dtype F8_E4M3") == true)

        e = try safetensorsError("f32", in: dir) { $0["dtype"] = 7 }
        #expect(e?.kind == .malformedHeader && e?.message.contains("tensor f32: missing dtype") == true)

        e = try safetensorsError("f32", in: dir) { $0["shape"] = [-3, -5] }
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor f32: shape must be a list of non-negative integers") == true)

        e = try safetensorsError("f32", in: dir) { $0["shape"] = [2.5, 6] }
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor f32: shape") == true)

        // 2^32 · 2^32 wraps to 0 in unchecked arithmetic: it must not be taken for an empty tensor.
        e = try safetensorsError("f32", in: dir) { $0["shape"] = [1 << 32, 1 << 32]; $0["data_offsets"] = [80, 80] }
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor f32: shape [4294967296, 4294967296] has more elements than can be addressed") == true)

        // 2^62 elements fit an Int; 2^62 · 4 bytes do not.
        e = try safetensorsError("f32", in: dir) { $0["shape"] = [1 << 31, 1 << 31] }
        #expect(e?.kind == .invalidTensor && e?.message.contains("expected more than can be addressed") == true)

        e = try safetensorsError("f32", in: dir) { $0["data_offsets"] = [140, 80] }
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor f32: data_offsets must be [begin, end] with 0 ≤ begin ≤ end") == true)

        e = try safetensorsError("f32", in: dir) { $0["data_offsets"] = [-60, 0] }
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor f32: data_offsets") == true)

        e = try safetensorsError("f32", in: dir) { $0["data_offsets"] = [80] }
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor f32: data_offsets") == true)

        e = try safetensorsError("f32", in: dir) { $0["data_offsets"] = [80, 144] }
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor f32: 64 bytes for F32 [3, 5], expected 60") == true)

        e = try safetensorsError("f32", in: dir) { $0["data_offsets"] = [1 << 40, (1 << 40) + 60] }
        #expect(e?.kind == .truncated && e?.message.contains("tensor f32: data ends at byte 1099511627836 but the file has") == true)

        e = try safetensorsError("f32", in: dir) { $0["data_offsets"] = [40, 100] }
        #expect(e?.kind == .invalidTensor && e?.message.contains("overlap") == true)

        e = try safetensorsError("f32", in: dir) { $0 = ["dtype": "F32"] }
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor f32: shape") == true)
    }

    @Test func theWriterRefusesAShapeThatDoesNotHoldItsValues() throws {
        var t = TensorF32(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        t.shape = [4, 4]
        let path = temporaryDirectory().appendingPathComponent("w.safetensors").path
        let e = caught { try Safetensors.write([("w", t)], to: path) } as? SafetensorsError
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor w: shape [4, 4] does not hold its 6 values") == true)
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test func aShardIndexCannotNameAFileOutsideTheDirectory() throws {
        let dir = temporaryDirectory()
        let src = fixtureRoot.appendingPathComponent("safetensors/sharded")
        for f in try FileManager.default.contentsOfDirectory(atPath: src.path) {
            try FileManager.default.copyItem(at: src.appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        let index = dir.appendingPathComponent("model.safetensors.index.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: index)) as! [String: Any]
        var map = json["weight_map"] as! [String: String]
        map["a.weight"] = "../../etc/passwd"
        json["weight_map"] = map
        try JSONSerialization.data(withJSONObject: json).write(to: index)
        let e = caught { _ = try Safetensors.readModel(directory: dir.path) } as? SafetensorsError
        #expect(e?.kind == .inconsistentIndex && e?.message.contains("tensor a.weight names shard \"../../etc/passwd\"") == true)
    }

    @Test func everyTruncationThrows() throws {
        let bytes = [UInt8](try Data(contentsOf: fixtureRoot.appendingPathComponent("safetensors/dtypes.safetensors")))
        let dir = temporaryDirectory()
        for n in 0..<bytes.count {
            let path = writeFile(Array(bytes.prefix(n)), "cut.safetensors", in: dir)
            let e = caught { _ = try Safetensors.read(path: path) }
            #expect(e is SafetensorsError, "length \(n): \(String(describing: e))")
        }
    }

    @Test func byteFlipsInTheHeaderThrowOrRead() throws {
        let bytes = [UInt8](try Data(contentsOf: fixtureRoot.appendingPathComponent("safetensors/dtypes.safetensors")))
        let headerEnd = 8 + Int(bytes.get(UInt64.self, at: 0))
        let dir = temporaryDirectory()
        var rng = SplitMix64(seed: 11)
        for _ in 0..<300 {
            var b = bytes
            for _ in 0..<3 { b[Int.random(in: 0..<headerEnd, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            let path = writeFile(b, "flip.safetensors", in: dir)
            let e = caught { _ = try Safetensors.read(path: path) }
            #expect(e == nil || e is SafetensorsError)
        }
    }
}
