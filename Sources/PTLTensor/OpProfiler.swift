import Dispatch

/// Wall time per named op, for benchmarks (`ptl-bench --profile`). Off by default: then `time`
/// only runs its body.
public enum OpProfiler {
    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) private static var totals: [String: (seconds: Double, calls: Int)] = [:]

    @inline(__always)
    public static func time<R>(_ name: StaticString, _ body: () throws -> R) rethrows -> R {
        guard enabled else { return try body() }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let r = try body()
        let dt = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let key = "\(name)"
        let old = totals[key] ?? (0, 0)
        totals[key] = (old.seconds + dt, old.calls + 1)
        return r
    }

    public static func reset() { totals = [:] }

    /// (name, seconds, calls), slowest first.
    public static var report: [(name: String, seconds: Double, calls: Int)] {
        totals.map { ($0.key, $0.value.seconds, $0.value.calls) }.sorted { $0.seconds > $1.seconds }
    }
}
