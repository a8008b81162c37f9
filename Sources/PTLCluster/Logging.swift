import Foundation
import Logging

/// How log records are written: human-readable lines, or one JSON object per line.
public enum LogFormat: String, Sendable, CaseIterable {
    /// `2026-12-02T10:50:01.123Z info [coordinator] worker local-0 ready (1 threads) worker=local-0 threads=1`
    case text
    /// `{"label":"coordinator","level":"info","message":"…","threads":1,"ts":"…","worker":"local-0"}`
    case json
}

/// Where the log handlers write (standard error unless told otherwise), with one status line
/// that stays at the bottom of a terminal: log lines are written above it and it is redrawn.
/// Off a terminal there is no redrawing: status text is logged as an ordinary record, at most
/// once per `statusInterval` seconds (see `StatusLine`).
public final class LogOutput: @unchecked Sendable {
    public static let standardError = LogOutput(fd: 2)

    let fd: Int32
    public let isTerminal: Bool
    let lock = NSLock()
    var status: String?

    public init(fd: Int32) {
        self.fd = fd
        isTerminal = isatty(fd) != 0
    }

    /// Writes one record (a line without its newline).
    func write(line: String) {
        lock.lock(); defer { lock.unlock() }
        var out = ""
        if isTerminal, status != nil { out += "\r\u{1B}[2K" }
        out += line + "\n"
        if isTerminal, let status { out += status }
        put(out)
    }

    /// Shows (or, with nil, removes) the status line on a terminal.
    func setStatus(_ text: String?) {
        guard isTerminal else { return }
        lock.lock(); defer { lock.unlock() }
        if status == nil && text == nil { return }
        status = text
        put("\r\u{1B}[2K" + (text ?? ""))
    }

    private func put(_ s: String) {
        var s = s
        s.withUTF8 { bytes in
            var off = 0
            while off < bytes.count {
                let n = Foundation.write(fd, bytes.baseAddress! + off, bytes.count - off)
                if n <= 0 { if n < 0 && errno == EINTR { continue }; return }
                off += n
            }
        }
    }
}

/// The swift-log handler of the ptl binaries: a record is a line of text or a JSON object with
/// the time, level, label (the process: `coordinator` or the worker's id), message and metadata
/// (`worker`, `task`, `phase`, `round`, `step`, `shard`, `attempt`, …).
public struct PTLLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level
    let label: String
    let format: LogFormat
    let output: LogOutput

    public init(label: String, format: LogFormat = .text, level: Logger.Level = .info, output: LogOutput = .standardError) {
        self.label = label
        self.format = format
        self.logLevel = level
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let p = metadataProvider { all.merge(p.get()) { _, new in new } }
        if let m = event.metadata { all.merge(m) { _, new in new } }
        output.write(line: PTLLogHandler.render(format: format, label: label, level: event.level,
                                                message: event.message.description, metadata: all, date: Date()))
    }

    static func render(format: LogFormat, label: String, level: Logger.Level, message: String,
                       metadata: Logger.Metadata, date: Date) -> String {
        let ts = PTLLogHandler.timestamp(date)
        switch format {
        case .text:
            // The label already names the worker; seconds and the like to 4 significant digits.
            var line = "\(ts) \(level) [\(label)] \(message)"
            for key in metadata.keys.sorted() where !(key == "worker" && metadata[key] == .string(label)) {
                if case .stringConvertible(let d as Double) = metadata[key]! {
                    line += " \(key)=\(String(format: "%.4g", d))"
                } else {
                    line += " \(key)=\(metadata[key]!)"
                }
            }
            return line
        case .json:
            var object: [String: Any] = ["ts": ts, "level": "\(level)", "label": label, "message": message]
            for (key, value) in metadata where object[key] == nil { object[key] = PTLLogHandler.json(value) }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
            return String(decoding: data, as: UTF8.self)
        }
    }

    /// Numbers stay numbers in JSON; everything else is its text.
    static func json(_ value: Logger.MetadataValue) -> Any {
        switch value {
        case .string(let s): return s
        case .stringConvertible(let c):
            switch c {
            case let i as Int: return i
            case let u as UInt32: return u
            case let u as UInt64: return u
            case let d as Double where d.isFinite: return d
            case let b as Bool: return b
            default: return c.description
            }
        case .array(let a): return a.map(json)
        case .dictionary(let d): return d.mapValues(json)
        }
    }

    /// ISO 8601 in UTC with milliseconds.
    static func timestamp(_ date: Date) -> String {
        var t = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&t, &parts)
        let ms = Int((date.timeIntervalSince1970 - Double(t)) * 1000)
        return String(format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
                      Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), min(ms, 999))
    }
}

extension Logger {
    /// The logger of a ptl binary from its `--log-format` and `--log-level` texts; nil and the
    /// complaint when one of them is not a known value.
    public static func ptl(_ label: String, format: String, level: String) -> (logger: Logger?, problem: String?) {
        guard let f = LogFormat(rawValue: format) else {
            return (nil, "--log-format must be \(LogFormat.allCases.map(\.rawValue).joined(separator: " or ")), not '\(format)'")
        }
        guard let l = Logger.Level(rawValue: level) else {
            return (nil, "--log-level must be one of \(Logger.Level.allCases.map(\.rawValue).joined(separator: ", ")), not '\(level)'")
        }
        return (Logger.ptl(label, format: f, level: l), nil)
    }

    /// A logger that drops everything: the default of library objects, so that tests and
    /// embedders see nothing unless they hand in a logger.
    public static let silent = Logger(label: "ptl.silent", factory: { _ in SwiftLogNoOpLogHandler() })

    /// A logger of the ptl binaries (see `PTLLogHandler`).
    public static func ptl(_ label: String, format: LogFormat = .text, level: Logger.Level = .info,
                           output: LogOutput = .standardError) -> Logger {
        Logger(label: label, factory: { PTLLogHandler(label: $0, format: format, level: level, output: output) })
    }
}

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
