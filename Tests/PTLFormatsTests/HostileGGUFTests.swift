import Foundation
import Testing
import PTLTensor
@testable import PTLFormats

// Crafted safetensors and GGUF files: the fixtures with one field patched in memory so the
// header lies (counts, lengths, offsets, shapes, types). Each must give one thrown error of
// the expected kind whose message names the problem; truncations and byte flips must never
// crash, only throw. Run under AddressSanitizer by scripts/test-asan.sh.


// MARK: - GGUF

/// Where the fields of a GGUF header are, found by walking it (test side, independent of the reader).
struct GGUFLayout {
    struct Key { var name: String; var typeAt: Int; var valueAt: Int }
    struct Tensor { var name: String; var nDimsAt: Int; var dimsAt: Int; var typeAt: Int; var offsetAt: Int }
    var keys: [Key] = []
    var tensors: [Tensor] = []
    var end = 0

    init(_ b: [UInt8]) {
        var p = 24
        func skip(_ type: UInt32) {
            switch type {
            case 0, 1, 7: p += 1
            case 2, 3: p += 2
            case 4, 5, 6: p += 4
            case 10, 11, 12: p += 8
            case 8: p += 8 + Int(b.get(UInt64.self, at: p))
            case 9:
                let item = b.get(UInt32.self, at: p), count = Int(b.get(UInt64.self, at: p + 4))
                p += 12
                for _ in 0..<count { skip(item) }
            default: fatalError("unknown GGUF type \(type) in a fixture")
            }
        }
        func string() -> String {
            let n = Int(b.get(UInt64.self, at: p))
            defer { p += 8 + n }
            return String(decoding: b[(p + 8)..<(p + 8 + n)], as: UTF8.self)
        }
        for _ in 0..<b.get(UInt64.self, at: 16) {
            let name = string()
            let typeAt = p
            p += 4
            keys.append(Key(name: name, typeAt: typeAt, valueAt: p))
            skip(b.get(UInt32.self, at: typeAt))
        }
        for _ in 0..<b.get(UInt64.self, at: 8) {
            let name = string()
            let nDimsAt = p
            let n = Int(b.get(UInt32.self, at: p))
            p += 4 + 8 * n
            tensors.append(Tensor(name: name, nDimsAt: nDimsAt, dimsAt: nDimsAt + 4, typeAt: p, offsetAt: p + 4))
            p += 12
        }
        end = p
    }

    func key(_ name: String) -> Key { keys.first { $0.name == name }! }
    func tensor(_ name: String) -> Tensor { tensors.first { $0.name == name }! }
}

func ggufFixture(_ name: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: fixtureRoot.appendingPathComponent("gguf/\(name)")))
}

/// Writes patched GGUF bytes and opens them; the error it gives.
func ggufError(_ bytes: [UInt8], in dir: URL, name: String = "patched.gguf") -> GGUFError? {
    let path = writeFile(bytes, name, in: dir)
    return caught { _ = try GGUFFile(path: path) } as? GGUFError
}

@Suite struct HostileGGUFTests {
    @Test func theTestWalkerAgreesWithTheReader() throws {
        let bytes = try ggufFixture("types.gguf")
        let layout = GGUFLayout(bytes)
        let file = try GGUFFile(path: fixtureRoot.appendingPathComponent("gguf/types.gguf").path)
        #expect(layout.tensors.map(\.name) == file.tensors.map(\.name))
        #expect(layout.keys.map(\.name) == ["general.architecture"])
    }

    @Test func magicVersionAndCounts() throws {
        let dir = temporaryDirectory()
        let good = try ggufFixture("types.gguf")
        var b = good
        b.put(UInt32(0x4655_4748), at: 0)
        var e = ggufError(b, in: dir)
        #expect(e?.kind == .notGGUF && e?.message.contains("patched.gguf: not a GGUF file (magic 46554748, expected 46554747") == true)

        b = good
        b.put(UInt32(4), at: 4)
        e = ggufError(b, in: dir)
        #expect(e?.kind == .notGGUF && e?.message.contains("GGUF version 4 is not supported") == true)

        b = good
        b.put(UInt64(1) << 40, at: 8)
        e = ggufError(b, in: dir)
        #expect(e?.kind == .malformedHeader && e?.message.contains("implausible counts (1099511627776 tensors") == true)

        // Within the limits, but more tensors than the file has bytes for.
        b = good
        b.put(UInt64(900_000), at: 8)
        e = ggufError(b, in: dir)
        #expect(e?.kind == .truncated && e?.message.contains("truncated header: 1 keys and 900000 tensors need at least") == true)

        b = good
        b.put(UInt64(999_999), at: 16)
        e = ggufError(b, in: dir)
        #expect(e?.kind == .truncated && e?.message.contains("truncated header: 999999 keys") == true)
    }

    @Test func stringAndArrayLengthsAreCheckedAgainstTheBytesLeft() throws {
        let dir = temporaryDirectory()
        let good = try ggufFixture("tiny-llama.gguf")
        let layout = GGUFLayout(good)
        var b = good
        b.put(UInt64(1) << 60, at: 24)   // the first key's length
        var e = ggufError(b, in: dir)
        #expect(e?.kind == .truncated && e?.message.contains("string at offset 24 declares 1152921504606846976 bytes") == true)

        // 2^40 tokens would have reserved terabytes before reading one.
        let tokens = layout.key("tokenizer.ggml.tokens")
        b = good
        b.put(UInt64(1) << 40, at: tokens.valueAt + 4)
        e = ggufError(b, in: dir)
        #expect(e?.kind == .truncated && e?.message.contains("metadata tokenizer.ggml.tokens: array at offset \(tokens.valueAt + 4) declares 1099511627776 items") == true)

        b = good
        b.put(UInt32(99), at: tokens.valueAt)
        e = ggufError(b, in: dir)
        #expect(e?.kind == .malformedHeader && e?.message.contains("tokenizer.ggml.tokens: array of unknown value type 99") == true)

        b = good
        b.put(UInt32(99), at: layout.key("llama.block_count").typeAt)
        e = ggufError(b, in: dir)
        #expect(e?.kind == .malformedHeader && e?.message.contains("metadata llama.block_count has unknown value type 99") == true)

        // A string inside the tokens array that runs past the end of the file.
        b = good
        b.put(UInt64(b.count), at: tokens.valueAt + 12)
        e = ggufError(b, in: dir)
        #expect(e?.kind == .truncated && e?.message.contains("declares \(good.count) bytes") == true)
    }

