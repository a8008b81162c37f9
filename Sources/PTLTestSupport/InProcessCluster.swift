import Dispatch
import Foundation
import PTLCluster

/// A coordinator and `workers` workers in this process, on real sockets over loopback, with
/// fast heartbeats; `shutdown()` (or the end of `with`) stops the workers.
public final class InProcessCluster: @unchecked Sendable {
    public let context: ZMQContext
    public let coordinator: Coordinator
    let lock = NSLock()
    var stopped = false
    let group = DispatchGroup()
    /// The workers, in the order they were started (read their counters after `shutdown()`).
    public private(set) var clients: [WorkerClient] = []

    /// `handler(i)` is worker i's task handler (default: the real one).
    public init(workers: Int, heartbeat: Double = 0.05, configure: (inout CoordinatorSettings) -> Void = { _ in },
                handler: (Int) -> TaskHandler = { _ in WorkerTasks.handler() }) throws {
        context = try ZMQContext()
        var cs = CoordinatorSettings()
        cs.heartbeatInterval = heartbeat
        configure(&cs)
        coordinator = try Coordinator(context: context, bind: "tcp://127.0.0.1:*", settings: cs)
        for w in 0..<workers { try addWorker(id: "w\(w)", heartbeat: heartbeat, handler: handler(w)) }
    }

    var isStopped: Bool { lock.lock(); defer { lock.unlock() }; return stopped }

    /// Starts one more worker.
    public func addWorker(id: String, heartbeat: Double = 0.05, handler: @escaping TaskHandler) throws {
        var ws = WorkerSettings()
        ws.heartbeatInterval = heartbeat
        let client = try WorkerClient(id: id, connect: coordinator.endpoint, context: context, settings: ws, handler: handler)
        clients.append(client)
        DispatchQueue.global().async(group: group) { [self] in try? client.run(shouldStop: { self.isStopped }) }
    }

    public func shutdown() {
        lock.lock(); stopped = true; lock.unlock()
        _ = group.wait(timeout: .now() + 2)
    }

    /// Runs `body` on a fresh cluster and shuts it down after.
    public static func with<T>(workers: Int, handler: (Int) -> TaskHandler = { _ in WorkerTasks.handler() },
                               _ body: (InProcessCluster) throws -> T) throws -> T {
        let c = try InProcessCluster(workers: workers, handler: handler)
        defer { c.shutdown() }
        return try body(c)
    }
}
