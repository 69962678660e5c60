import Foundation
import KDStore
import KDTrain

/// Features a built-in teacher computes from the raw text the dataset store keeps: richer than
/// the student's hashed word n-grams, which is what lets a teacher beat a student of the same kind.
///
/// Word 1–2-grams (as in the dataset store) plus character 2–5-grams of each token wrapped as
/// `<token>` (fastText's subwords), hashed with FNV-1a-64 into 2^bits buckets (character n-grams
/// in their own namespace: the hash starts from FNV-1a-64 of the byte `0x01`), weighted
/// `(1 + log tf) · idf` with `idf = log((1 + N) / (1 + df)) + 1` over the train split, L2-normalized.
public struct RichTextFeaturizer: Sendable {
    public var bits: Int
    public var charOrders: ClosedRange<Int>

    public init(bits: Int = 20, charOrders: ClosedRange<Int> = 2...5) { self.bits = bits; self.charOrders = charOrders }

    /// The distinct buckets of `text`'s n-grams, ascending, with their counts (word n-gram counts
    /// plus character n-gram occurrences: small integers, so the sums are exact in any order).
    /// Each character n-gram's hash is extended one scalar at a time from the n-gram one shorter.
    func rawCounts(_ text: String, words: TextFeaturizer) -> (keys: [UInt32], counts: [Float]) {
        let mask = (UInt64(1) << UInt64(bits)) - 1
        let (wi, wv) = TextFeaturizer(bits: bits, ngramOrders: [1, 2]).features(text)
        var keys: [UInt32] = [], counts: [Float] = []
        keys.reserveCapacity(wi.count + 4 * text.utf8.count); counts.reserveCapacity(keys.capacity)
        keys += wi; counts += wv
        let charSeed = TextFeaturizer.fnv1a64([UInt8(1)])
        for token in words.tokens(text) {
            let scalars = Array(("<" + token + ">").unicodeScalars)
            for start in scalars.indices {
                var h = charSeed
                for n in 1...min(charOrders.upperBound, scalars.count - start) {
                    h = TextFeaturizer.fnv1a64(scalars[start + n - 1].utf8, seed: h)
                    if n >= charOrders.lowerBound { keys.append(UInt32(h & mask)); counts.append(1) }
                }
            }
        }
        // Sort (bucket, count) pairs by bucket and merge equal buckets.
        let order = keys.indices.sorted { keys[$0] < keys[$1] }
        var outKeys: [UInt32] = [], outCounts: [Float] = []
        outKeys.reserveCapacity(order.count); outCounts.reserveCapacity(order.count)
        for i in order {
            if let last = outKeys.last, last == keys[i] { outCounts[outCounts.count - 1] += counts[i] } else { outKeys.append(keys[i]); outCounts.append(counts[i]) }
        }
        return (outKeys, outCounts)
    }

    /// The raw text of sample `i` of `store` (an error naming the sample when it has none).
    static func text(of store: DatasetStore, _ i: Int) throws -> String {
        guard let text = try store.text(of: i) else {
            throw TeacherError(code: .noRawText, path: store.path, sample: i, message: "sample \(i) has no raw text; a text teacher needs a store prepped from text")
        }
        return text
    }

    /// The raw texts of every sample of `store`.
    public static func texts(of store: DatasetStore) throws -> [String] {
        try (0..<store.count).map { try text(of: store, $0) }
    }

    /// Document frequencies over `texts`.
    public func documentFrequencies(_ texts: [String]) -> (df: [UInt32: Int], n: Int) {
        let words = TextFeaturizer()
        var df: [UInt32: Int] = [:]
        for t in texts { for k in rawCounts(t, words: words).keys { df[k, default: 0] += 1 } }
        return (df, texts.count)
    }

    /// TF-IDF rows of `texts` with the given document frequencies.
    public func matrix(_ texts: [String], df: [UInt32: Int], n documents: Int) -> SparseMatrix {
        let words = TextFeaturizer()
        var m = SparseMatrix(dimension: 1 << bits)
        for text in texts {
            let row = self.row(text, words: words, documents: documents) { df[$0] ?? 0 }
            m.append(indices: row.indices, values: row.values)
        }
        return m
    }

    /// The TF-IDF row of `text`: ascending buckets, `(1 + log tf) · idf` L2-normalized, with
    /// `idf = log((1 + N) / (1 + df)) + 1` for N = `documents` and df = `df(bucket)`.
    func row(_ text: String, words: TextFeaturizer, documents: Int, df: (UInt32) -> Int) -> (indices: [UInt32], values: [Float]) {
        let n = Double(documents)
        let (keys, counts) = rawCounts(text, words: words)
        var values = zip(keys, counts).map { k, count -> Float in
            let idf = Foundation.log((1 + n) / Double(1 + df(k))) + 1
            return Float((1 + Foundation.log(Double(count))) * idf)
        }
        let norm = values.reduce(0) { $0 + $1 * $1 }.squareRoot()
        if norm > 0 { values = values.map { $0 / norm } }
        return (keys, values)
    }
}

