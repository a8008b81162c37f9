import ArgumentParser
import Foundation
import PTLTensor
import PTLCluster
import PTLCommandLine
import PTLData
import PTLLoop
import PTLModel
import PTLTokenizer
import PTLTune

/// --method train: continual pre-training (--tune cpt) or GRPO (--tune grpo) over the cluster.
extension PTLCoordinatorCommand {
    /// Loads the data, the model and any checkpoint now; the returned job trains.
    func prepareTrain() throws -> (Coordinator, StatusLine) throws -> Void {
        switch loop.tune {
        case .grpo: return try prepareGRPO()
        case .cptGRPO: throw ValidationError("--method train takes --tune cpt or --tune grpo; cpt+grpo splits the rounds of a pruning run")
        case .cpt: break
        }
        let tokenizerJSON = try ModelSource.tokenizerJSON(data.model)
        let tokenizer = try Tokenizer(data: Data(tokenizerJSON.utf8), source: "\(data.model) tokenizer")
        let records: [CorpusRecord]
        if let path = data.data {
            records = try Corpus.load(path: path).records
        } else {
            let task = try ArithmeticTask()
            records = (0..<20000).map { i in let p = task.problem(seed: 0, index: i); return .qa(question: p.question, answer: p.answer) }
        }
        var settings = TrainingSettings(steps: steps, batchSize: loop.batchSize, learningRate: loop.lr)
        settings.seed = loop.seed
        settings.precision = loop.precision
        settings.warmup = min(steps / 10, 100)
        let checkpointDir = (output.out as NSString).appendingPathComponent("checkpoint")
        var start: (Model, AdamW, Checkpoint.State)? = nil
        var ledger: [LedgerEntry] = []
        if !output.fresh, let found = try Checkpoint.newest(checkpointDir, logger: logger) {
            start = try Checkpoint.load(from: found, settings: settings.adamW)
            ledger = try LedgerEntry.parse(Data(contentsOf: URL(fileURLWithPath: found).appendingPathComponent("ledger.jsonl")))
            logger.info("resuming from \(found) at step \(start!.2.step)")
        }
        let m = try start?.0 ?? ModelSource.loadModel(data.model)
        // Every line ends with the model's end-of-sequence token, so the model learns to stop.
        let sequences = records.map { encodeLine(PromptTemplate.standard.render($0), tokenizer: tokenizer, eos: m.config.eosTokenIds, maxTokens: data.seqLen) }
        logger.info("\(sequences.count) lines, \(steps) steps of \(loop.batchSize) lines in \(loop.shards) shards, precision \(loop.precision) (workers follow it; here: \(BF16Support.summary))")
        return { coordinator, status in
            coordinator.tokenizerJSON = tokenizerJSON
            try train(coordinator: coordinator, status: status, model: m, sequences: sequences, settings: settings, start: start, ledger: ledger)
        }
    }

    /// --method train --tune grpo: `ptl grpo` over the workers — rollouts sampled and GRPO
    /// gradients computed on the workers' shards, reduced in shard order (the same bits as `ptl
    /// grpo` with the same settings, for any number of workers); OUT/checkpoint every
    /// --checkpoint-every steps, a restarted coordinator resumes from it.
    func prepareGRPO() throws -> (Coordinator, StatusLine) throws -> Void {
        guard let g = try loop.grpoSettings() else { throw LoopError("internal: --tune grpo without GRPO settings") }
        var c = GRPOConfig()
        c.grpo = g
        c.steps = steps
        c.maxNewTokens = loop.maxNewTokens
        c.shards = loop.shards
        c.seed = loop.seed
        c.evalEvery = evalEvery
        c.checkpointEvery = loop.checkpointEvery
        c.precision = loop.precision
        do { try c.check() } catch { throw ValidationError("\(error)") }
        let tokenizerJSON = try ModelSource.tokenizerJSON(data.model)
        let start = try ModelSource.loadModel(data.model)
        let (train, eval) = try GRPOData.lines(data: data.data, evalData: data.evalData, evalCount: data.evalCount)
        let out = output.out
        let tokenizerDir = (out as NSString).appendingPathComponent("tokenizer")
        try ModelSource.writeTokenizerFiles(data.model, to: tokenizerDir)
        logger.info("GRPO: \(train.count) training questions, \(eval.count) held-out; \(steps) steps of \(g.promptsPerStep) prompts × \(g.rolloutsPerPrompt) completions in \(loop.shards) shards, precision \(loop.precision)")
        let logger = self.logger, fresh = output.fresh, exportGguf = output.exportGguf
        return { coordinator, status in
            let backend = ClusterBackend(coordinator: coordinator, tokenizerJSON: tokenizerJSON)
            let trainer = try GRPOTrainer(backend: backend, model: start, trainLines: train, evalLines: eval, config: c, out: out,
                                          tokenizerSource: tokenizerDir, fresh: fresh, logger: logger)
            status.context = "GRPO"
            let finished: Bool
            do { finished = try trainer.train(stop: { terminateRequested }) } catch is Interrupted { finished = false }
            guard finished else { logger.info("stopped; run the same command again to resume from \(out)/checkpoint"); return }
            if let first = trainer.rows.first?.evalAccuracy, let last = trainer.rows.last?.evalAccuracy {
                logger.info("\(String(format: "held-out accuracy %.1f%% → %.1f%% in %d steps; %@/report.md, %@/final", first * 100, last * 100, c.steps, out, out))")
            }
            try FinalExport.gguf(exportGguf, out: out, logger: logger)
        }
    }

