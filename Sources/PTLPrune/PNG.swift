import Foundation

/// A small self-contained PNG encoder: 8-bit RGB, one IDAT holding a zlib stream compressed with
/// fixed-Huffman DEFLATE (RFC 1951 §3.2.6) and a hash-chain LZ77 matcher. No zlib dependency.
public enum PNG {
    /// 8-bit RGB, rows top to bottom, rgb.count == width*height*3.
    public static func encode(rgb: [UInt8], width: Int, height: Int) -> [UInt8] {
        precondition(width > 0 && height > 0 && rgb.count == width * height * 3,
                     "PNG.encode: \(rgb.count) bytes for \(width)x\(height) RGB")
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        var ihdr: [UInt8] = []
        appendBE(&ihdr, UInt32(width))
        appendBE(&ihdr, UInt32(height))
        ihdr += [8, 2, 0, 0, 0]  // bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace
        appendChunk(&out, "IHDR", ihdr)
        appendChunk(&out, "IDAT", zlib(filter(rgb: rgb, width: width, height: height)))
        appendChunk(&out, "IEND", [])
        return out
    }

    // MARK: Chunks and checksums

    static func appendBE(_ out: inout [UInt8], _ v: UInt32) {
        out += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
    }

    /// length, type, data, CRC-32 of type+data.
    static func appendChunk(_ out: inout [UInt8], _ type: String, _ data: [UInt8]) {
        let body = Array(type.utf8) + data
        appendBE(&out, UInt32(data.count))
        out += body
        appendBE(&out, crc32(body))
    }

