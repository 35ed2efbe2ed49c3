/// What `top` shows and how: the query, grouping, window and scroll position.
public struct TopView {
    public var query = ConnectionBoard.Query()
    public var grouping: ConnectionBoard.Grouping?
    /// The timeline's width in time, seconds.
    public var window: Double
    /// The first table line shown.
    public var offset = 0
    /// Table lines on screen at the last draw (PgUp/PgDn move this many).
    public var page = 10
    public var paused = false
    /// The process filter being typed after `/`.
    public var editing: String?
    public var help = false

    public init(window: Double) { self.window = window }

    public static let windows: [Double] = [10, 30, 60, 300]
    /// `f` cycles through these: all, then the states, the usual ones first.
    public static let filterStates: [TCPState?] = [nil, .established, .synSent, .synReceived, .finWait1, .finWait2,
                                            .closeWait, .closing, .lastAck, .timeWait, .listen, .closed]

    public mutating func cycleOrder() {
        let all = ConnectionBoard.Query.Order.allCases
        query.order = all[((all.firstIndex(of: query.order) ?? 0) + 1) % all.count]
        offset = 0
    }

    public mutating func cycleStateFilter() {
        let i = Self.filterStates.firstIndex(of: query.state) ?? 0
        query.state = Self.filterStates[(i + 1) % Self.filterStates.count]
        offset = 0
    }

    public mutating func cycleGrouping() {
        switch grouping {
        case nil: grouping = .process
        case .process: grouping = .unit
        case .unit: grouping = .remote
        case .remote: grouping = nil
        }
        offset = 0
    }

    /// `w`: the next preset window, round to the first.
    public mutating func cycleWindow() {
        window = Self.windows.first { $0 > window } ?? Self.windows[0]
    }

    public mutating func widerWindow() { window = Self.windows.first { $0 > window } ?? window }
    public mutating func narrowerWindow() { window = Self.windows.last { $0 < window } ?? window }

    /// What an empty table says: nothing seen yet, or which of the view's
    /// filters hide the `connections` on the board and the keys that change them.
    public func emptyTableLine(connections: Int) -> String {
        guard connections > 0 else { return "no connections yet" }
        var filters: [String] = []
        var keys: [String] = []
        if let state = query.state {
            filters.append("state \(state.rawValue)")
            keys.append("f")
        }
        if let process = query.process, !process.isEmpty {
            filters.append("process \"\(process)\"")
            keys.append("/")
        }
        if query.anomaliesOnly {
            filters.append("anomalies only")
            keys.append("a")
        }
        let hidden = connections == 1 ? "1 connection" : "\(connections) connections"
        guard !filters.isEmpty else { return "no match: \(hidden) on the board, none to show" }
        let change = keys.count == 1 ? "key \(keys[0]) changes it" : "keys " + keys.joined(separator: " ") + " change them"
        return "no match for " + filters.joined(separator: ", ") + ": \(hidden) hidden (\(change))"
    }
}

/// One cell of a row's timeline bar.
public struct TimelineCell: Equatable {
    public var state: TCPState?
    /// A letter where a state begins (or the left edge), else 0.
    public var letter: UInt8 = 0
    /// An anomaly at this time.
    public var mark: Anomaly.Severity?
    /// This cell begins a state (the letter is the state's, not a fill).
    public var starts = false
}

/// A connection's states over the last `window` as `width` cells, oldest left.
public enum Timeline {
    /// Letters for the states: where each state begins, in the bar and the legend.
    public static func label(_ s: TCPState) -> String {
        switch s {
        case .closed: "X"
        case .listen: "Li"
        case .synSent: "S"
        case .synReceived: "R"
        case .established: "E"
        case .finWait1: "1"
        case .finWait2: "2"
        case .closeWait: "C"
        case .closing: "G"
        case .lastAck: "L"
        case .timeWait: "T"
        }
    }

