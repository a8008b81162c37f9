import Foundation
import PTLModel

/// The `stats` phase: activation statistics and layer scores of a model over calibration
/// shards, added up in shard order (bit-identical for any number of workers).
public enum StatsPhase {
    static func f64(_ name: String, _ xs: [Double]) -> WireTensor {
        WireTensor(name: name, dtype: .f64, shape: [xs.count], bytes: xs.withUnsafeBytes { Array($0) })
    }

    static func doubles(_ t: WireTensor?) throws -> [Double] {
        guard let t, t.dtype == .f64 else { throw WireError(kind: .descriptorMismatch, message: "stats result lacks an F64 tensor") }
        return t.values(Double.self)
    }

    /// Statistics as tensor frames.
    public static func encode(_ s: ActivationStatistics) -> [WireTensor] {
        [f64("abs_sum", s.absSum), f64("square_sum", s.squareSum),
         WireTensor(name: "max_abs", shape: [s.maxAbs.count], floats: s.maxAbs),
         f64("delta_norm_sum", s.deltaNormSum), f64("input_norm_sum", s.inputNormSum), f64("cosine_distance_sum", s.cosineDistanceSum)]
    }

    static func decode(_ m: WireMessage, layers: Int, intermediate: Int) throws -> ActivationStatistics {
        var s = ActivationStatistics(layers: layers, intermediate: intermediate)
        s.tokens = Int(m.envelope.result.tokenCount)
        s.absSum = try doubles(m.tensor("abs_sum"))
        s.squareSum = try doubles(m.tensor("square_sum"))
        guard let mx = m.tensor("max_abs")?.floats else { throw WireError(kind: .descriptorMismatch, message: "stats result lacks max_abs") }
        s.maxAbs = mx
        s.deltaNormSum = try doubles(m.tensor("delta_norm_sum"))
        s.inputNormSum = try doubles(m.tensor("input_norm_sum"))
        s.cosineDistanceSum = try doubles(m.tensor("cosine_distance_sum"))
        guard s.absSum.count == layers * intermediate, s.squareSum.count == s.absSum.count, s.maxAbs.count == s.absSum.count,
              s.deltaNormSum.count == layers, s.inputNormSum.count == layers, s.cosineDistanceSum.count == layers else {
            throw WireError(kind: .descriptorMismatch, message: "stats result has the wrong sizes")
        }
        return s
    }

    /// Runs the phase over `sequences` cut into `shards` contiguous shards.
    public static func run(coordinator: Coordinator, model: Model, sequences: [[Int]], shards: Int,
                           run: String = "run", round: UInt32 = 0) throws -> ActivationStatistics {
        try measure(coordinator: coordinator, model: model, sequences: sequences, shards: shards, run: run, round: round).statistics
    }

    /// The statistics and the mean next-token loss (nats/token) of `sequences`; `branchScale`
    /// (one value per block) scales the blocks' branches as in tuning. `measurement` (the task
    /// keys' field) tells apart several measurements within one round.
    public static func measure(coordinator: Coordinator, model: Model, sequences: [[Int]], shards: Int, run: String = "run",
                               round: UInt32 = 0, measurement: UInt64 = 0, branchScale: [Float]? = nil)
        throws -> (statistics: ActivationStatistics, loss: Double) {
        let hash = GradPhase.publish(model, on: coordinator)
        let extra = branchScale.map { [WireTensor(name: "branch_scale", shape: [$0.count], floats: $0)] } ?? []
        let longest = sequences.map(\.count).max() ?? 0
        var tasks: [(key: Ptl_V1_TaskKey, spec: Ptl_V1_Task, inputs: [WireTensor])] = []
        for s in 0..<shards {
            let part = Array(sequences[(s * sequences.count / shards)..<((s + 1) * sequences.count / shards)])
            var key = Ptl_V1_TaskKey()
            key.run = run; key.round = round; key.measurement = measurement; key.phase = .stats; key.shard = UInt32(s)
            var spec = Ptl_V1_Task()
            spec.modelHash = hash
            spec.batchSize = UInt32(part.count)
            spec.seqLen = UInt32(longest)   // workers size one pass for every shard of the phase
            tasks.append((key, spec, GradPhase.encode(part) + extra))
        }
        let c = model.config
        var total = ActivationStatistics(layers: c.numHiddenLayers, intermediate: c.intermediateSize)
        var lossSum = 0.0
        for (_, message) in try coordinator.runPhase(tasks) {
            total.add(try decode(message, layers: c.numHiddenLayers, intermediate: c.intermediateSize))
            lossSum += message.envelope.result.lossSum
        }
        return (total, lossSum / Double(max(1, total.tokens)))
    }
}
