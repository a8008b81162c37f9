import Foundation
import PTLModel
import PTLPrune

/// What a finished (or interrupted) loop run writes: OUT/metrics.jsonl (one line per phase),
/// OUT/report.md (a table per round, the removals with their scores, the final comparison),
/// OUT/accuracy_vs_size.png and OUT/summary.json (read by `ptl compare`).
public enum LoopReport {
    public struct Summary: Codable, Sendable {
        public var method: String
        public var settings: LoopSettings
        public var done: Bool
        public var rounds: Int
        public var originalAccuracy: Double?
        public var originalParams: Int
        public var originalFlopsPerToken: Int
        public var originalDecodeTokensPerSecond: Double?
        public var accuracy: Double?
        public var lossAfterFirstPrune: Double?
        public var params: Int
        public var flopsPerToken: Int
        public var decodeTokensPerSecond: Double?
        public var layers: Int
        public var intermediate: Int
        public var tuneSteps: Int
        public var tuneSeconds: Double
        public var wallSeconds: Double
        /// Mean tokens generated per answer by the original and the final model.
        public var originalMeanGeneratedTokens: Double?
        public var meanGeneratedTokens: Double?
        /// `--prune sparse`: the fraction of the linear layers' weights that are zero (masked).
        public var linearZeros: Double?
    }

    static func atomicWrite(_ data: Data, to path: String) throws {
        let tmp = path + ".writing"
        try data.write(to: URL(fileURLWithPath: tmp))
        guard rename(tmp, path) == 0 else { throw LoopError("\(path): cannot write (errno \(errno))") }
    }

    /// One JSON object a line (snake_case keys, sorted), written atomically: metrics.jsonl, grpo.jsonl.
    static func writeJSONLines<T: Encodable>(_ rows: [T], to path: String) throws {
        let enc = JSONEncoder()
        enc.keyEncodingStrategy = .convertToSnakeCase
        enc.outputFormatting = [.sortedKeys]
        var lines = Data()
        for r in rows { lines += try enc.encode(r); lines += Data("\n".utf8) }
        try atomicWrite(lines, to: path)
    }

    static func pct(_ x: Double?) -> String { x.map { String(format: "%.1f%%", $0 * 100) } ?? "–" }

    public static func write(rows: [PhaseRow], removals: [RemovalRecord], settings: LoopSettings, plan: PrunePlan,
                             original: ModelCost, context: Int, tuneSeconds: Double, done: Bool, to out: String,
                             layerZeros: [(name: String, zeros: Double)] = []) throws {
        try writeJSONLines(rows, to: (out as NSString).appendingPathComponent("metrics.jsonl"))

        let evals = rows.filter { $0.phase == .eval }
        let first = evals.first, last = evals.last
        var summary = Summary(method: settings.method.rawValue, settings: settings, done: done, rounds: plan.rounds.count,
                              originalAccuracy: first?.accuracy, originalParams: original.parameters,
                              originalFlopsPerToken: original.forwardFlopsPerToken(context: context), originalDecodeTokensPerSecond: first?.decodeTokensPerSecond,
                              accuracy: last?.accuracy,
                              lossAfterFirstPrune: rows.first { $0.phase == .prune }?.loss,
                              params: last?.params ?? original.parameters, flopsPerToken: last?.flopsPerToken ?? original.forwardFlopsPerToken(context: context),
                              decodeTokensPerSecond: last?.decodeTokensPerSecond, layers: last?.layers ?? 0,
                              intermediate: last?.intermediate ?? 0,
                              tuneSteps: rows.compactMap { $0.phase == .tune ? $0.tuneSteps : nil }.reduce(0, +),
                              tuneSeconds: tuneSeconds, wallSeconds: rows.reduce(0) { $0 + $1.seconds })
        summary.originalMeanGeneratedTokens = first?.meanGeneratedTokens
        summary.meanGeneratedTokens = last?.meanGeneratedTokens
        summary.linearZeros = last?.linearZeros
        let pretty = JSONEncoder()
        pretty.outputFormatting = [.prettyPrinted, .sortedKeys]
        try atomicWrite(try pretty.encode(summary), to: (out as NSString).appendingPathComponent("summary.json"))

        // The plot: accuracy against the fraction of parameters kept, one point per round.
        // (Sparse runs keep every parameter: their x is the linear layers' nonzero weights.)
        let points = evals.compactMap { r in r.accuracy.map { PlotPoint(x: r.linearZeros.map { (1 - $0) * 100 } ?? r.paramsFraction * 100, y: $0 * 100) } }
        let xLabel = settings.sparse == nil ? "parameters kept (% of the original)" : "linear-layer weights kept nonzero (%)"
        let png = LinePlot.png(title: "ptl, method \(settings.method.rawValue): accuracy vs size", xLabel: xLabel,
                               yLabel: "accuracy (%)", series: [PlotSeries(label: settings.method.rawValue, points: points, color: PlotColor.palette[0])],
                               xRange: nil, yRange: 0...100, invertX: true)
        try atomicWrite(Data(png), to: (out as NSString).appendingPathComponent("accuracy_vs_size.png"))

        try atomicWrite(Data(markdown(rows: rows, removals: removals, settings: settings, plan: plan, summary: summary, layerZeros: layerZeros).utf8),
                        to: (out as NSString).appendingPathComponent("report.md"))
    }

