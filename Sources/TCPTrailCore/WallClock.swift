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

    /// A clock for this host now: samples both clocks back to back.
    public static func current() -> WallClock {
        var mono = timespec(), real = timespec(), mono2 = timespec()
        clock_gettime(CLOCK_MONOTONIC, &mono)
        clock_gettime(CLOCK_REALTIME, &real)
        clock_gettime(CLOCK_MONOTONIC, &mono2)
        let m = (Int64(mono.tv_sec) * 1_000_000_000 + Int64(mono.tv_nsec) + Int64(mono2.tv_sec) * 1_000_000_000 + Int64(mono2.tv_nsec)) / 2
        let r = Int64(real.tv_sec) * 1_000_000_000 + Int64(real.tv_nsec)
        return WallClock(bootOffsetNanoseconds: r - m)
    }

    /// CLOCK_MONOTONIC now, in ns: the kernel side's time base.
    public static func monotonicNow() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// Unix time in ns for a monotonic timestamp.
    public func unixNanoseconds(mono: UInt64) -> Int64 {
        Int64(bitPattern: mono) &+ bootOffsetNanoseconds
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
    /// seconds optional; no offset means UTC) into Unix ns.
    public static func parseRFC3339(_ text: String) -> Int64? {
        let b = Array(text.utf8)
        var i = 0
        func num(_ width: Int) -> Int64? {
            guard i + width <= b.count else { return nil }
            var v: Int64 = 0
            for k in 0..<width {
                let d = b[i + k] &- 48
                guard d < 10 else { return nil }
                v = v * 10 + Int64(d)
            }
            i += width
            return v
        }
        func expect(_ c: UInt8) -> Bool {
            guard i < b.count, b[i] == c else { return false }
            i += 1
            return true
        }
        guard let y = num(4), expect(UInt8(ascii: "-")), let mo = num(2), expect(UInt8(ascii: "-")), let d = num(2),
              (1...12).contains(mo), (1...31).contains(d) else { return nil }
        guard i < b.count, b[i] == UInt8(ascii: "T") || b[i] == UInt8(ascii: "t") || b[i] == UInt8(ascii: " ") else { return nil }
        i += 1
        guard let h = num(2), expect(UInt8(ascii: ":")), let mi = num(2), h < 24, mi < 60 else { return nil }
        var s: Int64 = 0, nanos: Int64 = 0
        if expect(UInt8(ascii: ":")) {
            guard let sec = num(2), sec < 61 else { return nil }
            s = sec
            if expect(UInt8(ascii: ".")) {
                var digits = 0
                while i < b.count, b[i] &- 48 < 10 {
                    if digits < 9 { nanos = nanos * 10 + Int64(b[i] - 48) }
                    digits += 1
                    i += 1
                }
                guard digits > 0 else { return nil }
                for _ in min(digits, 9)..<9 { nanos *= 10 }
            }
        }
        var offset: Int64 = 0
        if i < b.count {
            if b[i] == UInt8(ascii: "Z") || b[i] == UInt8(ascii: "z") {
                i += 1
            } else if b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-") {
                let sign: Int64 = b[i] == UInt8(ascii: "-") ? -1 : 1
                i += 1
                guard let oh = num(2), expect(UInt8(ascii: ":")), let om = num(2), oh < 24, om < 60 else { return nil }
                offset = sign * (oh * 3600 + om * 60)
            }
        }
        guard i == b.count else { return nil }
        let seconds = days(fromCivil: y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset
        // Nanoseconds since 1970 in an Int64: 1677-09-21 to 2262-04-11.
        let (ns, over) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        let (total, over2) = ns.addingReportingOverflow(nanos)
        return over || over2 ? nil : total
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
