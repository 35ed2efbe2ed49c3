import TCPTrailCore
#if canImport(Glibc)
import Glibc
#endif

/// The host's clocks: the core takes times as values, this is where they are read.
extension WallClock {
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
}
