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

    /// exp(x) for x ≤ 0 (softmax arguments after the max shift), relative error < 2e-7: range
    /// reduction x = k·ln2 + r, |r| ≤ ln2/2, a degree-6 polynomial for e^r, then 2^k by exponent bits.
    @inline(__always)
    public static func fastExp(_ x: Float) -> Float {
        if x < -87 { return 0 }
        let k = (x * 1.442_695_04).rounded(.toNearestOrEven)
        let r = x - k * 0.693_145_75 - k * 1.428_606_8e-06
        var p: Float = 1.0 / 720
        p = p * r + 1.0 / 120
        p = p * r + 1.0 / 24
        p = p * r + 1.0 / 6
        p = p * r + 0.5
        p = p * r + 1
        p = p * r + 1
        return p * Float(bitPattern: UInt32(bitPattern: Int32(k) + 127) << 23)
    }
}
