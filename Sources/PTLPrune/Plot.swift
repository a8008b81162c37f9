import Foundation

/// One (x, y) sample of a series.
public struct PlotPoint: Sendable {
    public var x: Double
    public var y: Double
    public init(x: Double, y: Double) { self.x = x; self.y = y }
}

/// An 8-bit RGB colour.
public struct PlotColor: Sendable, Equatable {
    public var r, g, b: UInt8
    public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) { self.r = r; self.g = g; self.b = b }

    /// 8 distinguishable colours (the Tableau 10 hues minus grey and olive).
    public static let palette: [PlotColor] = [
        PlotColor(31, 119, 180), PlotColor(255, 127, 14), PlotColor(44, 160, 44), PlotColor(214, 39, 40),
        PlotColor(148, 103, 189), PlotColor(140, 86, 75), PlotColor(227, 119, 194), PlotColor(23, 190, 207),
        // Eight more, for compares of many variants (no colour repeats below 16 series).
        PlotColor(127, 127, 127), PlotColor(188, 189, 34), PlotColor(0, 0, 128), PlotColor(128, 0, 0),
        PlotColor(0, 128, 128), PlotColor(230, 180, 0), PlotColor(0, 0, 0), PlotColor(255, 105, 180),
    ]

    static let white = PlotColor(255, 255, 255)
    static let ink = PlotColor(30, 30, 30)
    static let axis = PlotColor(70, 70, 70)
    static let grid = PlotColor(228, 228, 228)
    static let frame = PlotColor(170, 170, 170)
}

/// A labelled polyline: points are drawn in order, joined by lines, each marked with a small disc.
public struct PlotSeries: Sendable {
    public var label: String
    public var points: [PlotPoint]
    public var color: PlotColor
    public init(label: String, points: [PlotPoint], color: PlotColor) {
        self.label = label; self.points = points; self.color = color
    }
}

/// Line charts rendered to RGB pixels / PNG with a built-in bitmap font; no dependencies.
public enum LinePlot {
    /// A PNG of a line chart: axes, ticks with numeric labels ("nice" tick steps), axis labels, title, legend box.
    /// Ranges default to the data's extent padded by 5% (a degenerate x range gets ±1, a degenerate y range ±0.5).
    /// `invertX` draws x decreasing to the right (used for "fraction of parameters kept": 1.0 at the left).
    public static func png(title: String, xLabel: String, yLabel: String, series: [PlotSeries],
                           width: Int = 720, height: Int = 460,
                           xRange: ClosedRange<Double>? = nil, yRange: ClosedRange<Double>? = nil,
                           invertX: Bool = false) -> [UInt8] {
        let img = render(title: title, xLabel: xLabel, yLabel: yLabel, series: series, width: width, height: height,
                         xRange: xRange, yRange: yRange, invertX: invertX)
        return PNG.encode(rgb: img.rgb, width: img.width, height: img.height)
    }

