import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import Logging
import PTLLoop

extension LogFormat: ExpressibleByArgument {}
extension Logger.Level: @retroactive ExpressibleByArgument {}

/// How the binaries log.
public struct LogOptions: ParsableArguments {
    public init() {}

    @Option(help: "Log records on standard error: text (a line each) or json (an object a line, with the metadata as fields).")
    public var logFormat: LogFormat = .text

    @Option(help: "Least level logged.")
    public var logLevel: Logger.Level = .info

    @Option(help: "Off a terminal, the per-phase status (tasks done/total, workers alive, tokens/s) is logged at most every this many seconds (0: on every change). On a terminal it is one line redrawn in place.")
    public var statusInterval: Double = 10

    public func validate() throws {
        if !(statusInterval >= 0) { throw ValidationError("--status-interval must not be negative") }
    }

    public func logger(_ label: String) -> Logger { Logger.ptl(label, format: logFormat, level: logLevel) }
}

/// Heartbeats between the coordinator and its workers (the same options on both sides).
public struct HeartbeatOptions: ParsableArguments {
    public init() {}

    @Option(help: "Heartbeat interval in seconds.")
    public var heartbeat: Double = 1

    @Option(help: "Heartbeats the other side may miss before it counts as gone (a worker is dropped and its task requeued; a worker reconnects while no task computes).")
    public var liveness: Double = 10

    public func validate() throws {
        if !(heartbeat > 0 && heartbeat <= 3600) { throw ValidationError("--heartbeat must be between 0 and 3600 seconds") }
        if !(liveness >= 1 && liveness <= 1000) { throw ValidationError("--liveness must be between 1 and 1000") }
    }
}

/// CURVE key files: one Z85 key on the first line.
public enum KeyFiles {
    /// The key in `path`; throws naming the file when it holds no 40-character key.
    public static func read(_ path: String) throws -> String {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw ValidationError("\(path): cannot read the key file") }
        guard let line = text.split(whereSeparator: \.isNewline).first.map({ $0.trimmingCharacters(in: .whitespaces) }),
              line.utf8.count == 40 else {
            throw ValidationError("\(path): expected a 40-character Z85 CURVE key on the first line")
        }
        return line
    }

    /// Writes a key file, created with `mode` (0600: its owner only; never readable by others,
    /// not even for a moment) and `O_EXCL`: an existing file is an error, unless `replace`, which
    /// writes a new file beside it and renames it over the old one. A failed write throws and
    /// leaves nothing behind.
    public static func write(_ key: String, to path: String, mode: mode_t = 0o600, replace: Bool = false) throws {
        let target = replace ? path + ".tmp-\(getpid())" : path
        if replace { unlink(target) }
        let fd = open(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else {
            let why = String(cString: strerror(errno))
            throw ValidationError(errno == EEXIST && !replace ? "\(path): already exists; refusing to overwrite a key file (move it away first)"
                                                             : "\(path): cannot create the key file (\(why))")
        }
        let bytes = Array((key + "\n").utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let why = String(cString: strerror(errno))
        let synced = fsync(fd) == 0
        close(fd)
        guard written == bytes.count, synced else {
            unlink(target)
            throw ValidationError("\(path): cannot write the key file (\(why))")
        }
        if replace, rename(target, path) != 0 {
            let why = String(cString: strerror(errno))
            unlink(target)
            throw ValidationError("\(path): cannot rename the key file into place (\(why))")
        }
    }
}

/// Local worker processes: started together, restarted when one dies, stopped at exit.
public final class LocalWorkers {
    let executable: URL
    let arguments: [[String]]
    let logger: Logger
    var processes: [Process?]
    public private(set) var restarts = 0

    public init(executable: URL, arguments: [[String]], logger: Logger) {
        self.executable = executable
        self.arguments = arguments
        self.logger = logger
        processes = Array(repeating: nil, count: arguments.count)
    }

    /// `ptl-worker` beside the running binary.
    public static var workerExecutable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent().appendingPathComponent("ptl-worker")
    }

    func start(_ i: Int) throws {
        let p = Process()
        p.executableURL = executable
        p.arguments = arguments[i]
        try p.run()
        processes[i] = p
    }

    public func startAll() throws { for i in arguments.indices { try start(i) } }

    public func restartDead() {
        for (i, p) in processes.enumerated() where p.map({ !$0.isRunning }) ?? false {
            logger.warning("local worker \(i) exited (status \(p!.terminationStatus)): starting it again",
                           metadata: ["worker": "local-\(i)", "status": "\(p!.terminationStatus)"])
            restarts += 1
            do { try start(i) } catch { logger.error("could not restart local worker \(i): \(error)", metadata: ["worker": "local-\(i)"]) }
        }
    }

    public func stopAll() {
        for case let p? in processes where p.isRunning { p.terminate() }
        for case let p? in processes { p.waitUntilExit() }
    }
}
