/// A fixed-size, zero-initialised fp32 buffer that owns its memory.
///
/// The model keeps parameters, gradients, optimizer moments and activations in these and passes
/// raw pointers to the kernels; sizes are fixed at creation so nothing reallocates in a loop.
public final class FloatBuffer: @unchecked Sendable {
    /// Base address of `count` floats.
    public let pointer: UnsafeMutablePointer<Float>
    /// Number of floats.
    public let count: Int

    /// Allocates `count` zeroed floats (64-byte aligned).
    public init(count: Int) {
        precondition(count >= 0)
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(1, count) * 4, alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: max(1, count))
        pointer.initialize(repeating: 0, count: max(1, count))
        self.count = count
    }

    /// Allocates a buffer holding a copy of `values`.
    public convenience init(_ values: [Float]) {
        self.init(count: values.count)
        values.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { pointer.update(from: base, count: values.count) }
        }
    }

    deinit { pointer.deallocate() }

    /// Pointer to element `offset`.
    @inline(__always) public func at(_ offset: Int) -> UnsafeMutablePointer<Float> { pointer + offset }

    /// Sets every element to zero.
    public func zero() { pointer.update(repeating: 0, count: count) }

    /// A copy of elements `range` as an array.
    public func array(_ range: Range<Int>? = nil) -> [Float] {
        let r = range ?? 0..<count
        return Array(UnsafeBufferPointer(start: pointer + r.lowerBound, count: r.count))
    }

    /// Copies `values` into the buffer starting at `offset`.
    public func copy(from values: [Float], to offset: Int = 0) {
        precondition(offset + values.count <= count)
        values.withUnsafeBufferPointer { src in
            if let base = src.baseAddress { (pointer + offset).update(from: base, count: values.count) }
        }
    }

    /// Copies everything from another buffer of the same size.
    public func copy(from other: FloatBuffer) {
        precondition(other.count == count)
        pointer.update(from: other.pointer, count: count)
    }

    /// An independent copy.
    public func clone() -> FloatBuffer {
        let b = FloatBuffer(count: count)
        b.pointer.update(from: pointer, count: count)
        return b
    }
}

