import CZeroMQ
import Foundation
import PTLTensor

/// A libzmq failure: the operation and zmq_strerror's text.
public struct ZMQError: Error, CustomStringConvertible, Sendable {
    public let operation: String
    public let code: Int32
    public var description: String { "\(operation): \(String(cString: zmq_strerror(code))) (errno \(code))" }

    static func last(_ operation: String) -> ZMQError { ZMQError(operation: operation, code: zmq_errno()) }
}

/// A ZeroMQ context; owns its handle and terminates it when released.
public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer

    public init() throws {
        guard let h = zmq_ctx_new() else { throw ZMQError.last("zmq_ctx_new") }
        handle = h
    }

    deinit { zmq_ctx_term(handle) }
}

/// Socket kinds the cluster uses.
public enum ZMQSocketType: Int32, Sendable {
    case router = 6   // ZMQ_ROUTER
    case dealer = 5   // ZMQ_DEALER
    case pair = 0     // ZMQ_PAIR (tests)
    case rep = 4      // ZMQ_REP (the ZAP handler)
}

/// One ZeroMQ socket with multipart send/receive; closed (linger 0) when released.
///
/// Not thread-safe, like libzmq sockets: use each from one thread.
public final class ZMQSocket: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    let context: ZMQContext   // keeps the context alive while the socket is
    public let type: ZMQSocketType

    public init(context: ZMQContext, type: ZMQSocketType) throws {
        guard let h = zmq_socket(context.handle, type.rawValue) else { throw ZMQError.last("zmq_socket") }
        handle = h
        self.context = context
        self.type = type
        try setInt(ZMQ_LINGER, 0)
    }

    deinit { zmq_close(handle) }

    public func bind(_ endpoint: String) throws {
        guard zmq_bind(handle, endpoint) == 0 else { throw ZMQError.last("bind \(endpoint)") }
    }

    public func connect(_ endpoint: String) throws {
        guard zmq_connect(handle, endpoint) == 0 else { throw ZMQError.last("connect \(endpoint)") }
    }

    /// The endpoint actually bound (e.g. the port chosen for `tcp://127.0.0.1:*`).
    public var lastEndpoint: String {
        var buffer = [CChar](repeating: 0, count: 256)
        var size = buffer.count
        _ = zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size)
        return String(cString: buffer)
    }

    func setInt(_ option: Int32, _ value: Int32) throws {
        var v = value
        guard zmq_setsockopt(handle, option, &v, MemoryLayout<Int32>.size) == 0 else { throw ZMQError.last("setsockopt \(option)") }
    }

    func setBytes(_ option: Int32, _ value: [UInt8]) throws {
        guard value.withUnsafeBytes({ zmq_setsockopt(handle, option, $0.baseAddress, value.count) }) == 0 else {
            throw ZMQError.last("setsockopt \(option)")
        }
    }

    /// Largest message accepted (bytes); larger ones drop the connection (ZMQ_MAXMSGSIZE).
    public func setMaxMessageSize(_ bytes: Int64) throws {
        var v = bytes
        guard zmq_setsockopt(handle, ZMQ_MAXMSGSIZE, &v, MemoryLayout<Int64>.size) == 0 else { throw ZMQError.last("setsockopt ZMQ_MAXMSGSIZE") }
    }

    /// The identity a ROUTER sees for this DEALER.
    /// ROUTER: a peer connecting with a routing id already in use takes it over (a worker back
    /// from a network partition whose old connection the coordinator still believes in).
    public func setRouterHandover(_ on: Bool) throws { try setInt(ZMQ_ROUTER_HANDOVER, on ? 1 : 0) }

    /// How long unsent messages are kept when the socket closes.
    public func setLinger(milliseconds: Int32) throws { try setInt(ZMQ_LINGER, milliseconds) }

    public func setRoutingID(_ id: [UInt8]) throws { try setBytes(ZMQ_ROUTING_ID, id) }

    /// Makes this socket a CURVE server with its secret key (32 bytes).
    public func setCurveServer(secretKey: [UInt8]) throws {
        try setInt(ZMQ_CURVE_SERVER, 1)
        try setBytes(ZMQ_CURVE_SECRETKEY, secretKey)
    }

    /// Makes this socket a CURVE client of the server's public key.
    public func setCurveClient(serverPublicKey: [UInt8], publicKey: [UInt8], secretKey: [UInt8]) throws {
        try setBytes(ZMQ_CURVE_SERVERKEY, serverPublicKey)
        try setBytes(ZMQ_CURVE_PUBLICKEY, publicKey)
        try setBytes(ZMQ_CURVE_SECRETKEY, secretKey)
    }

    /// Sends `frames` as one multipart message.
    public func send(_ frames: [[UInt8]], dontWait: Bool = false) throws {
        precondition(!frames.isEmpty)
        for (i, f) in frames.enumerated() {
            var flags: Int32 = i + 1 < frames.count ? ZMQ_SNDMORE : 0
            if dontWait { flags |= ZMQ_DONTWAIT }
            let rc = f.withUnsafeBytes { zmq_send(handle, $0.baseAddress, f.count, flags) }
            guard rc >= 0 else { throw ZMQError.last("send") }
        }
    }

    /// Sends `frames` as one multipart message; frames of `Frame.zeroCopyBytes` or more go
    /// without a copy (ZeroMQ holds their owner until its I/O thread has sent them).
    public func send(_ frames: [Frame], dontWait: Bool = false) throws {
        precondition(!frames.isEmpty)
        for (i, f) in frames.enumerated() {
            var flags: Int32 = i + 1 < frames.count ? ZMQ_SNDMORE : 0
            if dontWait { flags |= ZMQ_DONTWAIT }
            if f.count >= Frame.zeroCopyBytes, let base = f.base {
                var msg = zmq_msg_t()
                let hint = Unmanaged.passRetained(f.owner).toOpaque()
                guard zmq_msg_init_data(&msg, UnsafeMutableRawPointer(mutating: base), f.count, releaseOwner, hint) == 0 else {
                    Unmanaged<AnyObject>.fromOpaque(hint).release()
                    throw ZMQError.last("send")
                }
                guard zmq_msg_send(&msg, handle, flags) >= 0 else {
                    let e = ZMQError.last("send")
                    zmq_msg_close(&msg)   // releases the owner
                    throw e
                }
            } else {
                guard zmq_send(handle, f.base, f.count, flags) >= 0 else { throw ZMQError.last("send") }
            }
        }
    }

    /// The IP address of the peer the last received message came from (TCP only; nil else).
    public private(set) var lastPeerAddress: String?
    /// The ZAP user id of the last message's connection (with CURVE: the client's public key).
    public private(set) var lastUserID: String?

    /// Receives one multipart message, or nil when `dontWait` and nothing is queued.
    public func receive(dontWait: Bool = false) throws -> [[UInt8]]? {
        try receiveFrames(dontWait: dontWait)?.map(\.array)
    }

    /// Receives one multipart message as frames: large parts stay in their ZeroMQ message (no
    /// copy into fresh memory, which is slow to fault in on this kind of machine).
    public func receiveFrames(dontWait: Bool = false) throws -> [Frame]? {
        var frames: [Frame] = []
        var msg = zmq_msg_t()
        zmq_msg_init(&msg)
        defer { zmq_msg_close(&msg) }
        while true {
            let rc = zmq_msg_recv(&msg, handle, dontWait && frames.isEmpty ? ZMQ_DONTWAIT : 0)
            if rc < 0 {
                let e = zmq_errno()
                if e == EAGAIN && frames.isEmpty { return nil }
                throw ZMQError(operation: "receive", code: e)
            }
            if frames.isEmpty { lastPeerAddress = nil; lastUserID = nil }
            if lastPeerAddress == nil, let peer = zmq_msg_gets(&msg, "Peer-Address") { lastPeerAddress = String(cString: peer) }
            if lastUserID == nil, let user = zmq_msg_gets(&msg, "User-Id") { lastUserID = String(cString: user) }
            let size = zmq_msg_size(&msg)
            let more = zmq_msg_more(&msg) != 0
            if size >= Frame.zeroCopyBytes {
                frames.append(Frame(Frame.ReceivedMessage(moving: &msg)))
            } else if let data = zmq_msg_data(&msg), size > 0 {
                frames.append(Frame(Array(UnsafeRawBufferPointer(start: data, count: size))))
            } else {
                frames.append(Frame([]))
            }
            if !more { return frames }
        }
    }

    /// Waits up to `milliseconds` for a message to arrive; true when one can be received.
    public func poll(milliseconds: Int) throws -> Bool {
        var item = zmq_pollitem_t(socket: handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
        let rc = zmq_poll(&item, 1, milliseconds)
        if rc < 0 && zmq_errno() == EINTR { return false }   // a signal: let the caller look at its flags
        guard rc >= 0 else { throw ZMQError.last("poll") }
        return item.revents & Int16(ZMQ_POLLIN) != 0
    }
}

