/// `top`'s table columns for a terminal width: mark, process, endpoints,
/// state, age, time in state, then the timeline bar in what is left.
public struct TopColumns: Sendable, Equatable {
    /// The narrowest timeline bar before other columns give way.
    public static let minBar = 10
    /// The bar narrower than `minBar` rather than no age column.
    public static let leastBar = 6

    public var process: Int
    public var local: Int
    public var localPortOnly = false
    public var remote: Int
    /// Between the endpoints: " -> ", or a space where the bar needs the room.
    public var arrow = " -> "
    public var state = 12
    public var age = 6
    public var inState = 6
    public var bar = 0

    /// Mark column, process, endpoints (" -> "), state, age, in state, then the bar.
    public var fixed: Int {
        2 + process + 1 + local + arrow.utf8.count + remote + 1 + state + 1 + (age > 0 ? age + 1 : 0) + inState + 1
    }

    /// The columns for `width` terminal columns and the rows on screen (their
    /// longest process, endpoints and state). Where the bar would get less than
    /// `minBar`, the others give way in this order: the local address to its
    /// port, a long process name, the arrow between the endpoints, a remote
    /// address longer than IPv4's (cut from the left, the port kept), the bar
    /// down to `leastBar`, the age, then the process and remote to their floors.
    /// At 80 columns every column stays with an IPv4 remote end, a process of
    /// 17 (a name of 9, a pid of 7) and ESTABLISHED whole, but for the longest
    /// remote ("255.255.255.255:65535") and pid together.
    public static func fitting(_ width: Int, rows: ArraySlice<ConnectionBoard.Row>) -> TopColumns {
        var p = 11, l = 5, r = 6, s = 5
        for row in rows {
            p = max(p, Fmt.process(row.identity).utf8.count)
            let e = Fmt.endpoints(row)
            l = max(l, e.local.utf8.count)
            r = max(r, e.remote.utf8.count)
            s = max(s, row.state.rawValue.utf8.count)
        }
        var c = TopColumns(process: min(p, 28), local: min(l, 47), remote: min(r, 47), state: s)
        func short() -> Int { minBar - (width - c.fixed) }
        /// The column narrowed by what the bar is short of, not below `floor`.
        func narrowed(_ column: Int, to floor: Int) -> Int {
            let missing = short()
            return missing > 0 ? max(min(column, floor), column - missing) : column
        }
        if short() > 0 {
            c.localPortOnly = true
            c.local = 6
        }
        c.process = narrowed(c.process, to: 17)
        if short() > 0 { c.arrow = " " }
        c.remote = narrowed(c.remote, to: "255.255.255.255:65535".utf8.count)
        if width - c.fixed < leastBar {
            c.age = 0
            c.process = narrowed(c.process, to: 8)
            c.remote = narrowed(c.remote, to: listening.utf8.count)
        }
        c.bar = max(1, width - c.fixed)
        return c
    }

    /// What a listener's row shows as its remote end.
    public static let listening = "(listening)"

    /// The bar's title: "-60s ... now", or "last 60s" where that does not fit.
    public func barTitle(window: Double) -> String {
        let span = "-" + Fmt.seconds(window)
        if bar >= span.utf8.count + 3 + 3 {
            return span + String(repeating: " ", count: bar - span.utf8.count - 3) + "now"
        }
        let last = "last " + Fmt.seconds(window)
        return Fmt.fit(last.utf8.count <= bar ? last : Fmt.seconds(window), bar)
    }
}
