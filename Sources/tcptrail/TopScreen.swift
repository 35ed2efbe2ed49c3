import CNCurses
import TCPTrailCore
import TCPTrailHost
import TCPTrailLog
import TCPTrailLive

/// Colour pairs and attributes; plain letters and reverse video without colours.
struct Palette {
    let color: Bool
    private var statePairs: [TCPState: Int32] = [:]
    private var markPairs: [Anomaly.Severity: Int32] = [:]
    private var textPairs: [Anomaly.Severity: Int32] = [:]

    init(color wanted: Bool) {
        let ok = wanted && has_colors() && start_color() != ERR && tt_colors() >= 8
        color = ok
        guard ok else { return }
        // The terminal's own background where it has one, else black.
        let background: Int16 = use_default_colors() == OK ? -1 : Int16(COLOR_BLACK)
        let rich = tt_colors() >= 256
        // (background with 256 colours, with 8, foreground)
        let table: [(TCPState, Int16, Int16, Int16)] = [
            (.closed, 240, Int16(COLOR_BLACK), Int16(COLOR_WHITE)),
            (.listen, 33, Int16(COLOR_BLUE), Int16(COLOR_WHITE)),
            (.synSent, 220, Int16(COLOR_YELLOW), Int16(COLOR_BLACK)),
            (.synReceived, 214, Int16(COLOR_YELLOW), Int16(COLOR_BLACK)),
            (.established, 34, Int16(COLOR_GREEN), Int16(COLOR_BLACK)),
            (.finWait1, 45, Int16(COLOR_CYAN), Int16(COLOR_BLACK)),
            (.finWait2, 37, Int16(COLOR_CYAN), Int16(COLOR_BLACK)),
            (.closeWait, 170, Int16(COLOR_MAGENTA), Int16(COLOR_BLACK)),
            (.closing, 81, Int16(COLOR_CYAN), Int16(COLOR_BLACK)),
            (.lastAck, 135, Int16(COLOR_MAGENTA), Int16(COLOR_BLACK)),
            (.timeWait, 248, Int16(COLOR_WHITE), Int16(COLOR_BLACK)),
        ]
        var n: Int16 = 1
        for (state, bg256, bg8, fg) in table {
            init_pair(n, fg, rich ? bg256 : bg8)
            statePairs[state] = Int32(n)
            n += 1
        }
        let marks: [(Anomaly.Severity, Int16, Int16, Int16)] = [
            (.critical, 196, Int16(COLOR_RED), Int16(COLOR_WHITE)),
            (.warning, 208, Int16(COLOR_YELLOW), Int16(COLOR_BLACK)),
            (.info, 51, Int16(COLOR_CYAN), Int16(COLOR_BLACK)),
        ]
        for (sev, bg256, bg8, fg) in marks {
            init_pair(n, fg, rich ? bg256 : bg8)
            markPairs[sev] = Int32(n)
            n += 1
            init_pair(n, rich ? bg256 : bg8, background)
            textPairs[sev] = Int32(n)
            n += 1
        }
    }

    /// A cell of this state (letter on its colour, or reverse video).
    func state(_ s: TCPState) -> Int32 {
        color ? tt_color_pair(statePairs[s] ?? 0) : tt_a_reverse()
    }

    /// The "!" of an anomaly.
    func mark(_ s: Anomaly.Severity) -> Int32 {
        color ? tt_color_pair(markPairs[s] ?? 0) | tt_a_bold() : tt_a_bold() | (s == .info ? 0 : tt_a_reverse())
    }

    /// Text in an anomaly's colour.
    func text(_ s: Anomaly.Severity) -> Int32 {
        color ? tt_color_pair(textPairs[s] ?? 0) | (s == .info ? 0 : tt_a_bold()) : (s == .info ? 0 : tt_a_bold())
    }
}

/// Drawing on stdscr, printable ASCII only.
enum Paint {
    /// Writes at most `width` columns of `text` at (y, x), anything but printable ASCII as "?".
    static func put(_ y: Int, _ x: Int, _ text: String, width: Int = .max, attr: Int32 = 0) {
        let cols = Int(tt_cols()), lines = Int(tt_lines())
        guard y >= 0, y < lines, x >= 0, x < cols else { return }
        let n = min(width, cols - x)
        guard n > 0 else { return }
        var bytes = [CChar]()
        bytes.reserveCapacity(min(n, text.utf8.count) + 1)
        for b in text.utf8 {
            if bytes.count == n { break }
            bytes.append(CChar(bitPattern: b >= 0x20 && b < 0x7f ? b : UInt8(ascii: "?")))
        }
        bytes.append(0)
        if attr != 0 { attrset(attr) }
        mvaddnstr(Int32(y), Int32(x), bytes, Int32(bytes.count - 1))
        if attr != 0 { attrset(0) }
    }

