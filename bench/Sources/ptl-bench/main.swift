import Foundation
import PTLModel
import PTLTensor

// ptl-bench: training-step, prefill and decode speed for the two reference shapes, with the
// sgemm rate and copy bandwidth measured in the same run.
//   swift run -c release ptl-bench [--config a|b|all] [--precision fp32|bf16|both] [--reps N] [--threads N]
//                                  [--skip-train] [--skip-inference] [--profile]
//   ptl-bench --tokenizer tokenizer.json data.jsonl      (tokenizer MB/s)
//   ptl-bench [--precision fp32|bf16] --profile-decode a|b   (decode time per op)

var configNames = ["a", "b"]
var reps = 5
var skipTrain = false
var skipInference = false
var threads = System.coreCount
var precisions: [Precision] = [.fp32, .bf16]
var args = Array(CommandLine.arguments.dropFirst())
while !args.isEmpty {
    let a = args.removeFirst()
    switch a {
    case "--config":
        let v = args.isEmpty ? "all" : args.removeFirst()
        configNames = v == "all" ? ["a", "b"] : [v]
    case "--reps": reps = Int(args.isEmpty ? "5" : args.removeFirst()) ?? 5
    case "--threads": threads = Int(args.isEmpty ? "2" : args.removeFirst()) ?? 2
    case "--precision":
        let v = args.isEmpty ? "both" : args.removeFirst()
        guard v == "both" || Precision(rawValue: v) != nil else {
            FileHandle.standardError.write(Data("--precision takes fp32, bf16 or both, not \(v)\n".utf8))
            exit(2)
        }
        precisions = v == "both" ? [.fp32, .bf16] : [Precision(rawValue: v)!]
    case "--skip-train": skipTrain = true
    case "--skip-inference": skipInference = true
    case "--profile": OpProfiler.enabled = true
    case "--tokenizer":
        // --tokenizer TOKENIZER.json DATA.jsonl
        let tok = args.removeFirst(), data = args.removeFirst()
        let r = try! tokenizerBenchmark(tokenizerPath: tok, jsonlPath: data, reps: reps)
        print(String(format: "tokenizer %@: %.2f MB in, %d tokens, %.2f MB/s (one thread, one call per line)", tok, r.megabytes, r.tokens, r.mbPerSecond))
        exit(0)
    case "--profile-decode":
        ComputeThreads.set(threads)
        profileDecode(try! BenchConfig.named(args.isEmpty ? "b" : args.removeFirst()), precision: precisions.last!.resolved().precision)
        exit(0)
    default:
        FileHandle.standardError.write(Data("unknown argument \(a)\n".utf8))
        exit(2)
    }
}
ComputeThreads.set(threads)
let env = ProcessInfo.processInfo.environment
print("# ptl-bench  threads \(threads)  OpenBLAS core \(ComputeThreads.blasCoreName)  OPENBLAS_CORETYPE=\(env["OPENBLAS_CORETYPE"] ?? "(unset)") OPENBLAS_L2_SIZE=\(env["OPENBLAS_L2_SIZE"] ?? "(unset)")")
let (copyGBs, readGBs) = memoryBandwidth(reps: reps)
print("# CPU \(cpuModelName())  bf16: \(BF16Support.summary), " +
      (BF16Support.available ? "bf16 products on, kernel \(BF16Support.implementation(m: 1024, n: 1536, k: 576))" : "no bf16 products (bf16 runs fp32)"))
print(String(format: "memory bandwidth: copy %.1f GB/s, read %.1f GB/s", copyGBs, readGBs))
// Decoding streams the weights once per token: the read bandwidth bounds it.
let bandwidth = readGBs
for name in configNames {
  for asked in precisions {
    do {
        let (precision, note) = asked.resolved()
        if let note { print("# \(note)") }
        let bc = try BenchConfig.named(name)
        var r = runModelBench(bc, precision: precision, reps: reps, skipTrain: skipTrain, skipInference: skipInference)
        let weightBytes = r["parameters"]! * (precision == .bf16 ? 2 : 4)
        r["decode_bandwidth_limit_tokens_per_s"] = bandwidth * 1e9 / weightBytes
        if let d = r["decode_b1_tokens_per_s"] { r["decode_b1_fraction_of_bandwidth_limit"] = d / r["decode_bandwidth_limit_tokens_per_s"]! }
        r["copy_bandwidth_gbs"] = copyGBs
        r["read_bandwidth_gbs"] = readGBs
        print("config \(bc.name), batch \(bc.batch), seq \(bc.seq), \(precision)")
        if OpProfiler.enabled {
            for (name, seconds, calls) in OpProfiler.report { print(String(format: "  op %-20@ %8.3f s  %6d calls", name as NSString, seconds, calls)) }
            OpProfiler.reset()
        }
        for k in r.keys.sorted() { print(String(format: "  %-40@ %.3f", k as NSString, r[k]!)) }
        let json = r.keys.sorted().map { "\"\($0)\": \(r[$0]!)" }.joined(separator: ", ")
        print("JSON {\"config\": \"\(name)\", \"precision\": \"\(precision)\", \"threads\": \(threads), \"blas_core\": \"\(ComputeThreads.blasCoreName)\", \"bf16\": \"\(BF16Support.summary)\", \(json)}")
    } catch {
        FileHandle.standardError.write(Data("\(error)\n".utf8))
        exit(1)
    }
  }
}

/// The CPU's model name from /proc/cpuinfo.
func cpuModelName() -> String {
    guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("model name") }),
          let colon = line.firstIndex(of: ":") else { return "unknown" }
    return line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
}
