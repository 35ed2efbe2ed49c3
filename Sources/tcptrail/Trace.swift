import ArgumentParser
import CTCPTrailSys
import Foundation
import TCPTrailCore
import TCPTrailLoader
import TCPTrailHost
import TCPTrailLog
import TCPTrailLive

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

    @Option(name: [.customShort("T"), .long], help: ArgumentHelp("The time column (default: utc): utc (time of day, UTC), local (time of day in this host's zone), iso (date and time, UTC, RFC 3339), iso-local (date, time and offset), relative (seconds since the trace started).", valueName: "format"))
    var timeFormat: TimeFormat = .utc

    @Flag(help: "Write the text as CSV (RFC 4180, a header row of field names, every field of a line; see --columns).")
    var csv = false

    @Flag(help: "Write the text as tab-separated values, with a header row of field names.")
    var tsv = false

    @Flag(name: [.customShort("w"), .long], help: "Wide text: address columns 39 characters wide from the start (any IPv6 address; -6 implies that alone), and the owner's systemd unit (UNIT, from its cgroup). Without it the addresses widen on the first longer address, under a new header.")
    var wide = false

    @Option(help: ArgumentHelp("The text's columns, in order, comma-separated: \(TextColumn.allCases.map(\.rawValue).joined(separator: ",")) (default: all but event; with --csv/--tsv all).", valueName: "columns"))
    var columns: String?

    @Flag(help: "Write nothing on standard output (with --output, the log is the only record; the summary still goes to stderr).")
    var quiet = false

    @OptionGroup var filters: FilterOptions

    @OptionGroup var live: LiveOptions

    @Option(parsing: .unconditional, help: ArgumentHelp("Stop after this many seconds (default: run until Ctrl-C or SIGTERM).", valueName: "seconds"))
    var duration: Double?

    @Option(parsing: .unconditional, help: ArgumentHelp("Stop after this many events (default: no limit).", valueName: "events"), transform: OptionCheck.positiveWhole)
    var count: UInt64?

    @OptionGroup var logFile: LogFileOptions

    @Flag(help: "Kernel transitions only, as the kernel names them: no handshake engine, no anomalies.")
    var raw = false

    @Option(help: ArgumentHelp("How to show the sockets open at start: compact (one line each when at most \(SnapshotDigest.listLimit), else counts by state and endpoint; JSON and --output keep one record each), full (one line each), none (neither shown nor recorded).", valueName: "mode"))
    var snapshot: SnapshotMode = .compact

    @Flag(help: "Same as --snapshot none.")
    var noSnapshot = false

    @Option(parsing: .unconditional, help: ArgumentHelp("Text lines per second for one anomaly on one endpoint (a listener, or a peer) before the rest of that second are counted in one line (0 prints every one). JSON and --output always record each.", valueName: "lines"))
    var anomalyLines: Int = 5

    /// `--output`: '-' is standard output.
    var output: String? { logFile.output }

    mutating func validate() throws {
        if let duration { try OptionCheck.seconds(duration, "--duration", in: 0.001...OptionCheck.longestSeconds) }
        try OptionCheck.count(anomalyLines, "--anomaly-lines", in: 0...1_000_000)
        if noSnapshot && snapshot != .compact && snapshot != .none {
            throw ValidationError("--no-snapshot and --snapshot \(snapshot.rawValue) disagree: pick one")
        }
        if csv && tsv { throw ValidationError("--csv and --tsv are two formats: pick one") }
        if (csv || tsv || columns != nil || wide || timeFormat != .utc) && (json || quiet || output == "-") {
            throw ValidationError("--csv, --tsv, --columns, -w and -T shape the text; \(json || output == "-" ? "--json writes JSON Lines" : "--quiet writes none"): pick one")
        }
        if let columns, case .failure(let e) = TextLinesWriter.columns(columns) {
            throw ValidationError("--columns: '\(e.name.escaped)' is not a column; the columns are \(TextColumn.allCases.map(\.rawValue).joined(separator: ","))")
        }
        if quiet && (json || output == "-") { throw ValidationError("--quiet writes nothing on standard output; --json and --output - write there: pick one") }
    }

    /// The text's style, time format, columns and width.
    var textFormat: TextFormat {
        var f = TextFormat()
        f.style = csv ? .csv : tsv ? .tsv : .aligned
        f.timeFormat = timeFormat
        if let columns, case .success(let list) = TextLinesWriter.columns(columns) { f.columns = list } else if wide { f.columns = TextColumn.wide(f.style) }
        f.wide = wide || filters.ipv6Only
        f.utcOffsetSeconds = TimeZone.current.secondsFromGMT()
        return f
    }

    func run() throws {
        try Diagnostics.running(trace)
    }

    private func trace() throws {
        // The log's directory (and a file already at the path) is checked
        // first, so a bad path fails before the seconds of loading; nothing is
        // created until the privilege checks pass and the program is loaded
        // and attached (77, 75 and the rest leave no file behind).
        let log = try logFile.log()
        // One filter value: the kernel's config and the user-space check are made from it.
        let filter = filters.eventFilter
        let session = try TraceSession(options: live.session(filter))
        try LogFileOptions.open(log)
        tt_install_stop_handlers()
        let thresholds = live.anomalies.thresholds
        let sink = LivePipeline(
            format: quiet ? .none : json || output == "-" ? .json : .text,
            filter: filter,
            limit: count,
            engine: raw ? nil : HandshakeEngine(thresholds: thresholds),
            log: log,
            snapshot: noSnapshot ? .none : snapshot,
            anomalyLinesPerSecond: anomalyLines,
            textFormat: textFormat
        )
        sink.writeLogHeader(version: TCPTrail.version, filters: filters.json, thresholds: thresholds.json,
                            features: session.program.plan.headerJSON, tables: session.program.tables.headerJSON)
        try session.begin(sink: sink, raw: raw)
        Diagnostics.note("tcptrail: tracing TCP events; Ctrl-C to stop")

        let deadline = duration.map { WallClock.monotonicNow() + UInt64($0 * 1e9) }
        while tt_stop_signal() == 0 && !sink.finished {
            if let deadline, WallClock.monotonicNow() >= deadline { break }
            session.step()
            sink.checkOutputClosed()
        }
        let stats = session.stop()
        sink.finishLog(lost: stats.lost, untracked: session.gaps(stats))
        if sink.outputClosed { throw ExitCode.success }
        var summary = "tcptrail: \(sink.events) events, \(stats.lost) lost"
        if stats.skipped > 0 { summary += " (\(stats.skipped) skipped by the kernel's BPF recursion guard)" }
        for phrase in session.gaps(stats).phrases { summary += ", " + phrase }
        if sink.exportErrors > 0 { summary += ", \(sink.exportErrors) records not written to \(output ?? "the log")" }
        if let log, log.readerWaits > 0 {
            summary += "; the log writer fell behind \(log.readerWaits) times, reading waited \(log.readerWaitNanoseconds / 1_000_000) ms in all (the ring buffer held the events)"
        }
        if sink.stdoutErrors > 0 { summary += ", \(sink.stdoutErrors) records not written to standard output" }
        Diagnostics.note(summary)
        if let engine = sink.engine { for line in TraceSummary(engine: engine).lines { Diagnostics.note("tcptrail: " + line) } }
        // Its own status (74 is the ring buffer's): records made did not reach standard output.
        if sink.stdoutErrors > 0 { throw ExitCode(ExitStatus.outputIncomplete.rawValue) }
    }
}

extension Diagnostics {
    /// Runs a command's body: a failure thrown from it is said in one line
    /// and becomes the command's exit status (ArgumentParser's `ExitCode`).
    static func running(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let failure as CommandFailure {
            say(failure)
            throw ExitCode(failure.status.rawValue)
        }
    }

    /// Prints `tcptrail: <message>`; a verifier refusal adds the end of libbpf's log.
    static func say(_ failure: CommandFailure) {
        note("tcptrail: " + failure.message)
        if LibBPFLog.echoing == false, case let log = LibBPFLog.text, !log.isEmpty, failure.status == .programRejected {
            note("tcptrail: the last lines of libbpf's log (all of it with --verbose):")
            for line in log.split(separator: "\n").suffix(8) { note("  " + line) }
        }
    }
}

extension SnapshotMode: ExpressibleByArgument {}
extension TimeFormat: ExpressibleByArgument {}
