import Foundation
import Testing
@testable import KDStore
import KDTestSupport

/// The layouts the record tests use: V = 40, k = N = 4, declared T = 1 and 4 at T_w = 2.
private func layout(_ mode: SequenceLayout.Mode, _ dtype: LogProbDType = .float32, width: Int = 4) -> SoftLabelLayout {
    testSequenceLayout(mode, vocabSize: 40, width: width, retemperAt: [1, 4], writeTemperature: 2, dtype: dtype)
}

private func shape(_ l: SoftLabelLayout) -> SequenceRecordShape {
    let s = l.sequence!
    return SequenceRecordShape(kind: s.recordKind, dtype: l.dtype, temperatureCount: s.retemperAt.count,
                               width: s.mode == .topK ? l.topK : s.samples, vocabSize: s.vocabSize,
                               exponents: s.retemperAt.map { l.writeTemperature / $0 })
}

/// Checks `bytes` as sample 3's record; the error, if any.
private func check(_ bytes: [UInt8], _ shape: SequenceRecordShape, sample: Int = 3) -> RecordError? {
    bytes.withUnsafeBytes { raw in
        do throws(RecordError) { _ = try SequenceRecordView(raw, sample: sample, view: 0, shape: shape); return nil } catch { return error }
    }
}

/// Re-seals the CRC of an edited record for sample 3, so that the check after the CRC is reached.
private func resealed(_ bytes: [UInt8]) -> [UInt8] {
    var b = bytes
    b.withUnsafeMutableBytes { SequenceRecord.seal($0, sample: 3, view: 0) }
    return b
}