    static func cell(_ y: Int, _ x: Int, _ ch: UInt8, attr: Int32) {
        guard y >= 0, y < Int(tt_lines()), x >= 0, x < Int(tt_cols()) else { return }
        let c = ch >= 0x20 && ch < 0x7f ? ch : UInt8(ascii: "?")
        mvaddch(Int32(y), Int32(x), chtype(c) | chtype(UInt32(bitPattern: attr)))
    }

    /// A line filled with `attr` (a bar across the screen).
    static func band(_ y: Int, attr: Int32) {
        put(y, 0, String(repeating: " ", count: Int(tt_cols())), attr: attr)
    }
}

/// Text helpers.
/// The whole screen, drawn from a board and a view.
struct TopScreen {
    var palette: Palette
    var clock = WallClock.current()

    mutating func draw(_ board: ConnectionBoard, _ view: inout TopView) {
        erase()
        let lines = Int(tt_lines()), cols = Int(tt_cols())
        guard lines >= 10, cols >= 40 else {
            for (i, line) in ["tcptrail top:", "terminal too small", "\(cols)x\(lines), needs 40x10", "(q quits)"].enumerated() {
                Paint.put(i, 0, line)
            }
            refresh()
            return
        }
        if view.help {
            drawHelp(lines: lines, cols: cols)
            refresh()
            return
        }
        drawHeader(board, view, cols: cols)

        // Lines: the header (2), the legend (1 or 2), the column titles, the table,
        // the feed's title and lines, the footer.
        let legendCount = legendLines(cols: cols)
        let titles = 2 + legendCount
        let feedAll = board.recentAnomalies(limit: 50).filter { item in
            guard let p = view.query.process, !p.isEmpty else { return true }
            return item.identity.owner.comm.escaped.contains(p) || (item.identity.ownerKnown && String(item.identity.owner.pid) == p)
        }
        let spare = lines - titles - 3
        let feedLines = min(max(feedAll.count, 1), min(10, max(2, spare / 4)))
        let tableHeight = spare - feedLines
        let feedTop = titles + 1 + tableHeight
        view.page = max(1, tableHeight)

        var present = Set<TCPState>()
        var total = 0
        if let grouping = view.grouping {
            let groups = board.groups(grouping, matching: view.query)
            total = groups.count
            view.offset = max(0, min(view.offset, groups.count - tableHeight))
            let page = groups.dropFirst(view.offset).prefix(tableHeight)
            for g in page { present.formUnion(g.byState.keys) }
            drawGroups(page, grouping: grouping, top: titles, cols: cols)
        } else {
            let rows = board.rows(matching: view.query)
            total = rows.count
            view.offset = max(0, min(view.offset, rows.count - tableHeight))
            let page = rows.dropFirst(view.offset).prefix(tableHeight)
            for r in page { for s in r.segments { present.insert(s.state) } }
            drawTable(page, now: board.now, window: view.window, top: titles, cols: cols)
        }
        drawLegend(y: 2, count: legendCount, cols: cols, present: present)
        if total == 0 {
            Paint.put(titles + 1, 2, view.emptyTableLine(connections: board.rows.count), width: cols - 2, attr: tt_a_dim())
        }

        // The feed.
        let what = view.grouping == nil ? "connections" : "groups"
        let shown = total == 0 ? "no \(what)" : "\(what) \(view.offset + 1)-\(min(total, view.offset + tableHeight)) of \(total)"
        let title = "ANOMALIES (newest first)"
        Paint.band(feedTop, attr: tt_a_reverse())
        Paint.put(feedTop, 0, title, attr: tt_a_reverse() | tt_a_bold())
        let right = shown + (total > tableHeight ? "  (Up/Down PgUp/PgDn)" : "")
        Paint.put(feedTop, max(title.utf8.count + 2, cols - right.utf8.count - 1), right, attr: tt_a_reverse())
        if feedAll.isEmpty {
            Paint.put(feedTop + 1, 0, "  (none yet)", attr: tt_a_dim())
        }
        for (i, item) in feedAll.prefix(feedLines).enumerated() {
            drawFeedItem(item, y: feedTop + 1 + i, cols: cols)
        }
        drawFooter(view, y: lines - 1, cols: cols)
        refresh()
    }

