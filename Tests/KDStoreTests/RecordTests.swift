import Foundation
import Testing
@testable import KDStore
import KDTestSupport
import KDTrain

@Suite struct SampleRecordTests {
    static let cases: [SampleRecord] = [
        SampleRecord(split: .train, label: 3, kind: .sparse, indices: [1, 7, 4000], values: [1, 2, 1]),
        SampleRecord(split: .test, label: 0, kind: .sparse, indices: [], values: []),
        SampleRecord(split: .valid, label: 9, kind: .dense, indices: [], values: [0.5, -1, 16, 0]),
    ]

    @Test(arguments: cases) func roundTrips(_ record: SampleRecord) throws {
        let bytes = record.encoded(index: 3)
        #expect(bytes.count == SampleRecord.headerSize + record.values.count * (record.kind == .sparse ? 8 : 4))
        let decoded = try bytes.withUnsafeBytes { try SampleRecord.decode($0, index: 3, classCount: 10) }
        #expect(decoded == record)
    }

    @Test func aFlippedByteFailsTheChecksum() {
        var bytes = Self.cases[0].encoded(index: 3)
        bytes[20] ^= 1
        #expect(throws: RecordError.self) { try bytes.withUnsafeBytes { try SampleRecord.decode($0, index: 3) } }
        let error = bytes.withUnsafeBytes { b in Result { try SampleView(b, index: 3) } }
        guard case .failure(let e as RecordError) = error, case .badChecksum = e else { Issue.record("expected a checksum error"); return }
    }

    @Test(arguments: [0, 5, 15, 27]) func truncatedRecordsThrowNotTrap(_ length: Int) {
        let bytes = Array(Self.cases[0].encoded(index: 3).prefix(length))
        #expect(throws: RecordError.self) { try bytes.withUnsafeBytes { try SampleView($0, index: 3) } }
    }

    @Test func labelOutOfRangeIsAnError() {
        let bytes = Self.cases[0].encoded(index: 3)
        #expect(throws: RecordError.badField("label 3 out of range 0..<3")) { try bytes.withUnsafeBytes { try SampleView($0, index: 3, classCount: 3) } }
    }
}

@Suite struct SoftLabelRecordTests {
    let logits: [Float] = [2.0, -1.0, 0.5, 3.0, -4.0]

