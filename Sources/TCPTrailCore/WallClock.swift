#if canImport(Glibc)
import Glibc
#endif

/// Maps the kernel's monotonic timestamps to wall-clock time and writes them
/// as RFC 3339 UTC with nanoseconds.
///
/// The date part is formatted once per second and reused, so writing a
/// timestamp costs a few integer divisions.
public struct WallClock: Sendable {
    /// CLOCK_REALTIME minus CLOCK_MONOTONIC, in ns, when the clock was made.
    public let bootOffsetNanoseconds: Int64
    private var cachedSecond: Int64 = .min
    private var cachedPrefix: (UInt64, UInt64, UInt64) = (0, 0, 0)  // "YYYY-MM-DDTHH:MM:SS." (20 bytes)

    public init(bootOffsetNanoseconds: Int64) {
        self.bootOffsetNanoseconds = bootOffsetNanoseconds
    }

    /// Unix time in ns for a monotonic timestamp, clamped to what an Int64
    /// holds (a time past 2262 shows as 2262, not wrapped to 1677).
    public func unixNanoseconds(mono: UInt64) -> Int64 {
        Int64(clamping: mono).addingSaturating(bootOffsetNanoseconds)
    }

    /// Unix time in ns for a monotonic timestamp; nil when it is not in the
    /// range of an Int64 (the record's time would be past 2262, or before 1677).
    public func exactUnixNanoseconds(mono: UInt64) -> Int64? {
        guard let m = Int64(exactly: mono) else { return nil }
        let (unix, overflow) = m.addingReportingOverflow(bootOffsetNanoseconds)
        return overflow ? nil : unix
    }

    /// Unix seconds and nanoseconds of a monotonic timestamp; refreshes the date cache.
    private mutating func secondAndNanos(mono: UInt64) -> Int64 {
        let unix = unixNanoseconds(mono: mono)
        var seconds = unix / 1_000_000_000
        var nanos = unix % 1_000_000_000
        if nanos < 0 { nanos += 1_000_000_000; seconds -= 1 }
        if seconds != cachedSecond { fillPrefix(seconds) }
        return nanos
    }

    /// Appends `2026-11-21T04:43:00.123456789Z`.
    public mutating func appendRFC3339(mono: UInt64, to out: inout OutputBuffer) {
        let nanos = secondAndNanos(mono: mono)
        withUnsafeBytes(of: cachedPrefix) { out.append(UnsafeRawBufferPointer(rebasing: $0[0..<20])) }
        out.append(decimal: UInt64(nanos), zeroPaddedTo: 9)
        out.append(UInt8(ascii: "Z"))
    }

    /// Appends `HH:MM:SS.uuuuuu` (UTC), the text view's time column.
    public mutating func appendTimeOfDay(mono: UInt64, to out: inout OutputBuffer) {
        let nanos = secondAndNanos(mono: mono)
        withUnsafeBytes(of: cachedPrefix) { out.append(UnsafeRawBufferPointer(rebasing: $0[11..<20])) }
        out.append(decimal: UInt64(nanos / 1000), zeroPaddedTo: 6)
    }

    /// Appends `2026-11-21T04:43:00.123456` (no zone: the caller adds `Z` or an offset).
    public mutating func appendDateTime(mono: UInt64, to out: inout OutputBuffer) {
        let nanos = secondAndNanos(mono: mono)
        withUnsafeBytes(of: cachedPrefix) { out.append(UnsafeRawBufferPointer(rebasing: $0[0..<20])) }
        out.append(decimal: UInt64(nanos / 1000), zeroPaddedTo: 6)
    }

    private mutating func fillPrefix(_ seconds: Int64) {
        cachedSecond = seconds
        let days = seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400
        let secOfDay = seconds - days * 86400
        let (y, m, d) = Self.civil(fromDays: days)
        var tmp = OutputBuffer(capacity: 24)
        tmp.append(decimal: UInt64(max(0, y)), zeroPaddedTo: 4)
        tmp.append(UInt8(ascii: "-"))
        tmp.append(decimal: UInt64(m), zeroPaddedTo: 2)
        tmp.append(UInt8(ascii: "-"))
        tmp.append(decimal: UInt64(d), zeroPaddedTo: 2)
        tmp.append(UInt8(ascii: "T"))
        tmp.append(decimal: UInt64(secOfDay / 3600), zeroPaddedTo: 2)
        tmp.append(UInt8(ascii: ":"))
        tmp.append(decimal: UInt64(secOfDay / 60 % 60), zeroPaddedTo: 2)
        tmp.append(UInt8(ascii: ":"))
        tmp.append(decimal: UInt64(secOfDay % 60), zeroPaddedTo: 2)
        tmp.append(UInt8(ascii: "."))
        withUnsafeMutableBytes(of: &cachedPrefix) { dst in
            tmp.withUnsafeBytes { dst.copyMemory(from: $0) }
        }
    }

