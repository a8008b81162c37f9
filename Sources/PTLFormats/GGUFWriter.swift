import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A metadata value to write, with the exact GGUF type llama.cpp expects for its key (llama.cpp
/// refuses, e.g., a `block_count` stored as u64 where it reads u32).
public enum GGUFWriteValue: Sendable, Equatable {
    case u32(UInt32), i32(Int32), u64(UInt64), f32(Float), bool(Bool), string(String)
    case strings([String]), i32s([Int32]), f32s([Float])
}

/// Writes a GGUF v3 file: metadata in the order added, a tensor index, and each tensor's data
/// aligned to `alignment`. Tensors are produced one at a time by their `encode` closures, so a
/// model is never held twice in memory. The file is written beside its final name and renamed
/// into place only when complete: a failure (an unwritable directory, a full disk, a file-size
/// limit) throws one error naming the path and leaves nothing under the final name.
public struct GGUFWriter {
    public struct Tensor {
        public let name: String
        /// The PyTorch/HF shape (row-major; the last dimension is the row ggml blocks run along).
        public let shape: [Int]
        public let type: GGMLType
        /// Fills exactly `byteCount` bytes with the tensor's data in `type`.
        public let encode: (UnsafeMutableRawBufferPointer) throws -> Void
        public var elementCount: Int { shape.reduce(1, *) }
        public var byteCount: Int { GGMLQuantizer.byteCount(type, elements: elementCount) }

        public init(name: String, shape: [Int], type: GGMLType, encode: @escaping (UnsafeMutableRawBufferPointer) throws -> Void) {
            self.name = name
            self.shape = shape
            self.type = type
            self.encode = encode
        }
    }

    public let alignment: Int
    public private(set) var metadata: [(key: String, value: GGUFWriteValue)] = []
    public private(set) var tensors: [Tensor] = []

    public init(alignment: Int = 32) {
        self.alignment = alignment
    }

    public mutating func add(_ key: String, _ value: GGUFWriteValue) {
        if let i = metadata.firstIndex(where: { $0.key == key }) { metadata[i].value = value } else { metadata.append((key, value)) }
    }

    public mutating func add(_ tensor: Tensor) throws {
        guard !tensors.contains(where: { $0.name == tensor.name }) else {
            throw GGUFError(.invalidTensor, "tensor \(tensor.name) added twice")
        }
        guard (1...GGUFFile.maxDimensions).contains(tensor.shape.count), tensor.shape.allSatisfy({ $0 > 0 }) else {
            throw GGUFError(.invalidTensor, "tensor \(tensor.name) has shape \(tensor.shape): expected 1 to \(GGUFFile.maxDimensions) positive dimensions")
        }
        guard GGMLQuantizer.writable.contains(tensor.type) else {
            throw GGUFError(.unsupportedType, "tensor \(tensor.name): \(tensor.type.name) is not a type this writer produces")
        }
        let row = tensor.shape.last!, block = tensor.type.block.elements
        guard row % block == 0 else {
            throw GGUFError(.invalidTensor, "tensor \(tensor.name): row length \(row) is not a multiple of the \(tensor.type.name) block (\(block))")
        }
        tensors.append(tensor)
    }

    /// Writes the file to `path` (through `path.tmp-<pid>`, renamed into place when complete).
    /// Returns the number of bytes written.
    @discardableResult
    public func write(to path: String) throws -> Int {
        // A process over its file-size limit gets SIGXFSZ, whose default is to die; ignored, the
        // write fails with EFBIG, which is reported like a full disk.
        signal(SIGXFSZ, SIG_IGN)
        let temp = path + ".tmp-\(getpid())"
        let fd = open(temp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw GGUFError(.unwritableFile, "\(path): cannot create \(temp) (\(String(cString: strerror(errno))))")
        }
        var closed = false
        do {
            defer { if !closed { close(fd) } }
            var out = FileOutput(fd: fd, path: path)
            try writeContents(&out)
            try out.flush()
            guard fsync(fd) == 0 else { throw GGUFError(.unwritableFile, "\(path): cannot sync (\(String(cString: strerror(errno))))") }
            closed = true
            guard close(fd) == 0 else { throw GGUFError(.unwritableFile, "\(path): cannot close (\(String(cString: strerror(errno))))") }
            guard rename(temp, path) == 0 else {
                throw GGUFError(.unwritableFile, "\(path): cannot rename \(temp) into place (\(String(cString: strerror(errno))))")
            }
            return out.written
        } catch {
            unlink(temp)
            throw error
        }
    }

    /// The byte layout: header, metadata, tensor index, padding, then each tensor's data at an
    /// aligned offset from the data section's start.
    func writeContents(_ out: inout FileOutput) throws {
        out.u32(0x4655_4747)            // "GGUF"
        out.u32(3)
        out.u64(UInt64(tensors.count))
        out.u64(UInt64(metadata.count))
        for (key, value) in metadata {
            out.string(key)
            switch value {
            case .u32(let v): out.u32(4); out.u32(v)
            case .i32(let v): out.u32(5); out.u32(UInt32(bitPattern: v))
            case .u64(let v): out.u32(10); out.u64(v)
            case .f32(let v): out.u32(6); out.u32(v.bitPattern)
            case .bool(let v): out.u32(7); out.bytes([v ? 1 : 0])
            case .string(let s): out.u32(8); out.string(s)
            case .strings(let a): out.u32(9); out.u32(8); out.u64(UInt64(a.count)); for s in a { out.string(s) }
            case .i32s(let a): out.u32(9); out.u32(5); out.u64(UInt64(a.count)); for v in a { out.u32(UInt32(bitPattern: v)) }
            case .f32s(let a): out.u32(9); out.u32(6); out.u64(UInt64(a.count)); for v in a { out.u32(v.bitPattern) }
            }
            try out.drain()
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            out.string(t.name)
            out.u32(UInt32(t.shape.count))
            for d in t.shape.reversed() { out.u64(UInt64(d)) }
            out.u32(t.type.rawValue)
            out.u64(UInt64(offset))
            offsets.append(offset)
            offset = (offset + t.byteCount + alignment - 1) / alignment * alignment
        }
        out.pad(to: alignment)
        let dataStart = out.written + out.pending
        var scratch = [UInt8]()
        for (t, at) in zip(tensors, offsets) {
            out.pad(to: alignment)
            let position = out.written + out.pending - dataStart
            guard position == at else {
                throw GGUFError(.invalidTensor, "tensor \(t.name): data at \(position), index says \(at)")   // a writer bug, never user input
            }
            try out.drain()
            if scratch.count < t.byteCount { scratch = [UInt8](repeating: 0, count: t.byteCount) }
            try scratch.withUnsafeMutableBytes { buf in
                let region = UnsafeMutableRawBufferPointer(rebasing: buf[0..<t.byteCount])
                try t.encode(region)
                try out.writeDirect(UnsafeRawBufferPointer(region))
            }
        }
        out.pad(to: alignment)
    }
}

/// Buffered little-endian output to a file descriptor; every failed write throws naming the path
/// and the system's reason (ENOSPC, EFBIG, EIO…).
struct FileOutput {
    let fd: Int32
    let path: String
    var buffer: [UInt8] = []
    var written = 0
    var pending: Int { buffer.count }

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
        buffer.reserveCapacity(1 << 20)
    }

    mutating func bytes(_ b: [UInt8]) { buffer.append(contentsOf: b) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { buffer.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { buffer.append(contentsOf: $0) } }
    mutating func string(_ s: String) {
        let utf8 = Array(s.utf8)
        u64(UInt64(utf8.count))
        buffer.append(contentsOf: utf8)
    }
    mutating func pad(to alignment: Int) {
        let total = written + buffer.count
        let padded = (total + alignment - 1) / alignment * alignment
        buffer.append(contentsOf: repeatElement(0, count: padded - total))
    }
    /// Writes the buffer once it holds a megabyte (header building stays cheap).
    mutating func drain() throws { if buffer.count >= 1 << 20 { try flush() } }
    mutating func flush() throws {
        let b = buffer
        buffer.removeAll(keepingCapacity: true)
        try b.withUnsafeBytes { try writeDirect($0) }
    }
    mutating func writeDirect(_ data: UnsafeRawBufferPointer) throws {
        if !buffer.isEmpty { try flush() }
        var done = 0
        while done < data.count {
            let n = Glibc.write(fd, data.baseAddress! + done, data.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw GGUFError(.unwritableFile, "\(path): write failed after \(written + done) bytes (\(String(cString: strerror(errno))))")
            }
            if n == 0 { throw GGUFError(.unwritableFile, "\(path): write made no progress after \(written + done) bytes") }
            done += n
        }
        written += data.count
    }
}