    @Test func tensorInfoLies() throws {
        let dir = temporaryDirectory()
        let good = try ggufFixture("types.gguf")
        let layout = GGUFLayout(good)
        let q8 = layout.tensor("q8_0"), f16 = layout.tensor("f16")
        var b = good
        b.put(UInt32(5), at: q8.nDimsAt)
        var e = ggufError(b, in: dir)
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor q8_0 has 5 dimensions, expected 1 to 4") == true)

        b = good
        b.put(UInt32(0), at: q8.nDimsAt)
        e = ggufError(b, in: dir)
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor q8_0 has 0 dimensions") == true)

        b = good
        b.put(UInt64(1) << 39, at: q8.dimsAt)
        b.put(UInt64(1) << 39, at: q8.dimsAt + 8)
        e = ggufError(b, in: dir)
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor q8_0 has dimensions [549755813888, 549755813888] whose product overflows") == true)

        b = good
        b.put(UInt64(1) << 50, at: q8.dimsAt)
        e = ggufError(b, in: dir)
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor q8_0 has an implausible dimension") == true)

        b = good
        b.put(UInt64(1) << 63, at: q8.offsetAt)   // traps converting to Int if not checked
        e = ggufError(b, in: dir)
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor q8_0 has offset 9223372036854775808, past the end of the file") == true)

        b = good
        b.put(b.get(UInt64.self, at: q8.offsetAt) + 4, at: q8.offsetAt)
        e = ggufError(b, in: dir)
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor q8_0 has offset 8196, expected a multiple of the alignment 32") == true)

        b = good
        b.put(b.get(UInt64.self, at: f16.offsetAt), at: q8.offsetAt)
        e = ggufError(b, in: dir)
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensors f16 and q8_0 overlap") == true)

        b = good
        b.put(UInt64(12_800), at: q8.offsetAt)   // aligned, inside the file, but the data runs past its end
        e = ggufError(b, in: dir)
        #expect(e?.kind == .truncated && e?.message.contains("tensor q8_0 ends past the end of the file (Q8_0 [512, 2], 1088 bytes at data offset 12800") == true)

        b = good
        b.put(UInt64(100), at: q8.dimsAt)         // not a multiple of the 32-element block
        e = ggufError(b, in: dir)
        #expect(e?.kind == .invalidTensor && e?.message.contains("tensor q8_0: row length 100 is not a multiple of the Q8_0 block (32)") == true)

        // An unknown type id opens (the index is readable) but reading the tensor throws.
        b = good
        b.put(UInt32(77), at: q8.typeAt)
        let path = writeFile(b, "type.gguf", in: dir)
        let file = try GGUFFile(path: path)
        let info = try #require(file.tensors.first { $0.name == "q8_0" })
        e = caught { _ = try file.tensor(info) } as? GGUFError
        #expect(e?.kind == .unsupportedType && e?.message.contains("tensor q8_0 has unsupported type type 77") == true)
    }

    @Test func alignmentMustBeAPowerOfTwo() throws {
        let good = try ggufFixture("types.gguf")
        let layout = GGUFLayout(good)
        // Splice a general.alignment key (u32 = 48) after the existing one.
        var key: [UInt8] = []
        let name = Array("general.alignment".utf8)
        key += [UInt8](repeating: 0, count: 8); key.put(UInt64(name.count), at: 0)
        key += name
        key += [4, 0, 0, 0, 48, 0, 0, 0]
        var b = good
        b.insert(contentsOf: key, at: layout.tensors[0].nDimsAt - 8 - layout.tensors[0].name.utf8.count)
        b.put(UInt64(2), at: 16)
        let e = ggufError(b, in: temporaryDirectory())
        #expect(e?.kind == .malformedHeader && e?.message.contains("general.alignment is uint(48), expected a power of two") == true)
    }

    @Test func everyTruncationOfTheHeaderThrows() throws {
        let bytes = try ggufFixture("types.gguf")
        let layout = GGUFLayout(bytes)
        let dir = temporaryDirectory()
        let lengths = Array(0...layout.end) + Array(stride(from: layout.end + 1, to: bytes.count, by: 61))
        for n in lengths {
            let path = writeFile(Array(bytes.prefix(n)), "cut.gguf", in: dir)
            let e = caught { _ = try GGUFFile(path: path) }
            #expect(e is GGUFError, "length \(n): \(String(describing: e))")
        }
    }

    @Test func byteFlipsInTheHeaderThrowOrDequantiseInBounds() throws {
        let bytes = try ggufFixture("types.gguf")
        let end = GGUFLayout(bytes).end
        let dir = temporaryDirectory()
        var rng = SplitMix64(seed: 11)
        for _ in 0..<300 {
            var b = bytes
            for _ in 0..<2 { b[Int.random(in: 8..<end, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
            let path = writeFile(b, "flip.gguf", in: dir)
            do {
                let file = try GGUFFile(path: path)
                for info in file.tensors { _ = try? file.tensor(info) }
            } catch {
                #expect(error is GGUFError)
            }
        }
    }
}
