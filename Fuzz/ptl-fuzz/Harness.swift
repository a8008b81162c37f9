import Foundation
import PTLFuzzTargets

// The libFuzzer binary: PTL_FUZZ_TARGET names the target (FuzzTarget); PTL_FUZZ_WRITE_SEEDS=DIR
// writes the seed corpora instead. Built only by scripts/fuzz.sh (PTL_FUZZ=1 adds it to the
// package): libFuzzer supplies `main`.

nonisolated(unsafe) var target: FuzzTarget = .wire

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    if let dir = ProcessInfo.processInfo.environment["PTL_FUZZ_WRITE_SEEDS"] {
        do { try Seeds.write(to: dir); exit(0) } catch {
            FileHandle.standardError.write(Data("writing the seeds: \(error)\n".utf8))
            exit(1)
        }
    }
    let name = ProcessInfo.processInfo.environment["PTL_FUZZ_TARGET"] ?? ""
    guard let t = FuzzTarget(rawValue: name) else {
        FileHandle.standardError.write(Data("PTL_FUZZ_TARGET must be one of: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")) (got '\(name)')\n".utf8))
        exit(2)
    }
    target = t
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    _ = target.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
