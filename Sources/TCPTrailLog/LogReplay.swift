import TCPTrailCore
import TCPTrailHost
/// What `tcptrail replay` was asked to do.
public struct ReplayOptions: Sendable {
    public var filter = EventFilter()
    public var conn: ConnectionID?
    /// Unix ns.
    public var since: Int64?
    public var until: Int64?
    public var anomaliesOnly = false
    /// Re-emit the engine's records as JSON Lines (a v1 log) instead of timelines.
    public var json = false
    /// Build `LogReplay.board` (for the HTML report) instead of text timelines.
    public var board = false
    /// Stop at the first malformed line.
    public var strict = false
    /// Thresholds to use instead of the ones in the log's header.
    public var thresholds: AnomalyThresholds?
    public var version = "0"

    public init() {}
}

/// How a replay went: what was read, what was skipped, why it stopped.
public struct ReplayResult: Sendable {
    public enum Stop: Sendable, Equatable {
        /// A file could not be opened or read.
        case unreadable(String)
        /// A record declares a format version this tcptrail does not read.
        case unknownVersion(String)
        /// `--strict` and a malformed line.
        case malformed(String)
        /// Standard output went away.
        case outputClosed
    }
    public var files = 0
    public var runs = 0
    public var lines: UInt64 = 0
    public var records: UInt64 = 0
    public var kernelEvents: UInt64 = 0
    /// Lines skipped as malformed (not counting a cut last line).
    public var malformed: UInt64 = 0
    /// Files whose last line was cut off (skipped with a warning).
    public var cutLastLines = 0
    public var stop: Stop?

    /// What the run's outcome means for the exit status.
    public var status: ExitStatus {
        switch stop {
        case .unreadable?: .inputUnreadable
        case .unknownVersion?: .unknownFormatVersion
        case .malformed?: .malformedInput
        case .outputClosed?: .success
        case nil: malformed > 0 ? .malformedInput : .success
        }
    }

    public var exitStatus: Int32 { status.rawValue }
}

/// Replays log files: orders them into runs, parses every line, re-runs the
/// engine per run, and writes timelines (or JSON Lines) and a summary.
public final class LogReplay {
    public let paths: [String]
    public let options: ReplayOptions
    /// Takes output; returns false when the reader went away.
    private let write: (inout OutputBuffer) -> Bool
    /// Takes one-line warnings and errors (for stderr).
    private let diagnose: (String) -> Void
    private var out = OutputBuffer(capacity: 1 << 20)
    private var parser = LogRecordParser()
    public private(set) var result = ReplayResult()
    /// With `options.board`: every connection of the (last) run, for the report.
    public private(set) var board: ConnectionBoard?
    /// The wall clock of the (last) run, and its header's host name.
    public private(set) var clock: WallClock?
    public private(set) var hostname: String?
    /// Malformed lines are named one by one up to this many, then only counted.
    public var maxMessages = 20
    private var messages = 0

    public init(paths: [String], options: ReplayOptions, write: @escaping (inout OutputBuffer) -> Bool,
                diagnose: @escaping (String) -> Void) {
        self.paths = paths
        self.options = options
        self.write = write
        self.diagnose = diagnose
    }

    /// One file, opened, with its header if its first line is one.
    struct Input {
        var path: String
        var reader: LogFileReader
        var header: LogRecord?
        var firstSeq: UInt64
        var order: Int
    }

    public func run() -> ReplayResult {
        // Open everything first: a missing file fails before any output.
        var inputs: [Input] = []
        for (i, path) in paths.enumerated() {
            do {
                let reader = try LogFileReader(path: path)
                var first: LogRecord?
                // The first line says which run the file belongs to and where in
                // it: looked at, not read (a pipe cannot go back). A read error
                // here comes again from forEachLine, after the lines before it.
                _ = reader.withFirstLine { line in
                    if case .complete(let bytes) = line, case .success(let r) = parser.parse(bytes) { first = r }
                }
                inputs.append(Input(path: path, reader: reader, header: first?.type == .header ? first : nil,
                                    firstSeq: first?.seq ?? 0, order: i))
            } catch {
                result.stop = .unreadable(error.message)
                diagnose("tcptrail: \(error.message)")
                return result
            }
        }
        result.files = inputs.count
        for run in Self.runs(inputs) {
            result.runs += 1
            replay(run)
            if result.stop != nil { break }
        }
        return result
    }

