import ArgumentParser
import Foundation
import TCPTrailCore
#if canImport(Glibc)
import Glibc
#endif
import TCPTrailHost
import TCPTrailLog
import TCPTrailLive

/// `tcptrail replay FILE...`: re-runs the handshake engine over recorded logs.
struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Re-run the handshake engine over recorded logs: each connection's timeline, its anomalies, a summary.",
        discussion: """
        Reads v1 logs written by 'trace --output' or 'trace --json' (plain or .gz, '-' for stdin) from this host or another; \
        needs no privileges. Files of one run (rotated files, SIGHUP reopens) are put in seq order. A malformed line is \
        named (file:line: what is wrong), skipped and counted, and the exit status is then 65; --strict stops at it. \
        A cut last line (writer killed) is a warning. Exit 66: a file cannot be read; 76: an unknown format version.
        """
    )

    @Argument(help: "Log files (FILE, FILE.1, FILE.gz ...; '-' is standard input).")
    var files: [String]

    @OptionGroup var filters: FilterOptions

    @Option(help: ArgumentHelp("Only what happened from this time on (RFC 3339, e.g. 2026-11-21T03:12:00Z; no offset means UTC; default: from the first record).", valueName: "time"))
    var since: String?

    @Option(help: ArgumentHelp("Only what happened up to this time (RFC 3339; default: to the last record).", valueName: "time"))
    var until: String?

    @Option(help: ArgumentHelp("Only this connection (the 'conn' id, e.g. 4217 or 4217.1; default: every connection).", valueName: "id"))
    var conn: String?

    @Option(help: ArgumentHelp("Write the timelines as one self-contained HTML page to this file (the view of 'tcptrail serve'), instead of text (default: none).", valueName: "file"))
    var html: String?

    @Option(parsing: .unconditional, help: ArgumentHelp("At most this many connections in the --html page (those with anomalies first, then the latest).", valueName: "connections"))
    var htmlLimit: Int = 2000

    @Flag(help: "Only connections with anomalies (with --json: only anomaly records).")
    var anomaliesOnly = false

    @Flag(help: "Re-emit the engine's records as JSON Lines (a v1 log with header and summary) instead of timelines.")
    var json = false

    @Flag(help: "Stop at the first malformed line instead of skipping it.")
    var strict = false

    /// Given, they replace the thresholds the log's header names.
    @OptionGroup var anomalies: ThresholdOptions

    mutating func validate() throws {
        if files.isEmpty { throw ValidationError("give at least one log file") }
        if let since, WallClock.parseRFC3339(since) == nil {
            throw ValidationError("--since '\(since.escaped)' is not a time from 1678 to 2262 such as 2026-11-21T03:12:00Z")
        }
        if let until, WallClock.parseRFC3339(until) == nil {
            throw ValidationError("--until '\(until.escaped)' is not a time from 1678 to 2262 such as 2026-11-21T03:12:00Z")
        }
        if let a = since.flatMap(WallClock.parseRFC3339), let b = until.flatMap(WallClock.parseRFC3339), a > b {
            throw ValidationError("--since is after --until")
        }
        if let conn, ConnectionID(conn) == nil {
            throw ValidationError("--conn '\(conn)' is not a connection id such as 4217 or 4217.1")
        }
        if html != nil && json { throw ValidationError("--html and --json are two different outputs: pick one") }
        try OptionCheck.count(htmlLimit, "--html-limit", in: 1...Int.max)
        if files.filter({ $0 == "-" }).count > 1 { throw ValidationError("standard input ('-') can be given once") }
    }

    func run() throws {
        try Diagnostics.running(replay)
    }

    private func replay() throws {
        var options = ReplayOptions()
        options.filter = filters.eventFilter
        options.conn = conn.flatMap { ConnectionID($0) }
        options.since = since.flatMap(WallClock.parseRFC3339)
        options.until = until.flatMap(WallClock.parseRFC3339)
        options.anomaliesOnly = anomaliesOnly
        options.json = json
        options.board = html != nil
        options.strict = strict
        options.version = TCPTrail.version
        // Overrides start from the defaults; the log's header is not read for them.
        if anomalies.isSet { options.thresholds = anomalies.thresholds }
        signal(SIGPIPE, SIG_IGN)
        let replay = LogReplay(paths: files, options: options, write: { buffer in
            buffer.flush(to: STDOUT_FILENO) != EPIPE
        }, diagnose: { Diagnostics.note($0) })
        // The report file first: a path that cannot be written fails before the work.
        var report: HTMLReport?
        if let html {
            report = try HTMLReport(path: html)
        }
        let result = replay.run()
        if let report, let board = replay.board, let clock = replay.clock {
            var query = ConnectionBoard.Query()
            query.anomaliesOnly = anomaliesOnly
            let json = BoardJSON(clock: clock, source: "replay", host: replay.hostname ?? "", windowSeconds: 0, limit: htmlLimit)
            var out = OutputBuffer(capacity: 1 << 20)
            json.append(board, query: query, to: &out)
            try report.write(boardJSON: out)
            Diagnostics.note("tcptrail: wrote \(min(board.rows.count, htmlLimit)) of \(board.rows.count) connections to \(report.path)")
        }
        if result.malformed > 0 && result.stop == nil {
            Diagnostics.note("tcptrail: \(result.malformed) malformed line(s) skipped; exit status 65 (use --strict to stop at the first)")
        }
        if result.status != .success { throw ExitCode(result.status.rawValue) }
    }
}
