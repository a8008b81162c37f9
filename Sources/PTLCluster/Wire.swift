import CPTLKernels
import Foundation
import PTLFormats
import PTLTensor
import SwiftProtobuf

/// A tensor travelling as one raw little-endian frame after the envelope.
public struct WireTensor: Sendable, Equatable {
    public var name: String
    public var dtype: Ptl_V1_DType
    public var shape: [Int]
    /// The frame's bytes: an array, a buffer sent in place, or a received message.
    public var frame: Frame

    public init(name: String, dtype: Ptl_V1_DType, shape: [Int], frame: Frame) {
        self.name = name; self.dtype = dtype; self.shape = shape; self.frame = frame
    }

    public init(name: String, dtype: Ptl_V1_DType, shape: [Int], bytes: [UInt8]) {
        self.init(name: name, dtype: dtype, shape: shape, frame: Frame(bytes))
    }

    /// An fp32 tensor.
    public init(name: String, shape: [Int], floats: [Float]) {
        precondition(shape.reduce(1, *) == floats.count)
        self.init(name: name, dtype: .f32, shape: shape, bytes: floats.withUnsafeBytes { Array($0) })
    }

    /// An fp32 tensor whose frame is `buffer` itself (the sender must not change it until
    /// ZeroMQ lets it go: see `ShardCompute.gradientBuffer`).
    public init(name: String, buffer: FloatBuffer) {
        self.init(name: name, dtype: .f32, shape: [buffer.count], frame: Frame(buffer))
    }

    /// The bytes as an array (a copy unless the frame is one).
    public var bytes: [UInt8] {
        get { frame.array }
        set { frame = Frame(newValue) }
    }

    public var byteCount: Int { frame.count }

    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try frame.withBytes(body) }

    /// The values of an F32 frame.
    public var floats: [Float]? {
        guard dtype == .f32, byteCount % 4 == 0 else { return nil }
        let n = byteCount / 4
        return [Float](unsafeUninitializedCapacity: n) { out, count in
            withBytes { raw in
                if n > 0 { UnsafeMutableRawPointer(out.baseAddress!).copyMemory(from: raw.baseAddress!, byteCount: 4 * n) }
            }
            count = n
        }
    }

    /// The values of a frame of fixed-size elements (I32, I64, F64 …), read unaligned.
    public func values<T>(_ type: T.Type) -> [T] {
        withBytes { r in (0..<(r.count / MemoryLayout<T>.size)).map { r.loadUnaligned(fromByteOffset: MemoryLayout<T>.size * $0, as: T.self) } }
    }

    public static func == (a: WireTensor, b: WireTensor) -> Bool {
        a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.withBytes { x in b.withBytes { y in x.elementsEqual(y) } }
    }
}

/// Why a message was rejected (logged with the sender and counted; never fatal).
public struct WireError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Kind: String, Sendable {
        case malformedEnvelope = "malformed_envelope", wrongVersion = "wrong_version", unknownType = "unknown_type"
        case descriptorMismatch = "descriptor_mismatch", checksum = "checksum", oversized = "oversized"
        case nonFinite = "non_finite"
    }
    public let kind: Kind
    public let message: String
    public var description: String { "\(kind.rawValue): \(message)" }
}

/// A decoded message: the envelope and its tensor frames, checked against their descriptors.
public struct WireMessage: Sendable {
    public var envelope: Ptl_V1_Envelope
    public var tensors: [WireTensor]

    public init(envelope: Ptl_V1_Envelope, tensors: [WireTensor] = []) {
        self.envelope = envelope
        self.tensors = tensors
    }

    public func tensor(_ name: String) -> WireTensor? { tensors.first { $0.name == name } }
}

/// Frames ↔ messages: frame 0 a protobuf `Envelope`, frames 1…n raw tensors, each described
/// (name, dtype, shape, byte length, CRC-32C) in the envelope.
public enum Wire {
    public static let protocolVersion = UInt32(Ptl_V1_ProtocolVersion.current.rawValue)

    static func elementSize(_ d: Ptl_V1_DType) -> Int? {
        switch d {
        case .f32, .i32: return 4
        case .bf16, .f16: return 2
        case .f64, .i64: return 8
        case .u8: return 1
        default: return nil
        }
    }

    /// The frames of `message`: the envelope gets the protocol version and a descriptor per tensor.
    public static func encode(_ message: WireMessage) throws -> [[UInt8]] {
        try frames(message).map(\.array)
    }

    /// The same frames for a socket: tensors are not copied (ZeroMQ sends large ones from
    /// where they are).
    public static func frames(_ message: WireMessage) throws -> [Frame] {
        try [Frame(envelope(message))] + message.tensors.map(\.frame)
    }

    static func envelope(_ message: WireMessage) throws -> [UInt8] {
        var env = message.envelope
        env.protocolVersion = protocolVersion
        env.tensors = message.tensors.map { t in
            var d = Ptl_V1_TensorDescriptor()
            d.name = t.name
            d.dtype = t.dtype
            d.shape = t.shape.map { UInt64($0) }
            d.byteLength = UInt64(t.byteCount)
            d.crc32C = t.withBytes { CRC32C.checksum($0) }
            return d
        }
        return try env.serializedBytes()
    }

    /// Limits on a tensor descriptor's shape (far above any real tensor; a frame is bounded by
    /// `maxTensorBytes` anyway): dimensions and the size of each.
    public static let maxDimensions = 8
    /// Tensor frames a message may carry (a model update has a few per layer).
    public static let maxTensors = 4096
    public static let maxDimension: UInt64 = 1 << 40