    func train(coordinator: Coordinator, status: StatusLine, model m: Model, sequences: [[Int]], settings: TrainingSettings,
               start: (Model, AdamW, Checkpoint.State)?, ledger: [LedgerEntry]) throws {
        let out = output.out
        let checkpointDir = (out as NSString).appendingPathComponent("checkpoint")
        let trainer = try DistributedTrainer(coordinator: coordinator, model: m, sequences: sequences, settings: settings, shards: loop.shards)
        if let (_, opt, state) = start { trainer.resume(optimizer: opt, step: state.step, ledger: ledger) }
        let metricsURL = URL(fileURLWithPath: out).appendingPathComponent("metrics.jsonl")
        if !FileManager.default.fileExists(atPath: metricsURL.path) { FileManager.default.createFile(atPath: metricsURL.path, contents: nil) }
        let metrics = try FileHandle(forWritingTo: metricsURL)
        metrics.seekToEndOfFile()
        let source = ModelSource.isGGUF(data.model) ? nil : data.model
        func save() throws {
            try Checkpoint.save(model: m, optimizer: trainer.optimizer,
                                state: Checkpoint.State(step: trainer.step, optimizerStep: trainer.optimizer.step, run: "run"),
                                to: checkpointDir, copyTokenizerFrom: source, extraFiles: ["ledger.jsonl": LedgerEntry.jsonl(trainer.ledger)])
        }
        while trainer.step < steps && !terminateRequested {
            let t0 = Date()
            status.context = "train step \(trainer.step + 1)/\(steps)"
            let r: (loss: Double, gradNorm: Double, tokens: Int)
            do { r = try trainer.runStep() } catch is Interrupted {
                try save()
                break
            }
            var row: [String: Any] = ["step": trainer.step, "loss": r.loss, "grad_norm": r.gradNorm, "tokens": r.tokens,
                                      "workers": coordinator.scheduler.workers.count, "seconds": Date().timeIntervalSince(t0)]
            for (k, v) in coordinator.counters { row[k] = v }
            let t = coordinator.lastStepTiming
            row["coordinator_seconds"] = t.coordinatorBusy
            row["profile"] = coordinator.profile
            row["timing"] = ["publish": t.publish, "phase": t.phase, "idle": t.idle, "reduce": t.reduce, "update": t.update,
                             "worker_compute": t.workerCompute]
            metrics.write(try JSONSerialization.data(withJSONObject: row, options: [.sortedKeys]) + Data("\n".utf8))
            logger.info("\(String(format: "step %d/%d loss %.4f (%d workers)", trainer.step, steps, r.loss, coordinator.scheduler.workers.count))",
                        metadata: ["step": "\(trainer.step)", "loss": .stringConvertible(r.loss), "grad_norm": .stringConvertible(r.gradNorm),
                                   "tokens": "\(r.tokens)", "workers": "\(coordinator.scheduler.workers.count)",
                                   "seconds": .stringConvertible(Date().timeIntervalSince(t0))])
            if trainer.step % loop.checkpointEvery == 0 || trainer.step == steps || terminateRequested { try save() }
        }
        if terminateRequested { logger.info("terminated after step \(trainer.step); checkpoint written"); return }
        let final = (out as NSString).appendingPathComponent("final")
        try HFModel.save(m, to: final, copyFrom: source)
        try LedgerEntry.jsonl(trainer.ledger).write(to: URL(fileURLWithPath: out).appendingPathComponent("ledger.jsonl"), options: .atomic)
        logger.info("wrote \(final) and \(out)/ledger.jsonl (\(trainer.ledger.count) applied results)")
        try FinalExport.gguf(output.exportGguf, out: out, logger: logger)
    }
}
