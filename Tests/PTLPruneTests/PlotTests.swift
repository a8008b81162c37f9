import Foundation
import Testing
@testable import PTLPrune

// MARK: Independent reference decoders (deliberately not sharing code with PNG.swift)

/// Bitwise CRC-32 (no table).
private func referenceCRC32(_ bytes: [UInt8]) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    for b in bytes {
        c ^= UInt32(b)
        for _ in 0..<8 { c = (c >> 1) ^ (c & 1 == 1 ? 0xEDB8_8320 : 0) }
    }
    return ~c
}

private func readBE(_ b: [UInt8], _ at: Int) -> UInt32 {
    UInt32(b[at]) << 24 | UInt32(b[at + 1]) << 16 | UInt32(b[at + 2]) << 8 | UInt32(b[at + 3])
}

private struct Chunk { let type: String; let data: [UInt8]; let crc: UInt32; let typeAndData: [UInt8] }

/// Splits a PNG after its signature into chunks; nil if the framing is broken.
private func chunks(_ png: [UInt8]) -> [Chunk]? {
    var out: [Chunk] = [], i = 8
    while i < png.count {
        guard i + 12 <= png.count else { return nil }
        let n = Int(readBE(png, i))
        guard i + 12 + n <= png.count else { return nil }
        let body = Array(png[(i + 4)..<(i + 8 + n)])
        out.append(Chunk(type: String(decoding: body.prefix(4), as: UTF8.self), data: Array(body.dropFirst(4)),
                         crc: readBE(png, i + 8 + n), typeAndData: body))
        i += 12 + n
    }
    return out
}

private struct InflateError: Error { let message: String }

/// A minimal inflate for stored (BTYPE 00) and fixed-Huffman (BTYPE 01) blocks, driven by the RFC 1951 tables.
private struct Inflater {
    static let lengthBase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
                             131, 163, 195, 227, 258]
    static let lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distBase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
                           2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
    static let distExtra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]

    let data: [UInt8]
    var pos = 0, bit = 0

    /// `n` bits, least significant first (header fields and extra bits).
    mutating func bits(_ n: Int) throws -> Int {
        var v = 0
        for i in 0..<n {
            guard pos < data.count else { throw InflateError(message: "truncated") }
            v |= Int((data[pos] >> UInt8(bit)) & 1) << i
            bit += 1
            if bit == 8 { bit = 0; pos += 1 }
        }
        return v
    }

    /// A Huffman code of `n` bits, most significant first, appended to `code`.
    mutating func code(_ code: Int, _ n: Int) throws -> Int {
        var c = code
        for _ in 0..<n { c = c << 1 | (try bits(1)) }
        return c
    }

    /// A symbol of the fixed literal/length code (RFC 1951 §3.2.6).
    mutating func fixedLiteral() throws -> Int {
        let c7 = try code(0, 7)
        if c7 <= 0b0010111 { return 256 + c7 }
        let c8 = try code(c7, 1)
        if (0x30...0xBF).contains(c8) { return c8 - 0x30 }
        if (0xC0...0xC7).contains(c8) { return 280 + c8 - 0xC0 }
        let c9 = try code(c8, 1)
        guard (0x190...0x1FF).contains(c9) else { throw InflateError(message: "bad code") }
        return 144 + c9 - 0x190
    }

    /// Raw DEFLATE stream to bytes.
    mutating func inflate() throws -> [UInt8] {
        var out: [UInt8] = []
        var final = false
        while !final {
            final = try bits(1) == 1
            switch try bits(2) {
            case 0:
                if bit != 0 { bit = 0; pos += 1 }
                guard pos + 4 <= data.count else { throw InflateError(message: "truncated") }
                let len = Int(data[pos]) | Int(data[pos + 1]) << 8, nlen = Int(data[pos + 2]) | Int(data[pos + 3]) << 8
                guard len == ~nlen & 0xFFFF, pos + 4 + len <= data.count else { throw InflateError(message: "bad stored block") }
                out += data[(pos + 4)..<(pos + 4 + len)]
                pos += 4 + len
            case 1:
                while true {
                    let sym = try fixedLiteral()
                    if sym < 256 { out.append(UInt8(sym)); continue }
                    if sym == 256 { break }
                    guard sym <= 285 else { throw InflateError(message: "bad length symbol") }
                    let length = Self.lengthBase[sym - 257] + (try bits(Self.lengthExtra[sym - 257]))
                    let dsym = try code(0, 5)
                    guard dsym < 30 else { throw InflateError(message: "bad distance symbol") }
                    let dist = Self.distBase[dsym] + (try bits(Self.distExtra[dsym]))
                    guard dist <= out.count else { throw InflateError(message: "distance too far") }
                    for _ in 0..<length { out.append(out[out.count - dist]) }
                }
            default: throw InflateError(message: "unsupported block type")
            }
        }
        return out
    }
}

