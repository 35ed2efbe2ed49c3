import Histogram

/// The summary of what a replay selection shows (`--conn`, `--since`/`--until`,
/// `--anomalies-only`): counted from the engine's output as it passes, so the
/// summary speaks of the connections on the page, not of the whole log. The
/// engine itself must still see every record (a connection's history, its
/// listener), so the selection cannot filter its input.
///
/// It counts as the engine does: a connection's final state is the last one
/// the selection saw; a socket listed at start that no kernel event touched is
/// counted apart; a handshake's time is the time since the connection's
/// previous change (or the kernel's time in the previous state, where that
/// change came before the selection).
public struct SelectionTally {
    public let selection: ReplaySelection

    private struct Entry {
        /// Nil while the selection has shown no change of it (only an anomaly).
        var state: TCPState?
        var openAtStart: Bool
        var lastMono: UInt64?
        var anomalies: Int = 0
        /// µs, and whether the server side's.
        var handshake: (micros: UInt64, passive: Bool)?
    }

    private var entries: [ConnectionID: Entry] = [:]
    private var anomalyCounts: [Anomaly.Kind: Int] = [:]

    public init(_ selection: ReplaySelection) {
        self.selection = selection
    }

    /// Whether the selection narrows anything: if not, the engine's own summary is the one.
    public static func narrows(_ s: ReplaySelection) -> Bool {
        s.conn != nil || s.sinceMono != nil || s.untilMono != nil || s.anomaliesOnly
    }

    private func selects(_ conn: ConnectionID, _ mono: UInt64) -> Bool {
        if let want = selection.conn, want != conn { return false }
        return selection.inWindow(mono)
    }

    public mutating func record(_ output: EngineOutput) {
        switch output {
        case .snapshot(let identity, let state, _, let mono, _):
            guard selects(identity.conn, mono) else { return }
            entries[identity.conn] = Entry(state: state, openAtStart: identity.openAtStart, lastMono: mono)
        case .change(let c):
            let conn = c.connection.conn
            guard selects(conn, c.monoNanoseconds) else { return }
            var e = entries[conn] ?? Entry(state: nil, openAtStart: false, lastMono: nil)
            if c.step == .established && (c.from == .synSent || c.from == .synReceived) {
                let since = e.lastMono ?? c.kernel.map { $0.monoNanoseconds.subtractingSaturating($0.previousStateNanoseconds ?? 0) }
                if let since {
                    let elapsed = c.monoNanoseconds >= since ? c.monoNanoseconds - since : 0
                    e.handshake = (min(max(elapsed / 1000, 1), 3_600_000_000), c.from == .synReceived)
                }
            }
            e.state = c.to
            // A TIME_WAIT listed at start that ran out is still "open at start";
            // the kernel's word on it makes it one of the run's.
            e.openAtStart = c.connection.openAtStart && c.kernel == nil
            e.lastMono = c.monoNanoseconds
            entries[conn] = e
        case .anomaly(let a):
            let conn = a.connection.conn
            guard selects(conn, a.monoNanoseconds) else { return }
            anomalyCounts[a.kind, default: 0] += 1
            entries[conn, default: Entry(state: nil, openAtStart: a.connection.openAtStart, lastMono: nil)].anomalies += 1
        case .event:
            break
        }
    }

    /// The summary of the selected connections (with `--anomalies-only`, of those with an anomaly).
    public var summary: TraceSummary {
        var final: [TCPState: Int] = [:], untouched: [TCPState: Int] = [:]
        var active = TraceSummary.handshakeHistogram(), passive = TraceSummary.handshakeHistogram()
        for e in entries.values where !selection.anomaliesOnly || e.anomalies > 0 {
            if let state = e.state {
                if e.openAtStart { untouched[state, default: 0] += 1 } else { final[state, default: 0] += 1 }
            }
            if let h = e.handshake {
                if h.passive { _ = passive.record(h.micros) } else { _ = active.record(h.micros) }
            }
        }
        return TraceSummary(finalStates: final, openAtStartStates: untouched, anomalyCounts: anomalyCounts,
                            activeHandshakes: active, passiveHandshakes: passive)
    }
}