/// CURVE key pairs (Z85 text, 40 characters) as `zmq_curve_keypair` makes them.
public enum CurveKeys {
    public static func generate() throws -> (publicKey: String, secretKey: String) {
        var pub = [CChar](repeating: 0, count: 41), sec = [CChar](repeating: 0, count: 41)
        guard zmq_curve_keypair(&pub, &sec) == 0 else { throw ZMQError.last("zmq_curve_keypair (libzmq built without CURVE?)") }
        return (String(cString: pub), String(cString: sec))
    }

    /// The public key (Z85) belonging to a secret key (Z85).
    public static func publicKey(fromSecret secret: String) throws -> String {
        var pub = [CChar](repeating: 0, count: 41)
        guard zmq_curve_public(&pub, secret) == 0 else { throw ZMQError.last("zmq_curve_public") }
        return String(cString: pub)
    }

    /// The Z85 text (40 characters) of a 32-byte key.
    public static func encode(_ raw: [UInt8]) throws -> String {
        guard raw.count == 32 else { throw ZMQError(operation: "a CURVE key has 32 bytes", code: EINVAL) }
        var out = [CChar](repeating: 0, count: 41)
        guard zmq_z85_encode(&out, raw, 32) != nil else { throw ZMQError(operation: "z85 encode", code: EINVAL) }
        return String(cString: out)
    }

