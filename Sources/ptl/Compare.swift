import ArgumentParser
import Foundation
import Logging
import PTLCluster
import PTLCommandLine
import PTLLoop
import PTLPrune

/// `ptl compare`: PTL, its baselines and the schedule variants, each a `ptl prune` run (in this
/// process, or over local workers) with the same model, data, target and total tune budget, at
/// one or more seeds; one table.
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run PTL, Prune-Once, ShortGPT and their recovery and schedule variants to the same target; write one table.",
        discussion: """
        Every variant is a ptl prune run in this process, or over --local-workers ptl-worker processes
        (OUT/<variant>-seed<k>/, resumable: a finished run is not repeated). Arguments after `--` go to
        every run (e.g. -- --target-params 0.5 --tune-steps 20).
        Writes OUT/compare.md, OUT/compare.png and OUT/compare.json (every run's summary).
        """)

    /// What every variant starts from: the loop before issue 13's options (cross-entropy,
    /// dataset calibration, no reconstruction, the budget on held-out loss, no reserve), so a
    /// variant's name says all it adds. The defaults of ptl prune are ptl-best's.
    static let plain = ["--recover", "ce", "--calibration", "dataset", "--reconstruct", "none", "--damage", "loss", "--final-reserve", "0"]

    static let allVariants: [(name: String, args: [String], what: String)] = [
        ("ptl", [], "PTL, plain: damage budget on held-out loss, cut, reset, cross-entropy"),
        ("prune-once", ["--method", "prune-once"], "all pruning in round 1, then all tuning"),
        ("shortgpt", ["--method", "shortgpt"], "lowest Block-Influence blocks at once, then tuning"),
        ("ptl-paper", ["--budget", "equal", "--layer-removal", "cut", "--optimizer", "reset"], "PTL, the paper's schedule (equal budget, cut, reset)"),
        ("ptl-anneal", ["--budget", "equal", "--layer-removal", "anneal", "--optimizer", "reset"], "paper schedule + annealed layer removal"),
        ("ptl-carry", ["--budget", "equal", "--layer-removal", "cut", "--optimizer", "carry"], "paper schedule + AdamW carried across rounds"),
        ("ptl-all", ["--budget", "damage", "--layer-removal", "anneal", "--optimizer", "carry"], "all three remedies"),
        // Recovery and calibration (issue 13): distillation from the unpruned model, reconstruction,
        // on-policy calibration, a damage budget that follows a probe of the task, and the schedule.
        ("ptl-kd", ["--recover", "kd"], "PTL recovering by distillation (forward KL, T 1)"),
        ("prune-once-kd", ["--method", "prune-once", "--recover", "kd"], "Minitron-style: Prune-Once recovering by distillation"),
        ("shortgpt-kd", ["--method", "shortgpt", "--recover", "kd"], "ShortGPT recovering by distillation"),
        ("ptl-reconstruct", ["--reconstruct", "ffn"], "PTL + least-squares down_proj refit after each neuron cut"),
        ("ptl-on-policy", ["--calibration", "on-policy"], "PTL calibrated on its own chains of thought"),
        ("ptl-rac", ["--calibration", "on-policy", "--reconstruct", "ffn"], "PTL + on-policy calibration + reconstruction (RAC's recipe)"),
        ("ptl-probe", ["--damage", "probe"], "PTL, budget following the probe's error rate"),
        ("ptl-probe-reserve", ["--damage", "probe", "--final-reserve", "0.3"], "PTL, probe budget, 30 % of the steps kept for the last round"),
        ("ptl-layers-first", ["--order", "layers-first"], "PTL cutting the block(s) first"),
        ("ptl-alternate", ["--order", "alternate"], "PTL alternating block and neuron rounds"),
        ("ptl-anneal-damage", ["--layer-removal", "anneal"], "PTL, damage budget, doomed blocks annealed to zero"),
        ("ptl-best", ["--recover", "kd", "--calibration", "on-policy", "--reconstruct", "ffn", "--damage", "probe", "--final-reserve", "0.3"],
         "PTL with every recovery option (ptl prune's defaults)"),
        ("ptl-best-ce", ["--calibration", "on-policy", "--reconstruct", "ffn", "--damage", "probe", "--final-reserve", "0.3"],
         "ptl-best recovering by cross-entropy (no distillation)"),
        ("prune-once-best", ["--method", "prune-once", "--recover", "kd", "--calibration", "on-policy", "--reconstruct", "ffn"],
         "Prune-Once with the same recovery options"),
        // Weight sparsity (issue 16): SparseGPT calibrated on the model's own traces (RAC), raised
        // round by round with tuning between (PTL + RAC), or all at once and then the same tuning.
        ("sparse-ptl", ["--prune", "sparse", "--recover", "kd", "--calibration", "on-policy", "--damage", "probe", "--final-reserve", "0.3"],
         "PTL + RAC: SparseGPT on-policy, sparsity raised by --step a round, distillation between"),
        ("sparse-ptl-cubic", ["--prune", "sparse", "--sparsity-schedule", "cubic", "--recover", "kd", "--calibration", "on-policy", "--damage", "probe",
                              "--final-reserve", "0.3"],
         "sparse-ptl with the rounds spaced cubically (big steps first, small near the target)"),
        ("sparse-ptl-cubic-equal", ["--prune", "sparse", "--sparsity-schedule", "cubic", "--budget", "equal", "--recover", "kd",
                                    "--calibration", "on-policy"],
         "sparse-ptl-cubic with the same tune steps every round"),
        ("sparse-once", ["--method", "prune-once", "--prune", "sparse", "--recover", "kd", "--calibration", "on-policy"],
         "one-shot SparseGPT on-policy (RAC), then the same distillation budget"),
        // Recovery by reinforcement learning (issue 17): the tune steps are GRPO steps on the
        // tuning questions (rewards for the right final answer and its format; no worked solutions
        // used), the same prompts × rollouts a step for both — an equal rollout budget.
        ("ptl-grpo", ["--tune", "grpo", "--calibration", "on-policy", "--reconstruct", "ffn", "--damage", "probe", "--final-reserve", "0.3"],
         "PTL recovering by GRPO alone (ptl-best's pruning, no distillation)"),
        ("prune-once-grpo", ["--method", "prune-once", "--tune", "grpo", "--calibration", "on-policy", "--reconstruct", "ffn"],
         "Prune-Once recovering by GRPO alone, the same rollout budget"),
    ]

    @Option(help: "The model (HF directory or .gguf).")
    var model: String = "models/demo"

    @Option(help: "Output directory.")
    var out: String = "out/compare"

    @Option(help: "Seeds, comma-separated.")
    var seeds: String = "0,1"

    @Option(help: "Variants, comma-separated, from: \(Compare.allVariants.map(\.name).joined(separator: ", ")).")
    var variants: String = "ptl-best,prune-once-best,ptl,prune-once,shortgpt,ptl-paper"

    @Option(help: "Fraction of the original parameters every run ends at or below (else the runs' default or what follows --).")
    var targetParams: Double?

    @Option(help: "Run every variant on this many local ptl-worker processes (a coordinator in this process); 0 runs them in this process.")
    var localWorkers: Int = 0

    @Argument(parsing: .postTerminator, help: "Options passed to every run (those of ptl prune).")
    var passthrough: [String] = []

    func run() throws {
        let seedList = seeds.split(separator: ",").compactMap { UInt64($0.trimmingCharacters(in: .whitespaces)) }
        let names = variants.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard !seedList.isEmpty else { throw ValidationError("--seeds needs at least one number") }
        let chosen = try names.map { n in
            guard let v = Compare.allVariants.first(where: { $0.name == n }) else { throw ValidationError("unknown variant \(n)") }
            return v
        }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        installStopSignals { pruneStopRequested = true }
        let logger = Logger.ptl("compare")
        let cluster = localWorkers > 0 ? try CompareCluster(workers: localWorkers, logger: logger) : nil
        defer { cluster?.stop() }
        var results: [(variant: String, what: String, seed: UInt64, summary: LoopReport.Summary)] = []
        for v in chosen {
            for seed in seedList {
                let dir = (out as NSString).appendingPathComponent("\(v.name)-seed\(seed)")
                let summaryPath = (dir as NSString).appendingPathComponent("summary.json")
                if let s = try? JSONDecoder().decode(LoopReport.Summary.self, from: Data(contentsOf: URL(fileURLWithPath: summaryPath))), s.done {
                    logger.info("\(v.name) seed \(seed): done earlier")
                    results.append((v.name, v.what, seed, s))
                    continue
                }
                logger.info("\(v.name) seed \(seed): \(v.what)")
                // Every run is a `ptl prune` command line, parsed (and validated) as one.
                let target = targetParams.map { ["--target-params", "\($0)"] } ?? []
                let prune = try Prune.parse(["--model", model, "--seed", "\(seed)", "--out", dir] + Compare.plain + target + v.args + passthrough)
                let job = try LoopRun(loop: prune.loop, data: prune.data, run: prune.output, command: prune, commandName: "ptl prune",
                                      logger: logger, runName: "\(v.name)-seed\(seed)")
                let backend: ComputeBackend = cluster.map { ClusterBackend(coordinator: $0.coordinator, tokenizerJSON: job.inputs.tokenizerJSON) }
                    ?? LocalBackend(tokenizer: job.inputs.tokenizer)
                guard try job.run(backend: backend, stop: { pruneStopRequested }) else { throw ValidationError("stopped during \(v.name) seed \(seed); run again to resume") }
                results.append((v.name, v.what, seed, try JSONDecoder().decode(LoopReport.Summary.self, from: Data(contentsOf: URL(fileURLWithPath: summaryPath)))))
            }
        }
        let md = table(results)
        try Data(md.utf8).write(to: URL(fileURLWithPath: out).appendingPathComponent("compare.md"))
        try Data(plot(chosen.map(\.name), seed: seedList[0])).write(to: URL(fileURLWithPath: out).appendingPathComponent("compare.png"))
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        struct Run: Encodable { var variant: String; var seed: UInt64; var summary: LoopReport.Summary }
        try enc.encode(results.map { Run(variant: $0.variant, seed: $0.seed, summary: $0.summary) })
            .write(to: URL(fileURLWithPath: out).appendingPathComponent("compare.json"))
        print(md)
    }

    /// Accuracy against size, round by round, one line per variant (the first seed).
    func plot(_ names: [String], seed: UInt64) -> [UInt8] {
        struct Row: Decodable { var phase: String; var paramsFraction: Double; var accuracy: Double?; var linearZeros: Double? }
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        let series = names.enumerated().map { i, name -> PlotSeries in
            let path = (out as NSString).appendingPathComponent("\(name)-seed\(seed)/metrics.jsonl")
            let rows = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n")
                .compactMap { try? d.decode(Row.self, from: Data($0.utf8)) }
            // Sparse runs keep every parameter: their x is the share of linear weights left nonzero.
            let points = rows.filter { $0.phase == "eval" }.compactMap { r in
                r.accuracy.map { PlotPoint(x: r.linearZeros.map { (1 - $0) * 100 } ?? r.paramsFraction * 100, y: $0 * 100) }
            }
            return PlotSeries(label: name, points: points, color: PlotColor.palette[i % PlotColor.palette.count])
        }
        return LinePlot.png(title: "ptl compare (seed \(seed)): accuracy vs size", xLabel: "parameters kept (sparse runs: nonzero linear weights), %",
                            yLabel: "accuracy (%)", series: series, yRange: 0...100, invertX: true)
    }

    /// What one tune step is, for the table's header: next-token (or distillation) steps of a
    /// batch of lines, GRPO steps of sampled completions, or both — per variant when they differ.
    static func stepKind(_ runs: [(variant: String, settings: LoopSettings)]) -> String {
        func kind(_ s: LoopSettings) -> String {
            let lines = "\(s.batchSize) lines a step"
            guard let g = s.grpo, g.tune != .cpt else { return lines }
            let rollouts = "GRPO steps of \(g.promptsPerStep) questions × \(g.rolloutsPerPrompt) sampled completions"
            return g.tune == .grpo ? rollouts : "each round's first half \(lines), the second half \(rollouts)"
        }
        let kinds = runs.map { kind($0.settings) }
        guard let k = kinds.first else { return "" }
        if kinds.allSatisfy({ $0 == k }) { return k }
        var seen: [String] = []
        for (r, k) in zip(runs, kinds) where !seen.contains(r.variant + ": " + k) { seen.append(r.variant + ": " + k) }
        return seen.joined(separator: "; ")
    }

    func table(_ results: [(variant: String, what: String, seed: UInt64, summary: LoopReport.Summary)]) -> String {
        /// Mean accuracy of a variant over its seeds.
        func meanAccuracy(_ variant: String) -> Double? {
            let accs = results.filter { $0.variant == variant }.compactMap(\.summary.accuracy)
            return accs.isEmpty ? nil : accs.reduce(0, +) / Double(accs.count)
        }
        func pct(_ x: Double?) -> String { x.map { String(format: "%.1f", $0 * 100) } ?? "–" }
        guard let first = results.first?.summary else { return "no runs\n" }
        var md = "# ptl compare\n\n"
        md += "Model \(model): \(first.originalParams) parameters, accuracy \(pct(first.originalAccuracy)) %"
        md += first.originalDecodeTokensPerSecond.map { String(format: ", decode %.0f tokens/s (batch 1, 1 thread)", $0) } ?? ""
        if let sp = first.settings.sparse {
            md += ". Sparsity \(sp.sparsity) of every linear layer (SparseGPT; embeddings and norms dense)"
        } else {
            md += ". Target \(String(format: "%.0f", first.settings.target * 100)) % of the parameters"
        }
        md += "; every run tunes \(first.tuneSteps) steps in total: \(Self.stepKind(results.map { ($0.variant, $0.summary.settings) })).\n\n"
        md += "| variant | what | accuracy % (per seed) | mean | kept of original | params | zeros (linear) | mean generated tokens | FLOPs/token | decode speed-up | FLOPs ratio | loss right after the first cut | tune time s |\n"
        md += "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        var order: [String] = []
        for r in results where !order.contains(r.variant) { order.append(r.variant) }
        for v in order {
            let rs = results.filter { $0.variant == v }
            let mean = meanAccuracy(v)
            let s = rs[0].summary
            let kept = mean.flatMap { m in s.originalAccuracy.map { $0 > 0 ? m / $0 : 0 } }
            let speedups = rs.compactMap { r in r.summary.decodeTokensPerSecond.flatMap { t in r.summary.originalDecodeTokensPerSecond.map { t / $0 } } }
            let speed = speedups.isEmpty ? "–" : String(format: "%.2f×", speedups.reduce(0, +) / Double(speedups.count))
            let losses = rs.compactMap { $0.summary.lossAfterFirstPrune }
            md += "| \(v) | \(rs[0].what) | \(rs.map { pct($0.summary.accuracy) }.joined(separator: " / ")) | \(pct(mean)) | \(pct(kept)) % | "
            md += "\(s.params) (\(pct(Double(s.params) / Double(s.originalParams))) %) | \(s.linearZeros.map { "\(pct($0)) %" } ?? "–") | "
            md += "\(s.meanGeneratedTokens.map { String(format: "%.1f", $0) } ?? "–")\(s.originalMeanGeneratedTokens.map { String(format: " (original %.1f)", $0) } ?? "") | "
            md += "\(pct(Double(s.flopsPerToken) / Double(s.originalFlopsPerToken))) % | "
            md += "\(speed) | \(String(format: "%.2f×", Double(s.originalFlopsPerToken) / Double(s.flopsPerToken))) | "
            md += "\(losses.isEmpty ? "–" : losses.map { String(format: "%.3f", $0) }.joined(separator: " / ")) | "
            md += "\(String(format: "%.0f", rs.map(\.summary.tuneSeconds).reduce(0, +) / Double(rs.count))) |\n"
        }
        if let ptlMean = meanAccuracy("ptl") {
            for b in ["prune-once", "shortgpt"] {
                guard let m = meanAccuracy(b) else { continue }
                md += "\nPTL (mean \(pct(ptlMean)) %) is \(ptlMean > m ? "ahead of" : ptlMean == m ? "level with" : "BEHIND") \(b) (mean \(pct(m)) %)."
            }
            md += "\n"
        }
        if let b = meanAccuracy("sparse-once") {
            for v in order where v.hasPrefix("sparse-ptl") {
                guard let a = meanAccuracy(v) else { continue }
                md += "\nPTL + RAC (\(v), mean \(pct(a)) %) is \(a > b ? "ahead of" : a == b ? "level with" : "BEHIND") one-shot SparseGPT + the same tuning (sparse-once, mean \(pct(b)) %)."
            }
            md += "\n"
        }
        return md
    }
}

/// A coordinator in this process with local workers, shared by every run of a compare.
final class CompareCluster {
    let coordinator: Coordinator
    let workers: LocalWorkers

    init(workers n: Int, logger: Logger) throws {
        let c = try Coordinator(context: try ZMQContext(), bind: "tcp://127.0.0.1:0")
        c.logger = logger
        c.shouldStop = { pruneStopRequested }
        coordinator = c
        let args = (0..<n).map { ["--connect", c.endpoint, "--threads", "1", "--id", "local-\($0)", "--parent-pid", "\(getpid())",
                                   "--log-level", "warning"] }
        workers = LocalWorkers(executable: LocalWorkers.workerExecutable, arguments: args, logger: logger)
        try workers.startAll()
        let w = workers
        c.onPump = { if !pruneStopRequested { w.restartDead() } }
    }

    func stop() { workers.stopAll() }
}