    private mutating func drawHeader(_ board: ConnectionBoard, _ view: TopView, cols: Int) {
        var out = OutputBuffer(capacity: 32)
        clock.appendTimeOfDay(mono: board.now, to: &out)
        let time = String(out.string.prefix(8)) + " UTC"
        // Every connection that ended in the last 5 s, also those past the rows kept.
        let ended = board.endedWithinRetention
        let head = "tcptrail top   \(Fmt.rate(board.eventsPerSecond)) events/s   \(board.openConnections) open"
            + (ended > 0 ? " + \(ended) ended" : "") + "   \(board.lost) lost"
        Paint.put(0, 0, head, attr: tt_a_bold())
        if board.lost > 0 {
            // The lost count in the alarm colour.
            let at = head.utf8.count - "\(board.lost) lost".utf8.count
            Paint.put(0, at, "\(board.lost) lost", attr: palette.text(.critical))
        }
        var right = time
        if view.paused { right = "PAUSED (p resumes)  " + right }
        let rx = cols - right.utf8.count - 1
        if rx > head.utf8.count + 1 {
            Paint.put(0, rx, right, attr: view.paused ? tt_a_reverse() | tt_a_bold() : 0)
        } else if view.paused {
            Paint.put(0, max(0, cols - 7), "PAUSED", attr: tt_a_reverse() | tt_a_bold())
        }

        // Anomaly counts per kind, most first.
        var x = 0
        Paint.put(1, x, "anomalies:", attr: tt_a_bold())
        x += 11
        let counts = board.anomalyCounts.filter { $0.value > 0 }.sorted { ($0.value, $1.key.rawValue) > ($1.value, $0.key.rawValue) }
        if counts.isEmpty { Paint.put(1, x, "none") }
        // Each kind in the colour of its latest severity, as its marks on the rows.
        var severity: [Anomaly.Kind: Anomaly.Severity] = [:]
        for item in board.recentAnomalies(limit: 200) where severity[item.mark.kind] == nil {
            severity[item.mark.kind] = item.mark.severity
        }
        for (kind, n) in counts {
            let text = "\(kind.rawValue) \(n)"
            if x + text.utf8.count > cols { Paint.put(1, cols - 3, "..."); break }
            Paint.put(1, x, text, attr: palette.text(severity[kind] ?? .warning))
            x += text.utf8.count + 3
        }
    }

    /// One entry of the legend: a symbol in its colours, then what it means.
    struct LegendItem {
        var symbol: String
        var attr: Int32
        var text: String
        var width: Int { symbol.utf8.count + (symbol.isEmpty ? 0 : 1) + text.utf8.count }
    }

    func legend(_ states: [TCPState]) -> [LegendItem] {
        states.map { LegendItem(symbol: Timeline.label($0), attr: palette.state($0), text: $0.rawValue) }
            + [LegendItem(symbol: "!", attr: palette.mark(.critical), text: "anomaly"),
               LegendItem(symbol: "", attr: tt_a_dim(), text: "dim: ended")]
    }

    /// The items in lines of `cols`, two spaces apart.
    static func wrap(_ items: [LegendItem], cols: Int) -> [[LegendItem]] {
        var lines: [[LegendItem]] = [[]]
        var x = 0
        for item in items {
            if x > 0 && x + item.width > cols {
                lines.append([])
                x = 0
            }
            lines[lines.count - 1].append(item)
            x += item.width + 2
        }
        return lines
    }

    /// How many lines the legend takes: every state, on one line or two.
    func legendLines(cols: Int) -> Int {
        min(2, Self.wrap(legend(TCPState.allCases.filter { $0 != .closed }), cols: cols).count)
    }

    /// "Li LISTEN  S SYN_SENT ...": every state (CLOSED too when shown), in `count` lines;
    /// where even two are too few, the states on screen.
    private func drawLegend(y: Int, count: Int, cols: Int, present: Set<TCPState>) {
        let states = TCPState.allCases.filter { $0 != .closed || present.contains(.closed) }
        var lines = Self.wrap(legend(states), cols: cols)
        if lines.count > count { lines = Self.wrap(legend(states.filter(present.contains)), cols: cols) }
        for (i, line) in lines.prefix(count).enumerated() {
            var x = 0
            for item in line {
                if !item.symbol.isEmpty {
                    Paint.put(y + i, x, item.symbol, attr: item.attr)
                    x += item.symbol.utf8.count + 1
                }
                Paint.put(y + i, x, item.text, attr: item.symbol.isEmpty ? item.attr : 0)
                x += item.text.utf8.count + 2
            }
        }
    }