    /// The 32 raw bytes of a Z85 key.
    public static func decode(_ z85: String) throws -> [UInt8] {
        guard z85.utf8.count == 40 else { throw ZMQError(operation: "z85 key must be 40 characters", code: EINVAL) }
        var out = [UInt8](repeating: 0, count: 32)
        guard zmq_z85_decode(&out, z85) != nil else { throw ZMQError(operation: "z85 decode", code: EINVAL) }
        return out
    }
}

nonisolated(unsafe) private var stopHandler: (() -> Void)?

/// Calls `handler` on SIGTERM or SIGINT. The signals are unblocked first: a process started
/// by another one may inherit a mask that blocks them.
public func installStopSignals(_ handler: @escaping () -> Void) {
    stopHandler = handler
    var set = sigset_t()
    sigemptyset(&set)
    sigaddset(&set, SIGTERM)
    sigaddset(&set, SIGINT)
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
    signal(SIGTERM) { _ in stopHandler?() }
    signal(SIGINT) { _ in stopHandler?() }
}

/// Called by ZeroMQ (on its I/O thread) when a zero-copy frame has been sent.
private let releaseOwner: @convention(c) (UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Void = { _, hint in
    if let hint { Unmanaged<AnyObject>.fromOpaque(hint).release() }
}

/// One frame's bytes: `count` bytes at `base`, kept where they are and unchanged by `owner` —
/// an array's storage, a buffer being sent, or a received ZeroMQ message — so large frames
/// travel in and out without a copy.
public struct Frame: @unchecked Sendable {
    /// Frames this large are handed to ZeroMQ in place, and kept in their message on receipt;
    /// smaller ones are copied.
    public static let zeroCopyBytes = 1 << 16
    public let base: UnsafeRawPointer?
    public let count: Int
    let owner: AnyObject

    public init(_ bytes: [UInt8]) {
        let box = ArrayBox(bytes)
        base = box.base; count = bytes.count; owner = box
    }

    public init(_ buffer: FloatBuffer) {
        base = UnsafeRawPointer(buffer.pointer); count = 4 * buffer.count; owner = buffer
    }

    init(_ message: ReceivedMessage) {
        base = message.base; count = message.count; owner = message
    }

    /// The bytes (no copy when the frame is an array).
    public var array: [UInt8] {
        if let box = owner as? ArrayBox { return box.bytes }
        return withBytes { Array($0) }
    }

    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: count > 0 ? base : nil, count: count))
    }

    /// Holds an array so that its storage (never mutated again) stays where it is.
    final class ArrayBox {
        let bytes: [UInt8]
        let base: UnsafeRawPointer?
        init(_ bytes: [UInt8]) {
            self.bytes = bytes
            base = bytes.withUnsafeBytes { $0.baseAddress }   // a native array's storage does not move while it is held
        }
    }

    /// A received ZeroMQ message part, closed when the last frame using it goes.
    final class ReceivedMessage {
        let msg = UnsafeMutablePointer<zmq_msg_t>.allocate(capacity: 1)
        var base: UnsafeRawPointer? { UnsafeRawPointer(zmq_msg_data(msg)) }
        var count: Int { zmq_msg_size(msg) }
        /// Takes over `source` (which is left empty).
        init(moving source: UnsafeMutablePointer<zmq_msg_t>) {
            zmq_msg_init(msg)
            zmq_msg_move(msg, source)
        }
        deinit { zmq_msg_close(msg); msg.deallocate() }
    }
}