    @Test(arguments: LogProbDType.allCases) func denseRoundTrip(_ dtype: LogProbDType) throws {
        let lp = logSoftmax(logits, temperature: 2)
        let bytes = SoftLabelRecord.encode(logProbs: lp, dtype: dtype, sample: 4, view: 1)
        #expect(bytes.count == 8 + 5 * dtype.byteWidth)
        var out = [Float](repeating: 0, count: 5)
        try bytes.withUnsafeBytes { try SoftLabelView($0, sample: 4, view: 1, classCount: 5).decode(into: &out) }
        for (a, b) in zip(out, lp) { #expect(abs(a - b) <= (dtype == .float32 ? 0 : 2e-3)) }
    }

    @Test func float16IsBitExactAfterRounding() throws {
        let lp = logSoftmax(logits)
        let bytes = SoftLabelRecord.encode(logProbs: lp, dtype: .float16, sample: 4, view: 1)
        var out = [Float](repeating: 0, count: 5)
        try bytes.withUnsafeBytes { try SoftLabelView($0, sample: 4, view: 1, classCount: 5).decode(into: &out) }
        #expect(out == lp.map { Float(Float16($0)) })
    }

    @Test func topKKeepsTheLargestAndTheTailMass() throws {
        let lp = logSoftmax(logits)
        let bytes = SoftLabelRecord.encode(logProbs: lp, dtype: .float32, topK: 2, sample: 4, view: 1)
        #expect(bytes.count == SoftLabelRecord.size(classCount: 5, dtype: .float32, topK: 2))
        let (classes, values, tail) = try bytes.withUnsafeBytes { b in try SoftLabelView(b, sample: 4, view: 1, classCount: 5).topEntries }
        #expect(classes == [3, 0])
        #expect(values == [lp[3], lp[0]])
        let expectedTail = log([1, 2, 4].map { exp(Double(lp[$0])) }.reduce(0, +))
        #expect(abs(Double(tail) - expectedTail) < 1e-5)
    }

    @Test func thousandClassFloat16RecordStaysInline() {
        #expect(SoftLabelRecord.size(classCount: 1000, dtype: .float16, topK: 0) <= 2022)
    }

    @Test func aFlippedByteFailsTheChecksum() {
        var bytes = SoftLabelRecord.encode(logProbs: logSoftmax(logits), dtype: .float32, sample: 4, view: 1)
        bytes[12] ^= 0x10
        #expect(throws: RecordError.self) { try bytes.withUnsafeBytes { try SoftLabelView($0, sample: 4, view: 1, classCount: 5) } }
    }

    @Test(arguments: [0.5, 1, 3, 8] as [Float]) func retemperingIsExact(_ target: Float) {
        let stored = logSoftmax(logits, temperature: 2)
        let direct = logSoftmax(logits, temperature: target)
        let retempered = retemper(stored, from: 2, to: target)
        for (a, b) in zip(retempered, direct) { #expect(abs(a - b) < 1e-5) }
    }

    @Test func logSoftmaxIsStableForHugeLogits() {
        let lp = logSoftmax([1000, 999, -1000])
        #expect(lp.allSatisfy { $0.isFinite || $0 == -.infinity })
        #expect(abs(lp[0] - (-0.3132617)) < 1e-5)
    }
}

@Suite struct ChecksumTests {
    @Test(arguments: [8, 9, 28, 100, 255, 256, 2008]) func recordChecksumEqualsZlibsCRC32(_ length: Int) {
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let viaZlib = bytes.withUnsafeBytes { b in crc32(UnsafeRawBufferPointer(rebasing: b[8...]), continuing: crc32(UnsafeRawBufferPointer(rebasing: b[0..<4]))) }
        #expect(bytes.withUnsafeBytes { recordChecksum($0, skipping: 4) } == viaZlib)
    }
}

@Suite struct Float16Tests {
    @Test func bitLevelConversionEqualsTheStandardLibrary() {
        var rng = SplitMix64(seed: 5)
        var checked = 0
        for _ in 0..<2_000_000 {
            let v = Float(bitPattern: UInt32(truncatingIfNeeded: rng.next()))
            guard !v.isNaN else { continue }
            #expect(float16Bits(v) == Float16(v).bitPattern, "\(v)")
            checked += 1
        }
        // Every float16 value and the midpoints between neighbours (the rounding ties).
        for h in 0..<UInt16(0x7C00) {
            let x = Float(Float16(bitPattern: h)), y = Float(Float16(bitPattern: h + 1))
            for v in [x, (x + y) / 2, -x, -(x + y) / 2] { #expect(float16Bits(v) == Float16(v).bitPattern, "\(v)") }
        }
        #expect(checked > 1_900_000)
    }
}

@Suite struct FeaturizerTests {
    @Test func fnv1a64MatchesPublishedVectors() {
        #expect(TextFeaturizer.fnv1a64([UInt8]()) == 0xcbf2_9ce4_8422_2325)
        #expect(TextFeaturizer.fnv1a64("a".utf8) == 0xaf63_dc4c_8601_ec8c)
        #expect(TextFeaturizer.fnv1a64("foobar".utf8) == 0x8594_4171_f739_67e8)
    }

    @Test(arguments: [
        ("Hello, WORLD!", ["hello", "world"]),
        ("it's 3rd-rate", ["it", "s", "3rd", "rate"]),
        ("ÇA VA? Ελληνικά", ["ça", "va", "ελληνικά"]),
        ("  ", []),
        ("naïve café", ["naïve", "café"]),
    ]) func tokenizes(_ text: String, _ expected: [String]) {
        #expect(TextFeaturizer().tokens(text) == expected)
    }

    @Test func ngramsAreHashedAsSpaceJoinedTokens() {
        let f = TextFeaturizer(bits: 20, ngramOrders: [1, 2])
        let (indices, values) = f.features("a b a")
        let bucket = { (s: String) in UInt32(TextFeaturizer.fnv1a64(s.utf8) & ((1 << 20) - 1)) }
        let expected: [UInt32: Float] = [bucket("a"): 2, bucket("b"): 1, bucket("a b"): 1, bucket("b a"): 1]
        #expect(Dictionary(uniqueKeysWithValues: zip(indices, values)) == expected)
        #expect(indices == indices.sorted())
    }

    @Test func hashSplitIsDeterministicAndNearTheFractions() {
        let splitter = HashSplitter(testFraction: 0.1, validFraction: 0.2, seed: 42)
        let ids = (0..<20_000).map { "item-\($0)" }
        let splits = ids.map(splitter.split(forID:))
        #expect(splits == ids.map(splitter.split(forID:)))
        let test = Double(splits.filter { $0 == .test }.count) / 20_000
        let valid = Double(splits.filter { $0 == .valid }.count) / 20_000
        #expect(abs(test - 0.1) < 0.015)
        #expect(abs(valid - 0.2) < 0.015)
        let other = HashSplitter(testFraction: 0.1, validFraction: 0.2, seed: 43)
        #expect(ids.map(other.split(forID:)) != splits)
    }

    @Test func rangesMerge() {
        #expect(insertRange(5..<10, into: [0..<5, 12..<15]) == [0..<10, 12..<15])
        #expect(insertRange(11..<12, into: [0..<10, 12..<15]) == [0..<10, 11..<15])
        #expect(insertRange(3..<4, into: []) == [3..<4])
    }
}

@Suite struct LabelAgreementTests {
    /// 600 samples over 3 classes, split 4:1:1 in turn.
    func counted(_ predict: (Int) -> Int) -> LabelAgreement {
        var a = LabelAgreement(classCount: 3)
        for i in 0..<600 {
            let split: Split = i % 6 == 4 ? .valid : i % 6 == 5 ? .test : .train
            a.add(split: split, label: i % 3, predicted: predict(i))
        }
        return a
    }

    @Test func aGoodTeacherIsFarAboveChance() {
        let a = counted { $0 % 10 == 0 ? ($0 + 1) % 3 : $0 % 3 }   // wrong on every tenth sample
        #expect(abs(a.overall - 0.9) < 1e-9)
        #expect(abs(a.chance - 1.0 / 3) < 0.01)
        #expect(!a.looksUnrelated)
        #expect(a.agreement(on: .test) != nil && a.summary.hasPrefix("train 0.9"))
    }

    @Test func permutedClassesAndAConstantAnswerLookUnrelated() {
        #expect(counted { ($0 + 1) % 3 }.looksUnrelated, "every class shifted by one")
        let constant = counted { _ in 2 }
        #expect(abs(constant.overall - constant.chance) < 1e-9)
        #expect(constant.looksUnrelated)
        var placeholder = LabelAgreement(classCount: 3)
        for i in 0..<300 { placeholder.add(split: .train, label: 0, predicted: i % 3) }
        #expect(!placeholder.looksUnrelated, "one placeholder label for all samples says nothing about the teacher")
    }

    @Test(arguments: LogProbDType.allCases)
    func mostProbableClassIsTheArgmaxOfTheDecodedValues(dtype: LogProbDType) throws {
        var state: UInt64 = 7
        for trial in 0..<200 {
            let logits = (0..<13).map { _ -> Float in
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return Float(Int(state >> 40) % 2000 - 1000) / 97
            }
            var lp = logSoftmax(logits, temperature: Float(1 + trial % 4))
            if trial % 5 == 0 { lp[11] = lp.max()! }   // a tie: the first class wins
            let bytes = SoftLabelRecord.encode(logProbs: lp, dtype: dtype, sample: 4, view: 1)
            try bytes.withUnsafeBytes { raw in
                let view = try SoftLabelView(raw, sample: 4, view: 1, classCount: 13)
                var decoded = [Float](repeating: 0, count: 13)
                view.decode(into: &decoded)
                #expect(view.mostProbableClass == decoded.firstIndex(of: decoded.max()!)!)
            }
        }
    }

    @Test func theDecisionUsesThreeStandardErrors() {
        // Chance is 1/3 with balanced labels and predictions; over 600 samples σ ≈ 0.0192, so the
        // line sits near 0.391: 0.38 is still flagged, 0.40 is not.
        func agreeing(_ fraction: Double) -> LabelAgreement {
            let cut = Int(fraction * 600)
            return counted { i in i < cut ? i % 3 : (i % 3 + 1 + i % 2) % 3 }
        }
        #expect(agreeing(0.38).looksUnrelated)
        #expect(!agreeing(0.40).looksUnrelated)
    }
}

@Suite struct KeyedChecksumTests {
    /// CRC-32 over key ‖ head ‖ tail, computed by zlib on one contiguous copy.
    func reference(_ record: [UInt8], skipping offset: Int, key: UInt64) -> UInt32 {
        let joined = withUnsafeBytes(of: key) { Array($0) } + record[..<offset] + record[(offset + 4)...]
        return joined.withUnsafeBytes { crc32($0) }
    }

    @Test(arguments: [8, 12, 28, 100, 255, 256, 2008]) func theKeyIsChainedInFrontOfTheRecord(_ length: Int) {
        var rng = SplitMix64(seed: UInt64(length))
        let record = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let key = SampleKey.softLabel(sample: 123_456, view: 7)
        let keyed = record.withUnsafeBytes { recordChecksum($0, skipping: 4, key: key) }
        #expect(keyed == reference(record, skipping: 4, key: key))
        #expect(keyed != record.withUnsafeBytes { recordChecksum($0, skipping: 4, key: SampleKey.softLabel(sample: 123_457, view: 7)) })
    }

    @Test func aRecordMovedToAnotherKeyFailsItsCheck() throws {
        let lp = logSoftmax([1, 2, 3])
        let bytes = SoftLabelRecord.encode(logProbs: lp, dtype: .float16, sample: 3, view: 0)
        _ = try bytes.withUnsafeBytes { try SoftLabelView($0, sample: 3, view: 0, classCount: 3) }
        #expect(throws: RecordError.self) { try bytes.withUnsafeBytes { try SoftLabelView($0, sample: 4, view: 0, classCount: 3) } }
        #expect(throws: RecordError.self) { try bytes.withUnsafeBytes { try SoftLabelView($0, sample: 3, view: 1, classCount: 3) } }
        let v1 = SoftLabelRecord.encode(logProbs: lp, dtype: .float16, sample: 3, view: 0, format: .v1)
        #expect(v1[0] == 1)
        _ = try v1.withUnsafeBytes { try SoftLabelView($0, sample: 999, view: 0, classCount: 3, format: .v1) }
        #expect(throws: RecordError.wrongVersion(1, store: .v2)) { try v1.withUnsafeBytes { try SoftLabelView($0, sample: 3, view: 0, classCount: 3) } }
        #expect(throws: RecordError.wrongVersion(2, store: .v1)) { try bytes.withUnsafeBytes { try SoftLabelView($0, sample: 3, view: 0, classCount: 3, format: .v1) } }
        let sample = SampleRecord(split: .train, label: 1, kind: .sparse, indices: [2, 9], values: [1, 3]).encoded(index: 5)
        _ = try sample.withUnsafeBytes { try SampleView($0, index: 5) }
        #expect(throws: RecordError.self) { try sample.withUnsafeBytes { try SampleView($0, index: 6) } }
    }

    @Test func legalEdgeValuesPass() throws {
        // -inf is log 0; a top-k record keeping every class has a -inf tail; the uniform distribution is the floor.
        let withZero: [Float] = [0, -.infinity, -.infinity]
        _ = try SoftLabelRecord.encode(logProbs: withZero, dtype: .float16, sample: 0, view: 0).withUnsafeBytes { try SoftLabelView($0, sample: 0, view: 0, classCount: 3) }
        let all = SoftLabelRecord.encode(logProbs: logSoftmax([1, 2, 3]), dtype: .float32, topK: 3, sample: 0, view: 0)
        _ = try all.withUnsafeBytes { try SoftLabelView($0, sample: 0, view: 0, classCount: 3) }
        let uniform = [Float](repeating: -Float(log(1000.0)), count: 1000)
        _ = try SoftLabelRecord.encode(logProbs: uniform, dtype: .float16, sample: 0, view: 0).withUnsafeBytes { try SoftLabelView($0, sample: 0, view: 0, classCount: 1000) }
        let big = SoftLabelRecord.encode(logProbs: logSoftmax((0..<100).map { Float($0 % 17) }), dtype: .float16, topK: 40, sample: 0, view: 0)
        _ = try big.withUnsafeBytes { try SoftLabelView($0, sample: 0, view: 0, classCount: 100) }
        var duplicated = big
        duplicated.store(duplicated.load(UInt32.self, at: 8 + 4 * 3), at: 8 + 4 * 37)
        duplicated.withUnsafeMutableBytes { SoftLabelRecord.seal($0, sample: 0, view: 0) }
        #expect(throws: RecordError.self, "the sorted path for k > 32") { try duplicated.withUnsafeBytes { try SoftLabelView($0, sample: 0, view: 0, classCount: 100) } }
    }
}
