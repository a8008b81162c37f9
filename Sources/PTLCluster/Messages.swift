import Foundation
import PTLFormats
import PTLTensor

/// Builders for the envelopes both sides send.
public enum Messages {
    public static func envelope(_ type: Ptl_V1_MessageType, run: String = "") -> Ptl_V1_Envelope {
        var e = Ptl_V1_Envelope()
        e.type = type
        e.runID = run
        e.sentUnixMs = UInt64(Date().timeIntervalSince1970 * 1000)
        return e
    }

    public static func ready(workerID: String, threads: Int, cachedModel: String = "") -> WireMessage {
        var e = envelope(.ready)
        var r = Ptl_V1_Ready()
        r.workerID = workerID
        r.threads = UInt32(threads)
        r.version = "ptl 0.1"
        r.capabilities = capabilities.map(\.name)
        r.cachedModelHash = cachedModel
        r.bf16 = bf16Capability
        r.fingerprint = numericFingerprint
        e.ready = r
        return WireMessage(envelope: e)
    }

    /// The kernels this process's numbers come from: OpenBLAS's core (fp32 products; set by the
    /// CPU or OPENBLAS_CORETYPE) and oneDNN's ISA (bf16 products). Two workers with the same
    /// fingerprint compute a shard to the same bits; different ones may not.
    public static var numericFingerprint: String { "openblas \(ComputeThreads.blasCoreName); \(bf16Capability)" }

    /// What this machine offers bf16 tasks: oneDNN's version and ISA, and whether bf16 products
    /// run (else bf16 tasks compute fp32).
    public static var bf16Capability: String {
        "\(BF16Support.summary)\(BF16Support.available ? "" : ", bf16 tasks run fp32")"
    }

    /// The phases a worker runs (`GradPhase.handler()`), announced in READY.
    public static let capabilities: [Ptl_V1_Phase] = [.stats, .grad, .eval, .trace, .rollout]

    public static func heartbeat() -> WireMessage {
        var e = envelope(.heartbeat)
        e.heartbeat = Ptl_V1_Heartbeat()
        return WireMessage(envelope: e)
    }

    /// The worker's answer to a task that arrives while it still computes another.
    public static func busy(_ key: Ptl_V1_TaskKey) -> WireMessage {
        var e = envelope(.busy, run: key.run)
        e.task = key
        return WireMessage(envelope: e)
    }

    public static func error(_ key: Ptl_V1_TaskKey?, _ message: String, retryable: Bool = true) -> WireMessage {
        var e = envelope(.error)
        if let key { e.task = key }
        var err = Ptl_V1_Error()
        err.message = message
        err.retryable = retryable
        e.error = err
        return WireMessage(envelope: e)
    }
}

/// Content hash of a model version (config + weights), hex: FNV-1a 64 of the config mixed with
/// the weights' CRC-32C (hardware speed: the coordinator hashes every step's version) and count.
/// Whether `s` is a hash `modelHash` can produce (1 to 16 lowercase hex digits): hashes name
/// files in a worker's cache, so nothing else may become part of a path.
public func isModelHash(_ s: String) -> Bool {
    !s.isEmpty && s.utf8.count <= 16 && s.utf8.allSatisfy { (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }
}

public func modelHash(configJSON: String, weights: UnsafeBufferPointer<Float>) -> String {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in configJSON.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
    let crc = CRC32C.checksum(UnsafeRawBufferPointer(weights))
    h = (h ^ UInt64(crc)) &* 0x100_0000_01B3
    h = (h ^ UInt64(weights.count)) &* 0x100_0000_01B3
    return String(h, radix: 16)
}