/// zlib stream to bytes, checking the header and the Adler-32 trailer (computed naively here).
private func unzlib(_ z: [UInt8]) throws -> [UInt8] {
    guard z.count >= 6, z[0] & 0x0F == 8, (Int(z[0]) << 8 | Int(z[1])) % 31 == 0, z[1] & 0x20 == 0
    else { throw InflateError(message: "bad zlib header") }
    var inflater = Inflater(data: Array(z[2..<(z.count - 4)]))
    let out = try inflater.inflate()
    var a = 1, b = 0
    for x in out { a = (a + Int(x)) % 65521; b = (b + a) % 65521 }
    guard readBE(z, z.count - 4) == UInt32(b << 16 | a) else { throw InflateError(message: "Adler-32 mismatch") }
    return out
}

/// Filtered scanlines to RGB (all five PNG filter types).
private func unfilter(_ raw: [UInt8], width: Int, height: Int) throws -> [UInt8] {
    let stride = width * 3
    guard raw.count == (stride + 1) * height else { throw InflateError(message: "wrong scanline bytes \(raw.count)") }
    var out = [UInt8](repeating: 0, count: stride * height)
    for y in 0..<height {
        let kind = raw[y * (stride + 1)]
        for i in 0..<stride {
            let v = raw[y * (stride + 1) + 1 + i]
            let a = i >= 3 ? Int(out[y * stride + i - 3]) : 0
            let b = y > 0 ? Int(out[(y - 1) * stride + i]) : 0
            let c = i >= 3 && y > 0 ? Int(out[(y - 1) * stride + i - 3]) : 0
            let pred: Int
            switch kind {
            case 0: pred = 0
            case 1: pred = a
            case 2: pred = b
            case 3: pred = (a + b) / 2
            case 4:
                let p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c)
                pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c
            default: throw InflateError(message: "bad filter \(kind)")
            }
            out[y * stride + i] = UInt8(truncatingIfNeeded: Int(v) + pred)
        }
    }
    return out
}

/// A decoded PNG: size and RGB pixels, after checking signature, chunk order, IHDR and every CRC.
private func decodePNG(_ png: [UInt8]) throws
    -> (width: Int, height: Int, rgb: [UInt8]) {
    #expect(Array(png.prefix(8)) == [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
    guard let cs = chunks(png), cs.count >= 3 else { throw InflateError(message: "bad chunk framing") }
    for c in cs { #expect(c.crc == referenceCRC32(c.typeAndData), Comment(rawValue: "CRC of \(c.type)")) }
    #expect(cs.first?.type == "IHDR")
    #expect(cs.last?.type == "IEND")
    #expect(cs.last?.data.count == 0)
    let ihdr = cs[0].data
    #expect(ihdr.count == 13)
    #expect(Array(ihdr[8...]) == [8, 2, 0, 0, 0], "\("bit depth 8, RGB, no interlace")")
    let w = Int(readBE(ihdr, 0)), h = Int(readBE(ihdr, 4))
    let idat = cs.filter { $0.type == "IDAT" }.flatMap(\.data)
    return (w, h, try unfilter(try unzlib(idat), width: w, height: h))
}

/// Number of pixels exactly of colour `c`.
private func pixelCount(_ rgb: [UInt8], _ c: PlotColor) -> Int {
    stride(from: 0, to: rgb.count, by: 3).filter { rgb[$0] == c.r && rgb[$0 + 1] == c.g && rgb[$0 + 2] == c.b }.count
}

/// Mean column of the pixels of colour `c`.
private func meanX(_ img: (rgb: [UInt8], width: Int, height: Int), _ c: PlotColor) -> Double {
    var sum = 0, n = 0
    for p in 0..<(img.width * img.height) where img.rgb[3 * p] == c.r && img.rgb[3 * p + 1] == c.g && img.rgb[3 * p + 2] == c.b {
        sum += p % img.width; n += 1
    }
    return n == 0 ? .nan : Double(sum) / Double(n)
}

private let fractions = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5]
private let twoSeries = [
    PlotSeries(label: "magnitude", points: fractions.map { PlotPoint(x: $0, y: 40 * $0) }, color: PlotColor.palette[0]),
    PlotSeries(label: "wanda", points: fractions.map { PlotPoint(x: $0, y: 42 * $0.squareRoot()) }, color: PlotColor.palette[1]),
]

