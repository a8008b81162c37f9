import Foundation
import PTLFormats
import PTLLoop
import Testing
@testable import PTLCluster

@Suite struct ZeroMQSocketTests {
    @Test func linksLibZMQ4() {
        #expect(zeroMQVersion().major == 4)
    }

    @Test func routerAndDealerExchangeMultipartMessages() throws {
        let ctx = try ZMQContext()
        let router = try ZMQSocket(context: ctx, type: .router)
        try router.bind("tcp://127.0.0.1:*")
        let dealer = try ZMQSocket(context: ctx, type: .dealer)
        try dealer.setRoutingID(Array("worker-1".utf8))
        try dealer.connect(router.lastEndpoint)
        let payload = (0..<100_000).map { UInt8($0 % 251) }
        try dealer.send([Array("hello".utf8), payload, []])
        #expect(try router.poll(milliseconds: 2000))
        let got = try #require(try router.receive())
        #expect(got.count == 4)
        #expect(got[0] == Array("worker-1".utf8))
        #expect(got[1] == Array("hello".utf8) && got[2] == payload && got[3].isEmpty)
        try router.send([got[0], Array("reply".utf8)])
        #expect(try dealer.poll(milliseconds: 2000))
        #expect(try dealer.receive() == [Array("reply".utf8)])
        #expect(try dealer.receive(dontWait: true) == nil)
        #expect(try dealer.poll(milliseconds: 20) == false)
    }

    @Test func oversizedMessagesAreDropped() throws {
        let ctx = try ZMQContext()
        let router = try ZMQSocket(context: ctx, type: .router)
        try router.setMaxMessageSize(1000)
        try router.bind("tcp://127.0.0.1:*")
        let dealer = try ZMQSocket(context: ctx, type: .dealer)
        try dealer.connect(router.lastEndpoint)
        try dealer.send([[UInt8](repeating: 1, count: 5000)])
        #expect(try router.poll(milliseconds: 300) == false)
    }

    @Test func curveAuthenticatesBothEnds() throws {
        let server = try CurveKeys.generate(), client = try CurveKeys.generate(), stranger = try CurveKeys.generate()
        let ctx = try ZMQContext()
        let router = try ZMQSocket(context: ctx, type: .router)
        try router.setCurveServer(secretKey: try CurveKeys.decode(server.secretKey))
        try router.bind("tcp://127.0.0.1:*")
        let good = try ZMQSocket(context: ctx, type: .dealer)
        try good.setCurveClient(serverPublicKey: try CurveKeys.decode(server.publicKey),
                                publicKey: try CurveKeys.decode(client.publicKey), secretKey: try CurveKeys.decode(client.secretKey))
        try good.connect(router.lastEndpoint)
        try good.send([Array("secret".utf8)])
        #expect(try router.poll(milliseconds: 3000))
        #expect(try router.receive()?.last == Array("secret".utf8))
        // A client that does not know the server's key cannot complete the handshake.
        let bad = try ZMQSocket(context: ctx, type: .dealer)
        try bad.setCurveClient(serverPublicKey: try CurveKeys.decode(stranger.publicKey),
                               publicKey: try CurveKeys.decode(client.publicKey), secretKey: try CurveKeys.decode(client.secretKey))
        try bad.connect(router.lastEndpoint)
        try bad.send([Array("intruder".utf8)], dontWait: true)
        #expect(try router.poll(milliseconds: 500) == false)
        #expect(throws: ZMQError.self) { try CurveKeys.decode("short") }
    }

    @Test func repeatedOpenAndCloseLeaksNoDescriptors() throws {
        func openFiles() -> Int { (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0 }
        for _ in 0..<5 { _ = try ZMQSocket(context: try ZMQContext(), type: .dealer) }
        let before = openFiles()
        // 200 rounds: a leak of one descriptor a round shows as 200+, while the other tests
        // running beside this one (processes, log files) move the count by a few.
        for _ in 0..<200 {
            let ctx = try ZMQContext()
            let s = try ZMQSocket(context: ctx, type: .router)
            try s.bind("tcp://127.0.0.1:*")
        }
        #expect(openFiles() <= before + 30)
        #expect(throws: ZMQError.self) { try ZMQSocket(context: try ZMQContext(), type: .router).bind("nonsense://x") }
    }
}

@Suite struct CurveAllowListTests {
    @Test func onlyWorkersOnTheAllowListRegister() throws {
        let server = try CurveKeys.generate(), good = try CurveKeys.generate(), bad = try CurveKeys.generate()
        let ctx = try ZMQContext()
        let auth = try CurveAuthenticator(context: ctx, allowedPublicKeys: [good.publicKey])
        var cs = CoordinatorSettings()
        cs.heartbeatInterval = 0.05
        cs.curveSecretKey = server.secretKey
        let coordinator = try Coordinator(context: ctx, bind: "tcp://127.0.0.1:*", settings: cs)
        let stop = StopFlag()
        let group = DispatchGroup()
        for (name, key) in [("good", good.secretKey), ("bad", bad.secretKey)] {
            var ws = WorkerSettings()
            ws.heartbeatInterval = 0.05
            ws.curve = (server.publicKey, key)
            let w = try WorkerClient(id: name, connect: coordinator.endpoint, context: ctx, settings: ws, handler: WorkerTasks.handler())
            DispatchQueue.global().async(group: group) { try? w.run(shouldStop: { stop.isStopped }) }
        }
        let deadline = Date().addingTimeInterval(1.5)
        while Date() < deadline { try coordinator.pump(milliseconds: 50) }
        stop.stop()
        _ = group.wait(timeout: .now() + 2)
        #expect(coordinator.scheduler.workers.keys.sorted() == ["good"])
        #expect(auth.accepted >= 1 && auth.denied >= 1)
        auth.stop()
    }
}
