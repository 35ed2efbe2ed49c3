/// `top`'s table columns for a terminal width: mark, process, endpoints,
/// state, age, time in state, then the timeline bar in what is left.
public struct TopColumns: Sendable, Equatable {
    /// The narrowest timeline bar before other columns give way.
    public static let minBar = 10

    public var process: Int
    public var local: Int
    public var localPortOnly = false
    public var remote: Int
    public var state = 12
    public var age = 6
    public var inState = 6
    public var bar = 0

    /// Mark column, process, endpoints (" -> "), state, age, in state, then the bar.
    public var fixed: Int {
        2 + process + 1 + local + 4 + remote + 1 + state + 1 + (age > 0 ? age + 1 : 0) + inState + 1
    }

    /// The columns for `width` terminal columns and the rows on screen (their longest process and endpoints).
    public static func fitting(_ width: Int, rows: ArraySlice<ConnectionBoard.Row>) -> TopColumns {
        var p = 11, l = 5, r = 6
        for row in rows {
            p = max(p, Fmt.process(row.identity).utf8.count)
            let e = Fmt.endpoints(row.identity)
            l = max(l, e.local.utf8.count)
            r = max(r, e.remote.utf8.count)
        }
        var c = TopColumns(process: min(p, 28), local: min(l, 47), remote: min(r, 47))
        func rest() -> Int { width - c.fixed }
        // Narrower: no age, the local port only, a shorter process, a shorter remote end.
        if rest() < minBar { c.age = 0 }
        if rest() < minBar {
            c.localPortOnly = true
            c.local = 6
        }
        if rest() < minBar { c.process = max(12, c.process - (minBar - rest())) }
        if rest() < minBar { c.remote = max(12, c.remote - (minBar - rest())) }
        if rest() < minBar { c.process = max(8, c.process - (minBar - rest())) }
        c.bar = max(1, rest())
        return c
    }

    /// The bar's title: "-60s ... now", or "last 60s" where that does not fit.
    public func barTitle(window: Double) -> String {
        let span = "-" + Fmt.seconds(window)
        if bar >= span.utf8.count + 3 + 3 {
            return span + String(repeating: " ", count: bar - span.utf8.count - 3) + "now"
        }
        return Fmt.fit("last " + Fmt.seconds(window), bar)
    }
}
