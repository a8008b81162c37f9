import Foundation
import Testing
@testable import PTLFormats

let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("Fixtures/safetensors")

func temporaryDirectory() -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-st-\(UUID().uuidString)")
    try! FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// The description of the error `body` throws, or nil when it does not throw.
func thrownMessage(_ body: () throws -> Void) -> String? {
    do { try body(); return nil } catch { return "\(error)" }
}

/// Writes a safetensors file from a raw header string and data bytes.
func rawFile(_ header: String, data: [UInt8], in dir: URL, name: String = "raw.safetensors", lengthOverride: UInt64? = nil) -> String {
    var bytes: [UInt8] = []
    let h = Array(header.utf8)
    withUnsafeBytes(of: (lengthOverride ?? UInt64(h.count)).littleEndian) { bytes += $0 }
    bytes += h + data
    let path = dir.appendingPathComponent(name).path
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
    return path
}

@Suite struct SafetensorsTests {
    @Test func readsEveryDTypeWrittenByTheSafetensorsLibrary() throws {
        let tensors = try Safetensors.read(path: fixtures.appendingPathComponent("dtypes.safetensors").path)
        let expected = try JSONSerialization.jsonObject(with: Data(contentsOf: fixtures.appendingPathComponent("expected.json"))) as! [String: [String: Any]]
        #expect(Set(tensors.keys) == Set(expected.keys))
        for (name, e) in expected {
            let t = try #require(tensors[name])
            #expect(t.shape == (e["shape"] as! [Int]), "\(name) shape")
            let values: [Float] = (e["values"] as! [Any]).map { v in
                if let s = v as? String { return s == "inf" ? .infinity : -.infinity }
                return Float((v as! NSNumber).doubleValue)
            }
            #expect(t.values == values, "\(name) values")
        }
        let header = try Safetensors.readHeader(path: fixtures.appendingPathComponent("dtypes.safetensors").path)
        #expect(header.metadata["note"] == "fixture")
    }

    @Test func readsAShardedModelDirectory() throws {
        let tensors = try Safetensors.readModel(directory: fixtures.appendingPathComponent("sharded").path)
        #expect(tensors.keys.sorted() == ["a.weight", "b.bias", "c.weight"])
        #expect(tensors["a.weight"] == TensorF32(shape: [2, 3], values: [0, 1, 2, 3, 4, 5]))
        #expect(tensors["c.weight"]?.values == [0.25, 0.25, 0.25, 0.25])
    }