    /// CRC-32 lookup table, reflected polynomial 0xEDB88320.
    static let crcTable: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    /// The standard CRC-32 (as in PNG, zlib, gzip).
    static func crc32<S: Sequence>(_ bytes: S) -> UInt32 where S.Element == UInt8 {
        let table = crcTable
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    /// Adler-32 (the zlib trailer); sums are reduced every 5552 bytes, the most that cannot overflow.
    static func adler32<S: Sequence>(_ bytes: S) -> UInt32 where S.Element == UInt8 {
        var a: UInt32 = 1, b: UInt32 = 0, k = 0
        for x in bytes {
            a &+= UInt32(x); b &+= a; k += 1
            if k == 5552 { a %= 65521; b %= 65521; k = 0 }
        }
        return ((b % 65521) << 16) | (a % 65521)
    }

    // MARK: Filtering

    /// Scanlines each prefixed by a filter byte: per row the cheapest of None (0), Sub (1) and Up (2)
    /// by the sum of absolute values of the bytes read as signed (the PNG spec's heuristic); ties prefer Up.
    static func filter(rgb: [UInt8], width: Int, height: Int) -> [UInt8] {
        let stride = width * 3
        var out = [UInt8](repeating: 0, count: (stride + 1) * height)
        rgb.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                @inline(__always) func cost(_ b: UInt8) -> Int { b < 128 ? Int(b) : 256 - Int(b) }
                for y in 0..<height {
                    let row = y * stride, o = y * (stride + 1)
                    var none = 0, sub = 0, up = 0
                    for i in 0..<stride {
                        let v = src[row + i]
                        none += cost(v)
                        sub += cost(v &- (i >= 3 ? src[row + i - 3] : 0))
                        up += cost(v &- (y > 0 ? src[row - stride + i] : 0))
                    }
                    let kind: UInt8 = up <= sub && up <= none ? 2 : sub <= none ? 1 : 0
                    dst[o] = kind
                    for i in 0..<stride {
                        let v = src[row + i]
                        switch kind {
                        case 1: dst[o + 1 + i] = v &- (i >= 3 ? src[row + i - 3] : 0)
                        case 2: dst[o + 1 + i] = v &- (y > 0 ? src[row - stride + i] : 0)
                        default: dst[o + 1 + i] = v
                        }
                    }
                }
            }
        }
        return out
    }

    // MARK: zlib / DEFLATE

    /// zlib stream: header 0x78 0x01 (32 KiB window, no dictionary), raw DEFLATE, big-endian Adler-32.
    /// Incompressible data (noise) falls back to stored blocks rather than growing by ~6%.
    static func zlib(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]
        let fixed = deflateFixed(data)
        out += fixed.count <= data.count + 5 * (data.count / 65535 + 1) ? fixed : deflateStored(data)
        appendBE(&out, adler32(data))
        return out
    }

    /// Raw DEFLATE of stored blocks (BTYPE=00) of at most 65535 bytes each.
    static func deflateStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(data.count + 5 * (data.count / 65535 + 1))
        var start = 0
        repeat {
            let len = min(65535, data.count - start), final: UInt8 = start + len == data.count ? 1 : 0
            out += [final, UInt8(len & 0xFF), UInt8(len >> 8), UInt8(~len & 0xFF), UInt8((~len >> 8) & 0xFF)]
            out += data[start..<(start + len)]
            start += len
        } while start < data.count
        return out
    }

    /// Fixed literal/length codes, bit-reversed for LSB-first output: `code | length << 16` per symbol 0...287.
    static let literalCodes: [UInt32] = (0..<288).map { s in
        let (code, len): (Int, Int) =
            s < 144 ? (0x30 + s, 8) : s < 256 ? (0x190 + s - 144, 9) : s < 280 ? (s - 256, 7) : (0xC0 + s - 280, 8)
        return reversed(UInt32(code), len) | UInt32(len) << 16
    }

    /// Reverse the low `n` bits of `v` (Huffman codes are sent most significant bit first).
    static func reversed(_ v: UInt32, _ n: Int) -> UInt32 {
        var r: UInt32 = 0
        for i in 0..<n where v & (1 << UInt32(i)) != 0 { r |= 1 << UInt32(n - 1 - i) }
        return r
    }

    /// For each match length 3...258: the length symbol's code followed by its extra bits, as
    /// `bits | count << 24` ready for the bit writer.
    static let lengthCodes: [UInt32] = (0...258).map { len in
        guard len >= 3 else { return 0 }
        let sym: Int, extraBits: Int, extra: Int
        if len == 258 { (sym, extraBits, extra) = (285, 0, 0) }
        else {
            let n = len - 3
            if n < 8 { (sym, extraBits, extra) = (257 + n, 0, 0) }
            else {
                let hb = Int.bitWidth - 1 - n.leadingZeroBitCount  // floor(log2 n) >= 3
                (sym, extraBits, extra) = (257 + 4 * (hb - 1) + ((n >> (hb - 2)) & 3), hb - 2, n & ((1 << (hb - 2)) - 1))
            }
        }
        let c = literalCodes[sym], clen = Int(c >> 16)
        return (c & 0xFFFF) | UInt32(extra) << UInt32(clen) | UInt32(clen + extraBits) << 24
    }

    /// Raw DEFLATE as a single final fixed-Huffman block. LZ77 over a 32 KiB window: a 15-bit hash of the
    /// next 3 bytes heads a chain of earlier positions (at most `maxChain` probed), greedy longest match.
    static func deflateFixed(_ data: [UInt8], maxChain: Int = 24) -> [UInt8] {
        let n = data.count
        let windowMask = (1 << 15) - 1, hashBits: UInt32 = 15
        var head = [Int32](repeating: -1, count: 1 << hashBits)
        var prev = [Int32](repeating: -1, count: windowMask + 1)
        var out = [UInt8]()
        out.reserveCapacity(n / 8 + 64)
        var acc: UInt64 = 0, count: UInt64 = 0
        /// Append `nbits` bits of `bits`, least significant first.
        @inline(__always) func put(_ bits: UInt32, _ nbits: UInt32) {
            acc |= UInt64(bits) << count; count += UInt64(nbits)
            while count >= 8 { out.append(UInt8(truncatingIfNeeded: acc)); acc >>= 8; count -= 8 }
        }
        let lit = literalCodes, lens = lengthCodes
        put(0b011, 3)  // BFINAL = 1, BTYPE = 01 (fixed Huffman)
        data.withUnsafeBufferPointer { d in
            head.withUnsafeMutableBufferPointer { head in
                prev.withUnsafeMutableBufferPointer { prev in
                    @inline(__always) func hash(_ i: Int) -> Int {
                        let v = UInt32(d[i]) << 16 | UInt32(d[i + 1]) << 8 | UInt32(d[i + 2])
                        return Int((v &* 2_654_435_761) >> (32 - hashBits))
                    }
                    var i = 0
                    while i < n {
                        var best = 0, dist = 0
                        if i + 3 <= n {
                            let h = hash(i), maxLen = min(258, n - i)
                            var cand = Int(head[h]), chain = maxChain
                            // Chain entries older than the window may have been overwritten; the distance test stops there.
                            while cand >= 0 && i - cand <= 32768 && chain > 0 {
                                if d[cand + best] == d[i + best] {
                                    var l = 0
                                    while l < maxLen && d[cand + l] == d[i + l] { l += 1 }
                                    if l > best { best = l; dist = i - cand; if l == maxLen { break } }
                                }
                                cand = Int(prev[cand & windowMask]); chain -= 1
                            }
                            prev[i & windowMask] = head[h]; head[h] = Int32(i)
                        }
                        if best >= 3 {
                            let lc = lens[best]
                            put(lc & 0xFF_FFFF, lc >> 24)
                            // Distance: 5-bit code (sent reversed) plus extra bits.
                            let dm = dist - 1
                            var code = dm, extraBits = 0
                            if dm >= 4 {
                                let hb = Int.bitWidth - 1 - dm.leadingZeroBitCount
                                extraBits = hb - 1
                                code = 2 * hb + ((dm >> (hb - 1)) & 1)
                            }
                            let extra = UInt32(dm & ((1 << extraBits) - 1))
                            put(reversed5(UInt32(code)) | extra << 5, UInt32(5 + extraBits))
                            // Index the positions inside the match so later data can refer to them.
                            let end = min(i + best, n - 2)
                            var j = i + 1
                            while j < end { let h = hash(j); prev[j & windowMask] = head[h]; head[h] = Int32(j); j += 1 }
                            i += best
                        } else {
                            let c = lit[Int(d[i])]
                            put(c & 0xFFFF, c >> 16)
                            i += 1
                        }
                    }
                }
            }
        }
        let eob = lit[256]
        put(eob & 0xFFFF, eob >> 16)
        if count > 0 { out.append(UInt8(truncatingIfNeeded: acc)) }
        return out
    }

    @inline(__always) static func reversed5(_ v: UInt32) -> UInt32 {
        (v & 1) << 4 | (v & 2) << 2 | (v & 4) | (v & 8) >> 2 | (v & 16) >> 4
    }
}
