import Foundation
import PTLTensor

/// Fault injection for the fault-tolerance tests: a worker given a seed and a rate misbehaves
/// at every protocol point, deterministically per (seed, task, attempt): it dies before
/// computing, dies while computing (before its result leaves), dies right after sending its
/// result, drops its result, or sends it twice. Off unless asked for (`ptl-worker --fault-seed`).
public struct FaultPlan: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case dieBeforeCompute = "die-before-compute", dieMidCompute = "die-mid-compute", dieAfterSend = "die-after-send"
        case dropResult = "drop-result", duplicateResult = "duplicate-result"
    }

    public var seed: UInt64
    /// Probability that a task attempt meets a fault.
    public var rate: Double
    /// Milliseconds every task sleeps before computing (to widen the windows for SIGSTOP/SIGKILL).
    public var delayMilliseconds: Int = 0
    /// A poison shard: every task of this shard (any phase) fails with `PoisonShard`, on every
    /// attempt, so the job must end with an error naming it (`ptl-worker --fault-fail-shard`).
    public var failShard: UInt32? = nil
    /// Only tasks of this phase meet faults (`ptl-worker --fault-phase rollout`: workers that die
    /// while sampling); nil: every phase.
    public var phase: Ptl_V1_Phase? = nil

    public init(seed: UInt64, rate: Double, delayMilliseconds: Int = 0) {
        self.seed = seed; self.rate = rate; self.delayMilliseconds = delayMilliseconds
    }

    /// The fault (if any) this attempt of this task meets. The attempt counts within the phase
    /// (its low 12 bits), so the same seed gives the same faults in every run.
    public func fault(for key: Ptl_V1_TaskKey) -> Kind? {
        if let phase, key.phase != phase { return nil }
        var h = seed ^ 0x9E37_79B9_7F4A_7C15
        for v in [UInt64(key.round), UInt64(key.phase.rawValue), key.step, UInt64(key.shard), UInt64(key.attempt & 0xFFF)] {
            h = mix(h ^ v)
        }
        if key.measurement != 0 { h = mix(h ^ key.measurement) }   // only when set: grad tasks meet the faults they always met
        guard Double(h >> 11) / Double(1 << 53) < rate else { return nil }
        return Kind.allCases[Int(mix(h) % UInt64(Kind.allCases.count))]
    }

    /// The phase a `--fault-phase` value names.
    public static func phase(named name: String) -> Ptl_V1_Phase? {
        ["stats": .stats, "grad": .grad, "eval": .eval, "rollout": .rollout, "trace": .trace][name]
    }

    func mix(_ x: UInt64) -> UInt64 { SplitMix64.mix(x &+ 0x9E37_79B9_7F4A_7C15) }
}

/// The error of a task of the poison shard (`FaultPlan.failShard`).
public struct PoisonShard: Error, CustomStringConvertible, Sendable {
    public let shard: UInt32
    public var description: String { "fault injection: shard \(shard) is poisoned and always fails" }
}