@Suite struct PlotTests {
    @Test func checksums() {
        #expect(PNG.crc32(Array("123456789".utf8)) == 0xCBF4_3926)
        #expect(PNG.adler32(Array("Wikipedia".utf8)) == 0x11E6_0398)
        #expect(PNG.crc32([UInt8]()) == 0)
        #expect(PNG.adler32([UInt8]()) == 1)
        let big = (0..<20000).map { UInt8(truncatingIfNeeded: ($0 &* 7919) >> 3) }
        #expect(PNG.crc32(big) == referenceCRC32(big))
    }

    @Test func pNGStructure() throws {
        let png = LinePlot.png(title: "Accuracy", xLabel: "kept", yLabel: "acc (%)", series: twoSeries,
                               width: 333, height: 222, invertX: true)
        let cs = try #require(chunks(png))
        #expect(cs.map(\.type) == ["IHDR", "IDAT", "IEND"])
        #expect(readBE(cs[0].data, 0) == 333)
        #expect(readBE(cs[0].data, 4) == 222)
        for c in cs { #expect(c.crc == referenceCRC32(c.typeAndData), Comment(rawValue: c.type)) }
        let img = try decodePNG(png)
        #expect(img.width == 333)
        #expect(img.height == 222)
    }

    @Test func iDATDecodesToRenderedPixels() throws {
        let args = (title: "Pruning", x: "fraction of parameters kept", y: "accuracy (%)")
        let png = LinePlot.png(title: args.title, xLabel: args.x, yLabel: args.y, series: twoSeries, invertX: true)
        let img = LinePlot.render(title: args.title, xLabel: args.x, yLabel: args.y, series: twoSeries, invertX: true)
        #expect(img.width == 720)
        #expect(img.height == 460)
        #expect(img.rgb.count == 720 * 460 * 3)
        let decoded = try decodePNG(png)
        #expect(decoded.width == img.width)
        #expect(decoded.height == img.height)
        #expect(decoded.rgb == img.rgb, "\("decoded pixels differ from render(...)")")
        #expect(png.count < 40_000, "\("a mostly white plot should compress well")")
    }

    @Test func deflateRoundTrip() throws {
        // Pseudo-random bytes, long runs, short repeats and tiny inputs exercise literals, every match length
        // and distances up to the window size.
        var state: UInt32 = 12345
        var noise: [UInt8] = []
        for _ in 0..<70_000 { state = state &* 1_103_515_245 &+ 12345; noise.append(UInt8(truncatingIfNeeded: state >> 16)) }
        var mixed: [UInt8] = []
        for k in 0..<300 { mixed += noise[(k * 97)..<(k * 97 + k % 40)]; mixed += [UInt8](repeating: UInt8(k % 3), count: k) }
        let far = Array(noise[0..<1000]) + Array(noise[5000..<37000]) + Array(noise[0..<1000])  // distance 33000 is out of reach
        let inputs: [[UInt8]] = [[], [7], [1, 2], [1, 2, 3], [0, 0, 0, 0], [UInt8](repeating: 9, count: 1000),
                                 noise, mixed, far, Array(noise[0..<300]) + Array(noise[0..<300])]
        for input in inputs {
            #expect(try unzlib(PNG.zlib(input)) == input, "\("zlib round trip of \(input.count) bytes")")
            var fixed = Inflater(data: PNG.deflateFixed(input)), stored = Inflater(data: PNG.deflateStored(input))
            #expect(try fixed.inflate() == input, "\("fixed-Huffman round trip of \(input.count) bytes")")
            #expect(try stored.inflate() == input, "\("stored round trip of \(input.count) bytes")")
        }
        // Noise does not compress: zlib falls back to stored blocks (5 bytes per 64 KiB of overhead).
        #expect(PNG.zlib(noise).count == noise.count + 2 * 5 + 6)
    }

    @Test func seriesColoursArePresent() {
        let img = LinePlot.render(title: "t", xLabel: "x", yLabel: "y", series: twoSeries)
        for s in twoSeries { #expect(pixelCount(img.rgb, s.color) > 200, Comment(rawValue: s.label)) }
        #expect(pixelCount(img.rgb, PlotColor.palette[2]) == 0)
        #expect(Set(PlotColor.palette.map { [$0.r, $0.g, $0.b] }).count == 16, "the palette's colours are distinct")
    }

    @Test func invertXPutsLargeXOnTheLeft() {
        // Unlabelled series: no legend swatches to disturb the colour statistics.
        let a = PlotSeries(label: "", points: [PlotPoint(x: 1, y: 0.5)], color: PlotColor.palette[0])
        let b = PlotSeries(label: "", points: [PlotPoint(x: 0, y: 0.5)], color: PlotColor.palette[1])
        let normal = LinePlot.render(title: "", xLabel: "", yLabel: "", series: [a, b])
        let inverted = LinePlot.render(title: "", xLabel: "", yLabel: "", series: [a, b], invertX: true)
        #expect(meanX(normal, a.color) > meanX(normal, b.color))
        #expect(meanX(inverted, a.color) < meanX(inverted, b.color))
    }

    @Test func degenerateInputsDoNotCrash() throws {
        let single = PlotSeries(label: "one", points: [PlotPoint(x: 3, y: 3)], color: PlotColor.palette[3])
        let empty = PlotSeries(label: "none", points: [], color: PlotColor.palette[4])
        let bad = PlotSeries(label: "nan", points: [PlotPoint(x: .nan, y: 1), PlotPoint(x: 0, y: .infinity),
                                                     PlotPoint(x: 1, y: 2), PlotPoint(x: 2, y: .nan), PlotPoint(x: 3, y: 1)],
                             color: PlotColor.palette[5])
        let extreme = PlotSeries(label: "big", points: [PlotPoint(x: -1e308, y: 1e308), PlotPoint(x: 1e308, y: -1e308)],
                                 color: PlotColor.palette[6])
        let cases: [(series: [PlotSeries], w: Int, h: Int, xr: ClosedRange<Double>?, yr: ClosedRange<Double>?)] = [
            ([], 720, 460, nil, nil),
            ([single], 720, 460, nil, nil),
            ([empty, single], 300, 200, nil, nil),
            ([bad], 720, 460, nil, nil),
            ([extreme], 720, 460, nil, nil),
            (twoSeries, 720, 460, 0.55...0.56, 7...7),  // data mostly outside the given ranges; degenerate y range
            (twoSeries, 40, 30, nil, nil),
            (twoSeries, 1, 1, nil, nil),
        ]
        for c in cases {
            let png = LinePlot.png(title: "edge", xLabel: "x", yLabel: "y", series: c.series, width: c.w, height: c.h,
                                   xRange: c.xr, yRange: c.yr)
            let img = try decodePNG(png)
            #expect(img.width == c.w)
            #expect(img.height == c.h)
        }
        let nanImage = LinePlot.render(title: "", xLabel: "", yLabel: "", series: [bad])
        #expect(pixelCount(nanImage.rgb, bad.color) > 50, "\("finite points of a series with NaNs are still drawn")")
    }

    @Test func tickSteps() {
        #expect(abs((LinePlot.nice(0.13)) - (0.2)) <= 1e-12)
        #expect(LinePlot.nice(3) == 5)
        #expect(LinePlot.nice(7) == 10)
        #expect(LinePlot.nice(1) == 1)
        #expect(LinePlot.ticks(0.18...0.62, 0.1).map { ($0 * 10).rounded() } == [2, 3, 4, 5, 6])
        #expect(LinePlot.format(0.30000000000000004, step: 0.1) == "0.3")
        #expect(LinePlot.format(-1e-17, step: 0.05) == "0.00")
        #expect(LinePlot.format(2500, step: 500) == "2500")
    }
}