    private func drawTable(_ rows: ArraySlice<ConnectionBoard.Row>, now: UInt64, window: Double, top: Int, cols: Int) {
        let c = TopColumns.fitting(cols, rows: rows)
        // The column titles.
        Paint.band(top, attr: tt_a_reverse())
        var x = 2
        var titles = Fmt.fit("PROCESS PID", c.process) + " " + Fmt.fit(c.localPortOnly ? "LPORT" : "LOCAL", c.local)
            + String(repeating: " ", count: c.arrow.utf8.count) + Fmt.fit("REMOTE", c.remote) + " " + Fmt.fit("STATE", c.state) + " "
        if c.age > 0 { titles += Fmt.right("AGE", c.age) + " " }
        titles += Fmt.right("FOR", c.inState) + " "
        Paint.put(top, x, titles, attr: tt_a_reverse() | tt_a_bold())
        x += titles.utf8.count
        let barTitle = c.barTitle(window: window)
        Paint.put(top, x, barTitle, width: c.bar, attr: tt_a_reverse() | tt_a_bold())

        for (i, row) in rows.enumerated() {
            let y = top + 1 + i
            let ended = row.ended != nil
            let dim = ended ? tt_a_dim() : 0
            // The mark column: the worst anomaly this row has.
            if let worst = row.marks.max(by: { Timeline.rank($0.severity) < Timeline.rank($1.severity) }) {
                Paint.put(y, 0, "!", attr: palette.mark(worst.severity))
            }
            let e = Fmt.endpoints(row)
            let local = c.localPortOnly ? ":" + String(row.identity.local.port) : e.local
            var text = Fmt.process(row.identity, width: c.process) + " " + Fmt.fitLeft(local, c.local)
                + c.arrow + Fmt.fitLeft(e.remote, c.remote) + " "
            let stateAt = 2 + text.utf8.count
            text += Fmt.fit(row.state.rawValue, c.state) + " "
            if c.age > 0 { text += Fmt.right(Fmt.duration(now &- min(now, row.opened)), c.age) + " " }
            text += Fmt.right(Fmt.duration(now &- min(now, row.since)), c.inState) + " "
            Paint.put(y, 2, text, attr: dim)
            if !ended { Paint.put(y, stateAt, row.state.rawValue, width: c.state, attr: tt_a_bold()) }
            let bx = 2 + text.utf8.count
            let cells = Timeline.cells(row, now: now, window: window, width: c.bar)
            for (k, cell) in cells.enumerated() {
                if let m = cell.mark {
                    Paint.cell(y, bx + k, UInt8(ascii: "!"), attr: palette.mark(m))
                } else if let s = cell.state {
                    let ch: UInt8
                    if cell.letter != 0 { ch = cell.letter }
                    else if palette.color { ch = UInt8(ascii: " ") }
                    else { ch = s == .closed ? UInt8(ascii: " ") : UInt8(ascii: "-") }
                    let attr = palette.color ? palette.state(s) : (cell.starts ? tt_a_reverse() : 0)
                    Paint.cell(y, bx + k, ch, attr: attr | dim)
                }
            }
        }
    }

    private func drawGroups(_ groups: ArraySlice<ConnectionBoard.Group>, grouping: ConnectionBoard.Grouping, top: Int, cols: Int) {
        let nameTitle = switch grouping {
        case .process: "BY PROCESS (PID)"
        case .unit: "BY UNIT"
        case .remote: "BY REMOTE ENDPOINT"
        }
        var nw = nameTitle.utf8.count
        for g in groups { nw = max(nw, g.name.utf8.count) }
        nw = min(nw, max(16, cols / 3))
        Paint.band(top, attr: tt_a_reverse())
        let titles = "  " + Fmt.fit(nameTitle, nw) + " " + Fmt.right("CONNS", 6) + " " + Fmt.right("OPEN", 6) + " "
            + Fmt.right("ENDED", 6) + " " + Fmt.right("ANOM", 6) + "  STATES (count per state)"
        Paint.put(top, 0, titles, attr: tt_a_reverse() | tt_a_bold())
        for (i, g) in groups.enumerated() {
            let y = top + 1 + i
            if g.anomalies > 0 { Paint.put(y, 0, "!", attr: palette.mark(.warning)) }
            let text = Fmt.fit(g.name, nw) + " " + Fmt.right(String(g.connections), 6) + " "
                + Fmt.right(String(g.connections - g.ended), 6) + " " + Fmt.right(String(g.ended), 6) + " "
                + Fmt.right(String(g.anomalies), 6) + "  "
            Paint.put(y, 2, text, attr: g.ended == g.connections ? tt_a_dim() : 0)
            var x = 2 + text.utf8.count
            for s in TCPState.allCases {
                guard let n = g.byState[s], n > 0 else { continue }
                let l = Timeline.label(s), count = String(n)
                if x + l.utf8.count + 1 + count.utf8.count > cols { break }
                Paint.put(y, x, l, attr: palette.state(s))
                x += l.utf8.count
                Paint.put(y, x, (palette.color ? " " : ":") + count)
                x += 1 + count.utf8.count + 2
            }
        }
    }