    /// The same chart as RGB pixels (for tests). Sizes below 1 are raised to 1.
    public static func render(title: String, xLabel: String, yLabel: String, series: [PlotSeries],
                              width: Int = 720, height: Int = 460,
                              xRange: ClosedRange<Double>? = nil, yRange: ClosedRange<Double>? = nil,
                              invertX: Bool = false) -> (rgb: [UInt8], width: Int, height: Int) {
        var c = PlotCanvas(width: max(width, 1), height: max(height, 1))
        let W = c.width, H = c.height
        let points = series.map { $0.points.filter { $0.x.isFinite && $0.y.isFinite } }
        let xr = axisRange(xRange, points.flatMap { $0.map(\.x) }, degeneratePad: 1)
        let yr = axisRange(yRange, points.flatMap { $0.map(\.y) }, degeneratePad: 0.5)

        // Vertical layout: title (2x font), y label above the axis, plot, tick labels, x label.
        let titleH = title.isEmpty ? 0 : 2 * PlotFont.height + 10
        let yLabelH = yLabel.isEmpty ? 0 : PlotFont.height + 12
        let top = 10 + titleH + yLabelH
        let bottom = H - 1 - (8 + PlotFont.height + (xLabel.isEmpty ? 6 : 10 + PlotFont.height + 8))
        let py0 = min(top, H - 1), py1 = max(bottom, py0 + 1)
        let yStep = tickStep(span: yr.upperBound - yr.lowerBound, pixels: py1 - py0, minGap: { _ in 28 })
        let yTicks = ticks(yr, yStep)
        let yLabels = yTicks.map { format($0, step: yStep) }
        // Horizontal layout: y tick labels on the left, room for the last x tick label on the right.
        let px0 = min(10 + (yLabels.map(PlotFont.width).max() ?? 0) + 8, W - 1)
        let px1 = max(W - 1 - 24, px0 + 1)
        let xStep = tickStep(span: xr.upperBound - xr.lowerBound, pixels: px1 - px0) { step in
            Double((ticks(xr, step).map { PlotFont.width(format($0, step: step)) }.max() ?? 0) + 14)
        }
        let xTicks = ticks(xr, xStep)

        // Data -> pixel mapping.
        func sx(_ x: Double) -> Double {
            let f = (x - xr.lowerBound) / (xr.upperBound - xr.lowerBound)
            return Double(px0) + (invertX ? 1 - f : f) * Double(px1 - px0)
        }
        func sy(_ y: Double) -> Double {
            Double(py1) - (y - yr.lowerBound) / (yr.upperBound - yr.lowerBound) * Double(py1 - py0)
        }

        // Grid, ticks and tick labels.
        for (v, label) in zip(yTicks, yLabels) {
            let y = Int(sy(v).rounded())
            c.fill(px0 + 1, y, px1 - 1, y, .grid)
            c.fill(px0 - 4, y, px0 - 1, y, .axis)
            c.text(label, x: px0 - 7 - PlotFont.width(label), y: y - PlotFont.height / 2, color: .ink)
        }
        for v in xTicks {
            let x = Int(sx(v).rounded()), label = format(v, step: xStep)
            c.fill(x, py0 + 1, x, py1 - 1, .grid)
            c.fill(x, py1 + 1, x, py1 + 4, .axis)
            c.text(label, x: x - PlotFont.width(label) / 2, y: py1 + 8, color: .ink)
        }
        // Frame: axes left and bottom in dark grey, the other two sides lighter.
        c.fill(px0, py0, px1, py0, .frame)
        c.fill(px1, py0, px1, py1, .frame)
        c.fill(px0, py0, px0, py1, .axis)
        c.fill(px0, py1, px1, py1, .axis)

        // Titles.
        if !title.isEmpty { c.text(title, x: (W - PlotFont.width(title, scale: 2)) / 2, y: 10, color: .ink, scale: 2) }
        if !yLabel.isEmpty { c.text(yLabel, x: 10, y: py0 - PlotFont.height - 10, color: .ink) }
        if !xLabel.isEmpty {
            c.text(xLabel, x: px0 + (px1 - px0 - PlotFont.width(xLabel)) / 2, y: py1 + 8 + PlotFont.height + 10, color: .ink)
        }

        // Series, clipped to the inside of the frame.
        let paths = points.map { $0.map { (sx($0.x), sy($0.y)) } }
        c.clip = (px0 + 1, py0 + 1, px1 - 1, py1 - 1)
        for (s, path) in zip(series, paths) {
            for k in path.indices.dropFirst() { c.line(path[k - 1], path[k], s.color) }
            for p in path where abs(p.0) < 1e6 && abs(p.1) < 1e6 { c.disc(Int(p.0.rounded()), Int(p.1.rounded()), 3, s.color) }
        }

        // Legend in the plot corner that covers the fewest data pixels.
        let entries = series.filter { !$0.label.isEmpty }
        if !entries.isEmpty {
            let rowH = PlotFont.height + 6
            let bw = 8 + 22 + 6 + (entries.map { PlotFont.width($0.label) }.max() ?? 0) + 8
            let bh = 6 + entries.count * rowH
            let corners = [(px1 - 8 - bw, py0 + 8), (px0 + 8, py0 + 8), (px1 - 8 - bw, py1 - 8 - bh), (px0 + 8, py1 - 8 - bh)]
            let (lx, ly) = corners.min { coverage(paths, $0, bw, bh) < coverage(paths, $1, bw, bh) }!
            c.fill(lx, ly, lx + bw, ly + bh, .white)
            c.fill(lx, ly, lx + bw, ly, .frame); c.fill(lx, ly + bh, lx + bw, ly + bh, .frame)
            c.fill(lx, ly, lx, ly + bh, .frame); c.fill(lx + bw, ly, lx + bw, ly + bh, .frame)
            for (k, s) in entries.enumerated() {
                let y = ly + 6 + k * rowH + PlotFont.height / 2
                c.fill(lx + 8, y, lx + 29, y + 1, s.color)
                c.disc(lx + 18, y, 3, s.color)
                c.text(s.label, x: lx + 36, y: y - PlotFont.height / 2, color: .ink)
            }
        }
        return (c.pixels, W, H)
    }

