/// One output of the pipeline (decode -> filter -> engine -> sinks), live
/// and in replay: text lines, JSON Lines on standard output, the log file,
/// the board, replay's timelines; later metrics.
///
/// A sink writes into the buffer it is handed (the run's standard-output
/// buffer, which the driver flushes), or into its own (the log file): one
/// call per record, nothing allocated on the way.
public protocol RecordSink {
    /// One record the engine made (or a kernel event as it came, with --raw).
    mutating func record(_ output: EngineOutput, to out: inout OutputBuffer)
    /// Events the kernel could not queue (a `lost` record).
    mutating func lost(count: UInt64, total: UInt64, byKind: [KernelEventKind: UInt64], mono: UInt64, to out: inout OutputBuffer)
    /// What full kernel tables kept from the record (an `untracked` record).
    mutating func untracked(_ gaps: TableGaps, mono: UInt64, to out: inout OutputBuffer)
    /// Time passed with no record (the live tick): what waits for time may be written.
    mutating func advance(to mono: UInt64, to out: inout OutputBuffer)
    /// The run ends: what the sink still holds is written.
    mutating func finish(to out: inout OutputBuffer)
}

extension RecordSink {
    /// Most views have no line for losses.
    public mutating func lost(count: UInt64, total: UInt64, byKind: [KernelEventKind: UInt64], mono: UInt64, to out: inout OutputBuffer) {}
    public mutating func untracked(_ gaps: TableGaps, mono: UInt64, to out: inout OutputBuffer) {}
    public mutating func advance(to mono: UInt64, to out: inout OutputBuffer) {}
    public mutating func finish(to out: inout OutputBuffer) {}
}

/// `trace`'s text lines.
public struct TextLinesSink: RecordSink {
    public var writer: TextLinesWriter
    /// How the sockets open at start are shown.
    public var snapshot: SnapshotMode
    /// In compact mode, the snapshot's records until `endSnapshot`.
    private var held: [EngineOutput] = []
    private var digest = SnapshotDigest()
    /// Until `endSnapshot`: the engine is being seeded.
    private var seeding = true
    /// A flood of one anomaly on one endpoint: a few lines a second, the rest counted.
    public var anomalyLines: AnomalyRateLimit

    public init(_ writer: TextLinesWriter, snapshot: SnapshotMode = .full, anomalyLinesPerSecond: Int = 0) {
        self.writer = writer
        self.snapshot = snapshot
        anomalyLines = AnomalyRateLimit(perSecond: anomalyLinesPerSecond)
    }

    public mutating func record(_ output: EngineOutput, to out: inout OutputBuffer) {
        if anomalyLines.perSecond > 0 {
            anomalyLines.note(output)
            if output.monoNanoseconds >= anomalyLines.nextDueTime { writeBursts(anomalyLines.due(at: output.monoNanoseconds), to: &out) }
        }
        switch output {
        case .snapshot(let id, let state, _, _, _) where snapshot != .full:
            guard snapshot == .compact else { return }
            held.append(output)
            digest.add(id, state: state)
            return
        case .anomaly(let a) where snapshot == .compact && seeding && a.connection.openAtStart:
            // What the snapshot showed (a TIME_WAIT buildup) follows its digest.
            held.append(output)
            return
        case .change(let c) where snapshot != .full && c.connection.openAtStart && c.kernel == nil:
            // A listed socket's TIME_WAIT running out: as many lines as the snapshot had.
            return
        case .anomaly(let a) where anomalyLines.perSecond > 0 && !anomalyLines.admit(a):
            return
        default:
            writer.append(output, to: &out)
        }
    }

    public mutating func advance(to mono: UInt64, to out: inout OutputBuffer) {
        if mono >= anomalyLines.nextDueTime { writeBursts(anomalyLines.due(at: mono), to: &out) }
    }

    public mutating func finish(to out: inout OutputBuffer) {
        writeBursts(anomalyLines.drain(), to: &out)
    }

    private mutating func writeBursts(_ bursts: [AnomalyRateLimit.Burst], to out: inout OutputBuffer) {
        for b in bursts { writer.appendBurst(b, to: &out) }
    }

    /// After the snapshot: its sockets one per line when few, else counted.
    public mutating func endSnapshot(mono: UInt64, to out: inout OutputBuffer) {
        defer { held = []; digest = SnapshotDigest(); seeding = false }
        guard snapshot == .compact, !held.isEmpty else { return }
        for line in digest.listsEach ? [] : digest.lines() {
            writer.appendNote(mono: mono, event: "snapshot_digest", to: &out) { $0.append(line) }
        }
        for output in held {
            if case .snapshot = output, !digest.listsEach { continue }
            writer.append(output, to: &out)
        }
    }

    public mutating func lost(count: UInt64, total: UInt64, byKind: [KernelEventKind: UInt64], mono: UInt64, to out: inout OutputBuffer) {
        writer.appendLost(count: count, total: total, mono: mono, to: &out)
    }

    public mutating func untracked(_ gaps: TableGaps, mono: UInt64, to out: inout OutputBuffer) {
        writer.appendUntracked(gaps, mono: mono, to: &out)
    }
}

/// Replay's text: each selected connection's timeline.
public struct TimelineSink: RecordSink {
    public var writer: TimelineWriter

    public init(_ writer: TimelineWriter) { self.writer = writer }

    public mutating func record(_ output: EngineOutput, to out: inout OutputBuffer) {
        writer.add(output, to: &out)
    }
}

/// The board behind `top`, `serve` and `replay --html`: the selected connections' rows.
public struct BoardSink: RecordSink {
    public var board: ConnectionBoard
    /// Which connections and times (replay's --conn, --since, --until); all, live.
    public var selection: ReplaySelection

    public init(_ board: ConnectionBoard, selection: ReplaySelection = ReplaySelection()) {
        self.board = board
        // The board applies --anomalies-only to connections when it is shown, not to records.
        var connections = selection
        connections.anomaliesOnly = false
        self.selection = connections
    }

    public mutating func record(_ output: EngineOutput, to out: inout OutputBuffer) {
        if selection.shows(output) { board.apply(output) }
    }
}
