import Testing
import PTLTestSupport
@testable import PTLCluster

func keys(_ n: Int, step: UInt64 = 0) -> [Ptl_V1_TaskKey] {
    (0..<n).map { s in
        var k = Ptl_V1_TaskKey()
        k.run = "r"; k.round = 1; k.phase = .grad; k.step = step; k.shard = UInt32(s)
        return k
    }
}

@Suite struct TaskSchedulerTests {
    @Test func leasesInShardOrderAndCompletes() {
        let clock = ManualClock()
        let s = TaskScheduler<Int>(clock: clock, workerTimeout: 3, leaseSeconds: 60)
        s.startPhase(keys(4))
        s.seen("a", threads: 1); s.seen("b", threads: 2)
        let first = s.assign()
        #expect(first.map(\.worker) == ["a", "b"] && first.map(\.key.shard) == [0, 1] && first.allSatisfy { $0.key.attempt == 1 })
        #expect(s.assign().isEmpty)                                   // both busy
        #expect(s.complete(first[1].key, from: "b", output: 11) == .accepted)
        #expect(s.assign().map(\.key.shard) == [2])
        #expect(!s.isPhaseComplete)
    }

    /// A stale result (an older attempt of the task the worker holds, or an earlier phase's task
    /// under the same key) does not free the worker from the attempt it holds: that lease still
    /// runs out and the task goes back. It did free it: a duplicated GRPO rollout result arrived
    /// after the gradient phase had leased the same key to the same worker, and when that
    /// attempt's result was lost the phase waited forever (found by the mid-rollout fault test).
    @Test func aStaleResultDoesNotReleaseTheLeaseTheWorkerHolds() {
        let clock = ManualClock()
        let s = TaskScheduler<Int>(clock: clock, workerTimeout: 1000, leaseSeconds: 10)
        s.startPhase(keys(1))
        s.seen("a", threads: 1)
        let lease = s.assign()
        var old = lease[0].key
        old.attempt += 5
        #expect(s.complete(old, from: "a", output: 1) == .stale)
        clock.advance(11)
        _ = s.expire()
        let again = s.assign()
        #expect(again.map(\.key.shard) == [0] && again.first?.key.attempt == lease[0].key.attempt + 1, "the task came back after its lease")
        #expect(s.complete(again[0].key, from: "a", output: 2) == .accepted && s.isPhaseComplete)
    }

    /// With costs, the costliest tasks go first (ties in shard order); results stay in shard order.
    /// Shard costs 10, 6.7, 6.8, 10.3 s on two workers: shard order ends the phase at 20.6 s,
    /// costliest-first at 17.1 s.
    @Test func leasesTheCostliestTasksFirst() {
        let clock = ManualClock()
        let s = TaskScheduler<Int>(clock: clock, workerTimeout: 3, leaseSeconds: 60)
        s.startPhase(keys(5), costs: [10, 6.7, 6.8, 10.3, 6.8])
        s.seen("a", threads: 1); s.seen("b", threads: 1)
        var order: [UInt32] = []
        while !s.isPhaseComplete {
            let leased = s.assign()
            order += leased.map(\.key.shard)
            for l in leased { _ = s.complete(l.key, from: l.worker, output: Int(l.key.shard)) }
        }
        #expect(order == [3, 0, 2, 4, 1])
        #expect(s.orderedResults()!.map(\.output) == [0, 1, 2, 3, 4])
    }