    /// Parses an RFC 3339 time (`2026-11-21T03:12:00Z`, `2026-11-21 03:12:00.5+01:00`;
    /// seconds optional; no offset means UTC) into Unix ns; nil when it is
    /// not one, or not in the range of Unix ns in an Int64 (1677-09-21 to 2262-04-11).
    public static func parseRFC3339(_ text: String) -> Int64? {
        var text = text
        return text.withUTF8 { parseRFC3339($0.baseAddress, $0.count, strict: false) }
    }

    /// A log record's `time`: RFC 3339 as its section 5.6 has it (a `T`,
    /// seconds, an offset or `Z`), fraction optional; nil when it is not one
    /// or is out of range.
    public static func parseRecordTime(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int64? {
        parseRFC3339(p, n, strict: true)
    }

    /// `strict`: seconds, an offset and a `T` (or `t`) are required.
    static func parseRFC3339(_ p: UnsafePointer<UInt8>?, _ n: Int, strict: Bool) -> Int64? {
        guard let p else { return nil }
        var i = 0
        func num(_ width: Int) -> Int64? {
            guard i + width <= n else { return nil }
            var v: Int64 = 0
            for k in 0..<width {
                let d = p[i + k] &- 48
                guard d < 10 else { return nil }
                v = v * 10 + Int64(d)
            }
            i += width
            return v
        }
        func expect(_ c: UInt8) -> Bool {
            guard i < n, p[i] == c else { return false }
            i += 1
            return true
        }
        guard let y = num(4), expect(UInt8(ascii: "-")), let mo = num(2), expect(UInt8(ascii: "-")), let d = num(2),
              (1...12).contains(mo), d >= 1, d <= daysInMonth(y, mo) else { return nil }
        guard i < n, p[i] == UInt8(ascii: "T") || p[i] == UInt8(ascii: "t") || (!strict && p[i] == UInt8(ascii: " ")) else { return nil }
        i += 1
        guard let h = num(2), expect(UInt8(ascii: ":")), let mi = num(2), h < 24, mi < 60 else { return nil }
        var s: Int64 = 0, nanos: Int64 = 0
        if expect(UInt8(ascii: ":")) {
            guard let sec = num(2), sec < 61 else { return nil }
            s = sec
            if expect(UInt8(ascii: ".")) {
                var digits = 0
                while i < n, p[i] &- 48 < 10 {
                    if digits < 9 { nanos = nanos * 10 + Int64(p[i] - 48) }
                    digits += 1
                    i += 1
                }
                guard digits > 0 else { return nil }
                for _ in min(digits, 9)..<9 { nanos *= 10 }
            }
        } else if strict {
            return nil
        }
        var offset: Int64 = 0
        if i < n {
            if p[i] == UInt8(ascii: "Z") || p[i] == UInt8(ascii: "z") {
                i += 1
            } else if p[i] == UInt8(ascii: "+") || p[i] == UInt8(ascii: "-") {
                let sign: Int64 = p[i] == UInt8(ascii: "-") ? -1 : 1
                i += 1
                guard let oh = num(2), expect(UInt8(ascii: ":")), let om = num(2), oh < 24, om < 60 else { return nil }
                offset = sign * (oh * 3600 + om * 60)
            }
        } else if strict {
            return nil
        }
        guard i == n else { return nil }
        // Years 0000-9999 fit in Int64 seconds; in ns only 1677-2262 do.
        var seconds = days(fromCivil: y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset
        // Before 1970 the fraction is taken from the next second: the earliest
        // time (Int64.min ns) has no whole second of its own in Int64 ns.
        if seconds < 0 && nanos > 0 {
            seconds += 1
            nanos -= 1_000_000_000
        }
        let (ns, o1) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let (unix, o2) = ns.addingReportingOverflow(nanos)
        return o1 || o2 ? nil : unix
    }

    /// Days in month `m` (1-12) of year `y`, proleptic Gregorian.
    static func daysInMonth(_ y: Int64, _ m: Int64) -> Int64 {
        switch m {
        case 2: (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// A proleptic Gregorian date to days since 1970-01-01 (Howard Hinnant's algorithm).
    static func days(fromCivil y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = (y >= 0 ? y : y - 399) / 400
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    /// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let y = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? y + 1 : y, m, d)
    }
}
