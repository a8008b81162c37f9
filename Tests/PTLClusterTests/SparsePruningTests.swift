import Foundation
import PTLLoop
import PTLModel
import PTLPrune
import PTLTestSupport
import Testing
@testable import PTLCluster

/// SparseGPT over a whole model (issue 16): block by block, each block's layer Hessians reduced
/// over the backend's shards in order — in this process or over 1, 2 or 3 workers, the same
/// bits; every masked weight an exact zero and the pattern's share of every layer zeroed.
@Suite(.serialized) struct SparsePruningTests {
    static func pruned(_ pattern: SparsityPattern, workers: Int?) throws -> (weights: [Float], layers: [SparsePruning.Layer]) {
        let model = try clusterModel()
        let run = { (backend: ComputeBackend) in
            var n: UInt64 = 0
            return try SparsePruning.run(model: model, backend: backend, sequences: clusterLines, shards: 3, pattern: pattern,
                                         blockSize: 16, percentDamp: 0.01, key: { n += 1; return WorkKey(run: "sparse", measurement: n) })
        }
        let layers: [SparsePruning.Layer]
        if let workers {
            layers = try InProcessCluster.with(workers: workers) { cluster in
                try run(ClusterBackend(coordinator: cluster.coordinator, tokenizerJSON: ""))
            }
        } else {
            layers = try run(try tinyLocalBackend())
        }
        return (model.parameters.array(), layers)
    }

    @Test(arguments: [SparsityPattern.unstructured(0.5), .nOfM(n: 2, m: 4)])
    func theSameBitsLocallyAndOverAnyNumberOfWorkers(_ pattern: SparsityPattern) throws {
        let local = try Self.pruned(pattern, workers: nil)
        for workers in [1, 2, 3] {
            let cluster = try Self.pruned(pattern, workers: workers)
            #expect(cluster.weights == local.weights, "\(workers) worker(s)")
            #expect(cluster.layers.map(\.mask) == local.layers.map(\.mask))
        }
        let model = try clusterModel()
        #expect(local.layers.count == 7 * model.config.numHiddenLayers)
        for layer in local.layers {
            let entry = try #require(model.layout.entries.first { $0.name == layer.name }, "\(layer.name) is a weight of the model")
            #expect(layer.mask.count == entry.count)
            #expect(zip(layer.mask, local.weights[entry.range]).allSatisfy { !$0 || $1 == 0 }, "\(layer.name): masked weights are zeros")
            #expect(abs(Double(layer.zeros) / Double(entry.count) - pattern.fraction) < 0.02, "\(layer.name): \(layer.zeros) of \(entry.count) zero")
        }
        // Everything else is untouched: embeddings and norms.
        let original = try clusterModel().parameters.array()
        let embedding = model.layout.entries.first { $0.name == "model.embed_tokens.weight" }!
        #expect(Array(local.weights[embedding.range]) == Array(original[embedding.range]))
    }
}