/// What the built-in teacher trains on and what it predicts, without holding a row per sample
/// or view beyond the train split: ``train`` has the features of the train samples (the other
/// samples' rows are empty: the models never read them), and ``batch(_:views:)`` featurizes the
/// (sample, view) rows of a few samples when they are predicted.
///
/// Rich text features: hashed buckets are renumbered to the buckets any sample or view uses (the
/// same ``FeatureCompaction`` a one-shot featurization of every row gives, so that each model's
/// size and seeded initialization do not change), with document frequencies over the train split.
/// Store features: the store's records (and, with views, the replayed view matrix) as they are.
final class TeacherInputs: @unchecked Sendable {
    /// The data the models train on.
    let train: TrainingData
    let samples: Int
    let views: Int
    private let rich: Rich?
    /// Store features: every (sample, view) row, indexed by sample.
    private let predictions: TrainingData?

    /// The rich-text side: the featurizer, document frequencies by bucket, the compaction, the
    /// view replay (nil: every view is the sample itself) and the store the texts come from.
    private struct Rich: @unchecked Sendable {
        let featurizer: RichTextFeaturizer
        let df: [Int32]
        let documents: Int
        let compaction: FeatureCompaction
        let replay: ViewReplay?
        let store: DatasetStore
    }

    /// Samples featurized per unit of parallel work.
    static let block = 512

    init(store: DatasetStore, options: BuiltinTeacherOptions, views: Int, augmentation: Augmentation?, augmentationSeed: UInt64,
         progress: (@Sendable (String) -> Void)?) throws {
        samples = store.count
        self.views = max(1, views)
        let replay = views > 1 ? augmentation.map { ViewReplay(augmentation: $0, views: views, seed: augmentationSeed) } : nil
        guard options.richTextFeatures && store.manifest.hasText else {
            // Sparse views add buckets the store's records may not use: train on the full space then.
            let sparseViews = replay != nil && store.manifest.featurizer.kind != "dense"
            let base = try TrainingData(dataset: store, compact: !sparseViews)
            train = base
            if let replay {
                let m = try replay.matrix(store: store, table: base.dataset)
                predictions = base.with(viewMatrix: m, views: views, sparse: base.sparse)
            } else {
                predictions = base
            }
            rich = nil
            return
        }
        progress?("featurizing raw text (word + char n-grams)")
        let base = try TrainingData(dataset: store, compact: false)   // its splits and labels; the store's features are not used
        let featurizer = RichTextFeaturizer(bits: options.richBits)
        let workers = max(1, options.workers)
        let scan = try Self.scan(store: store, featurizer: featurizer, train: base.train, replay: replay, views: self.views, workers: workers)
        let compaction = FeatureCompaction(full: 1 << featurizer.bits, used: scan.used)
        progress?("\(compaction.compactDimension) of \(1 << featurizer.bits) hashed buckets in use")
        let rich = Rich(featurizer: featurizer, df: scan.df, documents: base.train.count, compaction: compaction, replay: replay, store: store)
        self.rich = rich
        predictions = nil
        let isTrain = Self.mask(base.train, count: store.count)
        var matrix = SparseMatrix(dimension: compaction.compactDimension)
        matrix.indices.reserveCapacity(scan.trainEntries); matrix.values.reserveCapacity(scan.trainEntries)
        matrix.offsets.reserveCapacity(store.count + 1)
        // Waves of `workers` blocks: what is featurized but not yet appended stays small.
        var start = 0
        while start < store.count {
            let wave = start..<min(store.count, start + Self.block * workers)
            let parts = try parallelMap((wave.count + Self.block - 1) / Self.block, workers: workers) { b in
                let lo = wave.lowerBound + b * Self.block
                let rows = Array(lo..<min(wave.upperBound, lo + Self.block))
                return try Self.rows(rich, rows.map { s -> (sample: Int, view: Int)? in isTrain[s] ? (s, 0) : nil })
            }
            for part in parts {
                matrix.indices += part.indices; matrix.values += part.values
                for k in 1..<part.offsets.count { matrix.offsets.append(matrix.indices.count - part.indices.count + part.offsets[k]) }
            }
            start = wave.upperBound
        }
        train = base.with(train: base.train, valid: base.valid, features: matrix)
    }

