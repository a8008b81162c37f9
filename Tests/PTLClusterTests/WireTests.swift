import CPTLKernels
import Foundation
import PTLFormats
import PTLLoop
import Testing
import PTLTestSupport
@testable import PTLCluster


func sampleResult() -> WireMessage {
    var env = Ptl_V1_Envelope()
    env.type = .result
    env.runID = "run-7"
    var key = Ptl_V1_TaskKey()
    key.run = "run-7"; key.round = 2; key.phase = .grad; key.step = 41; key.shard = 5; key.attempt = 1
    env.task = key
    var r = Ptl_V1_Result()
    r.lossSum = 12.5
    r.tokenCount = 300
    env.result = r
    return WireMessage(envelope: env, tensors: [
        WireTensor(name: "grad", shape: [2, 3], floats: [1, -2, 3.5, 0, 1e-8, -7]),
        WireTensor(name: "mask", dtype: .u8, shape: [4], bytes: [1, 0, 1, 1]),
    ])
}

@Suite struct WireTests {
    @Test func crc32cMatchesTheStandardCheckValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([]) == 0)
        let long = (0..<10_000).map { UInt8($0 % 256) }
        let split = long.withUnsafeBytes { raw in CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[5000...]), crc: CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[..<5000]))) }
        #expect(split == CRC32C.checksum(long))
        // The hardware path agrees with the tables at every length and alignment.
        long.withUnsafeBytes { raw in
            for start in 0..<9 {
                for n in [0, 1, 7, 8, 9, 63, 4097] {
                    let part = UnsafeRawBufferPointer(rebasing: raw[start..<(start + n)])
                    #expect(CRC32C.checksum(part, crc: 0x1234_5678) == ptl_crc32c_portable(0x1234_5678, part.baseAddress, n))
                }
            }
        }
    }

    @Test func roundTripsEnvelopeAndRawTensorFrames() throws {
        let frames = try Wire.encode(sampleResult())
        #expect(frames.count == 3)
        #expect(frames[1].count == 24 && frames[2] == [1, 0, 1, 1])   // raw, not re-encoded
        let back = try Wire.decode(frames, requireFinite: true)
        #expect(back.envelope.type == .result && back.envelope.task.step == 41 && back.envelope.result.tokenCount == 300)
        #expect(back.tensor("grad")?.floats == [1, -2, 3.5, 0, 1e-8, -7])
        #expect(back.envelope.tensors[0].crc32C == CRC32C.checksum(frames[1]))
    }

    /// BUSY is a message type carrying the refused task's key: no body, no magic string.
    @Test func roundTripsBusy() throws {
        var key = Ptl_V1_TaskKey()
        key.run = "run-7"; key.round = 3; key.phase = .grad; key.step = 12; key.shard = 1; key.attempt = 4
        let frames = try Wire.encode(Messages.busy(key))
        #expect(frames.count == 1)
        let back = try Wire.decode(frames)
        #expect(back.envelope.type == .busy && back.envelope.task == key && back.envelope.runID == "run-7")
        #expect(back.envelope.body == nil)
    }

    /// A measurement travels in its own TaskKey field, not folded into `step`; it is part of the
    /// task's identity and of its log metadata.
    @Test func roundTripsAMeasurementKey() throws {
        var m = sampleResult()
        m.envelope.task.phase = .stats; m.envelope.task.step = 0; m.envelope.task.measurement = 12
        let back = try Wire.decode(try Wire.encode(m))
        #expect(back.envelope.task == m.envelope.task && back.envelope.task.measurement == 12 && back.envelope.task.step == 0)
        #expect(TaskID(back.envelope.task).description == "run-7/r2/p1/s0/m12/shard5")
        var grpo = back.envelope.task
        grpo.measurement = ClusterBackend.grpoGradientMeasurement
        #expect(TaskID(grpo).description == "run-7/r2/p1/s0/mgrad/shard5")
        #expect(back.envelope.task.logMetadata["measurement"] == "12")
    }

    /// READY names the phases the worker's handler runs (it said "grad" only).
    @Test func readyListsThePhasesAWorkerRuns() throws {
        let back = try Wire.decode(try Wire.encode(Messages.ready(workerID: "w", threads: 2)))
        #expect(back.envelope.ready.capabilities == ["stats", "grad", "eval", "trace", "rollout"])
    }

    /// A v1 peer (BUSY as ERROR "busy", measurements in step) or v2 peer (which would ignore a
    /// distillation teacher) is refused before anything else is read, with both versions in the
    /// message; so is an envelope without a version.
    @Test func rejectsOlderVersionEnvelopes() throws {
        #expect(Wire.protocolVersion == 3)
        var v2 = Messages.heartbeat().envelope
        v2.protocolVersion = 2
        #expect(throws: WireError(kind: .wrongVersion, message: "peer speaks protocol version 2, this build speaks 3: coordinator and workers must run the same protocol")) {
            try Wire.decode([try v2.serializedBytes()])
        }
        var v1 = Messages.error(sampleResult().envelope.task, "busy").envelope
        v1.protocolVersion = 1
        #expect(throws: WireError(kind: .wrongVersion, message: "peer speaks protocol version 1, this build speaks 3: coordinator and workers must run the same protocol")) {
            try Wire.decode([try v1.serializedBytes()])
        }
        var none = Messages.heartbeat().envelope                     // never stamped: version 0
        none.protocolVersion = 0
        #expect(throws: WireError(kind: .wrongVersion, message: "peer speaks protocol version 0, this build speaks 3: coordinator and workers must run the same protocol")) {
            try Wire.decode([try none.serializedBytes()])
        }
    }

    @Test func rejectsEveryKindOfBadMessage() throws {
        let good = try Wire.encode(sampleResult())
        func kind(_ frames: [[UInt8]], requireFinite: Bool = false, max: Int = 1 << 20) -> WireError.Kind? {
            do { _ = try Wire.decode(frames, maxTensorBytes: max, requireFinite: requireFinite); return nil } catch let e as WireError { return e.kind } catch { return nil }
        }
        #expect(kind([[0xFF, 0xFF, 0xFF]]) == .malformedEnvelope)
        #expect(kind([]) == .malformedEnvelope)
        var env = try Ptl_V1_Envelope(serializedBytes: good[0])
        env.protocolVersion = 99
        #expect(kind([try env.serializedBytes()] + good.dropFirst()) == .wrongVersion)
        env = try Ptl_V1_Envelope(serializedBytes: good[0])
        env.type = Ptl_V1_MessageType(rawValue: 42)!
        #expect(kind([try env.serializedBytes()] + good.dropFirst()) == .unknownType)
        #expect(kind(Array(good.prefix(2))) == .descriptorMismatch)                 // a frame missing
        #expect(kind([good[0], Array(good[1].prefix(20)), good[2]]) == .descriptorMismatch)
        var flipped = good
        flipped[1][3] ^= 0x10
        #expect(kind(flipped) == .checksum)
        #expect(kind(good, max: 8) == .oversized)
        var nan = sampleResult()
        nan.tensors[0] = WireTensor(name: "grad", shape: [2], floats: [1, .nan])
        #expect(kind(try Wire.encode(nan), requireFinite: true) == .nonFinite)
        #expect(kind(try Wire.encode(nan), requireFinite: false) == nil)
    }

    @Test func aCProgramDecodesOurEnvelope() throws {
        // protoc-c compiles the same schema; a 40-line C program reads what we wrote.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ptl-c-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        func run(_ args: [String], cwd: URL? = nil) throws -> (Int32, String) {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            p.arguments = args
            if let cwd { p.currentDirectoryURL = cwd }
            let pipe = Pipe()
            p.standardOutput = pipe
            p.standardError = pipe
            try p.run()
            let out = pipe.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            return (p.terminationStatus, String(decoding: out, as: UTF8.self))
        }
        let proto = packageRoot.appendingPathComponent("Proto")
        let gen = try run(["protoc-c", "--proto_path=\(proto.path)", "--c_out=\(dir.path)", proto.appendingPathComponent("ptl.proto").path])
        #expect(gen.0 == 0, "protoc-c: \(gen.1) (install protobuf-c-compiler libprotobuf-c-dev: scripts/setup.sh)")
        let source = packageRoot.appendingPathComponent("Tests/Fixtures/c/decode_envelope.c").path
        let cc = try run(["cc", "-O1", "-I", dir.path, source, dir.appendingPathComponent("ptl.pb-c.c").path, "-lprotobuf-c",
                          "-o", dir.appendingPathComponent("decode").path])
        #expect(cc.0 == 0, "cc: \(cc.1)")
        let frames = try Wire.encode(sampleResult())
        try Data(frames[0]).write(to: dir.appendingPathComponent("envelope.bin"))
        let (status, out) = try run([dir.appendingPathComponent("decode").path, dir.appendingPathComponent("envelope.bin").path])
        #expect(status == 0, "\(out)")
        #expect(out.contains("version 3 type 4 run run-7"))
        #expect(out.contains("task round 2 phase 2 step 41 measurement 0 shard 5 attempt 1"))
        // A BUSY of a measurement task: the new type and field as a C peer sees them.
        var key = sampleResult().envelope.task
        key.phase = .stats; key.step = 0; key.measurement = 3
        try Data(try Wire.encode(Messages.busy(key))[0]).write(to: dir.appendingPathComponent("busy.bin"))
        let busy = try run([dir.appendingPathComponent("decode").path, dir.appendingPathComponent("busy.bin").path])
        #expect(busy.0 == 0 && busy.1.contains("type 9 run run-7"), "\(busy.1)")
        #expect(busy.1.contains("task round 2 phase 1 step 0 measurement 3 shard 5 attempt 1"), "\(busy.1)")
        #expect(out.contains("tensor grad dtype 1 bytes 24 crc32c \(CRC32C.checksum(frames[1])) shape 2 3"))
        #expect(out.contains("result loss_sum 12.500000 tokens 300"))
    }
}
