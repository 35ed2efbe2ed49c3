import ArgumentParser
import TCPTrailCore
import TCPTrailLoader
import TCPTrailHost
import TCPTrailLog
import TCPTrailLive

/// What every live command (`trace`, `top`, `serve`) sets on the tracer and the engine.
struct LiveOptions: ParsableArguments {
    @Option(help: "Ring buffer size in bytes (K/M suffixes; a power of two, at least 4K).")
    var bufferSize: String = "16M"

    @Option(help: "How often to drain the ring buffer when the kernel does not wake us, in ms.")
    var pollInterval: Int32 = 50

    @Option(help: "Nice value of the tracer (-20 to 19). It needs little CPU, but must get it promptly on a busy host or the ring buffer overflows; 0 keeps the one it was started with.")
    var nice: Int32 = -10

    @OptionGroup var anomalies: ThresholdOptions

    @Option(help: "Sockets the kernel side can track at once (its connection table; default: 65536, or 4 times the sockets open at start if more). A socket beyond it is traced without owner or previous state, and counted as untracked.")
    var maxConnections: Int?

    @Option(help: "Listening sockets whose owner the kernel side can hold (default: 8192, or 4 times the listeners at start if more). Accepted sockets of a listener beyond it get their owner from user space, or are counted as ownerless.")
    var maxListeners: Int?

    @Flag(help: "Do not hook every syscall's return (about 0.1 µs per syscall, bench/syscall-cost): a connect's or listen's first event then waits for the socket's next one.")
    var noSyscallHook = false

    @Flag(help: "Do not hook the kernel's timers (timer_start, timer_cancel, timer_expire_entry; each returns at once unless the timer is a timewait socket's): connections after close() are then inferred, TIME_WAIT ending 60 s after it began and an orphan's FIN_WAIT_2 not followed.")
    var noTimerHooks = false

    @Flag(help: "Show libbpf's log, including the verifier log when the kernel rejects the program.")
    var verbose = false

    mutating func validate() throws {
        guard let bytes = Self.parseSize(bufferSize) else {
            throw ValidationError("--buffer-size '\(bufferSize)' is not a size such as 4096, 64K or 16M")
        }
        if bytes < 4096 || bytes & (bytes - 1) != 0 || bytes > 1 << 30 {
            throw ValidationError("--buffer-size must be a power of two from 4K to 1G, got \(bytes)")
        }
        if nice < -20 || nice > 19 { throw ValidationError("--nice must be -20 to 19, got \(nice)") }
        if pollInterval < 1 || pollInterval > 1000 { throw ValidationError("--poll-interval must be 1 to 1000 ms") }
        if let maxConnections { try OptionCheck.count(maxConnections, "--max-connections", in: TableSizes.connectionRange) }
        if let maxListeners { try OptionCheck.count(maxListeners, "--max-listeners", in: TableSizes.listenerRange) }
    }

    static func parseSize(_ text: String) -> UInt64? {
        let upper = text.uppercased()
        var digits = Substring(upper)
        var scale: UInt64 = 1
        if let last = upper.last, "KMG".contains(last) {
            digits = upper.dropLast()
            scale = last == "K" ? 1 << 10 : last == "M" ? 1 << 20 : 1 << 30
        }
        guard let value = UInt64(digits) else { return nil }
        let (result, overflow) = value.multipliedReportingOverflow(by: scale)
        return overflow ? nil : result
    }

    /// The session these options and filters start.
    func session(_ filter: EventFilter) -> SessionOptions {
        var o = SessionOptions(settings: settings(filter))
        o.verbose = verbose
        o.maxConnections = maxConnections
        o.maxListeners = maxListeners
        o.pollInterval = pollInterval
        o.nice = nice
        return o
    }

    func settings(_ filter: EventFilter) -> TraceSettings {
        var s = TraceSettings()
        s.filter = filter
        s.ringBufferBytes = UInt32(Self.parseSize(bufferSize) ?? 16 << 20)
        if noSyscallHook { s.turnedOff[.syscallReturns] = "turned off by --no-syscall-hook" }
        if noTimerHooks { s.turnedOff[.timewaitSockets] = "turned off by --no-timer-hooks" }
        return s
    }
}