    /// One pass over every sample's text (and views): the buckets used by any row, the
    /// document frequency of each bucket over the train samples, and the number of entries of
    /// the train rows. Blocks are scanned in parallel and merged in order (OR and sums: exact).
    private static func scan(store: DatasetStore, featurizer: RichTextFeaturizer, train: [Int], replay: ViewReplay?, views: Int,
                             workers: Int) throws -> (used: Set<UInt32>, df: [Int32], trainEntries: Int) {
        let buckets = 1 << featurizer.bits
        let isTrain = mask(train, count: store.count)
        let chunks = max(1, min(workers, (store.count + block - 1) / block))
        let per = (store.count + chunks - 1) / max(1, chunks)
        let shared = ReadOnly(value: replay)
        let parts = try parallelMap(chunks, workers: workers) { c -> ([UInt64], [Int32], Int) in
            let replay = shared.value
            var used = [UInt64](repeating: 0, count: (buckets + 63) / 64)
            var df = [Int32](repeating: 0, count: buckets)
            var entries = 0
            let words = TextFeaturizer()
            for s in (c * per)..<min(store.count, (c + 1) * per) {
                let text = try RichTextFeaturizer.text(of: store, s)
                let keys = featurizer.rawCounts(text, words: words).keys
                for k in keys { used[Int(k) >> 6] |= 1 << UInt64(k & 63) }
                if isTrain[s] {
                    for k in keys { df[Int(k)] += 1 }
                    entries += keys.count
                }
                if let replay {
                    for v in 1..<views {   // view 0 is the text itself
                        for k in featurizer.rawCounts(replay.text(text, sample: s, view: v), words: words).keys { used[Int(k) >> 6] |= 1 << UInt64(k & 63) }
                    }
                }
            }
            return (used, df, entries)
        }
        var used = Set<UInt32>(), df = [Int32](repeating: 0, count: buckets), entries = 0
        for (bits, counts, n) in parts {
            for (w, word) in bits.enumerated() where word != 0 {
                for b in 0..<64 where word & (1 << UInt64(b)) != 0 { used.insert(UInt32(w * 64 + b)) }
            }
            for k in 0..<buckets where counts[k] != 0 { df[k] += counts[k] }
            entries += n
        }
        return (used, df, entries)
    }

    /// `count` flags, true at `samples`.
    private static func mask(_ samples: [Int], count: Int) -> [Bool] {
        var m = [Bool](repeating: false, count: count)
        for s in samples { m[s] = true }
        return m
    }

    /// Compacted TF-IDF rows of the given (sample, view) pairs, one row each (an empty row for nil).
    private static func rows(_ rich: Rich, _ pairs: [(sample: Int, view: Int)?]) throws -> SparseMatrix {
        let words = TextFeaturizer()
        var m = SparseMatrix(dimension: rich.compaction.compactDimension)
        var lastSample = -1, text = ""
        for pair in pairs {
            guard let (s, v) = pair else { m.offsets.append(m.indices.count); continue }
            if s != lastSample { text = try RichTextFeaturizer.text(of: rich.store, s); lastSample = s }
            let viewText = rich.replay.map { $0.text(text, sample: s, view: v) } ?? text
            let row = rich.featurizer.row(viewText, words: words, documents: rich.documents) { Int(rich.df[Int($0)]) }
            let map = rich.compaction.toCompact
            m.append(indices: row.indices.map { UInt32(map[Int($0)]) }, values: row.values)
        }
        return m
    }

    /// The inputs of `samples` for prediction: data whose sample `index[i]` is `samples[i]`, with
    /// `views` rows per sample (view v of sample `samples[i]` is view v of `index[i]`).
    func batch(_ samples: [Int], views: Int, workers: Int) throws -> (data: TrainingData, index: [Int]) {
        guard let rich else { return (predictions!, samples) }
        let blocks = (samples.count + Self.block - 1) / Self.block
        let parts = try parallelMap(blocks, workers: workers) { b in
            let part = samples[(b * Self.block)..<min(samples.count, (b + 1) * Self.block)]
            return try Self.rows(rich, part.flatMap { s in (0..<views).map { v -> (sample: Int, view: Int)? in (s, v) } })
        }
        var matrix = SparseMatrix(dimension: rich.compaction.compactDimension)
        for part in parts {
            let base = matrix.indices.count
            matrix.indices += part.indices; matrix.values += part.values
            for k in 1..<part.offsets.count { matrix.offsets.append(base + part.offsets[k]) }
        }
        return (train.with(viewMatrix: matrix, views: views, sparse: true), Array(0..<samples.count))
    }
}

/// A value the worker threads of `parallelMap` only read.
private struct ReadOnly<T>: @unchecked Sendable { let value: T }
