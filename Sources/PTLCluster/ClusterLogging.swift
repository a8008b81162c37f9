import Foundation
import Logging
import PTLLoop

extension Ptl_V1_Phase {
    /// The phase's name in logs and metrics: stats, grad, eval, rollout, trace.
    public var name: String {
        switch self {
        case .stats: return "stats"
        case .grad: return "grad"
        case .eval: return "eval"
        case .rollout: return "rollout"
        case .trace: return "trace"
        default: return "phase\(rawValue)"
        }
    }
}

extension Ptl_V1_TaskKey {
    /// The key as log metadata.
    public var logMetadata: Logger.Metadata {
        ["task": "\(TaskID(self))", "phase": .string(phase.name), "round": "\(round)", "step": "\(step)",
         "measurement": "\(measurement)", "shard": "\(shard)", "attempt": "\(attempt)"]
    }
}

/// Where a phase is: tasks done of all, workers alive, tokens the accepted results covered.
public struct PhaseProgress: Sendable, CustomStringConvertible {
    public var phase: Ptl_V1_Phase
    public var round: UInt32
    public var step: UInt64
    public var done: Int
    public var total: Int
    public var workers: Int
    public var tokens: Int
    public var seconds: Double

    public var tokensPerSecond: Double { seconds > 0 ? Double(tokens) / seconds : 0 }
    public var isComplete: Bool { done == total }

    public var description: String {
        String(format: "%@ round %u step %llu: %d/%d tasks, %d worker%@ alive, %.0f tokens/s, %.1f s",
               phase.name, round, step, done, total, workers, workers == 1 ? "" : "s", tokensPerSecond, seconds)
    }

    public var logMetadata: Logger.Metadata {
        ["phase": .string(phase.name), "round": "\(round)", "step": "\(step)", "tasks_done": "\(done)", "tasks": "\(total)",
         "workers": "\(workers)", "tokens": "\(tokens)", "tokens_per_second": .stringConvertible(tokensPerSecond.rounded()),
         "seconds": .stringConvertible((seconds * 1000).rounded() / 1000)]
    }
}

/// The per-phase status of the coordinator: redrawn in place on a terminal; elsewhere logged
/// (message `status: …` with the progress as metadata) at most once per `interval` seconds, so
/// a log file gets a steady trickle rather than a line per task (0: every change).
public final class StatusLine: @unchecked Sendable {
    let logger: Logger
    let output: LogOutput
    let interval: Double
    var lastLogged = -Double.infinity
    /// Text before the phase's progress, e.g. the loop's round and activity.
    public var context = ""

    public init(logger: Logger, output: LogOutput = .standardError, interval: Double) {
        self.logger = logger
        self.output = output
        self.interval = interval
    }

    public func show(_ p: PhaseProgress, now: Double = ProcessInfo.processInfo.systemUptime) {
        let text = (context.isEmpty ? "" : context + " · ") + p.description
        if output.isTerminal { output.setStatus(text); return }
        guard now - lastLogged >= interval else { return }
        lastLogged = now
        var m = p.logMetadata
        if !context.isEmpty { m["context"] = .string(context) }
        logger.info("status: \(text)", metadata: m)
    }

    /// Removes the status line from the terminal.
    public func finish() { output.setStatus(nil) }
}