    private mutating func drawFeedItem(_ item: ConnectionBoard.FeedItem, y: Int, cols: Int) {
        var out = OutputBuffer(capacity: 32)
        clock.appendTimeOfDay(mono: item.mark.mono, to: &out)
        // Narrow: seconds, and the remote end only (the detail names the endpoints too).
        let wide = cols >= 120
        let time = String(out.string.prefix(wide ? 12 : 8))
        let e = Fmt.endpoints(item.identity)
        Paint.put(y, 0, time)
        var x = time.utf8.count + 1
        let kind = Fmt.fit(item.mark.kind.rawValue, wide ? 21 : 19)
        Paint.put(y, x, kind, attr: palette.text(item.mark.severity))
        x += kind.utf8.count + 1
        let rest = Fmt.process(item.identity) + "  " + (wide ? e.local + " " : "") + "-> " + e.remote + "  " + item.mark.detail
        Paint.put(y, x, rest, width: cols - x)
    }

    private func drawFooter(_ view: TopView, y: Int, cols: Int) {
        if let typed = view.editing {
            Paint.band(y, attr: tt_a_reverse())
            Paint.put(y, 0, "process filter (name or pid): " + typed + "_   Enter applies, Esc cancels, empty clears",
                      attr: tt_a_reverse())
            return
        }
        let order = view.query.order.rawValue
        let state = view.query.state?.rawValue ?? "all"
        let process = view.query.process.map { "\"\($0)\"" } ?? "-"
        let group = view.grouping?.rawValue ?? "none"
        let only = view.query.anomaliesOnly ? "on" : "off"
        let window = Fmt.seconds(view.window)
        let long = "[s]ort \(order)  [f]ilter \(state)  [a]nomalies-only \(only)  [/]process \(process)  [g]roup \(group)"
            + "  [w]indow \(window)  [p]ause  [?]help  [q]uit"
        let short = "s:\(order) f:\(state) a:\(only) /:\(process) g:\(group) w:\(window) p:pause ?:help q:quit"
        Paint.put(y, 0, long.utf8.count <= cols ? long : short, attr: tt_a_dim())
    }

    private func drawHelp(lines: Int, cols: Int) {
        var text = [
            "tcptrail top: TCP connections on this host, live",
            "",
            "A row is a connection: process (name, pid), local -> remote endpoint, its",
            "documented state (RFC 9293 names), age, time in that state (FOR), and a bar",
            "of its states over the time window, oldest left, now right. A letter marks",
            "where a state begins; ! an anomaly (red critical, amber warning). Ended rows",
            "stay dimmed for 5 s. Below: the anomalies, newest first.",
            "",
            "  Up/Down PgUp/PgDn Home/End  scroll",
            "  s  sort: interest (anomalies, then recent changes), age, state-time,",
            "     process, state",
            "  f  state filter: all, then each state",
            "  a  only rows with an anomaly",
            "  /  process filter: name, pid or unit substring (Enter applies, Esc cancels)",
            "  g  group: none, by process, by systemd unit, by remote endpoint",
            "  w  time window 10/30/60/300 s; + longer, - shorter",
            "  p  pause the display (events are still read and counted)",
            "  q  quit (also Ctrl-C)",
            "",
        ]
        text.append("Timeline letters and colours (X CLOSED in the groups):")
        let states = TCPState.allCases.filter { $0 != .closed }
        // As many to a line as fit.
        let entry = 3 + 12 + 2
        let perLine = max(1, (cols - 4) / entry)
        var legend: [(line: Int, x: Int, state: TCPState)] = []
        for (k, s) in states.enumerated() {
            if k % perLine == 0 { text.append("") }
            let x = 2 + (k % perLine) * entry
            text[text.count - 1] = Fmt.fit(text[text.count - 1], x) + Fmt.fit(Timeline.label(s), 3) + s.rawValue
            legend.append((text.count - 1, x, s))
        }
        text.append("")
        text.append("any key closes this help")
        for (i, line) in text.prefix(lines).enumerated() {
            Paint.put(i, 1, line, width: cols - 2, attr: i == 0 ? tt_a_bold() : 0)
            for l in legend where l.line == i {
                Paint.put(i, 1 + l.x, Timeline.label(l.state), attr: palette.state(l.state))
            }
        }
    }
}
