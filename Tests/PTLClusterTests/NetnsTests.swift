import Foundation
import PTLFormats
import PTLLoop
import Testing
@testable import PTLCluster

/// Two hosts on one machine: the coordinator and the workers in network namespaces of their
/// own, joined by a veth pair (`ip netns`, iproute2). Needs root, as in CI; the test says so and
/// is skipped elsewhere.
enum Netns {
    static func ip(_ args: [String]) -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        do { try p.run() } catch { return (-1, "\(error)") }
        let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        return (p.terminationStatus, out)
    }

    /// Whether namespaces can be made here (root and iproute2).
    static let available: Bool = {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip"), getuid() == 0 else { return false }
        let probe = "ptl-probe-\(getpid())"
        guard ip(["netns", "add", probe]).status == 0 else { return false }
        _ = ip(["netns", "del", probe])
        return true
    }()
}

@Suite(.serialized) struct NetnsTests {
    /// The workers' host is cut off from the coordinator's (its link down) for longer than the
    /// liveness timeout, then reconnected: the workers are dropped, come back over new
    /// connections, and the run ends bit-identical with every (step, shard) applied once.
    @Test(.enabled(if: Netns.available, "needs root and iproute2 (`ip netns`)"))
    func aNetworkPartitionBetweenHostsChangesNothing() throws {
        let tag = "\(getpid() % 100000)"
        let (hostC, hostW) = ("ptlc\(tag)", "ptlw\(tag)")
        let (vethC, vethW) = ("pc\(tag)", "pw\(tag)")
        defer { _ = Netns.ip(["netns", "del", hostC]); _ = Netns.ip(["netns", "del", hostW]) }
        for cmd in [["netns", "add", hostC], ["netns", "add", hostW],
                    ["link", "add", vethC, "type", "veth", "peer", "name", vethW],
                    ["link", "set", vethC, "netns", hostC], ["link", "set", vethW, "netns", hostW],
                    ["-n", hostC, "addr", "add", "10.231.7.1/24", "dev", vethC], ["-n", hostW, "addr", "add", "10.231.7.2/24", "dev", vethW],
                    ["-n", hostC, "link", "set", vethC, "up"], ["-n", hostW, "link", "set", vethW, "up"],
                    ["-n", hostC, "link", "set", "lo", "up"], ["-n", hostW, "link", "set", "lo", "up"]] {
            let r = Netns.ip(cmd)
            try #require(r.status == 0, "ip \(cmd.joined(separator: " ")): \(r.output)")
        }
        let out = FaultRun.tempDir("netns")
        var args = FaultRun.args(out: out, extra: ["--liveness", "3", "--insecure"])   // a bind beyond loopback, no CURVE
        args[args.firstIndex(of: "tcp://127.0.0.1:0")!] = "tcp://10.231.7.1:0"
        let run = try FaultRun.start(["netns", "exec", hostC, executable("ptl-coordinator").path] + args, binary: "/usr/sbin/ip")
        defer { if run.process.isRunning { run.process.terminate() } }
        let endpoint = try FaultRun.endpoint(out)
        #expect(endpoint.hasPrefix("tcp://10.231.7.1:"))
        let workers = try (0..<2).map { i in
            try FaultRun.start(["netns", "exec", hostW, executable("ptl-worker").path, "--connect", endpoint, "--id", "remote-\(i)",
                                "--heartbeat", "0.1", "--fault-seed", "0", "--fault-rate", "0", "--fault-delay-ms", "100"], binary: "/usr/sbin/ip")
        }
        defer { for w in workers where w.process.isRunning { w.process.terminate() } }
        FaultRun.waitForSteps(out, 2)
        #expect(Netns.ip(["-n", hostW, "link", "set", vethW, "down"]).status == 0)   // the partition
        usleep(1_500_000)
        let stepsDuringPartition = FaultRun.metrics(out).count
        usleep(500_000)
        #expect(FaultRun.metrics(out).count == stepsDuringPartition, "steps finished while no worker could be reached")
        #expect(Netns.ip(["-n", hostW, "link", "set", vethW, "up"]).status == 0)     // healed
        run.process.waitUntilExit()
        #expect(run.process.terminationStatus == 0, "\(run.text.suffix(2000))")
        #expect(run.text.contains("remote-0 silent: dropped") || run.text.contains("remote-1 silent: dropped"))
        #expect(FaultRun.counter(out, "dropped_workers") >= 1)
        // Workers on another host get each step's version as an update (auto), not whole.
        #expect(FaultRun.counter(out, "model_sends_update") >= 1)
        #expect(try finalWeights(out) == FaultRun.reference)
        try FaultRun.expectLedgerExactlyOnce(out)
    }
}
