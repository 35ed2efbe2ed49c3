import TCPTrailCore

/// JSON Lines on the buffer it is handed: `trace --json` (every record) and
/// `replay --json` (the records its selection shows).
public struct JSONLinesSink: RecordSink {
    public var writer: JSONLinesWriter
    /// Replay's --conn, --since, --until, --anomalies-only; nil shows everything.
    public var selection: ReplaySelection?

    public init(_ writer: JSONLinesWriter, selection: ReplaySelection? = nil) {
        self.writer = writer
        self.selection = selection
    }

    public mutating func record(_ output: EngineOutput, to out: inout OutputBuffer) {
        if let selection, !selection.shows(output) { return }
        writer.append(output, to: &out)
    }

    /// Whether a record about no one connection (lost, untracked) at `mono` is shown.
    private func showsRunRecord(at mono: UInt64) -> Bool {
        guard let selection else { return true }
        return !selection.anomaliesOnly && selection.conn == nil && selection.inWindow(mono)
    }

    public mutating func lost(count: UInt64, total: UInt64, byKind: [KernelEventKind: UInt64], mono: UInt64, to out: inout OutputBuffer) {
        if showsRunRecord(at: mono) { writer.appendLost(count: count, total: total, byKind: byKind, mono: mono, to: &out) }
    }

    public mutating func untracked(_ gaps: TableGaps, mono: UInt64, to out: inout OutputBuffer) {
        if showsRunRecord(at: mono) { writer.appendUntracked(gaps, mono: mono, to: &out) }
    }
}
