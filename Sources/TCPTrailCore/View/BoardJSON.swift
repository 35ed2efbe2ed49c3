/// Writes a `ConnectionBoard` as the JSON the timeline page reads
/// (`/api/board`, the `board` server-sent event, `replay --html`). Times are
/// wall-clock ms since the epoch, with the µs as a fraction where there are
/// any (`1763699948123.04`): a refused connect lasts some 40 µs. Process names
/// are escaped to printable ASCII (`\xNN`) before JSON escaping, so no
/// control byte reaches a page.
public struct BoardJSON: Sendable {
    public var clock: WallClock
    public var source: String
    public var host: String
    /// Live: seconds of history the page shows. A report: the whole log.
    public var windowSeconds: Int
    /// At most this many connections (the query's order decides which).
    public var limit: Int

    public init(clock: WallClock, source: String, host: String, windowSeconds: Int, limit: Int) {
        self.clock = clock
        self.source = source
        self.host = host
        self.windowSeconds = windowSeconds
        self.limit = limit
    }

    /// `mono` as wall-clock ms, to the µs: "1763699948123", "1763699948123.04".
    func appendTime(_ mono: UInt64, to out: inout OutputBuffer) {
        let us = clock.unixNanoseconds(mono: mono) / 1000
        if us < 0 { out.append(UInt8(ascii: "-")) }
        let magnitude = us.magnitude
        out.append(decimal: magnitude / 1000)
        var fraction = magnitude % 1000
        guard fraction != 0 else { return }
        var digits = 3
        while fraction % 10 == 0 {
            fraction /= 10
            digits -= 1
        }
        out.append(UInt8(ascii: "."))
        out.append(decimal: fraction, zeroPaddedTo: digits)
    }

    func appendTime(_ mono: UInt64?, to out: inout OutputBuffer) {
        if let mono { appendTime(mono, to: &out) } else { out.append("null" as StaticString) }
    }

