import Foundation
import Logging
import PTLLoop
import PTLTensor

/// Fault injection (the chaos soak, `ptl-worker --fault-flood N`): a fake peer that connects to a
/// coordinator and sends `count` seeded garbage messages, then leaves. The first half comes from
/// a stranger (never registered); then it registers with a READY of this machine's kernels (so
/// the rest is decoded, not just dropped unread) and sends the second half, and says DISCONNECT
/// so a task leased to it meanwhile goes back to the queue at once. It never reads an answer, so
/// any task key it names is one no lease of it holds. The same seed sends the same bytes (apart
/// from the envelopes' send times).
public enum GarbageFlood {
    public enum Kind: String, CaseIterable, Sendable {
        /// 1–4 frames of random bytes.
        case raw
        /// A well-formed message (RESULT, ERROR, BUSY, READY) with its envelope cut short or its tensor frames missing.
        case truncated = "truncated-envelope"
        /// A RESULT envelope with a plausible task key and junk tensors: descriptors that disagree
        /// with their frames (length, CRC, shape), huge or many dimensions, NaN/Inf, unknown dtypes.
        case junkTensors = "junk-tensors"
        /// Other envelopes: ERROR/BUSY for tasks it does not hold, another protocol version, model requests for unknown hashes.
        case foreign
    }

    /// Sends the flood; returns how many messages of each kind went out.
    @discardableResult
    public static func run(endpoint: String, context: ZMQContext, id: String, count: Int, seed: UInt64,
                           logger: Logger = .silent) throws -> [Kind: Int] {
        var rng = SplitMix64(seed: seed ^ 0x666C_6F6F_64)
        let socket = try ZMQSocket(context: context, type: .dealer)
        try socket.setRoutingID(Array(id.utf8))
        try socket.setLinger(milliseconds: 5000)   // the queue leaves before the process does
        try socket.connect(endpoint)
        var sent: [Kind: Int] = [:]
        func send(_ frames: [[UInt8]]) throws {
            // Non-blocking with retries: a full queue (the coordinator reads a batch a turn) waits.
            for attempt in 0..<500 {
                do { try socket.send(frames, dontWait: true); return } catch let e as ZMQError where e.code == EAGAIN && attempt < 499 {
                    usleep(10_000)
                }
            }
        }
        for i in 0..<count {
            if i == count / 2 { try send(try Wire.encode(Messages.ready(workerID: id, threads: 1))) }
            let kind = Kind.allCases[Int(rng.next() % UInt64(Kind.allCases.count))]
            try send(message(kind, &rng))
            sent[kind, default: 0] += 1
            if i % 64 == 63 { usleep(2_000) }
        }
        try send(try Wire.encode(WireMessage(envelope: Messages.envelope(.disconnect))))
        let kinds = Kind.allCases.map { "\($0.rawValue) \(sent[$0, default: 0])" }.joined(separator: ", ")
        logger.notice("fault injection: flooded \(endpoint) with \(count) garbage messages as \(id): \(kinds)")
        return sent
    }

    static func bytes(_ n: Int, _ rng: inout SplitMix64) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }

    static func taskKey(_ rng: inout SplitMix64) -> Ptl_V1_TaskKey {
        var k = Ptl_V1_TaskKey()
        k.run = ["run", "", "train", String(decoding: bytes(8, &rng).map { 0x61 + $0 % 26 }, as: UTF8.self)][Int(rng.next() % 4)]
        k.phase = [.grad, .stats, .eval, .trace][Int(rng.next() % 4)]
        k.round = UInt32(rng.next() % 4)
        k.step = rng.next() % 3 == 0 ? rng.next() : rng.next() % 64
        k.shard = UInt32(truncatingIfNeeded: rng.next() % 3 == 0 ? rng.next() : rng.next() % 8)
        k.attempt = UInt32(truncatingIfNeeded: rng.next())
        return k
    }

    static func message(_ kind: Kind, _ rng: inout SplitMix64) throws -> [[UInt8]] {
        switch kind {
        case .raw:
            return (0...(rng.next() % 4)).map { _ in bytes(Int(rng.next() % 512), &rng) }
        case .truncated:
            var e = Messages.envelope([.result, .error, .busy, .ready][Int(rng.next() % 4)])
            e.task = taskKey(&rng)
            let good = try Wire.encode(WireMessage(envelope: e, tensors: [WireTensor(name: "grad", shape: [16], floats: (0..<16).map { Float($0) })]))
            if rng.next() % 2 == 0 { return [Array(good[0].prefix(Int(rng.next() % UInt64(max(1, good[0].count)))))] + good.dropFirst() }
            return [good[0]]                                            // the tensor frame missing
        case .junkTensors:
            var e = Messages.envelope(.result)
            e.task = taskKey(&rng)
            e.result.tokenCount = rng.next() % 2 == 0 ? rng.next() : rng.next() % 1000
            e.result.lossSum = [Double.nan, .infinity, -1e308, 3.5][Int(rng.next() % 4)]
            let n = Int(rng.next() % 64)
            var values = (0..<n).map { _ in Float(bitPattern: UInt32(truncatingIfNeeded: rng.next())) }   // NaNs and Infs among them
            if n > 0 && rng.next() % 2 == 0 { values[0] = .nan }
            var frames = try Wire.encode(WireMessage(envelope: e, tensors: [WireTensor(name: "grad", shape: [n], floats: values)]))
            var env = try Ptl_V1_Envelope(serializedBytes: frames[0])
            switch rng.next() % 6 {
            case 0: env.tensors[0].byteLength = rng.next()              // the length disagrees with the frame
            case 1: env.tensors[0].crc32C ^= 1                           // the frame fails its checksum
            case 2: env.tensors[0].shape = [1 << 62]                     // a count that overflows a byte size
            case 3: env.tensors[0].shape = (0..<16).map { _ in rng.next() }   // many and huge dimensions
            case 4: env.tensors[0].dtype = Ptl_V1_DType(rawValue: Int(rng.next() % 1000)) ?? .f64
            default: break                                               // well-formed, for a task nobody leased it (NaNs inside)
            }
            frames[0] = try env.serializedBytes()
            return frames
        case .foreign:
            switch rng.next() % 4 {
            case 0: return try Wire.encode(Messages.error(taskKey(&rng), "garbage: \(rng.next())"))
            case 1: return try Wire.encode(Messages.busy(taskKey(&rng)))
            case 2:
                var frames = try Wire.encode(Messages.heartbeat())
                var env = try Ptl_V1_Envelope(serializedBytes: frames[0])
                env.protocolVersion = UInt32(truncatingIfNeeded: rng.next() % 1000 + 2)
                frames[0] = try env.serializedBytes()
                return frames
            default:
                var e = Messages.envelope(.modelRequest)
                e.modelRequest.modelHash = String(rng.next(), radix: 16)
                return try Wire.encode(WireMessage(envelope: e))
            }
        }
    }
}
