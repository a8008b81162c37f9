import Foundation
import PTLFormats
import PTLModel
import PTLTensor

/// The coordinator's durable state: the model as an HF directory plus the optimizer moments
/// and the step, written to a temporary directory, fsynced, and renamed into place, so a
/// checkpoint is either complete or absent.
public enum Checkpoint {
    public struct State: Codable, Sendable {
        public var step: Int
        public var optimizerStep: Int
        public var run: String
        public init(step: Int, optimizerStep: Int, run: String) {
            self.step = step; self.optimizerStep = optimizerStep; self.run = run
        }
    }

    /// Writes `dir` atomically.
    public static func save(model: Model, optimizer: AdamW, state: State, to dir: String, copyTokenizerFrom source: String?,
                            extraFiles: [String: Data] = [:]) throws {
        let fm = FileManager.default
        let target = URL(fileURLWithPath: dir)
        let temp = target.deletingLastPathComponent().appendingPathComponent(".\(target.lastPathComponent).writing")
        try? fm.removeItem(at: temp)
        try HFModel.save(model, to: temp.path, copyFrom: source)
        try Safetensors.write([("m", TensorF32(shape: [optimizer.m.count], values: optimizer.m.array())),
                               ("v", TensorF32(shape: [optimizer.v.count], values: optimizer.v.array()))],
                              to: temp.appendingPathComponent("optimizer.safetensors").path)
        try JSONEncoder().encode(state).write(to: temp.appendingPathComponent("state.json"))
        for (name, data) in extraFiles { try data.write(to: temp.appendingPathComponent(name)) }
        for f in try fm.contentsOfDirectory(atPath: temp.path) { fsync(path: temp.appendingPathComponent(f).path) }
        fsync(path: temp.path)
        let old = target.deletingLastPathComponent().appendingPathComponent(".\(target.lastPathComponent).old")
        try? fm.removeItem(at: old)
        if fm.fileExists(atPath: target.path) { try fm.moveItem(at: target, to: old) }
        try fm.moveItem(at: temp, to: target)
        fsync(path: target.deletingLastPathComponent().path)
        try? fm.removeItem(at: old)
    }

    /// Reads a checkpoint: the model, the optimizer (moments and step), and the state.
    public static func load(from dir: String, settings: AdamWSettings) throws -> (Model, AdamW, State) {
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

    static func fsync(path: String) {
        let fd = open(path, O_RDONLY)
        if fd >= 0 { _ = Foundation.fsync(fd); close(fd) }
    }
}