    /// A worker that reconnects says READY again: it forgot its task, which goes back at once
    /// (not after the lease); one that answers BUSY gets no task until it reports; a task that
    /// fails on every attempt makes the phase hopeless instead of retrying forever.
    @Test func reconnectsBusyWorkersAndHopelessTasks() {
        let clock = ManualClock()
        let s = TaskScheduler<Int>(clock: clock, workerTimeout: 3, leaseSeconds: 600)
        s.startPhase(keys(2))
        s.seen("a", threads: 1)
        let lease = s.assign()
        #expect(lease.map(\.key.shard) == [0])
        s.seen("a", threads: 1)                                         // READY again
        #expect(s.assign().map(\.key.shard) == [0])
        s.busy(keys(2)[0], on: "a")
        #expect(s.assign().isEmpty)                                     // occupied
        #expect(s.complete(keys(1, step: 9)[0], from: "a", output: 0) == .stale)  // its old task's result: dropped, but it is free again
        let retry = s.assign()
        #expect(retry.map(\.key.shard) == [0])
        #expect(s.complete(retry[0].key, from: "a", output: 0) == .accepted)
        // Failures count only from the lease holder: a stranger's or a stale attempt's are ignored.
        let held = s.assign()
        #expect(held.map(\.key.shard) == [1])
        for _ in 0..<5 { s.failed(held[0].key, on: "mallory", reason: "forged") }
        var stale = held[0].key
        stale.attempt += 7
        s.failed(stale, on: "a", reason: "stale")
        #expect(s.hopeless.isEmpty && s.ignoredFailures == 6)
        var current = held
        for _ in 0..<4 { s.failed(current[0].key, on: "a", reason: "bad shard"); current = s.assign() }
        #expect(s.hopeless.count == 1 && s.hopeless[0].reason == "bad shard")
    }

    /// BUSY (a message type of its own, no longer an ERROR "busy") requeues the task at once:
    /// the same task goes to the next free worker, not after the lease, and the busy worker
    /// gets nothing until it reports a result.
    @Test func busyRequeuesAtOnce() {
        let clock = ManualClock()
        let s = TaskScheduler<Int>(clock: clock, workerTimeout: 100, leaseSeconds: 600)
        s.startPhase(keys(1))
        s.seen("a", threads: 1)
        let lease = s.assign()
        #expect(lease.count == 1 && lease[0].worker == "a")
        let busy = Messages.busy(lease[0].key).envelope                    // what the worker sends
        #expect(busy.type == .busy && busy.task == lease[0].key)
        s.busy(busy.task, on: "a")
        #expect(s.requeued == 1 && s.assign().isEmpty)                      // queued again, a is occupied
        s.seen("b", threads: 1)
        let retry = s.assign()
        #expect(retry.count == 1 && retry[0].worker == "b" && retry[0].key.shard == 0 && retry[0].key.attempt == 2)
        #expect(s.complete(lease[0].key, from: "a", output: 9) == .stale)   // a's refused lease was revoked
        #expect(s.complete(retry[0].key, from: "b", output: 0) == .accepted && s.isPhaseComplete)
    }

    /// Two measurements of one round (same run, round, phase, step, shard) differ only in
    /// `measurement`: two tasks, each with its own result; a result of one never answers the other.
    @Test func keysDifferingOnlyInMeasurementAreDistinctTasks() {
        var a = keys(1)[0], b = a
        a.phase = .stats; b.phase = .stats
        a.measurement = 1; b.measurement = 2
        #expect(TaskID(a) != TaskID(b) && Set([TaskID(a), TaskID(b)]).count == 2)
        let clock = ManualClock()
        let s = TaskScheduler<Int>(clock: clock, workerTimeout: 3, leaseSeconds: 60)
        s.startPhase([b, a])
        #expect(s.taskCount == 2)
        s.seen("w", threads: 1)
        let first = s.assign()
        #expect(first.count == 1 && first[0].key.measurement == 2)
        var wrong = first[0].key
        wrong.measurement = 1                                             // same attempt token, other measurement
        #expect(s.complete(wrong, from: "w", output: 1) == .stale)
        #expect(s.complete(first[0].key, from: "w", output: 2) == .accepted)
        let second = s.assign()
        #expect(second.count == 1 && second[0].key.measurement == 1)
        #expect(s.complete(second[0].key, from: "w", output: 1) == .accepted)
        #expect(s.orderedResults()?.map(\.output) == [1, 2])                // by measurement within a step
    }

