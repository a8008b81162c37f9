import Foundation
import Logging
import PTLFormats
import PTLModel
import PTLTensor

/// A checkpoint that cannot be used: missing files, or a file whose size or CRC-32C disagrees
/// with the manifest (a torn or corrupted write).
public struct CheckpointError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// The coordinator's durable state: the model as an HF directory plus the optimizer moments,
/// the step and any extra files (loop state, ledger), written to a temporary directory with a
/// `manifest.json` of every file's size and CRC-32C, fsynced, and renamed into place. The
/// previous checkpoint is kept as `.NAME.old` (until the next save), so at every instant one
/// complete checkpoint exists and a newest one damaged later still leaves its predecessor;
/// loading verifies the manifest and falls back to the older one when the newer is damaged.
public enum Checkpoint {
    public struct State: Codable, Sendable {
        public var step: Int
        public var optimizerStep: Int
        public var run: String
        public init(step: Int, optimizerStep: Int, run: String) {
            self.step = step; self.optimizerStep = optimizerStep; self.run = run
        }
    }

    struct Manifest: Codable {
        struct Entry: Codable { var bytes: Int; var crc32c: UInt32 }
        var files: [String: Entry]
    }

    /// Fault injection for the torn-checkpoint test: the process kills itself (SIGKILL) in the
    /// middle of its Nth checkpoint write, after the weights and before the manifest and rename.
    nonisolated(unsafe) public static var killDuringWrite: Int?
    nonisolated(unsafe) static var writes = 0

    static func siblings(_ dir: String) -> (temp: URL, old: URL, target: URL) {
        let target = URL(fileURLWithPath: dir)
        let parent = target.deletingLastPathComponent()
        return (parent.appendingPathComponent(".\(target.lastPathComponent).writing"),
                parent.appendingPathComponent(".\(target.lastPathComponent).old"), target)
    }

