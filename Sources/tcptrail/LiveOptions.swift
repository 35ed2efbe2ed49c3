import ArgumentParser
import TCPTrailCore
import TCPTrailLoader
import TCPTrailHost
import TCPTrailLog
import TCPTrailLive

/// What every live command (`trace`, `top`, `serve`) sets on the tracer and the engine.
struct LiveOptions: ParsableArguments {
    @Option(parsing: .unconditional, help: ArgumentHelp("Ring buffer size in bytes (K/M/G suffixes; a power of two from 4K to 1G).", valueName: "bytes"))
    var bufferSize: String = "16M"

    @Option(parsing: .unconditional, help: ArgumentHelp("How often to drain the ring buffer when the kernel does not wake us, in milliseconds (1 to 1000).", valueName: "ms"))
    var pollInterval: Int32 = 50

    @Option(parsing: .unconditional, help: "Nice value of the tracer (-20 to 19). It needs little CPU, but must get it promptly on a busy host or the ring buffer overflows; 0 keeps the one it was started with.")
    var nice: Int32 = -10

    @OptionGroup var anomalies: ThresholdOptions

    @Option(parsing: .unconditional, help: ArgumentHelp("Sockets the kernel side can track at once (its connection table, \(TableSizes.connectionRange.lowerBound) to \(TableSizes.connectionRange.upperBound); default: 65536, or 4 times the sockets open at start if more). A socket beyond it is traced without owner or previous state, and counted as untracked.", valueName: "sockets"))
    var maxConnections: Int?

    @Option(parsing: .unconditional, help: ArgumentHelp("Listening sockets whose owner the kernel side can hold (\(TableSizes.listenerRange.lowerBound) to \(TableSizes.listenerRange.upperBound); default: 8192, or 4 times the listeners at start if more). Accepted sockets of a listener beyond it get their owner from user space, or are counted as ownerless.", valueName: "listeners"))
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
        try OptionCheck.count(nice, "--nice", in: -20...19)
        try OptionCheck.count(pollInterval, "--poll-interval", in: 1...1000, unit: "ms")
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
    func session(_ filter: EventFilter) throws(CommandFailure) -> SessionOptions {
        var o = SessionOptions(settings: settings(filter))
        o.settings.cgroupIDs = try Self.cgroupIDs(filter.cgroups)
        o.verbose = verbose
        o.maxConnections = maxConnections
        o.maxListeners = maxListeners
        o.pollInterval = pollInterval
        o.nice = nice
        return o
    }

    /// The kernel's --cgroup set: each path's subtree now; a path that is not
    /// a cgroup (or no cgroup2 at all) ends the run.
    static func cgroupIDs(_ paths: [String]) throws(CommandFailure) -> [UInt64] {
        var ids: [UInt64] = []
        for path in paths {
            switch CgroupResolver.shared.filterPath(path) {
            case .success(let found): ids += found.ids
            case .failure(.noCgroup2):
                throw CommandFailure("--cgroup \(path): this host has no cgroup2 mount in /proc/mounts (mount -t cgroup2 none /sys/fs/cgroup/unified); drop --cgroup", status: .notACgroup)
            case .failure(.notACgroup(let p, let mount)):
                throw CommandFailure("--cgroup \(p) is not a cgroup: no such directory under the cgroup2 mount \(mount); give a path as the records' cgroup field shows it, such as /system.slice/nginx.service", status: .notACgroup)
            }
        }
        return ids
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

/// The kept log (`--output` and its rotation), for `trace` and `serve`.
struct LogFileOptions: ParsableArguments {
    @Option(help: ArgumentHelp("Also write every record as JSON Lines to this file (mode 0600; for trace, '-' is stdout, as --json; default: none).", valueName: "file"))
    var output: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Rotate the --output file before it passes this size in bytes (K/M/G suffixes, at least 4K; default: never).", valueName: "bytes"))
    var rotateSize: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("Rotated files to keep (FILE.1 is the newest; 0 to 1000).", valueName: "files"))
    var rotateKeep: Int = 5

    @Flag(help: "Allow --output in a directory other users can write.")
    var allowSharedDir = false

    mutating func validate() throws {
        if let rotateSize {
            guard let bytes = LiveOptions.parseSize(rotateSize), bytes >= 4096 else {
                throw ValidationError("--rotate-size '\(rotateSize)' is not a size of at least 4K, such as 64K or 100M")
            }
            _ = bytes
            if output == nil || output == "-" { throw ValidationError("--rotate-size needs --output FILE") }
        }
        try OptionCheck.count(rotateKeep, "--rotate-keep", in: 0...1000)
    }

    /// The log at --output (not '-'), its directory and any file already there
    /// checked; nothing is created until `open()`.
    func log() throws(CommandFailure) -> EventLog? {
        guard let output, output != "-" else { return nil }
        do {
            let log = try EventLog(path: output, allowSharedDirectory: allowSharedDir)
            log.rotation = LogRotation(maxBytes: rotateSize.flatMap(LiveOptions.parseSize).map { Int($0) }, keep: rotateKeep)
            return log
        } catch {
            throw error.failure
        }
    }

    /// Creates the file, once the tracer is attached: a file that cannot be created ends the run here.
    static func open(_ log: EventLog?) throws(CommandFailure) {
        guard let log else { return }
        do throws(EventLog.OpenError) {
            try log.open()
        } catch {
            throw error.failure
        }
    }
}
