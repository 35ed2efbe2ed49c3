import ArgumentParser
import TCPTrailCore
import TCPTrailHost
import TCPTrailLog
import TCPTrailLive

/// Range checks for option values, thrown from `validate()` so a bad value is
/// a one-line usage error (exit 64) before anything is attached or written.
enum OptionCheck {
    /// Seconds as a finite number in `range` (`nan`, `inf` and `1e300` are not).
    static func seconds(_ value: Double, _ option: String, in range: ClosedRange<Double>) throws {
        guard value.isFinite, range.contains(value) else {
            throw ValidationError("\(option) must be a number of seconds from \(format(range.lowerBound)) to \(format(range.upperBound)), got \(value)")
        }
    }

    /// A count in `range`.
    static func count<T: BinaryInteger>(_ value: T, _ option: String, in range: ClosedRange<T>) throws {
        guard range.contains(value) else {
            throw ValidationError("\(option) must be \(range.lowerBound) to \(range.upperBound), got \(value)")
        }
    }

    private static func format(_ v: Double) -> String {
        v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)
    }

    /// Stall thresholds and durations: up to a year.
    static let longestSeconds = 365.0 * 86400
}
