import Dispatch
import COpenBLAS
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// How many threads the kernels use; OpenBLAS is kept in step with it.
///
/// Set once at start-up (`ptl --threads`, `ptl-worker --threads`); kernels read it on every call.
public enum ComputeThreads {
    nonisolated(unsafe) private static var value: Int = {
        openblas_set_num_threads(1)
        return max(1, System.coreCount)
    }()

    /// The number of threads kernels spread work over.
    public static var count: Int { value }

    /// Pins OpenBLAS to one thread if nothing has yet (once per process; cheap after). Every
    /// direct BLAS or LAPACK call runs this first: OpenBLAS's threaded kernels split their sums
    /// by its own thread count, so a process that reached one before touching `ComputeThreads`
    /// (a coordinator resumed straight into a refit) computed other bits than one that had.
    @inline(__always)
    public static func pinBLAS() { _ = value }

    /// Sets the thread count for our loops. OpenBLAS itself always runs single-threaded: we split
    /// every product over our own threads (`parallelSgemm`), so its spinning workers never compete
    /// with ours for the cores, and results do not depend on the thread count.
    public static func set(_ n: Int) {
        value = max(1, n)
        openblas_set_num_threads(1)
    }

    /// The OpenBLAS kernel family in use (e.g. "Haswell", "Cooperlake").
    public static var blasCoreName: String {
        guard let name = openblas_get_corename() else { return "unknown" }
        return String(cString: name)
    }
}

/// Facts about the host.
public enum System {
    /// Online processor count.
    public static var coreCount: Int {
        return max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }
}

/// Runs `body(start, end)` over `0..<count` split into contiguous chunks, one per thread.
///
/// Chunks are fixed by `count` and the thread count only, so each index is always handled the
/// same way; reductions that must be deterministic should write per-index results, not share
/// accumulators across chunks.
@inline(__always)
public func parallelChunks(_ count: Int, minChunk: Int = 1, _ body: (Int, Int) -> Void) {
    parallelChunksIndexed(count, maxChunks: max(1, count / max(1, minChunk))) { _, start, end in body(start, end) }
}

/// Like `parallelChunks`, but also passes the chunk's index (0..<chunks), and never uses more than
/// `maxChunks` chunks, so callers can give each chunk its own scratch slot.
@inline(__always)
public func parallelChunksIndexed(_ count: Int, maxChunks: Int, _ body: (Int, Int, Int) -> Void) {
    let chunks = max(1, min(ComputeThreads.count, maxChunks, count))
    if chunks == 1 {
        if count > 0 { body(0, 0, count) }
        return
    }
    withoutActuallyEscaping(body) { body in
        let f = UncheckedSendable(body)
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let start = c * count / chunks
            let end = (c + 1) * count / chunks
            if end > start { f.value(c, start, end) }
        }
    }
}

/// Runs `body(i)` for every `i` in `0..<count` across the threads (dynamic: one index a task).
@inline(__always)
public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
    if count == 1 || ComputeThreads.count == 1 {
        for i in 0..<count { body(i) }
        return
    }
    withoutActuallyEscaping(body) { body in
        let f = UncheckedSendable(body)
        DispatchQueue.concurrentPerform(iterations: count) { f.value($0) }
    }
}

/// Carries a value across a concurrency boundary the compiler cannot check; the kernels only use
/// it for closures over disjoint slices of buffers.
public struct UncheckedSendable<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