    // MARK: Axes

    /// The given range, or the data's extent padded by 5%; degenerate ranges are widened by `degeneratePad`.
    static func axisRange(_ given: ClosedRange<Double>?, _ values: [Double], degeneratePad: Double) -> ClosedRange<Double> {
        var lo: Double, hi: Double
        if let g = given, g.lowerBound.isFinite, g.upperBound.isFinite { (lo, hi) = (g.lowerBound, g.upperBound) }
        else if let mn = values.min(), let mx = values.max() {
            let pad = (mx - mn) * 0.05
            (lo, hi) = pad.isFinite ? (mn - pad, mx + pad) : (mn, mx)
        } else { (lo, hi) = (0, 1) }
        if !(hi - lo > 0) || !(hi - lo).isFinite { (lo, hi) = (lo - degeneratePad, lo + degeneratePad) }
        if !(hi - lo > 0) || !(hi - lo).isFinite { (lo, hi) = (0, 1) }  // still degenerate: magnitudes near Double.max
        return lo...hi
    }

    /// The smallest step of the form {1, 2, 5}×10^k giving ticks at least `minGap(step)` pixels apart
    /// (and at most ~10 of them).
    static func tickStep(span: Double, pixels: Int, minGap: (Double) -> Double) -> Double {
        var step = nice(span / 10)
        for _ in 0..<40 {
            let gap = Double(pixels) * step / span
            if gap >= minGap(step) { break }
            step = nice(step * 1.5)
        }
        return step
    }

    /// The smallest {1, 2, 5}×10^k that is >= v.
    static func nice(_ v: Double) -> Double {
        let mag = pow(10, floor(log10(v)))
        let f = v / mag
        return (f <= 1 + 1e-9 ? 1 : f <= 2 + 1e-9 ? 2 : f <= 5 + 1e-9 ? 5 : 10) * mag
    }

    /// Multiples of `step` inside the range (at most 100).
    static func ticks(_ r: ClosedRange<Double>, _ step: Double) -> [Double] {
        guard step.isFinite, step > 0 else { return [] }
        let first = (r.lowerBound / step - 1e-9).rounded(.up)
        var out: [Double] = []
        var k = 0.0
        while out.count < 100 {
            let v = (first + k) * step
            if v > r.upperBound + step * 1e-9 { break }
            out.append(v); k += 1
        }
        return out
    }

    /// A tick label with as many decimals as the step needs; %g for very large or small magnitudes.
    static func format(_ v: Double, step: Double) -> String {
        let v = abs(v) < step * 1e-6 ? 0 : v
        if max(abs(v), step) >= 1e6 || step < 1e-4 { return String(format: "%g", v) }
        let decimals = max(0, -Int(floor(log10(step) + 1e-9)))
        return String(format: "%.\(decimals)f", v)
    }

    /// Samples (every ~2 px) of the paths that fall inside a w×h box at (x, y): how much data a legend would hide.
    static func coverage(_ paths: [[(Double, Double)]], _ corner: (Int, Int), _ w: Int, _ h: Int) -> Int {
        let (x0, y0) = (Double(corner.0 - 4), Double(corner.1 - 4))
        let (x1, y1) = (x0 + Double(w + 8), y0 + Double(h + 8))
        var n = 0
        for path in paths {
            for k in path.indices {
                let a = path[k], b = k > 0 ? path[k - 1] : path[k]
                let len = max(abs(b.0 - a.0), abs(b.1 - a.1)) / 2
                let steps = len.isFinite ? Int(min(len, 2000)) : 0
                for t in 0...steps {
                    let f = steps == 0 ? 0 : Double(t) / Double(steps)
                    let x = a.0 + (b.0 - a.0) * f, y = a.1 + (b.1 - a.1) * f
                    if x >= x0 && x <= x1 && y >= y0 && y <= y1 { n += 1 }
                }
            }
        }
        return n
    }
}