    @Test func roundTripsF32AndBF16() throws {
        let dir = temporaryDirectory()
        let values: [Float] = [0, -0.0, 1, -2.5, 3.14159, 1e-30, 3.0e38, .infinity, -.infinity, 1.00390625, 1.01171875]
        let t = TensorF32(shape: [values.count], values: values)
        let m = TensorF32(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let f32 = dir.appendingPathComponent("a.safetensors").path
        try Safetensors.write([("x", t), ("m", m)], to: f32)
        let back = try Safetensors.read(path: f32)
        #expect(back["x"] == t && back["m"] == m)
        // The streaming writer (checkpoints, models) writes the same bytes from memory it does not copy.
        let streamed = dir.appendingPathComponent("s.safetensors").path
        try t.values.withUnsafeBufferPointer { x in
            try m.values.withUnsafeBufferPointer { mm in try Safetensors.writeF32([("x", [values.count], x), ("m", [2, 3], mm)], to: streamed) }
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: streamed)) == Data(contentsOf: URL(fileURLWithPath: f32)))
        // BOOL masks: 0/1 bytes, read back as 0/1.
        let masks = dir.appendingPathComponent("masks.safetensors")
        try Safetensors.encodeBool([("mask", [2, 2], [true, false, false, true])]).write(to: masks)
        #expect(try Safetensors.read(path: masks.path)["mask"] == TensorF32(shape: [2, 2], values: [1, 0, 0, 1]))
        let bf = dir.appendingPathComponent("b.safetensors").path
        try Safetensors.write([("x", t)], to: bf, dtype: .bf16)
        let b = try Safetensors.read(path: bf)["x"]!.values
        // 1.00390625 = 1 + 2⁻⁸ is a tie between 1 and 1 + 2⁻⁷: rounds to even (1);
        // 1.01171875 = 1 + 3·2⁻⁸ is a tie between 1 + 2⁻⁷ and 1 + 2⁻⁶: rounds to even (1 + 2⁻⁶).
        #expect(Array(b[0..<5]) == [0, -0.0, 1, -2.5, 3.140625])
        #expect(b[7] == .infinity && b[8] == -.infinity)
        #expect(b[9] == 1 && b[10] == 1.015625)
        #expect(bfloat16Bits(.nan) & 0x7FC0 == 0x7FC0)
        let header = try Safetensors.readHeader(path: bf)
        #expect(header.dataStart % 8 == 0)
        #expect(header.metadata["format"] == "pt")
    }

    @Test func decodesHalfSpecialValues() {
        #expect(halfToFloat(0x3C00) == 1)
        #expect(halfToFloat(0xC000) == -2)
        #expect(halfToFloat(0x7BFF) == 65504)
        #expect(halfToFloat(0x0001) == Float(5.9604645e-8))
        #expect(halfToFloat(0x03FF) == Float(6.0975552e-5))
        #expect(halfToFloat(0x7C00) == .infinity && halfToFloat(0xFC00) == -.infinity)
        #expect(halfToFloat(0x7E00).isNaN)
        #expect(halfToFloat(0x8000).sign == .minus)
    }

    @Test func rejectsBrokenFilesWithTheirName() throws {
        let dir = temporaryDirectory()
        let good = #"{"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let tiny = dir.appendingPathComponent("tiny.safetensors").path
        FileManager.default.createFile(atPath: tiny, contents: Data([1, 2, 3]))
        #expect(thrownMessage { _ = try Safetensors.read(path: tiny) }?.contains("tiny.safetensors: truncated") == true)
        let truncated = rawFile(good, data: [0, 0, 0, 0], in: dir, name: "truncated.safetensors")
        #expect(thrownMessage { _ = try Safetensors.read(path: truncated) }?.contains("truncated.safetensors: tensor t: data ends at byte 8") == true)
        let long = rawFile(good, data: [], in: dir, name: "long.safetensors", lengthOverride: 1 << 20)
        #expect(thrownMessage { _ = try Safetensors.read(path: long) }?.contains("long.safetensors: header length 1048576 is larger than the file") == true)
        let notJSON = rawFile("{nope", data: [], in: dir, name: "bad.safetensors")
        #expect(thrownMessage { _ = try Safetensors.read(path: notJSON) }?.contains("bad.safetensors: the header is not a JSON object") == true)
        let wrongSize = rawFile(#"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: Array(repeating: 0, count: 8), in: dir, name: "size.safetensors")
        #expect(thrownMessage { _ = try Safetensors.read(path: wrongSize) }?.contains("tensor w: 8 bytes for F32 [3], expected 12") == true)
        let overlap = rawFile(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                              data: Array(repeating: 0, count: 12), in: dir, name: "overlap.safetensors")
        #expect(thrownMessage { _ = try Safetensors.read(path: overlap) }?.contains("tensors a and b overlap") == true)
        let dtype = rawFile(#"{"q":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}}"#, data: [0], in: dir, name: "dtype.safetensors")
        #expect(thrownMessage { _ = try Safetensors.read(path: dtype) }?.contains("tensor q: unsupported dtype I8") == true)
        #expect(thrownMessage { _ = try Safetensors.read(path: dir.appendingPathComponent("missing.safetensors").path) }?.contains("missing.safetensors: no such file") == true)
    }

    @Test func rejectsInconsistentShardIndexes() throws {
        let dir = temporaryDirectory()
        let src = fixtures.appendingPathComponent("sharded")
        for f in try FileManager.default.contentsOfDirectory(atPath: src.path) {
            try FileManager.default.copyItem(at: src.appendingPathComponent(f), to: dir.appendingPathComponent(f))
        }
        let index = dir.appendingPathComponent("model.safetensors.index.json")
        var json = try JSONSerialization.jsonObject(with: Data(contentsOf: index)) as! [String: Any]
        var map = json["weight_map"] as! [String: String]
        map["d.weight"] = "model-00002-of-00002.safetensors"
        json["weight_map"] = map
        try JSONSerialization.data(withJSONObject: json).write(to: index)
        #expect(thrownMessage { _ = try Safetensors.readModel(directory: dir.path) }?.contains("tensor d.weight is listed in the index but not in this shard") == true)
        map["d.weight"] = "model-00003-of-00003.safetensors"
        json["weight_map"] = map
        try JSONSerialization.data(withJSONObject: json).write(to: index)
        #expect(thrownMessage { _ = try Safetensors.readModel(directory: dir.path) }?.contains("shard model-00003-of-00003.safetensors is listed but missing") == true)
        #expect(thrownMessage { _ = try Safetensors.readModel(directory: temporaryDirectory().path) }?.contains("no model.safetensors") == true)
    }
}
