import ArgumentParser
import TCPTrailCore
import TCPTrailHost
import TCPTrailLog
import TCPTrailLive

/// Range checks for option values, thrown from `validate()` so a bad value is
/// a one-line usage error (exit 64) before anything is attached or written.
///
/// Numeric options parse `.unconditional`ly: otherwise argument-parser takes
/// `--duration -1`'s "-1" for an option name and answers "Missing value".
enum OptionCheck {
    /// Seconds as a finite number in `range` (`nan`, `inf` and `1e300` are not).
    static func seconds(_ value: Double, _ option: String, in range: ClosedRange<Double>) throws {
        guard value.isFinite, range.contains(value) else {
            throw ValidationError("\(option) must be \(positive(value <= 0 && range.lowerBound > 0))a number of seconds from \(format(range.lowerBound)) to \(format(range.upperBound)), got \(format(value))")
        }
    }

    /// A count in `range`, in `unit` where it has one ("ms").
    static func count<T: FixedWidthInteger>(_ value: T, _ option: String, in range: ClosedRange<T>, unit: String = "") throws {
        guard !range.contains(value) else { return }
        let suffix = unit.isEmpty ? "" : " " + unit
        let below = value <= 0 && range.lowerBound > 0
        let rule = range.upperBound < T.max ? positive(below) + "\(range.lowerBound) to \(range.upperBound)" + suffix
            : range.lowerBound == 1 ? "positive" : "at least \(range.lowerBound)" + suffix
        throw ValidationError("\(option) must be \(rule), got \(value)")
    }

    /// "positive: " for a value of zero or less where the range is above zero.
    private static func positive(_ below: Bool) -> String { below ? "positive: " : "" }

    private static func format(_ v: Double) -> String {
        v.isFinite && v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)
    }

    /// Stall thresholds and durations: up to a year.
    static let longestSeconds = 365.0 * 86400

    /// The value of an option of an unsigned type (a pid, a port, a count), read
    /// so that "-1" or "0" is answered "must be positive" instead of
    /// argument-parser's "The value is invalid".
    static func positiveWhole<T: FixedWidthInteger & UnsignedInteger>(_ text: String) throws -> T {
        if let value = T(text), value > 0 { return value }
        if let signed = Int64(text), signed <= 0 { throw ValidationError("must be positive, got \(signed)") }
        throw ValidationError("must be a whole number from 1 to \(T.max)")
    }
}
