#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An open-addressing hash table from byte strings to short lists of ids, with keys and
/// values in two flat arenas.
///
/// It serves both as the vocabulary by raw bytes (one id per key) and as the word cache
/// (the BPE result of a pre-token). `Dictionary<[UInt8], [Int32]>` costs an allocation
/// per entry and a slow hash; this costs one hash, one probe and one `memcmp` per look-up.
/// Not thread-safe: shared instances are read-only, mutable ones have a single owner.
final class ByteStringTable: @unchecked Sendable {
    private struct Slot {
        var hash: UInt64 = 0          // 0: empty
        var keyStart: Int32 = 0
        var keyLength: Int32 = 0
        var valueStart: Int32 = 0
        var valueCount: Int32 = 0
    }

    private var slots: UnsafeMutablePointer<Slot>
    private var mask: Int
    private(set) var count = 0
    private var keys = Arena<UInt8>()
    private var values = Arena<Int32>()

    /// Bytes held by keys and values, to bound a cache.
    var footprint: Int { keys.count + 4 * values.count + 24 * (mask + 1) }

    init(capacity: Int = 1024) {
        var size = 16
        while size < capacity * 2 { size *= 2 }
        slots = .allocate(capacity: size)
        slots.initialize(repeating: Slot(), count: size)
        mask = size - 1
    }

    deinit {
        slots.deallocate()
        keys.deallocate()
        values.deallocate()
    }

    /// A hash of `n` bytes at `p`, never 0.
    @inline(__always)
    static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        var h: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(truncatingIfNeeded: n)
        let raw = UnsafeRawPointer(p)
        var i = 0
        while i + 8 <= n {
            h = (h ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0xBF58_476D_1CE4_E5B9
            h ^= h >> 31
            i += 8
        }
        if i < n {
            var tail: UInt64 = 0
            var shift: UInt64 = 0
            while i < n {
                tail |= UInt64(p[i]) << shift
                shift += 8
                i += 1
            }
            h = (h ^ tail) &* 0x94D0_49BB_1331_11EB
            h ^= h >> 29
        }
        h = (h ^ (h >> 32)) &* 0xD6E8_FEB8_6659_FD93
        h ^= h >> 32
        return h | 1
    }

    /// The values stored for the key, as (start in `values`, count), or `nil`.
    @inline(__always)
    func find(_ p: UnsafePointer<UInt8>, _ n: Int, hash: UInt64) -> (start: Int, count: Int)? {
        var index = Int(truncatingIfNeeded: hash) & mask
        while true {
            let slot = slots[index]
            if slot.hash == 0 { return nil }
            if slot.hash == hash && Int(slot.keyLength) == n {
                if n == 0 || memcmpEqual(keys.base + Int(slot.keyStart), p, n) {
                    return (Int(slot.valueStart), Int(slot.valueCount))
                }
            }
            index = (index + 1) & mask
        }
    }

    func find(_ bytes: [UInt8]) -> (start: Int, count: Int)? {
        bytes.withUnsafeBufferPointer { buffer in
            let base = buffer.baseAddress ?? UnsafePointer(bitPattern: 1)!
            return find(base, buffer.count, hash: Self.hash(base, buffer.count))
        }
    }

    /// The value at `index` (a position from `find`).
    @inline(__always)
    func value(at index: Int) -> Int32 { values.base[index] }

    /// Appends stored values (from `find`) to `out`.
    @inline(__always)
    func appendValues(start: Int, count: Int, to out: inout [Int]) {
        let base = values.base
        for k in start..<(start + count) { out.append(Int(base[k])) }
    }

    /// Adds a key that is not in the table.
    func insert(_ p: UnsafePointer<UInt8>, _ n: Int, hash: UInt64, values newValues: UnsafeBufferPointer<Int32>) {
        if (count + 1) * 2 > mask + 1 { grow() }
        var slot = Slot(hash: hash, keyStart: Int32(keys.count), keyLength: Int32(n),
                        valueStart: Int32(values.count), valueCount: Int32(newValues.count))
        keys.append(p, n)
        if let base = newValues.baseAddress { values.append(base, newValues.count) }
        var index = Int(truncatingIfNeeded: hash) & mask
        while slots[index].hash != 0 { index = (index + 1) & mask }
        swap(&slots[index], &slot)
        count += 1
    }

    func insert(_ bytes: [UInt8], values newValues: [Int32]) {
        bytes.withUnsafeBufferPointer { key in
            newValues.withUnsafeBufferPointer { value in
                let base = key.baseAddress ?? UnsafePointer(bitPattern: 1)!
                insert(base, key.count, hash: Self.hash(base, key.count), values: value)
            }
        }
    }

    func removeAll() {
        slots.update(repeating: Slot(), count: mask + 1)
        keys.count = 0
        values.count = 0
        count = 0
    }

    private func grow() {
        let oldSize = mask + 1
        let old = slots
        let size = oldSize * 2
        slots = .allocate(capacity: size)
        slots.initialize(repeating: Slot(), count: size)
        mask = size - 1
        for i in 0..<oldSize where old[i].hash != 0 {
            var index = Int(truncatingIfNeeded: old[i].hash) & mask
            while slots[index].hash != 0 { index = (index + 1) & mask }
            slots[index] = old[i]
        }
        old.deallocate()
    }
}

@inline(__always)
private func memcmpEqual(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
    if n <= 8 {
        for i in 0..<n where a[i] != b[i] { return false }
        return true
    }
    return memcmp(a, b, n) == 0
}

/// A growable buffer of trivial values with a stable-for-reading base pointer (no
/// copy-on-write or exclusivity checks on the look-up path).
private struct Arena<Element> {
    private(set) var base: UnsafeMutablePointer<Element> = .allocate(capacity: 64)
    var count = 0
    private var capacity = 64

    mutating func append(_ p: UnsafePointer<Element>, _ n: Int) {
        if count + n > capacity {
            var newCapacity = capacity * 2
            while newCapacity < count + n { newCapacity *= 2 }
            let grown = UnsafeMutablePointer<Element>.allocate(capacity: newCapacity)
            grown.update(from: base, count: count)
            base.deallocate()
            base = grown
            capacity = newCapacity
        }
        (base + count).update(from: p, count: n)
        count += n
    }

    func deallocate() { base.deallocate() }
}