/// An RGB raster with a clip rectangle (inclusive) applied to every pixel write.
struct PlotCanvas {
    let width: Int, height: Int
    var pixels: [UInt8]
    var clip: (x0: Int, y0: Int, x1: Int, y1: Int)

    init(width: Int, height: Int) {
        self.width = width; self.height = height
        pixels = [UInt8](repeating: 255, count: width * height * 3)
        clip = (0, 0, width - 1, height - 1)
    }

    @inline(__always) mutating func set(_ x: Int, _ y: Int, _ c: PlotColor) {
        guard x >= max(clip.x0, 0), x <= min(clip.x1, width - 1), y >= max(clip.y0, 0), y <= min(clip.y1, height - 1)
        else { return }
        let i = (y * width + x) * 3
        pixels[i] = c.r; pixels[i + 1] = c.g; pixels[i + 2] = c.b
    }

    /// Filled rectangle, corners inclusive.
    mutating func fill(_ x0: Int, _ y0: Int, _ x1: Int, _ y1: Int, _ c: PlotColor) {
        let xa = max(x0, clip.x0, 0), xb = min(x1, clip.x1, width - 1)
        let ya = max(y0, clip.y0, 0), yb = min(y1, clip.y1, height - 1)
        guard xa <= xb, ya <= yb else { return }
        for y in ya...yb { for x in xa...xb { set(x, y, c) } }
    }

    /// Filled disc of radius r.
    mutating func disc(_ cx: Int, _ cy: Int, _ r: Int, _ c: PlotColor) {
        for dy in -r...r { for dx in -r...r where dx * dx + dy * dy <= r * r + r { set(cx + dx, cy + dy, c) } }
    }

    /// A 2-px line: the segment is clipped (Liang–Barsky) to the clip rectangle first, so far-away
    /// endpoints cannot overflow, then drawn with Bresenham doubling the minor axis.
    mutating func line(_ a: (Double, Double), _ b: (Double, Double), _ c: PlotColor) {
        let (xmin, ymin) = (Double(clip.x0 - 2), Double(clip.y0 - 2))
        let (xmax, ymax) = (Double(clip.x1 + 2), Double(clip.y1 + 2))
        let dx = b.0 - a.0, dy = b.1 - a.1
        var t0 = 0.0, t1 = 1.0
        for (p, q) in [(-dx, a.0 - xmin), (dx, xmax - a.0), (-dy, a.1 - ymin), (dy, ymax - a.1)] {
            if p == 0 { if q < 0 { return } ; continue }
            let t = q / p
            if p < 0 { t0 = max(t0, t) } else { t1 = min(t1, t) }
            if t0 > t1 { return }
        }
        let (fx0, fy0, fx1, fy1) = (a.0 + t0 * dx, a.1 + t0 * dy, a.0 + t1 * dx, a.1 + t1 * dy)
        guard [fx0, fy0, fx1, fy1].allSatisfy({ abs($0) < 1e7 }) else { return }  // also rejects NaN
        var x = Int(fx0.rounded()), y = Int(fy0.rounded())
        let x1 = Int(fx1.rounded()), y1 = Int(fy1.rounded())
        let ddx = abs(x1 - x), ddy = -abs(y1 - y), stepX = x < x1 ? 1 : -1, stepY = y < y1 ? 1 : -1
        let steep = ddx < -ddy
        var err = ddx + ddy
        while true {
            set(x, y, c)
            if steep { set(x + 1, y, c) } else { set(x, y + 1, c) }
            if x == x1 && y == y1 { break }
            let e2 = 2 * err
            if e2 >= ddy { err += ddy; x += stepX }
            if e2 <= ddx { err += ddx; y += stepY }
        }
    }

    /// Text with its cap-height top-left at (x, y); descenders go 2 rows lower.
    mutating func text(_ s: String, x: Int, y: Int, color: PlotColor, scale: Int = 1) {
        var cx = x
        for u in s.unicodeScalars {
            let bits = PlotFont.glyph(u)
            for row in 0..<9 {
                for col in 0..<5 where bits >> UInt64(44 - row * 5 - col) & 1 != 0 {
                    fill(cx + col * scale, y + row * scale, cx + col * scale + scale - 1, y + row * scale + scale - 1, color)
                }
            }
            cx += PlotFont.advance * scale
        }
    }
}