@Suite struct SequenceRecordTests {
    @Test(arguments: [SequenceLayout.Mode.topK, .sampled, .dense], [LogProbDType.float32, .float16])
    func encodeThenDecodeGivesTheRecord(mode: SequenceLayout.Mode, dtype: LogProbDType) throws {
        let l = layout(mode, dtype)
        for L in [0, 1, 2, 9] {
            var record = testSequenceRecord(l, tokens: L, seed: UInt64(L))
            let bytes = record.encoded(sample: 3, view: 0, dtype: dtype)
            let D = mode == .dense ? record.logProbs.count : record.ids.count
            if mode == .dense { #expect(D == max(L - 1, 0) * 40 && record.ids.isEmpty) }
            #expect(bytes.count == SequenceRecord.size(kind: record.kind, dtype: dtype, tokens: L, entries: D, temperatureCount: 2))
            if mode == .dense { #expect(bytes.count == 20 + 3 * L + max(L - 1, 0) * 40 * dtype.byteWidth + max(L - 1, 0) * 2 * dtype.byteWidth) }
            let decoded = try SequenceRecord.decode(bytes, sample: 3, view: 0, shape: shape(l))
            if dtype == .float16 {
                for k in [\SequenceRecord.logProbs, \.logTail, \.logSums] { record[keyPath: k] = record[keyPath: k].map { Float(Float16($0)) } }
            }
            #expect(decoded == record)
            #expect(decoded.positions == max(L - 1, 0))
        }
    }

    @Test func theViewReadsPositionsInPlace() throws {
        let l = layout(.sampled)
        let record = testSequenceRecord(l, tokens: 6, seed: 9)
        let bytes = record.encoded(sample: 3, view: 0, dtype: .float32)
        try bytes.withUnsafeBytes { raw in
            let v = try SequenceRecordView(raw, sample: 3, view: 0, shape: shape(l))
            var offset = 0
            for j in 0..<v.positions {
                let d = Int(record.distinct[j])
                #expect(v.ids(at: j) == Array(record.ids[offset..<(offset + d)]))
                #expect(v.counts(at: j) == Array(record.counts[offset..<(offset + d)]))
                #expect(v.logSums(at: j) == Array(record.logSums[(2 * j)..<(2 * j + 2)]))
                offset += d
            }
            #expect(v.tokens == record.tokens)
        }
    }

    @Test func aRecordUnderAnotherKeyFailsItsChecksum() {
        let l = layout(.topK)
        let bytes = testSequenceRecord(l, tokens: 5, seed: 1).encoded(sample: 3, view: 0, dtype: .float32)
        guard case .badChecksum = check(bytes, shape(l), sample: 4) else { Issue.record("a moved record passed its CRC"); return }
    }

    /// One crafted bad record per check of FORMAT.md §1.2 "Sequence records", CRC re-sealed so the
    /// check itself is what refuses it.
    struct BadRecord: CustomStringConvertible, Sendable {
        var description: String
        var mode: SequenceLayout.Mode
        /// Edits the record before encoding (nil: none).
        var edit: @Sendable (inout SequenceRecord) -> Void = { _ in }
        /// Edits the encoded bytes, then re-seals the CRC (nil: none).
        var editBytes: (@Sendable (inout [UInt8]) -> Void)? = nil
        /// Edits the teacher's shape the record is checked against.
        var editShape: @Sendable (inout SequenceRecordShape) -> Void = { _ in }
        var expected: @Sendable (RecordError) -> Bool
    }

    static func problem(_ p: SequenceRecordProblem) -> @Sendable (RecordError) -> Bool { { $0 == .sequence(p) } }
    static func value(_ f: SequenceRecordProblem.Field, _ j: Int, _ i: Int) -> @Sendable (RecordError) -> Bool {
        { if case .sequence(.value(f, j, i, _, _)) = $0 { true } else { false } }
    }

    static let badRecords: [BadRecord] = [
        BadRecord(description: "record version 2", mode: .topK, editBytes: { $0[0] = 2 }, expected: { $0 == .wrongVersion(2, store: .v3) }),
        BadRecord(description: "unknown kind", mode: .topK, editBytes: { $0[1] = 7 }, expected: problem(.unknownKind(7))),
        BadRecord(description: "unknown dtype", mode: .topK, editBytes: { $0[2] = 9 }, expected: problem(.unknownDType(9))),
        BadRecord(description: "length", mode: .topK, editBytes: { $0.append(0) }, expected: { if case .badLength = $0 { true } else { false } }),
        BadRecord(description: "L above 2^20", mode: .topK, editBytes: { $0.replaceSubrange(8..<12, with: [1, 0, 16, 0]) }, expected: problem(.tooManyTokens((1 << 20) + 1))),
        BadRecord(description: "D above 2^26", mode: .sampled, editBytes: { $0.replaceSubrange(12..<16, with: [1, 0, 0, 4]) }, expected: problem(.tooManyEntries((1 << 26) + 1))),
        BadRecord(description: "kind of another teacher", mode: .sampled, editShape: { $0.kind = .topK }, expected: problem(.kind(stored: 4, teacher: 3))),
        BadRecord(description: "dtype of another teacher", mode: .topK, editShape: { $0.dtype = .float16 }, expected: problem(.dtype(stored: 1, teacher: 2))),
        BadRecord(description: "R of another teacher", mode: .topK, editShape: { $0.temperatureCount = 3 }, expected: problem(.temperatureCount(stored: 2, teacher: 3))),
        BadRecord(description: "k of another teacher", mode: .topK, editShape: { $0.width = 5 }, expected: problem(.width(stored: 4, teacher: 5))),
        BadRecord(description: "reserved field", mode: .sampled, editBytes: { $0[18] = 1 }, expected: problem(.reserved(1))),
        BadRecord(description: "top-k D is not P·k", mode: .topK, edit: { $0.ids.removeLast(); $0.logProbs.removeLast() }, expected: problem(.entryCount(stored: 15, expected: 16))),
        BadRecord(description: "token id ≥ V", mode: .topK, edit: { $0.tokens[2] = 40 }, expected: problem(.token(index: 2, id: 40, vocabSize: 40))),
        BadRecord(description: "top-k id ≥ V", mode: .topK, edit: { $0.ids[5] = 41 }, expected: problem(.id(position: 1, entry: 1, id: 41, vocabSize: 40))),
        BadRecord(description: "sampled id ≥ V", mode: .sampled, edit: { r in r.ids[Int(r.distinct[0]) - 1] = 40 }, expected: { if case .sequence(.id(0, _, 40, 40)) = $0 { true } else { false } }),
        BadRecord(description: "top-k id twice", mode: .topK, edit: { $0.ids[1] = $0.ids[0] }, expected: { if case .sequence(.repeatedID(0, _)) = $0 { true } else { false } }),
        BadRecord(description: "top-k log p increasing", mode: .topK, edit: { $0.logProbs.swapAt(4, 5) }, expected: problem(.increasing(position: 1, entry: 1))),
        BadRecord(description: "d_j = 0", mode: .sampled, edit: { $0.distinct[1] = 0 }, expected: problem(.distinctCount(position: 1, count: 0, draws: 4))),
        BadRecord(description: "d_j > N", mode: .sampled, edit: { $0.distinct[1] = 5 }, expected: problem(.distinctCount(position: 1, count: 5, draws: 4))),
        BadRecord(description: "d_j do not sum to D", mode: .sampled, edit: { r in r.ids.removeLast(); r.counts.removeLast(); r.logProbs.removeLast() },
                  expected: { if case .sequence(.distinctSum) = $0 { true } else { false } }),
        BadRecord(description: "sampled ids not ascending", mode: .sampled, edit: { $0.ids.swapAt(0, 1) }, expected: problem(.notAscending(position: 0, entry: 1))),
        BadRecord(description: "count 0", mode: .sampled, edit: { $0.counts[0] = 0 }, expected: problem(.zeroCount(position: 0, entry: 0))),
        BadRecord(description: "counts do not sum to N", mode: .sampled, edit: { $0.counts[0] += 1 }, expected: problem(.countSum(position: 0, sum: 5, draws: 4))),
        BadRecord(description: "log p NaN", mode: .topK, edit: { $0.logProbs[0] = .nan }, expected: value(.logProb, 0, 0)),
        BadRecord(description: "log p +inf", mode: .sampled, edit: { $0.logProbs[0] = .infinity }, expected: value(.logProb, 0, 0)),
        BadRecord(description: "log p above 2^-10", mode: .topK, edit: { $0.logProbs[0] = 0.01 }, expected: value(.logProb, 0, 0)),
        BadRecord(description: "log p -inf", mode: .topK, edit: { $0.logProbs[7] = -.infinity }, expected: value(.logProb, 1, 3)),
        BadRecord(description: "tail NaN", mode: .topK, edit: { $0.logTail[2] = .nan }, expected: value(.logTail, 2, 0)),
        BadRecord(description: "tail -inf with k < V", mode: .topK, edit: { $0.logTail[2] = -.infinity }, expected: value(.logTail, 2, 0)),
        BadRecord(description: "tail above 2^-10", mode: .topK, edit: { $0.logTail[0] = 0.5 }, expected: value(.logTail, 0, 0)),
        BadRecord(description: "log-sum NaN", mode: .sampled, edit: { $0.logSums[3] = .nan }, expected: value(.logSum, 1, 1)),
        BadRecord(description: "log-sum +inf", mode: .topK, edit: { $0.logSums[1] = .infinity }, expected: value(.logSum, 0, 1)),
        BadRecord(description: "log-sum -inf with k < V", mode: .topK, edit: { $0.logSums[0] = -.infinity }, expected: value(.logSum, 0, 0)),
        BadRecord(description: "log-sum at T_1 < T_w above 0", mode: .sampled, edit: { $0.logSums[0] = 0.5 }, expected: value(.logSum, 0, 0)),
        BadRecord(description: "log-sum at T_2 > T_w above (1 − a)·ln V", mode: .sampled, edit: { $0.logSums[1] = 2 }, expected: value(.logSum, 0, 1)),
        // Dense (kind 5): V = 40, L = 5, so D = 4 · 40 = 160 values in id order.
        BadRecord(description: "dense truncated", mode: .dense, editBytes: { $0.removeLast(3) }, expected: { if case .badLength = $0 { true } else { false } }),
        BadRecord(description: "dense length of another D", mode: .dense, editBytes: { $0.replaceSubrange(12..<16, with: [159, 0, 0, 0]) },
                  expected: { if case .badLength = $0 { true } else { false } }),
        BadRecord(description: "dense D is not P·V", mode: .dense, edit: { $0.logProbs.removeLast(40) }, expected: problem(.denseEntryCount(stored: 120, expected: 160))),
        BadRecord(description: "dense D above 2^26", mode: .dense, editBytes: { $0.replaceSubrange(12..<16, with: [1, 0, 0, 4]) }, expected: problem(.tooManyEntries((1 << 26) + 1))),
        BadRecord(description: "dense k field not 0", mode: .dense, editBytes: { $0[16] = 40 }, expected: problem(.width(stored: 40, teacher: 0))),
        BadRecord(description: "dense read as top-k", mode: .dense, editShape: { $0.kind = .topK; $0.width = 4 }, expected: problem(.kind(stored: 5, teacher: 3))),
        BadRecord(description: "dense V of another teacher", mode: .dense, editShape: { $0.vocabSize = 41 }, expected: problem(.denseEntryCount(stored: 160, expected: 164))),
        BadRecord(description: "dense V that overflows P·V", mode: .dense, editShape: { $0.vocabSize = .max }, expected: problem(.denseEntryCount(stored: 160, expected: .max))),
        BadRecord(description: "dense log p NaN", mode: .dense, edit: { $0.logProbs[45] = .nan }, expected: value(.logProb, 1, 5)),
        BadRecord(description: "dense log p +inf", mode: .dense, edit: { $0.logProbs[159] = .infinity }, expected: value(.logProb, 3, 39)),
        BadRecord(description: "dense log p -inf", mode: .dense, edit: { $0.logProbs[80] = -.infinity }, expected: value(.logProb, 2, 0)),
        BadRecord(description: "dense log p above 2^-10", mode: .dense, edit: { $0.logProbs[3] = 0.01 }, expected: value(.logProb, 0, 3)),
        BadRecord(description: "dense row summing to 2", mode: .dense, edit: { r in for v in 40..<80 { r.logProbs[v] += Float(log(2.0)) } },
                  expected: { if case .sequence(.rowSum(1, let l, _)) = $0 { abs(l - log(2.0)) < 1e-4 } else { false } }),
        BadRecord(description: "dense row summing to 0.9", mode: .dense, edit: { r in for v in 120..<160 { r.logProbs[v] += Float(log(0.9)) } },
                  expected: { if case .sequence(.rowSum(3, let l, _)) = $0 { abs(l - log(0.9)) < 1e-4 } else { false } }),
        BadRecord(description: "dense log-sum NaN", mode: .dense, edit: { $0.logSums[3] = .nan }, expected: value(.logSum, 1, 1)),
        BadRecord(description: "dense log-sum at T_1 < T_w above 0", mode: .dense, edit: { $0.logSums[0] = 0.5 }, expected: value(.logSum, 0, 0)),
        BadRecord(description: "dense log-sum -inf", mode: .dense, edit: { $0.logSums[2] = -.infinity }, expected: value(.logSum, 1, 0)),
    ]

    @Test(arguments: badRecords)
    func eachRecordCheckRefusesItsBadRecord(_ c: BadRecord) {
        let l = layout(c.mode)
        var record = testSequenceRecord(l, tokens: 5, seed: 11)
        var s = shape(l)
        #expect(check(record.encoded(sample: 3, view: 0, dtype: .float32), s) == nil, "the unedited record must pass")
        c.edit(&record)
        c.editShape(&s)
        var bytes = record.encoded(sample: 3, view: 0, dtype: .float32)
        if let editBytes = c.editBytes { editBytes(&bytes); bytes = resealed(bytes) }
        let error = check(bytes, s)
        #expect(error.map(c.expected) == true, "\(c.description): got \(error.map(String.init(describing:)) ?? "no error")")
    }

    @Test func aRecordKeepingAllIdsHasMinusInfinityTails() {
        let l = testSequenceLayout(.topK, vocabSize: 6, width: 6, retemperAt: [1], writeTemperature: 1)
        var record = testSequenceRecord(l, tokens: 3, seed: 2)
        #expect(record.logTail.allSatisfy { $0 == -.infinity } && check(record.encoded(sample: 3, view: 0, dtype: .float32), shape(l)) == nil)
        record.logTail[1] = -3
        #expect(check(record.encoded(sample: 3, view: 0, dtype: .float32), shape(l)).map(Self.value(.logTail, 1, 0)) == true)
    }

    /// Every single-byte change of an encoded record (each byte xor each of 8 patterns) throws a
    /// RecordError: no trap, and nothing passes.
    @Test(arguments: [SequenceLayout.Mode.topK, .sampled, .dense])
    func everyByteFlipIsRejected(mode: SequenceLayout.Mode) {
        let l = layout(mode, .float16)
        let bytes = testSequenceRecord(l, tokens: 6, seed: 4).encoded(sample: 3, view: 0, dtype: .float16)
        var passed: [Int] = [], checksumCaught = 0
        for i in bytes.indices {
            for pattern: UInt8 in [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFF] {
                var b = bytes
                b[i] ^= pattern
                switch check(b, shape(l)) {
                case nil: passed.append(i)
                case .badChecksum?: checksumCaught += 1
                default: break
                }
            }
        }
        #expect(passed.isEmpty)
        #expect(checksumCaught >= 9 * (bytes.count - SequenceRecord.headerSize))   // every flip past the header is the CRC's
    }
}
