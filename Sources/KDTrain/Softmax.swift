import Foundation

/// Numerically stable softmax kernels over contiguous buffers, no allocation.
public enum Softmax {
    /// `out = log_softmax(x / T)`: `(x_i/T − m) − log Σ_j exp(x_j/T − m)` with `m = max_j x_j/T`.
    @inline(__always)
    public static func logSoftmax(_ x: UnsafePointer<Float>, _ count: Int, temperature: Float = 1, into out: UnsafeMutablePointer<Float>) {
        let inv = 1 / temperature
        var m = -Float.infinity
        for i in 0..<count { m = max(m, x[i] * inv) }
        var s: Float = 0
        for i in 0..<count { let v = x[i] * inv - m; out[i] = v; s += fastExp(v) }
        let l = Foundation.log(s)
        for i in 0..<count { out[i] -= l }
    }

    /// `out = softmax(x / T)`.
    @inline(__always)
    public static func softmax(_ x: UnsafePointer<Float>, _ count: Int, temperature: Float = 1, into out: UnsafeMutablePointer<Float>) {
        let inv = 1 / temperature
        var m = -Float.infinity
        for i in 0..<count { m = max(m, x[i] * inv) }
        var s: Float = 0
        for i in 0..<count { let e = fastExp(x[i] * inv - m); out[i] = e; s += e }
        let r = 1 / s
        for i in 0..<count { out[i] *= r }
    }

    /// exp(x) for every Float, relative error < 3e-7: range reduction x = k·ln2 + r, |r| ≤ ln2/2,
    /// a degree-6 polynomial for e^r, then 2^k by exponent bits.
    ///
    /// Total, never trapping: x < −87 and −∞ give 0 (results below 1.6e−38 are flushed), x above
    /// ln(Float.greatestFiniteMagnitude) ≈ 88.72 and +∞ give +∞, NaN gives NaN. The hot path is
    /// x ∈ [−87, 88.37], where k ≤ 127 fits the exponent field; everything else (one predictable
    /// branch) goes to ``exceptional(_:)``. k and its integer bits come from `x·log₂e + 1.5·2²³`
    /// (adding the shifter rounds to the nearest even integer, which then sits in the low mantissa
    /// bits), so no float-to-integer conversion that could trap is ever made.
    @inline(__always)
    public static func fastExp(_ x: Float) -> Float {
        guard x >= -87 && x <= 88.37 else { return exceptional(x) }
        let t = x * 1.442_695_04 + 12_582_912
        let k = t - 12_582_912
        let r = x - k * 0.693_145_75 - k * 1.428_606_8e-06
        let ki = Int32(bitPattern: t.bitPattern &- 0x4B40_0000)
        return polynomial(r) * Float(bitPattern: UInt32(bitPattern: (ki &+ 127) << 23))
    }

    /// e^r for |r| ≤ ln2/2 (Taylor to degree 6, Horner form).
    @inline(__always)
    static func polynomial(_ r: Float) -> Float {
        var p: Float = 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        return p
    }

    /// ``fastExp(_:)`` outside [−87, 88.37]: NaN, the flushed underflow, the overflow, and the
    /// sliver (88.37, 88.72] whose k = 128 does not fit one exponent field (2^128 = 2^64 · 2^64).
    @inline(never)
    static func exceptional(_ x: Float) -> Float {
        if x.isNaN { return x }
        if x < -87 { return 0 }
        if x > 88.722_839 { return .infinity }
        let k: Float = 128
        return polynomial(x - k * 0.693_145_75 - k * 1.428_606_8e-06) * 0x1p64 * 0x1p64
    }
}