    /// Groups files into runs (same host, same start) and orders each run by `seq`;
    /// runs keep the order they were given in, files without a header are runs of their own.
    static func runs(_ inputs: [Input]) -> [[Input]] {
        var groups: [[Input]] = []
        var index: [String: Int] = [:]
        for input in inputs {
            if let h = input.header, let host = h.hostname, let started = h.started {
                let key = "\(host)\u{0}\(started)\u{0}\(h.bootOffsetNanoseconds ?? 0)"
                if let g = index[key] { groups[g].append(input); continue }
                index[key] = groups.count
            }
            groups.append([input])
        }
        return groups.map { $0.sorted { ($0.firstSeq, $0.order) < ($1.firstSeq, $1.order) } }
    }

    private func report(_ path: String, _ line: Int, _ message: String) {
        result.malformed += 1
        messages += 1
        if messages <= maxMessages {
            diagnose("tcptrail: \(path):\(line): \(message); line skipped")
        } else if messages == maxMessages + 1 {
            diagnose("tcptrail: more malformed lines; the summary gives the count")
        }
    }

    private func replay(_ files: [Input]) {
        var run = ReplayRun(filter: options.filter, thresholds: options.thresholds)
        // The output buffer as a local: a class property costs a runtime
        // exclusivity check on every access, and the engine's output reaches it per event.
        var buffer = OutputBuffer(capacity: 0)
        swap(&buffer, &out)
        defer { swap(&buffer, &out) }
        // Mirrors `result.stop` for the per-line check (a class property again).
        // Only the output can stop a run from inside the engine's output; the
        // line loop returns false itself where it stops.
        var outputClosed = false
        func flushOutput() {
            guard !buffer.isEmpty, result.stop == nil else { buffer.removeAll(); return }
            if !write(&buffer) {
                result.stop = .outputClosed
                outputClosed = true
            }
            buffer.removeAll()
        }
        // The run's sink: one of these three (a local, for the same reason as the buffer).
        var timelines: TimelineSink?
        var json: JSONLinesSink?
        var boardSink: BoardSink?
        var selection = ReplaySelection()
        selection.conn = options.conn
        selection.anomaliesOnly = options.anomaliesOnly
        /// Set where the selection narrows what is shown: the summary then counts only that.
        var tally: SelectionTally?

        // The output is set up at the first record, once the clock is known.
        func start(_ clock: WallClock, header: LogRecord?) {
            // Clamped: a window outside the log's clock selects from its start or to its end.
            if let since = options.since { selection.sinceMono = UInt64(clamping: since.subtractingSaturating(clock.bootOffsetNanoseconds)) }
            if let until = options.until { selection.untilMono = UInt64(clamping: until.subtractingSaturating(clock.bootOffsetNanoseconds)) }
            if SelectionTally.narrows(selection) { tally = SelectionTally(selection) }
            if options.board {
                // One report shows one run: its times share one clock.
                if board == nil {
                    boardSink = BoardSink(ConnectionBoard(retention: .max, maxEndedRows: 200_000), selection: selection)
                    self.clock = clock
                    hostname = header?.hostname
                } else {
                    diagnose("tcptrail: warning: the files hold more than one trace run; the HTML report shows the first")
                }
            } else if options.json {
                var w = JSONLinesWriter(clock: clock)
                w.appendHeader(version: options.version, hostname: header?.hostname ?? "", kernel: header?.kernel ?? "",
                               startedMono: header?.mono ?? 0, filters: "{}", thresholds: run.engine.thresholds.json,
                               mono: header?.mono ?? 0, to: &buffer)
                json = JSONLinesSink(w, selection: selection)
            } else {
                timelines = TimelineSink(TimelineWriter(clock: clock, selection: selection))
            }
        }
        func emit(_ output: EngineOutput) {
            if tally != nil { tally!.record(output) }
            if timelines != nil {
                timelines!.record(output, to: &buffer)
            } else if boardSink != nil {
                boardSink!.record(output, to: &buffer)
            } else if json != nil {
                json!.record(output, to: &buffer)
            }
            if buffer.count >= 1 << 19 { flushOutput() }
        }
        func lost(_ r: LogRecord) {
            guard json != nil else { return }
            if r.type == .untracked {
                json!.untracked(r.untracked ?? TableGaps(), mono: r.mono, to: &buffer)
            } else {
                json!.lost(count: r.count.map { UInt64(clamping: $0) } ?? 0, total: r.lostTotal, byKind: r.lostByType, mono: r.mono, to: &buffer)
            }
        }

        var started = false
        /// The run's clock, once started (a local: see below).
        var bootOffset: Int64 = 0
        // Locals in the per-line loop: a class property costs a runtime
        // exclusivity check on every access.
        var parser = self.parser
        defer { self.parser = parser }
        var lines: UInt64 = 0, records: UInt64 = 0
        /// Each line is parsed into this one record, not returned in a Result.
        var r = LogRecord()
        parser.wantsTime = true
        for input in files {
            let path = input.path
            defer {
                result.lines += lines
                result.records += records
                lines = 0
                records = 0
            }
            /// Reports a malformed line; false when --strict stops here.
            func malformed(_ number: Int, _ message: String) -> Bool {
                report(path, number, message)
                guard options.strict else { return true }
                result.stop = .malformed("\(path):\(number)")
                diagnose("tcptrail: stopped at the first malformed line (--strict)")
                return false
            }
            let readError = input.reader.forEachLine { line, number in
                lines += 1
                let bytes: UnsafeRawBufferPointer
                var isLast = false
                switch line {
                case .complete(let b): bytes = b
                case .unterminated(let b): bytes = b; isLast = true
                case .tooLong(let n):
                    report(path, number, "line of \(n) bytes is longer than the \(LogFileReader.maxLineBytes >> 20) MiB limit")
                    if options.strict { result.stop = .malformed("\(path):\(number)"); return false }
                    return true
                }
                // Blank lines carry nothing (an editor's trailing newline).
                if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0d }) { return true }
                if let f = parser.parse(bytes, into: &r) {
                    if let v = f.unknownVersion {
                        let message = "\(path):\(number): format version \(v) is not one this tcptrail reads (1); replay it with the tcptrail that wrote it, or a newer one"
                        diagnose("tcptrail: " + message)
                        result.stop = .unknownVersion(message)
                        return false
                    }
                    if isLast {
                        result.cutLastLines += 1
                        diagnose("tcptrail: warning: \(path):\(number): the last line is cut off (\(f.message)): the writer stopped mid-record (killed, or the disk filled); skipped")
                        return true
                    }
                    if !malformed(number, f.message) { return false }
                } else {
                    // The record's wall time must be one: mono_ns plus the boot offset within Int64 ns.
                    var offset = bootOffset
                    if !started {
                        // Wall time: the header's boot offset, else the first record's `time`.
                        offset = r.bootOffsetNanoseconds ?? 0
                        if r.bootOffsetNanoseconds == nil, let unix = r.timeUnixNanoseconds {
                            let (o, overflow) = unix.subtractingReportingOverflow(Int64(clamping: r.mono))
                            if overflow {
                                return malformed(number, "\"time\" and \"mono_ns\" \(r.mono) give no boot time (more than 292 years apart)") && !outputClosed
                            }
                            offset = o
                        }
                    }
                    if case (_, true) = Int64(clamping: r.mono).addingReportingOverflow(offset) {
                        return malformed(number, "\"mono_ns\" \(r.mono) is no time: with the boot offset \(offset) ns it is outside 1677-09-21 to 2262-04-11") && !outputClosed
                    }
                    if !started {
                        bootOffset = offset
                        if r.type == .header { run.feed(r, emit: emit, lost: lost) }
                        start(WallClock(bootOffsetNanoseconds: offset), header: r.type == .header ? r : nil)
                        parser.wantsTime = false
                        started = true
                        if r.type == .header { return !outputClosed }
                    }
                    records += 1
                    run.feed(r, emit: emit, lost: lost)
                }
                return !outputClosed
            }
            if let readError {
                diagnose("tcptrail: \(readError.message)")
                result.stop = .unreadable(readError.message)
            }
            if result.stop != nil { break }
        }
        if !started { start(WallClock(bootOffsetNanoseconds: 0), header: nil) }
        run.finish(emit: emit)
        result.kernelEvents += run.kernelEvents
        if let boardSink { board = boardSink.board }

        let summary = tally.map(TraceSummary.init) ?? TraceSummary(engine: run.engine)
        if timelines != nil {
            while timelines!.writer.finishOne(to: &buffer) {
                if buffer.count >= 1 << 19 { flushOutput() }
            }
            buffer.append(summaryText(run, summary, timelines: timelines?.writer, files: files))
        } else if board != nil {
            buffer.append(summaryText(run, summary, timelines: nil, files: files))
        } else if json != nil {
            json!.writer.appendSummary(recordsByType: json!.writer.countsByType,
                                anomalies: summary.anomalyPairs, lost: run.lostInKernel, exportErrors: 0,
                                untracked: run.untracked.isEmpty ? nil : run.untracked, mono: run.engine.now, to: &buffer)
            for line in summaryText(run, summary, timelines: nil, files: files).split(separator: "\n") {
                diagnose("tcptrail: " + line)
            }
        }
        flushOutput()
    }

    /// The options that narrow the summary, as the user gave them; nil for the whole log.
    private var selectionWords: String? {
        var words: [String] = []
        if let c = options.conn { words.append("--conn \(c)") }
        if options.since != nil { words.append("--since") }
        if options.until != nil { words.append("--until") }
        if options.anomaliesOnly { words.append("--anomalies-only") }
        return words.isEmpty ? nil : words.joined(separator: " ")
    }

    private func summaryText(_ run: ReplayRun, _ summary: TraceSummary, timelines: TimelineWriter?, files: [Input]) -> String {
        var lines: [String] = []
        let names = files.map(\.path.escaped).joined(separator: ", ")
        var origin = ""
        if let h = run.header {
            origin = " (host \((h.hostname ?? "?").escaped), kernel \((h.kernel ?? "?").escaped), started \((h.started ?? "?").escaped))"
        } else {
            origin = " (no header: thresholds are the defaults unless given)"
        }
        lines.append("replay of \(names)\(origin)")
        lines.append("records: \(run.records), kernel events replayed: \(run.kernelEvents)"
                     + (run.filteredOut > 0 ? ", filtered out: \(run.filteredOut)" : ""))
        if let t = timelines {
            lines.append("connections shown: \(t.connectionsShown) of \(t.connectionsSeen), with \(t.anomaliesShown) anomalies")
        }
        if let narrowed = selectionWords {
            lines.append("counted below: only what \(narrowed) selects")
        }
        lines.append(contentsOf: summary.lines)
        var gaps: [String] = []
        if run.lostInKernel > 0 { gaps.append("\(run.lostInKernel) events lost in the kernel (ring buffer full) while recording") }
        if let s = run.summary, case let errors = s.exportErrors, errors > 0 { gaps.append("\(errors) records the log could not take") }
        if run.seqMissing > 0 { gaps.append("\(run.seqMissing) records missing by seq in \(run.seqGaps) gap(s): rotated away, not written, or a file not given") }
        if run.duplicates > 0 { gaps.append("\(run.duplicates) duplicate records skipped (a file given twice?)") }
        if run.summary == nil { gaps.append("no summary record: the run did not end cleanly, or its last file was not given") }
        gaps.append(contentsOf: run.untracked.phrases)
        if run.unknownTypes > 0 { gaps.append("\(run.unknownTypes) records of types this version does not know, ignored") }
        lines.append(gaps.isEmpty ? "complete: no gaps" : "gaps: " + gaps.joined(separator: "; "))
        if result.malformed > 0 { lines.append("malformed lines skipped: \(result.malformed)") }
        return lines.map { $0 + "\n" }.joined()
    }
}