    /// The whole board: header, stats, connections, anomaly feed, and what
    /// was left out (`left_out`: rows past `limit`, rows the query did not
    /// keep, ended rows let go at the board's cap).
    public func append(_ board: ConnectionBoard, query: ConnectionBoard.Query = .init(), to out: inout OutputBuffer) {
        let now = board.now
        let start: UInt64 = source == "live" ? (now > UInt64(windowSeconds) * 1_000_000_000 ? now - UInt64(windowSeconds) * 1_000_000_000 : 0)
            : (board.first ?? now)
        out.append("{\"version\":1,\"source\":", jsonString: source)
        out.append(",\"host\":", jsonString: host)
        out.append(",\"now\":" as StaticString)
        appendTime(now, to: &out)
        out.append(",\"start\":" as StaticString)
        appendTime(start, to: &out)
        out.append(",\"window_s\":", decimal: Int64(windowSeconds))
        out.append(",\"stats\":" as StaticString)
        appendStats(board, to: &out)
        let rows = board.rows(matching: query)
        out.append(",\"total_connections\":", decimal: Int64(rows.count))
        out.append(",\"limit\":", decimal: Int64(limit))
        let past = rows.dropFirst(limit)
        out.append(",\"left_out\":{\"over_limit\":", decimal: Int64(past.count))
        out.append(",\"over_limit_with_anomalies\":", decimal: Int64(past.count(where: { !$0.marks.isEmpty })))
        out.append(",\"not_matching\":", decimal: Int64(board.rows.count - rows.count))
        out.append(",\"let_go_at_cap\":", decimal: Int64(board.endedRowsDropped))
        out.append(",\"cap\":", decimal: Int64(board.maxEndedRows))
        out.append(UInt8(ascii: "}"))
        out.append(",\"connections\":[" as StaticString)
        for (i, row) in rows.prefix(limit).enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            appendRow(row, to: &out)
        }
        out.append("],\"feed\":" as StaticString)
        appendFeed(board.recentAnomalies(limit: 100), to: &out)
        out.append(UInt8(ascii: "}"))
    }

    public func appendStats(_ board: ConnectionBoard, to out: inout OutputBuffer) {
        out.append("{\"events_per_s\":", decimal: UInt64(board.eventsPerSecond.rounded()))
        out.append(",\"events\":", decimal: board.events)
        out.append(",\"tracked\":", decimal: Int64(board.openConnections))
        out.append(",\"shown\":", decimal: Int64(board.rows.count))
        out.append(",\"connections\":", decimal: Int64(board.connectionsSeen))
        out.append(",\"lost\":", decimal: board.lost)
        out.append(",\"anomalies\":{" as StaticString)
        for (i, (kind, n)) in board.anomalyCounts.sorted(by: { $0.key.rawValue < $1.key.rawValue }).enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.appendJSONString(kind.rawValue)
            out.append(UInt8(ascii: ":"))
            out.append(decimal: Int64(n))
        }
        out.append("}}" as StaticString)
    }

    /// One connection, as the page's `connections` entries.
    public func appendRow(_ row: ConnectionBoard.Row, to out: inout OutputBuffer) {
        let id = row.identity
        out.append("{\"conn\":\"" as StaticString)
        out.append(connection: id.conn)
        out.append("\",\"pid\":" as StaticString)
        if id.ownerKnown { out.append(decimal: UInt64(id.owner.pid)) } else { out.append("null" as StaticString) }
        out.append(",\"comm\":" as StaticString)
        appendComm(id, to: &out)
        // The thread that took the socket, where its name is not the process's.
        if id.ownerKnown && !id.thread.isEmpty && id.thread != id.owner.comm {
            out.append(",\"thread\":", jsonString: id.thread.escaped)
        }
        if id.ownerKnown, let cgroup = id.owner.cgroup.info { out.appendCgroupMembers(cgroup) }
        out.append(",\"local\":\"" as StaticString)
        out.append(endpointOf: id, remote: false)
        out.append("\",\"remote\":\"" as StaticString)
        out.append(endpointOf: id, remote: true)
        out.append("\",\"side\":\"" as StaticString)
        out.append(row.side.rawValue)
        out.append("\",\"state\":\"" as StaticString)
        out.append(row.state.rawValue)
        out.append("\",\"opened\":" as StaticString)
        appendTime(row.opened, to: &out)
        out.append(",\"since\":" as StaticString)
        appendTime(row.since, to: &out)
        // When it reached CLOSED (for a TIME_WAIT: its end, not its start).
        out.append(",\"closed\":" as StaticString)
        appendTime(row.state == .closed ? row.since : nil, to: &out)
        out.append(",\"time_wait_until\":" as StaticString)
        appendTime(row.state == .timeWait ? row.timeWaitEnds : nil, to: &out)
        out.append(",\"end\":" as StaticString)
        if let ending = row.ending {
            out.append(UInt8(ascii: "\""))
            out.append(ending.rawValue)
            out.append(UInt8(ascii: "\""))
        } else {
            out.append("null" as StaticString)
        }
        out.append(",\"open_at_start\":" as StaticString)
        out.append(row.openAtStart ? "true" as StaticString : "false" as StaticString)
        out.append(",\"segments\":[" as StaticString)
        for (i, s) in row.segments.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append("{\"state\":\"" as StaticString)
            out.append(s.state.rawValue)
            out.append("\",\"start\":" as StaticString)
            appendTime(s.start, to: &out)
            out.append(",\"end\":" as StaticString)
            appendTime(s.end, to: &out)
            out.append(UInt8(ascii: "}"))
        }
        out.append("],\"anomalies\":[" as StaticString)
        for (i, m) in row.marks.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            appendMark(m, to: &out)
            out.append(UInt8(ascii: "}"))
        }
        out.append("]}" as StaticString)
    }

    private func appendMark(_ m: ConnectionBoard.Mark, to out: inout OutputBuffer) {
        out.append("{\"kind\":\"" as StaticString)
        out.append(m.kind.rawValue)
        out.append("\",\"severity\":\"" as StaticString)
        out.append(m.severity.rawValue)
        out.append("\",\"at\":" as StaticString)
        appendTime(m.mono, to: &out)
        out.append(",\"detail\":", jsonString: m.detail)
    }

    private func appendComm(_ id: ConnectionIdentity, to out: inout OutputBuffer) {
        if !id.ownerKnown {
            out.append("\"\"" as StaticString)
            return
        }
        out.appendJSONString(id.owner.comm.escaped)
    }

    /// Anomalies, newest first.
    public func appendFeed(_ items: [ConnectionBoard.FeedItem], to out: inout OutputBuffer) {
        out.append(UInt8(ascii: "["))
        for (i, item) in items.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            appendMark(item.mark, to: &out)
            out.append(",\"conn\":\"" as StaticString)
            out.append(connection: item.identity.conn)
            out.append("\",\"comm\":" as StaticString)
            appendComm(item.identity, to: &out)
            out.append(",\"endpoints\":", jsonString: item.identity.endpoints)
            if item.count > 1 { out.append(",\"count\":", decimal: UInt64(item.count)) }
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "]"))
    }

    /// Recent state changes, newest first (`/api/events`).
    public func appendChanges(_ changes: [ConnectionBoard.RecentChange], to out: inout OutputBuffer) {
        out.append(UInt8(ascii: "["))
        for (i, c) in changes.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append("{\"at\":" as StaticString)
            appendTime(c.mono, to: &out)
            out.append(",\"conn\":\"" as StaticString)
            out.append(connection: c.identity.conn)
            out.append("\",\"comm\":" as StaticString)
            appendComm(c.identity, to: &out)
            out.append(",\"endpoints\":", jsonString: c.identity.endpoints)
            out.appendDocumented(from: c.from, to: c.to, step: c.step, inferred: c.inferred, reason: c.reason)
            out.append(UInt8(ascii: "}"))
        }
        out.append(UInt8(ascii: "]"))
    }
}