    /// Decodes and checks frames; `maxTensorBytes` bounds each frame.
    public static func decode(_ frames: [[UInt8]], maxTensorBytes: Int = 1 << 31, requireFinite: Bool = false,
                              maxEnvelopeBytes: Int = 64 << 20) throws -> WireMessage {
        try decode(frames: frames.map { Frame($0) }, maxTensorBytes: maxTensorBytes, requireFinite: requireFinite, maxEnvelopeBytes: maxEnvelopeBytes)
    }

    /// Decodes and checks frames as a socket received them (tensors keep their frames: no copy).
    public static func decode(frames: [Frame], maxTensorBytes: Int = 1 << 31, requireFinite: Bool = false,
                              maxEnvelopeBytes: Int = 64 << 20) throws -> WireMessage {
        // Bounded before anything is parsed: a flood of descriptors or a giant envelope costs
        // the sender, not this process's memory.
        guard let first = frames.first else { throw WireError(kind: .malformedEnvelope, message: "empty message") }
        guard first.count <= maxEnvelopeBytes else {
            throw WireError(kind: .oversized, message: "envelope of \(first.count) bytes > limit \(maxEnvelopeBytes)")
        }
        guard frames.count - 1 <= maxTensors else {
            throw WireError(kind: .oversized, message: "\(frames.count - 1) tensor frames > limit \(maxTensors)")
        }
        let head = first.array
        let env: Ptl_V1_Envelope
        do { env = try Ptl_V1_Envelope(serializedBytes: head) } catch {
            throw WireError(kind: .malformedEnvelope, message: "frame 0 (\(head.count) bytes) is not an Envelope: \(error)")
        }
        // Checked before anything else is read: a peer of another version may mean other things
        // by the same fields and types (v1 said BUSY as an ERROR "busy" and kept measurements in step).
        guard env.protocolVersion == protocolVersion else {
            throw WireError(kind: .wrongVersion, message: "peer speaks protocol version \(env.protocolVersion), this build speaks \(protocolVersion): coordinator and workers must run the same protocol")
        }
        switch env.type {
        case .ready, .heartbeat, .task, .result, .error, .modelRequest, .modelResponse, .disconnect, .busy: break
        default: throw WireError(kind: .unknownType, message: "message type \(env.type.rawValue)")
        }
        guard env.tensors.count == frames.count - 1 else {
            throw WireError(kind: .descriptorMismatch, message: "\(env.tensors.count) descriptors for \(frames.count - 1) tensor frames")
        }
        var tensors: [WireTensor] = []
        for (d, frame) in zip(env.tensors, frames.dropFirst()) {
            let bytes = UnsafeRawBufferPointer(start: frame.count > 0 ? frame.base : nil, count: frame.count)   // held by `frames`
            guard bytes.count <= maxTensorBytes else {
                throw WireError(kind: .oversized, message: "tensor \(d.name): \(bytes.count) bytes > limit \(maxTensorBytes)")
            }
            guard let size = elementSize(d.dtype) else {
                throw WireError(kind: .descriptorMismatch, message: "tensor \(d.name): unknown dtype \(d.dtype.rawValue)")
            }
            // Every product checked: a shape like [2^62] or [2^63, 0] from a hostile peer is an
            // error, never an overflow trap or a negative Int.
            guard d.shape.count <= maxDimensions, d.shape.allSatisfy({ $0 <= maxDimension }) else {
                throw WireError(kind: .descriptorMismatch, message: "tensor \(d.name): shape \(d.shape.prefix(maxDimensions + 1)) has more than \(maxDimensions) dimensions or one above \(maxDimension)")
            }
            var count: UInt64 = 1
            var overflow = false
            for dim in d.shape where !overflow { (count, overflow) = count.multipliedReportingOverflow(by: dim) }
            let (needed, tooBig) = count.multipliedReportingOverflow(by: UInt64(size))
            guard !overflow, !tooBig, d.byteLength == UInt64(bytes.count), needed == d.byteLength else {
                throw WireError(kind: .descriptorMismatch, message: "tensor \(d.name): frame has \(bytes.count) bytes, descriptor says \(d.byteLength) for shape \(d.shape) of \(d.dtype)")
            }
            // fp32 frames that must be finite: checksum and finiteness in one pass.
            var bad = Int.max
            let crc: UInt32
            if requireFinite, d.dtype == .f32, bytes.count >= 4 {
                var first = 0
                crc = ptl_crc32c_finite_f32(bytes.baseAddress!, bytes.count / 4, &first)
                bad = first < bytes.count / 4 ? first : .max
            } else {
                crc = CRC32C.checksum(bytes)
            }
            guard crc == d.crc32C else {
                throw WireError(kind: .checksum, message: "tensor \(d.name): CRC-32C mismatch")
            }
            if bad != .max {
                let v = bytes.loadUnaligned(fromByteOffset: 4 * bad, as: Float.self)
                throw WireError(kind: .nonFinite, message: "tensor \(d.name): non-finite value \(v) at index \(bad)")
            }
            let t = WireTensor(name: d.name, dtype: d.dtype, shape: d.shape.map { Int($0) }, frame: frame)
            tensors.append(t)
        }
        return WireMessage(envelope: env, tensors: tensors)
    }
}
