import CPTLKernels
import PTLTensor

/// The update from one model version to the next, exact to the bit: the XOR of the old and new
/// fp32 words, each stored in the 1–4 little-endian bytes that hold it, with a 2-bit length tag a
/// word. An optimizer step moves only the low mantissa bits of most weights, so an update is
/// about half a full copy; a worker XORs it onto the version it holds and checks the result
/// against the new version's content hash. Words are coded in blocks of `block` so both ends
/// split the work over their threads; three frames: `delta_tags` (U8, a byte per 4 words),
/// `delta_offsets` (I64, where each block's payload starts, and the total), `delta_payload` (U8).
public enum ModelDelta {
    public static let block = 1 << 16

    /// The frames of the update `old` → `new` (raw fp32 bytes of equal length).
    public static func encode(old: [UInt8], new: [UInt8]) -> [WireTensor] {
        precondition(old.count == new.count && old.count % 4 == 0)
        let n = old.count / 4
        guard n > 0 else {
            return [WireTensor(name: "delta_tags", dtype: .u8, shape: [0], bytes: []),
                    WireTensor(name: "delta_offsets", dtype: .i64, shape: [1], bytes: [UInt8](repeating: 0, count: 8)),
                    WireTensor(name: "delta_payload", dtype: .u8, shape: [0], bytes: [])]
        }
        let blocks = (n + block - 1) / block
        var tags = [UInt8](repeating: 0, count: (n + 3) / 4)
        var sizes = [Int](repeating: 0, count: blocks)
        var offsets = [Int64](repeating: 0, count: blocks + 1)
        var payload: [UInt8] = []
        old.withUnsafeBytes { a in
            new.withUnsafeBytes { b in
                tags.withUnsafeMutableBufferPointer { t in
                    let tp = UncheckedSendable(t.baseAddress!)
                    sizes.withUnsafeMutableBufferPointer { s in
                        let sp = UncheckedSendable(s.baseAddress!)
                        parallelChunks(blocks) { lo, hi in
                            for k in lo..<hi {
                                sp.value[k] = ptl_delta_tags(tp.value, a.baseAddress, b.baseAddress, k * block, min(n, (k + 1) * block))
                            }
                        }
                    }
                }
                for k in 0..<blocks { offsets[k + 1] = offsets[k] + Int64(sizes[k]) }
                let total = Int(offsets[blocks])
                payload = [UInt8](unsafeUninitializedCapacity: total) { out, count in
                    let op = UncheckedSendable(out.baseAddress)
                    tags.withUnsafeBufferPointer { t in
                        offsets.withUnsafeBufferPointer { o in
                            parallelChunks(blocks) { lo, hi in
                                for k in lo..<hi {
                                    ptl_delta_pack(op.value! + Int(o[k]), Int(o[k + 1] - o[k]), t.baseAddress,
                                                   a.baseAddress, b.baseAddress, k * block, min(n, (k + 1) * block))
                                }
                            }
                        }
                    }
                    count = total
                }
            }
        }
        return [WireTensor(name: "delta_tags", dtype: .u8, shape: [tags.count], bytes: tags),
                WireTensor(name: "delta_offsets", dtype: .i64, shape: [offsets.count], bytes: offsets.withUnsafeBytes { Array($0) }),
                WireTensor(name: "delta_payload", dtype: .u8, shape: [payload.count], bytes: payload)]
    }

    /// Applies the update `tensors` to `weights` in place. Throws, naming what is wrong, when the
    /// frames do not fit weights of this size (nothing is promised about `weights` then).
    public static func apply(_ tensors: [WireTensor], to weights: inout [Float]) throws {
        func frame(_ name: String, _ dtype: Ptl_V1_DType) throws -> WireTensor {
            guard let t = tensors.first(where: { $0.name == name }), t.dtype == dtype else {
                throw WireError(kind: .descriptorMismatch, message: "model update: no \(name) frame of \(dtype)")
            }
            return t
        }
        let tags = try frame("delta_tags", .u8), offsetFrame = try frame("delta_offsets", .i64), payload = try frame("delta_payload", .u8)
        let n = weights.count
        let blocks = (n + block - 1) / block
        let offsets = offsetFrame.values(Int64.self).map { Int($0) }
        guard tags.byteCount == (n + 3) / 4, offsets.count == blocks + 1, offsets.first == 0, offsets.last == payload.byteCount,
              zip(offsets, offsets.dropFirst()).allSatisfy({ $0 <= $1 }) else {
            throw WireError(kind: .descriptorMismatch, message: "model update: frames (\(tags.byteCount) tag bytes, \(offsets.count) offsets, \(payload.byteCount) payload bytes) do not fit \(n) weights")
        }
        guard n > 0 else { return }
        var used = [Int](repeating: 0, count: blocks)
        weights.withUnsafeMutableBytes { w in
            let wp = UncheckedSendable(w.baseAddress!)
            used.withUnsafeMutableBufferPointer { u in
                let up = UncheckedSendable(u.baseAddress!)
                tags.withBytes { t in
                    payload.withBytes { p in
                        parallelChunks(blocks) { lo, hi in
                            for k in lo..<hi {
                                up.value[k] = ptl_delta_apply(wp.value, t.baseAddress?.assumingMemoryBound(to: UInt8.self), p.baseAddress.map { $0.assumingMemoryBound(to: UInt8.self) + offsets[k] },
                                                              offsets[k + 1] - offsets[k], k * block, min(n, (k + 1) * block))
                            }
                        }
                    }
                }
            }
        }
        if let k = (0..<blocks).first(where: { used[$0] != offsets[$0 + 1] - offsets[$0] }) {
            throw WireError(kind: .descriptorMismatch, message: "model update: block \(k)'s payload does not match its tags")
        }
    }
}
