import Foundation
import KDStore
import Testing

@Suite struct AugmentationTests {
    @Test func tokenDropoutIsSeededAndKeepsViewZero() {
        let a = Augmentation.tokenDropout(p: 0.3)
        let text = "one two three four five six seven eight nine ten eleven twelve"
        #expect(a.apply(text: text, sample: 3, view: 0, seed: 1) == text)
        let v1 = a.apply(text: text, sample: 3, view: 1, seed: 1)
        #expect(v1 == a.apply(text: text, sample: 3, view: 1, seed: 1))
        #expect(v1 != a.apply(text: text, sample: 3, view: 2, seed: 1) || v1 != a.apply(text: text, sample: 4, view: 1, seed: 1))
        // Over many tokens, about p of them are dropped.
        let long = (0..<4000).map { "w\($0)" }.joined(separator: " ")
        let kept = Double(a.apply(text: long, sample: 0, view: 1, seed: 9).split(separator: " ").count) / 4000
        #expect(abs(kept - 0.7) < 0.03)
        #expect(!a.apply(text: "solo", sample: 0, view: 5, seed: 2).isEmpty, "at least one token is kept")
    }

    @Test func gaussianScalesWithTheColumnStd() {
        let g = Augmentation.gaussian(sigma: 0.5)
        let x = [Float](repeating: 1, count: 2000)
        let y = g.apply(dense: x, std: Array(repeating: 2, count: 2000), sample: 1, view: 1, seed: 0)
        let noise = zip(x, y).map { Double($1 - $0) }
        let sd = (noise.map { $0 * $0 }.reduce(0, +) / Double(noise.count)).squareRoot()
        #expect(abs(sd - 1.0) < 0.08)
        #expect(g.apply(dense: x, std: [], sample: 1, view: 0, seed: 0) == x)
    }

    @Test func parsesSpecs() {
        #expect(Augmentation(parsing: "token-dropout:p=0.1") == .tokenDropout(p: 0.1))
        #expect(Augmentation(parsing: "gaussian:sigma=0.05") == .gaussian(sigma: 0.05))
        #expect(Augmentation(parsing: "token-dropout:p=1") == nil)
        #expect(Augmentation(parsing: "mixup:alpha=1") == nil)
    }
}