    @Test func aSilentWorkerIsDroppedAndItsTaskRequeued() {
        let clock = ManualClock()
        let s = TaskScheduler<Int>(clock: clock, workerTimeout: 3, leaseSeconds: 60)
        s.startPhase(keys(2))
        s.seen("a"); s.seen("b")
        let leases = s.assign()
        clock.advance(2)
        s.seen("b")                       // b heartbeats, a is silent
        clock.advance(2)
        #expect(s.expire() == ["a"])
        #expect(!s.isKnown("a"))
        #expect(s.complete(leases[1].key, from: "b", output: 1) == .accepted)
        let retry = s.assign()
        #expect(retry.count == 1 && retry[0].worker == "b" && retry[0].key.shard == 0 && retry[0].key.attempt == 2)
        // The dead worker comes back (a zombie): its result for shard 0 carries a revoked
        // attempt token and is rejected, even before the retry has finished.
        #expect(s.complete(leases[0].key, from: "a", output: 99) == .stale)
        // Nor may another worker hand in a result under b's token.
        #expect(s.complete(retry[0].key, from: "a", output: 99) == .stale)
        #expect(s.complete(retry[0].key, from: "b", output: 0) == .accepted)
        #expect(s.complete(retry[0].key, from: "b", output: 0) == .duplicate)
        #expect(s.duplicates == 1 && s.stale == 2 && s.requeued == 1 && s.expiredWorkers == 1)
        #expect(s.orderedResults()?.map(\.output) == [0, 1])
        #expect(s.acceptedFrom[TaskID(leases[0].key)]?.worker == "b" && s.acceptedFrom[TaskID(leases[0].key)]?.attempt == 2)
    }

    @Test func expiredLeasesAndFailuresGoBackToTheQueue() {
        let clock = ManualClock()
        let s = TaskScheduler<Int>(clock: clock, workerTimeout: 100, leaseSeconds: 5)
        s.startPhase(keys(3))
        s.seen("a")
        let l = s.assign()
        clock.advance(6)
        #expect(s.expire().isEmpty)
        #expect(s.expiredLeases == 1)
        let again = s.assign()
        #expect(again.first?.key.shard == 0)                        // lease expired: the only worker gets it again
        s.failed(Ptl_V1_TaskKey(), on: "a")                        // unknown task: ignored
        s.failed(l[0].key, on: "a")                                // the expired attempt: ignored
        let cur = s.assign()
        #expect(cur.isEmpty)
        s.failed(again[0].key, on: "a")
        #expect(s.assign().first?.key.attempt == 3)
        // A result from an earlier phase is dropped.
        #expect(s.complete(keys(1, step: 9)[0], from: "a", output: 5) == .stale)
    }

    /// A worker that heartbeats but never answers: each lease it lets run out is a failure of
    /// the task, the task goes to another worker first, and after `maxFailures` the phase says
    /// which task and why instead of stalling.
    @Test func expiredLeasesAreFailuresAndGoElsewhereFirst() {
        let clock = ManualClock()
        let s = TaskScheduler<Int>(clock: clock, workerTimeout: 100, leaseSeconds: 5)
        s.startPhase(keys(1))
        s.seen("mute")
        let first = s.assign()
        #expect(first.map(\.worker) == ["mute"])
        s.seen("honest")
        clock.advance(6)
        s.seen("mute"); s.seen("honest")                           // both still heartbeat
        #expect(s.expire().isEmpty)
        #expect(s.assign().map(\.worker) == ["honest"])           // not back to the worker that let it expire
        // Alone, the mute worker gets it again, and four expiries make the task hopeless.
        let single = TaskScheduler<Int>(clock: clock, workerTimeout: 100, leaseSeconds: 5)
        single.startPhase(keys(1))
        single.seen("mute")
        for _ in 0..<4 {
            #expect(single.assign().count == 1)
            clock.advance(6)
            single.seen("mute")
            _ = single.expire()
        }
        #expect(single.hopeless.count == 1 && single.hopeless[0].reason.contains("held by mute ran out"))
    }
}