    static func markdown(rows: [PhaseRow], removals: [RemovalRecord], settings s: LoopSettings, plan: PrunePlan, summary: Summary,
                         layerZeros: [(name: String, zeros: Double)] = []) -> String {
        var md = "# ptl run: \(s.method.rawValue)\(summary.done ? "" : " (in progress)")\n\n"
        if let sp = s.sparse {
            md += "Sparse (`--prune sparse`): SparseGPT raises every linear layer's sparsity to \(sp.sparsity) over \(plan.rounds.count) round(s) "
            md += "(\(plan.rounds.compactMap(\.sparsity).joined(separator: " → "))), calibrated on `\(s.calibration.rawValue)`, damping \(sp.percentDamp), "
            md += "block \(sp.blockSize); the pruned weights stay exact zeros through tuning. The model keeps its \(summary.originalParams) parameters "
            md += "and its dense shape: ptl's kernels (and most engines') do the same work on zeros, so decode speed does not change; "
            md += "2:4 would need sparse tensor-core kernels (GPU) or a CPU kernel that skips the zeros.\n"
        } else {
            md += "Target \(String(format: "%.0f%%", s.target * 100)) of \(summary.originalParams) parameters; \(plan.rounds.count) round(s) "
            md += "to \(plan.finalLayers) blocks × FFN \(plan.finalIntermediate)\(plan.finalHidden.map { " × hidden \($0)" } ?? "") (\(plan.finalParameters) parameters, "
            md += String(format: "%.1f%%", 100 * Double(plan.finalParameters) / Double(plan.originalParameters)) + ").\n"
        }
        md += "Settings: order `\(s.order.rawValue)`, step \(s.step), budget `\(s.budget.rawValue)`, layer removal `\(s.layerRemoval.rawValue)`, "
        md += "optimizer `\(s.optimizer.rawValue)`, neuron score `\(s.neuronScore.rawValue)`, layer score `\(s.layerScore.rawValue)`, "
        md += "\(summary.tuneSteps) tune steps of \(s.batchSize) lines at lr \(s.learningRate), seed \(s.seed).\n\n"
        md += "FLOPs/token: forward, at the decode measurement's mean context. Decode: greedy, batch 1, one thread, the best of 5 runs.\n\n"
        let sparse = s.sparse != nil
        md += "## Rounds\n\n| round | shape | params | \(sparse ? "zeros (linear) | " : "")FLOPs/token | held-out loss after pruning | tune steps | held-out loss | accuracy | mean generated tokens | decode tok/s | wall s |\n"
        md += "|---|---|---|---|---|---|---|---|---|---|---|\(sparse ? "---|" : "")\n"
        let byRound = Dictionary(grouping: rows, by: \.round)
        for r in byRound.keys.sorted() {
            let g = byRound[r]!
            guard let e = g.last(where: { $0.phase == .eval }) else { continue }
            let p = g.first { $0.phase == .prune }
            let t = g.first { $0.phase == .tune }
            md += "| \(r == 0 ? "0 (original)" : "\(r)") | \(e.layers) × \(e.intermediate) | \(e.params) (\(pct(e.paramsFraction))) | "
            if sparse { md += "\(e.linearZeros.map { String(format: "%.2f%%", $0 * 100) } ?? "–") | " }
            md += "\(e.flopsPerToken) (\(pct(Double(e.flopsPerToken) / Double(summary.originalFlopsPerToken)))) | "
            md += "\(p?.loss.map { String(format: "%.4f", $0) } ?? "–") | \(t?.tuneSteps.map(String.init) ?? "–") | "
            md += "\(e.loss.map { String(format: "%.4f", $0) } ?? "–") | \(pct(e.accuracy)) | \(e.meanGeneratedTokens.map { String(format: "%.1f", $0) } ?? "–") | "
            md += "\(e.decodeTokensPerSecond.map { String(format: "%.0f", $0) } ?? "–") | \(String(format: "%.1f", g.reduce(0) { $0 + $1.seconds })) |\n"
        }
        if summary.done, let a0 = summary.originalAccuracy, let a1 = summary.accuracy {
            md += "\n## Final model against the original\n\n| | original | final | ratio |\n|---|---|---|---|\n"
            md += "| accuracy | \(pct(a0)) | \(pct(a1)) | \(pct(a0 > 0 ? a1 / a0 : nil)) |\n"
            md += "| parameters | \(summary.originalParams) | \(summary.params) | \(pct(Double(summary.params) / Double(summary.originalParams))) |\n"
            md += "| FLOPs/token | \(summary.originalFlopsPerToken) | \(summary.flopsPerToken) | \(pct(Double(summary.flopsPerToken) / Double(summary.originalFlopsPerToken))) |\n"
            if let t0 = summary.originalDecodeTokensPerSecond, let t1 = summary.decodeTokensPerSecond {
                md += String(format: "| decode tokens/s (batch 1, 1 thread) | %.0f | %.0f | speed-up %.2f× (FLOPs ratio %.2f×) |\n",
                             t0, t1, t1 / t0, Double(summary.originalFlopsPerToken) / Double(summary.flopsPerToken))
            }
            if let g0 = summary.originalMeanGeneratedTokens, let g1 = summary.meanGeneratedTokens {
                md += String(format: "| mean generated tokens per answer | %.1f | %.1f | %.2f× |\n", g0, g1, g0 > 0 ? g1 / g0 : 0)
            }
            if let z = summary.linearZeros {
                md += String(format: "| linear-layer weights zero | 0 %% | %.2f %% | |\n", z * 100)
            }
            md += String(format: "| tune time | | %.0f s (%d steps) | |\n", summary.tuneSeconds, summary.tuneSteps)
        }
        md += "\n## Phases\n\n| round | phase | seconds | detail |\n|---|---|---|---|\n"
        for r in rows { md += "| \(r.round) | \(r.phase.rawValue) | \(String(format: "%.1f", r.seconds)) | \(r.detail ?? "") |\n" }
        if !layerZeros.isEmpty {
            md += "\n## Sparsity per layer (the masks in the checkpoint; final/masks.safetensors at the end)\n\n| layer | zeros |\n|---|---|\n"
            for (name, z) in layerZeros { md += String(format: "| %@ | %.2f %% |\n", name, z * 100) }
        }
        if removals.isEmpty { return md }
        md += "\n## What was removed, with its score\n\n"
        for rec in removals {
            md += "### Round \(rec.round)\n\n"
            if !rec.layers.isEmpty {
                md += "Blocks (\(rec.how.map(\.description) ?? "")): " + rec.layers.map { "\($0.index) (score \(String(format: "%.4g", $0.score)))" }.joined(separator: ", ") + "\n\n"
            }
            for (l, ns) in rec.neurons.enumerated() where !ns.isEmpty {
                md += "- block \(l): " + ns.map { "\($0.index):\(String(format: "%.3g", $0.score))" }.joined(separator: " ") + "\n"
            }
            md += "\n"
        }
        return md
    }
}