    /// Writes `dir` atomically.
    public static func save(model: Model, optimizer: AdamW, state: State, to dir: String, copyTokenizerFrom source: String?,
                            extraFiles: [String: Data] = [:], extraModels: [String: Model] = [:]) throws {
        let fm = FileManager.default
        let (temp, old, target) = siblings(dir)
        try? fm.removeItem(at: temp)
        try HFModel.save(model, to: temp.path, copyFrom: source)
        try Safetensors.writeF32([("m", [optimizer.m.count], UnsafeBufferPointer(start: UnsafePointer(optimizer.m.pointer), count: optimizer.m.count)),
                                  ("v", [optimizer.v.count], UnsafeBufferPointer(start: UnsafePointer(optimizer.v.pointer), count: optimizer.v.count))],
                                 to: temp.appendingPathComponent("optimizer.safetensors").path)
        writes += 1
        if let k = killDuringWrite, k == writes { kill(getpid(), SIGKILL) }
        try JSONEncoder().encode(state).write(to: temp.appendingPathComponent("state.json"))
        for (name, data) in extraFiles { try data.write(to: temp.appendingPathComponent(name)) }
        // Other models' parameters (GRPO's reference), streamed from their buffers like the model's.
        for (name, m) in extraModels {
            try Safetensors.writeF32(m.layout.entries.map { e in
                (e.name, e.shape, UnsafeBufferPointer(start: UnsafePointer(m.parameters.pointer + e.range.lowerBound), count: e.count))
            }, to: temp.appendingPathComponent(name).path)
        }
        var manifest = Manifest(files: [:])
        for f in try fm.contentsOfDirectory(atPath: temp.path).sorted() {
            let data = try Data(contentsOf: temp.appendingPathComponent(f), options: .alwaysMapped)
            manifest.files[f] = .init(bytes: data.count, crc32c: data.withUnsafeBytes { CRC32C.checksum($0) })
        }
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys, .prettyPrinted]
        try enc.encode(manifest).write(to: temp.appendingPathComponent("manifest.json"))
        for f in try fm.contentsOfDirectory(atPath: temp.path) { try fsync(path: temp.appendingPathComponent(f).path) }
        try fsync(path: temp.path)
        // Rotate: the newest complete checkpoint becomes `.old` and stays there until the next
        // save, so one damaged later (a bad disk block, a truncation) still leaves the one before
        // it. At every instant at least one complete checkpoint is on disk: `.old` goes only while
        // the target is complete, and the target only by becoming `.old`.
        if fm.fileExists(atPath: target.path) {
            if fm.fileExists(atPath: old.path) { try fm.removeItem(at: old) }
            try fm.moveItem(at: target, to: old)
        }
        try fm.moveItem(at: temp, to: target)
        try fsync(path: target.deletingLastPathComponent().path)
    }

    /// Checks every file of the manifest (size and CRC-32C); throws naming the first problem.
    public static func verify(_ dir: String) throws {
        let url = URL(fileURLWithPath: dir)
        guard let data = try? Data(contentsOf: url.appendingPathComponent("manifest.json")) else {
            throw CheckpointError(message: "\(dir): no manifest.json (an incomplete write)")
        }
        guard let manifest = try? JSONDecoder().decode(Manifest.self, from: data) else {
            throw CheckpointError(message: "\(dir)/manifest.json does not parse")
        }
        for (name, entry) in manifest.files.sorted(by: { $0.key < $1.key }) {
            guard let bytes = try? Data(contentsOf: url.appendingPathComponent(name), options: .alwaysMapped) else {
                throw CheckpointError(message: "\(dir)/\(name) is missing")
            }
            guard bytes.count == entry.bytes else {
                throw CheckpointError(message: "\(dir)/\(name) has \(bytes.count) bytes, the manifest says \(entry.bytes)")
            }
            guard bytes.withUnsafeBytes({ CRC32C.checksum($0) }) == entry.crc32c else {
                throw CheckpointError(message: "\(dir)/\(name) fails its CRC-32C check (corrupted)")
            }
        }
    }

    /// The newest complete checkpoint of `dir`: `dir` itself, or the previous one kept while a
    /// newer was being put in place; nil when there is none. Throws when checkpoints exist but
    /// none verifies.
    public static func newest(_ dir: String, logger: Logger = .silent) throws -> String? {
        let (_, old, target) = siblings(dir)
        var problems: [String] = []
        for candidate in [target, old] where FileManager.default.fileExists(atPath: candidate.path) {
            do {
                try verify(candidate.path)
                return candidate.path
            } catch {
                logger.warning("checkpoint \(candidate.path) rejected: \(error)", metadata: ["checkpoint": .string(candidate.path)])
                problems.append("\(error)")
            }
        }
        if problems.isEmpty { return nil }
        throw CheckpointError(message: "no usable checkpoint: " + problems.joined(separator: "; ") + " — pass --fresh to start over")
    }

    /// Parameters written by `save(extraModels:)` as a model shaped like `like`: every tensor
    /// present with its size and finite; throws naming the file and tensor.
    public static func loadParameters(_ file: String, like model: Model) throws -> Model {
        let tensors = try Safetensors.read(path: file)
        let out = Model(config: model.config, parameters: FloatBuffer(count: model.layout.count))
        for e in model.layout.entries {
            guard let t = tensors[e.name], t.values.count == e.count, t.values.allSatisfy({ $0.isFinite }) else {
                throw LoopError("\(file): \(e.name) is missing, of the wrong size or not finite; pass --fresh to start over")
            }
            t.values.withUnsafeBufferPointer { out.parameters.at(e.range.lowerBound).update(from: $0.baseAddress!, count: e.count) }
        }
        return out
    }

    /// Reads a checkpoint (verified first): the model, the optimizer (moments and step), and the state.
    public static func load(from dir: String, settings: AdamWSettings) throws -> (Model, AdamW, State) {
        try verify(dir)
        let model = try HFModel.load(directory: dir)
        let moments = try Safetensors.read(path: (dir as NSString).appendingPathComponent("optimizer.safetensors"))
        guard let m = moments["m"], let v = moments["v"], m.count == model.layout.count, v.count == model.layout.count else {
            throw ModelError("\(dir): optimizer.safetensors does not match the model")
        }
        let data = try Data(contentsOf: URL(fileURLWithPath: dir).appendingPathComponent("state.json"))
        let state = try JSONDecoder().decode(State.self, from: data)
        let opt = AdamW(layout: model.layout, settings: settings, m: FloatBuffer(m.values), v: FloatBuffer(v.values), step: state.optimizerStep)
        return (model, opt, state)
    }

    /// fsync of a file or directory; a failure (EIO, a full disk's delayed error) fails the save.
    static func fsync(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CheckpointError(message: "\(path): cannot open to sync (\(String(cString: strerror(errno))))") }
        defer { close(fd) }
        guard Foundation.fsync(fd) == 0 else { throw CheckpointError(message: "\(path): fsync failed (\(String(cString: strerror(errno))))") }
    }
}