    public static func cells(_ row: ConnectionBoard.Row, now: UInt64, window: Double, width: Int) -> [TimelineCell] {
        guard width > 0 else { return [] }
        var cells = [TimelineCell](repeating: TimelineCell(), count: width)
        let span = window * 1e9
        let per = span / Double(width)
        // Column of a time: 0 at now - window, width at now.
        func column(_ mono: UInt64) -> Double { (span - (Double(now) - Double(mono))) / per }

        // Each segment paints the columns it overlaps; later ones win a shared column.
        for seg in row.segments {
            let a = column(seg.start)
            let b = seg.end.map(column) ?? Double(width)
            if b < 0 || a >= Double(width) { continue }
            let lo = max(0, Int(a.rounded(.down)))
            let hi = min(width - 1, max(lo, Int(b.rounded(.up)) - 1))
            for c in lo...hi { cells[c].state = seg.state }
        }
        // Labels: a state's letter where it begins (or at the left edge if it began
        // before the window and still shows there), a "!" where an anomaly happened.
        // Where they crowd they move right, and back left from the right edge, so
        // the newest stay in view and none covers another.
        struct Label {
            var column: Int
            var time: UInt64
            var text: [UInt8]
            var state: TCPState?
            var mark: Anomaly.Severity?
        }
        var labels: [Label] = []
        for (i, seg) in row.segments.enumerated() {
            let a = column(seg.start)
            let b = seg.end.map(column) ?? Double(width)
            if b < 0 || a >= Double(width) { continue }
            if a < 0 && cells[0].state != seg.state { continue }
            // An accepted connection's first step is from its listener's LISTEN: the listener has its own row.
            if i == 0 && seg.state == .listen && row.side == .server && row.segments.count > 1 { continue }
            labels.append(Label(column: max(0, Int(a.rounded(.down))), time: seg.start, text: Array(label(seg.state).utf8), state: seg.state))
        }
        var markAt: [Int: Int] = [:]  // column -> index in labels
        for mark in row.marks {
            let a = column(mark.mono)
            if a < 0 || a > Double(width) { continue }
            let c = min(width - 1, Int(a.rounded(.down)))
            if let i = markAt[c] {
                if rank(mark.severity) > rank(labels[i].mark!) { labels[i].mark = mark.severity }
                continue
            }
            markAt[c] = labels.count
            labels.append(Label(column: c, time: mark.mono, text: [UInt8(ascii: "!")], mark: mark.severity))
        }
        // In time order; a state before an anomaly of the same moment.
        labels = labels.enumerated().sorted { ($0.element.time, $0.element.mark == nil ? 0 : 1, $0.offset) < ($1.element.time, $1.element.mark == nil ? 0 : 1, $1.offset) }.map(\.element)
        var end = 0
        for i in labels.indices {
            labels[i].column = max(labels[i].column, end)
            end = labels[i].column + labels[i].text.count
        }
        var limit = width
        for i in labels.indices.reversed() {
            labels[i].column = min(labels[i].column, limit - labels[i].text.count)
            limit = labels[i].column
        }
        for l in labels where l.column >= 0 {
            for (k, ch) in l.text.enumerated() {
                let c = l.column + k
                if let m = l.mark {
                    cells[c].mark = m
                } else {
                    cells[c].letter = ch
                    cells[c].state = l.state
                    cells[c].starts = true
                }
            }
        }
        return cells
    }

    public static func rank(_ s: Anomaly.Severity) -> Int {
        switch s {
        case .info: 0
        case .warning: 1
        case .critical: 2
        }
    }
}

/// Text cut and padded to terminal columns, durations and rates as top shows them.
public enum Fmt {
    /// Cut to `width` (a "~" marks the cut) and padded with spaces.
    public static func fit(_ s: String, _ width: Int) -> String {
        guard width > 0 else { return "" }
        let n = s.utf8.count
        if n <= width { return s + String(repeating: " ", count: width - n) }
        return String(decoding: s.utf8.prefix(width - 1), as: UTF8.self) + "~"
    }

    /// Cut from the left (an endpoint keeps its port).
    public static func fitLeft(_ s: String, _ width: Int) -> String {
        guard width > 0 else { return "" }
        let n = s.utf8.count
        if n <= width { return s + String(repeating: " ", count: width - n) }
        return "~" + String(decoding: s.utf8.suffix(width - 1), as: UTF8.self)
    }

    public static func right(_ s: String, _ width: Int) -> String {
        let n = s.utf8.count
        return n >= width ? s : String(repeating: " ", count: width - n) + s
    }

    /// "0.4s", "12s", "3m05s", "2h03m", "4d02h".
    public static func duration(_ ns: UInt64) -> String {
        let tenths = ns / 100_000_000
        if tenths < 100 { return "\(tenths / 10).\(tenths % 10)s" }
        let s = ns / 1_000_000_000
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m" + two(s % 60) + "s" }
        if s < 86400 { return "\(s / 3600)h" + two(s / 60 % 60) + "m" }
        return "\(s / 86400)d" + two(s / 3600 % 24) + "h"
    }

    public static func seconds(_ w: Double) -> String {
        w == w.rounded() ? "\(Int(w))s" : "\(w)s"
    }

    public static func rate(_ r: Double) -> String {
        let tenths = Int((r * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)"
    }

    private static func two(_ n: UInt64) -> String { n < 10 ? "0\(n)" : "\(n)" }

    public static func process(_ id: ConnectionIdentity) -> String {
        id.ownerKnown ? "\(id.owner.comm.escaped) \(id.owner.pid)" : "? (owner unknown)"
    }

    /// The process in `width` columns: a long name is cut, the pid kept.
    public static func process(_ id: ConnectionIdentity, width: Int) -> String {
        let whole = process(id)
        guard whole.utf8.count > width, id.ownerKnown else { return fit(whole, width) }
        let pid = " \(id.owner.pid)"
        let room = width - pid.utf8.count
        guard room >= 4 else { return fit(whole, width) }
        return fit(id.owner.comm.escaped, room) + pid
    }

    public static func endpoints(_ id: ConnectionIdentity) -> (local: String, remote: String) {
        (ConnectionBoard.endpoint(id, remote: false), ConnectionBoard.endpoint(id, remote: true))
    }

    /// A table row's endpoints: a listener's remote end is "(listening)".
    public static func endpoints(_ row: ConnectionBoard.Row) -> (local: String, remote: String) {
        var e = endpoints(row.identity)
        if row.state == .listen || row.side == .listener { e.remote = TopColumns.listening }
        return e
    }
}
