/// Arithmetic on times and counts that come from outside (a log, the
/// kernel): it must not trap, and where a value cannot be represented the
/// nearest one is the right meaning (a deadline past the end of time never
/// comes; a duration cannot start before boot).
extension UInt64 {
    /// `self + x`, or `.max` when that does not fit.
    @inline(__always)
    public func addingSaturating(_ x: UInt64) -> UInt64 {
        let (sum, overflow) = addingReportingOverflow(x)
        return overflow ? .max : sum
    }

    /// `self - x`, or 0 when `x` is larger.
    @inline(__always)
    public func subtractingSaturating(_ x: UInt64) -> UInt64 {
        self >= x ? self - x : 0
    }
}

extension Int64 {
    /// `self + x`, clamped to `Int64.min ... Int64.max`.
    @inline(__always)
    public func addingSaturating(_ x: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(x)
        return overflow ? (x > 0 ? .max : .min) : sum
    }

    /// `self - x`, clamped to `Int64.min ... Int64.max`.
    @inline(__always)
    public func subtractingSaturating(_ x: Int64) -> Int64 {
        let (difference, overflow) = subtractingReportingOverflow(x)
        return overflow ? (x < 0 ? .max : .min) : difference
    }
}