/// A 5×7 bitmap font (plus 2 descender rows) for ASCII 32...126. Each glyph is 45 bits: 9 rows of 5,
/// top row in the most significant bits, leftmost pixel first.
enum PlotFont {
    static let height = 7, advance = 6

    /// Pixel width of a string (no trailing gap).
    static func width(_ s: String, scale: Int) -> Int {
        let n = s.unicodeScalars.count
        return n == 0 ? 0 : (n * advance - 1) * scale
    }
    static func width(_ s: String) -> Int { width(s, scale: 1) }

    /// The glyph of a scalar; a few non-ASCII look-alikes are mapped, anything else is '?'.
    static func glyph(_ u: Unicode.Scalar) -> UInt64 {
        var v = u.value
        switch v {
        case 0xD7: v = 0x78  // × -> x
        case 0x2212, 0x2013, 0x2014: v = 0x2D  // minus, en/em dash -> -
        case 0xB7, 0x2022: v = 0x2E  // middle dot, bullet -> .
        default: break
        }
        return glyphs[Int(v >= 32 && v <= 126 ? v - 32 : 0x3F - 32)]
    }

    static let glyphs: [UInt64] = [
        0x000000000000, 0x042108401000, 0x0A5000000000, 0x0A57D5F52800,  //   ! " #
        0x047D1C5F1000, 0x18C888898C00, 0x0C9511593400, 0x042200000000,  // $ % & '
        0x022210820800, 0x082084222000, 0x00255D520000, 0x00213E420000,  // ( ) * +
        0x000000031844, 0x00003E000000, 0x000000063000, 0x000888880000,  // , - . /
        0x0E8CEB98B800, 0x046108423800, 0x0E8844447C00, 0x1F110418B800,  // 0 1 2 3
        0x0232A5F10800, 0x1F878218B800, 0x06443D18B800, 0x1F0888842000,  // 4 5 6 7
        0x0E8C5D18B800, 0x0E8C5E113000, 0x006300C60000, 0x006300C61100,  // 8 9 : ;
        0x022220820800, 0x0007C1F00000, 0x082082222000, 0x0E8844401000,  // < = > ?
        0x0E885B5AB800, 0x0E8C7F18C400, 0x1E8C7D18F800, 0x0E8C2108B800,  // @ A B C
        0x1C9463197000, 0x1F843D087C00, 0x1F843D084000, 0x0E8C2F18BC00,  // D E F G
        0x118C7F18C400, 0x0E2108423800, 0x071084293000, 0x119531494400,  // H I J K
        0x108421087C00, 0x11DD6B18C400, 0x118E6B38C400, 0x0E8C6318B800,  // L M N O
        0x1E8C7D084000, 0x0E8C63593400, 0x1E8C7D494400, 0x0F841C10F800,  // P Q R S
        0x1F2108421000, 0x118C6318B800, 0x118C63151000, 0x118C6B5AA800,  // T U V W
        0x118A88A8C400, 0x118A88421000, 0x1F0888887C00, 0x0E4210843800,  // X Y Z [
        0x008208208000, 0x0E1084213800, 0x045440000000, 0x000000007C00,  // \ ] ^ _
        0x082080000000, 0x000382F8BC00, 0x1085B318F800, 0x0003A108B800,  // ` a b c
        0x010B6718BC00, 0x0003A3F83800, 0x064A38842000, 0x0003E318BC2E,  // d e f g
        0x1085B318C400, 0x040308423800, 0x020184210A4C, 0x1084A98A4800,  // h i j k
        0x0C2108423800, 0x0006AB5AD400, 0x0005B318C400, 0x0003A318B800,  // l m n o
        0x0007A318FA10, 0x0003E318BC21, 0x0005B3084000, 0x0003E0E0F800,  // p q r s
        0x084710849800, 0x00046319B400, 0x000463151000, 0x0004635AA800,  // t u v w
        0x000454454400, 0x00046318BC2E, 0x0007C4447C00, 0x032110420C00,  // x y z {
        0x042108421000, 0x182104426000, 0x00022A200000,  // | } ~
    ]
}
