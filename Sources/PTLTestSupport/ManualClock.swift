import Foundation
import PTLCluster

/// A clock tests move by hand.
public final class ManualClock: Clock, @unchecked Sendable {
    private var t: Double
    private let lock = NSLock()
    public init(_ start: Double = 0) { t = start }
    public func now() -> Double { lock.lock(); defer { lock.unlock() }; return t }
    public func advance(_ seconds: Double) { lock.lock(); t += seconds; lock.unlock() }
}
