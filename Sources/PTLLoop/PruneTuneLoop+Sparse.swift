import Foundation
import PTLModel
import PTLPrune
import PTLTensor

/// `--prune sparse`: a round raises every linear layer's sparsity with SparseGPT, calibrated on
/// this round's calibration sequences (on-policy: the current, tuned model's own chains of
/// thought), the earlier rounds' masks kept; tuning then keeps the masked weights at zero.
extension PruneTuneLoop {
    /// The fraction of weights round `r` (1-based) adds.
    func sparseIncrement(round r: Int) throws -> Double {
        func level(_ i: Int) throws -> Double {
            guard i >= 1 else { return 0 }
            guard let s = state.plan.rounds[i - 1].sparsity else { throw LoopError("internal: round \(i) of a sparse plan has no sparsity") }
            return try SparsityPattern(parsing: s).fraction
        }
        return try level(r) - level(r - 1)
    }

    func pruneSparse() throws {
        let r = state.round, s = settings
        guard let sp = s.sparse, let level = state.plan.rounds[r - 1].sparsity else { throw LoopError("internal: round \(r) is not a sparse round") }
        let pattern = try SparsityPattern(parsing: level)
        progress(r, rounds, LoopPhase.stats.rawValue, 0)
        let t0 = Date()
        let sequences = try calibrationSequences()
        guard sequences.count >= s.shards else {
            throw LoopError("\(sequences.count) calibration sequences cannot fill \(s.shards) shards: raise --calibration-lines or lower --shards")
        }
        var probeBefore: Double? = nil
        if s.damage == .probe {
            // On the probe's own held-out questions, as after the cut: the on-policy traces' accuracy is
            // taken on the calibration questions, which the cut's refit is fitted to (a shortcut here
            // compared two different sets and read cheap cuts as gains: 93.8 % → 98.4 % on the demo).
            probeBefore = try damageMeasure(model, scale: nil)
        }
        let tokens = sequences.reduce(0) { $0 + max(0, $1.count - 1) }
        let source = s.calibration == .onPolicy ? roundCalibration.map { "; \($0.detail)" } ?? "" : ""
        state.rows.append(row(.stats, seconds: Date().timeIntervalSince(t0),
                              detail: "\(sequences.count) calibration sequences, \(tokens) tokens (\(s.calibration.rawValue))\(source)"))
        progress(r, rounds, LoopPhase.prune.rawValue, 0)
        let t1 = Date()
        masks = try SparsePruning.run(model: model, backend: backend, sequences: sequences, shards: s.shards, pattern: pattern,
                                      blockSize: sp.blockSize, percentDamp: sp.percentDamp, fixed: masks.isEmpty ? nil : masks,
                                      key: { self.measurementKey() }) { self.logger.debug("round \(r): \($0)") }
        // The optimizer: a new one, or the carried one with the newly pruned weights' moments zeroed.
        if s.optimizer == .carry {
            SparseMasks.zero(masks, in: optimizer.m)
            SparseMasks.zero(masks, in: optimizer.v)
        } else {
            optimizer = AdamW(layout: model.layout, settings: optimizer.settings)
        }
        let after = try heldOutLoss(model, scale: nil)
        var damage = after - state.lossBefore, measureAfter = after
        var probeDetail = ""
        if let before = probeBefore {
            measureAfter = try damageMeasure(model, scale: nil)
            damage = measureAfter - before
            probeDetail = String(format: "; probe (held-out questions) accuracy %.1f%% → %.1f%%", (1 - before) * 100, (1 - measureAfter) * 100)
        }
        let increment = try sparseIncrement(round: r)
        if increment > 0 { state.sparseDamagePerUnit = max(0, damage) / increment }
        state.roundSteps = try budget(round: r, damage: damage, currentLoss: measureAfter)
        state.stepInRound = 0
        state.tuneLossSum = 0
        let (z, n) = SparseMasks.count(masks)
        state.rows.append(row(.prune, seconds: Date().timeIntervalSince(t1), loss: after, steps: state.roundSteps,
                              detail: String(format: "SparseGPT to %@ on every linear layer (%.2f%% of their weights zero); loss +%.4f%@",
                                             "\(pattern)", 100 * Double(z) / Double(max(1, n)), after - state.lossBefore, probeDetail)))
        logger.info("\(String(format: "round %d: SparseGPT to %@ (%.1f%% of the linear weights zero); held-out loss %.4f → %.4f; %d tune steps", r, "\(pattern)", 100 * Double(z) / Double(max(1, n)), state.lossBefore, after, state.roundSteps))",
                    metadata: ["round": "\(r)", "sparsity": "\(pattern)", "tune_steps": "\(state.roundSteps)"])
        state.stage = .tune
        captureReference()
        try checkpoint()
    }
}
