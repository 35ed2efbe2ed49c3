import ArgumentParser
import CTCPTrailSys
import Foundation
import TCPTrailCore
import TCPTrailLoader

/// `tcptrail trace`: one line (or JSON record) per TCP event on the host, live.
struct Trace: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print every TCP state change, retransmit, reset and socket error, live.",
        discussion: """
        Filters on --pid, --port, --lport, --rport, -4/-6 and --netns run in the kernel; \
        --addr runs in user space. Each repeatable filter takes up to \(TraceSettings.maxFilterValues) values. \
        Ctrl-C (or SIGTERM) drains what is queued, prints a summary on stderr and exits 0.
        """
    )

    @Flag(help: "Write one JSON object per line (contract v1, docs/event-log.md) instead of text.")
    var json = false

    @OptionGroup var filters: FilterOptions

    @Option(help: "Stop after this many seconds.")
    var duration: Double?

    @Option(help: "Stop after this many events.")
    var count: UInt64?

    @Option(help: "Ring buffer size in bytes (K/M suffixes; a power of two, at least 4K).")
    var bufferSize: String = "16M"

    @Option(help: "How often to drain the ring buffer when the kernel does not wake us, in ms.")
    var pollInterval: Int32 = 50

    @Option(help: "Also write every record as JSON Lines to this file (mode 0600; '-' is stdout, as --json).")
    var output: String?

    @Option(help: "Rotate the --output file before it passes this size (K/M/G suffixes).")
    var rotateSize: String?

    @Option(help: "Rotated files to keep (FILE.1 is the newest).")
    var rotateKeep: Int = 5

    @Flag(help: "Allow --output in a directory other users can write.")
    var allowSharedDir = false

    @Flag(help: "Kernel transitions only, as the kernel names them: no handshake engine, no anomalies.")
    var raw = false

    @Option(help: "Flag a socket in CLOSE_WAIT for longer than this many seconds (close_wait_stall).")
    var closeWaitThreshold: Double = 60

    @Option(name: .customLong("fin-wait-2-threshold"), help: "Flag a socket in FIN_WAIT_2 for longer than this many seconds (fin_wait_2_stall).")
    var finWait2Threshold: Double = 60

    @Option(help: "Flag a local endpoint holding more TIME_WAIT sockets than this (time_wait_buildup).")
    var timeWaitThreshold: Int = 1000

    @Option(help: "Flag a connection retransmitting more data segments than this (data_retransmit).")
    var retransmitThreshold: Int = 3

    @Flag(help: "Show libbpf's log, including the verifier log when the kernel rejects the program.")
    var verbose = false

    mutating func validate() throws {
        guard let bytes = Self.parseSize(bufferSize) else {
            throw ValidationError("--buffer-size '\(bufferSize)' is not a size such as 4096, 64K or 16M")
        }
        if bytes < 4096 || bytes & (bytes - 1) != 0 || bytes > 1 << 30 {
            throw ValidationError("--buffer-size must be a power of two from 4K to 1G, got \(bytes)")
        }
        if let duration, duration <= 0 { throw ValidationError("--duration must be positive") }
        if let rotateSize {
            guard let bytes = Self.parseSize(rotateSize), bytes >= 4096 else {
                throw ValidationError("--rotate-size '\(rotateSize)' is not a size of at least 4K, such as 64K or 100M")
            }
            _ = bytes
            if output == nil || output == "-" { throw ValidationError("--rotate-size needs --output FILE") }
        }
        if rotateKeep < 0 || rotateKeep > 1000 { throw ValidationError("--rotate-keep must be 0 to 1000") }
        if pollInterval < 1 || pollInterval > 1000 { throw ValidationError("--poll-interval must be 1 to 1000 ms") }
        if closeWaitThreshold <= 0 || finWait2Threshold <= 0 { throw ValidationError("stall thresholds must be positive seconds") }
        if timeWaitThreshold < 1 || retransmitThreshold < 1 { throw ValidationError("--time-wait-threshold and --retransmit-threshold must be at least 1") }
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

    func thresholds() -> AnomalyThresholds {
        var t = AnomalyThresholds()
        t.closeWaitNanoseconds = UInt64(closeWaitThreshold * 1e9)
        t.finWait2Nanoseconds = UInt64(finWait2Threshold * 1e9)
        t.timeWaitSockets = timeWaitThreshold
        t.dataRetransmits = retransmitThreshold
        return t
    }

    func settings() -> TraceSettings {
        var s = TraceSettings()
        s.pids = filters.pids
        s.ports = filters.ports
        s.localPorts = filters.localPorts
        s.remotePorts = filters.remotePorts
        s.family = filters.ipv4Only ? 4 : filters.ipv6Only ? 6 : nil
        s.netns = filters.netns
        s.ringBufferBytes = UInt32(Self.parseSize(bufferSize) ?? 16 << 20)
        return s
    }

    /// Open, configure, load, attach: each step's failure is one line and its own exit status.
    private func startProgram() throws(LoaderError) -> TraceProgram {
        LibBPFLog.install(verbose: verbose)
        try Preflight.checkBeforeTrace()
        let program = try TraceProgram.open()
        try program.configure(settings())
        try program.load()
        program.seedListeners(ListenerScan.scan())
        try program.attach()
        return program
    }

    /// The filters in force, for the log header.
    func filtersJSON() -> String {
        var f: [String: Any] = [:]
        if !filters.pids.isEmpty { f["pid"] = filters.pids }
        if !filters.ports.isEmpty { f["port"] = filters.ports }
        if !filters.localPorts.isEmpty { f["lport"] = filters.localPorts }
        if !filters.remotePorts.isEmpty { f["rport"] = filters.remotePorts }
        if filters.ipv4Only { f["family"] = 4 }
        if filters.ipv6Only { f["family"] = 6 }
        if let netns = filters.netns { f["netns"] = netns }
        if !filters.addresses.isEmpty { f["addr"] = filters.addresses }
        let data = (try? JSONSerialization.data(withJSONObject: f, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }


    func run() throws {
        // The log first: a bad path fails before anything is loaded.
        var log: EventLog?
        if let output, output != "-" {
            do {
                log = try EventLog(path: output, allowSharedDirectory: allowSharedDir)
                log?.rotateSize = rotateSize.flatMap(Self.parseSize).map { Int($0) }
                log?.rotateKeep = rotateKeep
            } catch {
                Diagnostics.fail(error.message, status: error.exitStatus)
            }
        }
        let program: TraceProgram
        switch Result(catching: { () throws(LoaderError) in try startProgram() }) {
        case .success(let p): program = p
        case .failure(let error): Diagnostics.fail(error.message, status: error.exitStatus)
        }
        defer { program.close() }

        tt_install_stop_handlers()
        let sink = EventPrinter(
            format: json || output == "-" ? .json : .text,
            filter: filters.eventFilter,
            limit: count,
            wideAddresses: filters.ipv6Only,
            engine: raw ? nil : HandshakeEngine(thresholds: thresholds()),
            log: log
        )
        sink.writeLogHeader(version: TCPTrail.version, filters: filtersJSON(), thresholds: thresholds().json)
        let reader: RingBufferReader
        switch Result(catching: { () throws(LoaderError) in try RingBufferReader(mapFD: program.eventsFD, consumer: sink) }) {
        case .success(let r): reader = r
        case .failure(let error): Diagnostics.fail(error.message, status: error.exitStatus)
        }
        let loss = LossReporter(program: program, sink: sink)
        // Attached first, then read what is open, so nothing falls between the two.
        if !raw {
            let open = SocketDiag.snapshotAllNamespaces()
            program.seedOwners(open)
            sink.seed(open)
        }
        // Counters are read before we say we trace, so no overflow falls between.
        var queues = raw ? nil : ListenQueueMonitor()
        Diagnostics.note("tcptrail: tracing TCP events; Ctrl-C to stop")

        var nextQueueCheck = WallClock.monotonicNow() + 1_000_000_000
        var checks = 0
        let deadline = duration.map { WallClock.monotonicNow() + UInt64($0 * 1e9) }
        while tt_stop_signal() == 0 && !sink.finished {
            if let deadline, WallClock.monotonicNow() >= deadline { break }
            reader.poll(timeoutMilliseconds: pollInterval)
            loss.check()
            // Timers run a little behind the clock: events still in the ring may explain a close.
            sink.tick(to: WallClock.monotonicNow() &- 200_000_000)
            if tt_take_hangup() != 0 { sink.reopenLog() }
            if queues != nil, WallClock.monotonicNow() >= nextQueueCheck {
                // Once a second; new namespaces every 10 s (that walks /proc).
                checks += 1
                if checks % 10 == 0 { queues!.refreshNamespaces() }
                sink.listenOverflows(queues!.check())
                nextQueueCheck = WallClock.monotonicNow() + 1_000_000_000
            }
            sink.flush()
            sink.checkOutputClosed()
        }
        // Stop new events, then take what is still queued.
        program.detach()
        if !sink.finished { reader.drain() }
        loss.check()
        if queues != nil {
            sink.listenOverflows(queues!.check())
            queues!.close()
        }
        sink.finish()
        sink.flush()
        let stats = program.readStats()
        sink.finishLog(lost: stats.lost)
        if sink.outputClosed { throw ExitCode.success }
        var summary = "tcptrail: \(sink.events) events, \(stats.lost) lost"
        if stats.untracked > 0 { summary += ", \(stats.untracked) sockets untracked (connection table full)" }
        if sink.exportErrors > 0 { summary += ", \(sink.exportErrors) records not written to \(output ?? "the log")" }
        Diagnostics.note(summary)
        if let engine = sink.engine { Diagnostics.note(TraceSummary(engine: engine).text) }
    }
}

/// Turns the kernel's failed-reserve counter into `lost` records as it grows.
final class LossReporter {
    private let program: TraceProgram
    private let sink: EventPrinter
    private var seen: UInt64 = 0

    init(program: TraceProgram, sink: EventPrinter) {
        self.program = program
        self.sink = sink
    }

    func check() {
        let stats = program.readStats()
        if stats.lost > seen {
            sink.lost(count: stats.lost - seen, total: stats.lost, byKind: stats.lostByKind)
            seen = stats.lost
        }
    }
}

/// One-line messages on stderr.
enum Diagnostics {
    static func note(_ line: String) {
        FileHandle.standardError.write(Data((line + "\n").utf8))
    }

    /// Prints `tcptrail: <message>` and exits with `status`.
    static func fail(_ message: String, status: Int32) -> Never {
        note("tcptrail: " + message)
        if LibBPFLog.echoing == false, case let log = LibBPFLog.text, !log.isEmpty, status == 71 {
            note("tcptrail: the last lines of libbpf's log (all of it with --verbose):")
            for line in log.split(separator: "\n").suffix(8) { note("  " + line) }
        }
        exit(status)
    }
}
