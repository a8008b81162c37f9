import Foundation
import Logging

/// A ZAP handler (ZeroMQ RFC 27): answers libzmq's authentication requests for CURVE
/// connections in a context, accepting only client public keys on the allow-list. Runs on its
/// own thread with its own REP socket; stops when released.
public final class CurveAuthenticator: @unchecked Sendable {
    let allowed: Set<[UInt8]>
    let stopLock = NSLock()
    var stopped = false
    let done = DispatchSemaphore(value: 0)
    public private(set) var accepted = 0
    public private(set) var denied = 0
    public var logger = Logger.silent

    /// Starts answering for `context`; `allowedPublicKeys` are Z85 keys. Bind CURVE server
    /// sockets only after this returns.
    public init(context: ZMQContext, allowedPublicKeys: [String]) throws {
        allowed = Set(try allowedPublicKeys.map { try CurveKeys.decode($0) })
        let socket = try ZMQSocket(context: context, type: .rep)
        try socket.bind("inproc://zeromq.zap.01")
        let box = UncheckedBox(socket)
        Thread.detachNewThread { [self] in
            self.serve(box.value)
            self.done.signal()
        }
    }

    deinit { stop() }

    /// Stops the handler thread.
    public func stop() {
        stopLock.lock()
        let was = stopped
        stopped = true
        stopLock.unlock()
        if !was { done.wait() }
    }

    var isStopped: Bool { stopLock.lock(); defer { stopLock.unlock() }; return stopped }

    func serve(_ socket: ZMQSocket) {
        while !isStopped {
            guard (try? socket.poll(milliseconds: 50)) == true, let request = try? socket.receive(dontWait: true) else { continue }
            // version, request id, domain, address, identity, mechanism, credentials…
            guard request.count >= 6 else { continue }
            let requestID = request[1]
            let mechanism = String(decoding: request[5], as: UTF8.self)
            let key = request.count >= 7 ? request[6] : []
            let ok = mechanism == "CURVE" && allowed.contains(key)
            if ok { accepted += 1 } else {
                denied += 1
                let address = String(decoding: request[3], as: UTF8.self)
                logger.warning("denied a \(mechanism) client at \(address) not on the allow-list",
                               metadata: ["mechanism": .string(mechanism), "peer": .string(address)])
            }
            // The user id is the client's public key (Z85): the coordinator binds each worker
            // identity to the key that registered it, so no other key can take it over.
            let user = ok ? Array(((try? CurveKeys.encode(key)) ?? "").utf8) : []
            try? socket.send([Array("1.0".utf8), requestID, Array((ok ? "200" : "400").utf8),
                              Array((ok ? "OK" : "not on the allow-list").utf8), user, []])
        }
    }
}

struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ v: T) { value = v }
}
