/// What the live views (`top`, `serve`) and the HTML report show: each
/// connection's life as a run of documented states, its anomalies, the recent
/// anomalies and changes of the whole host, and the event rate.
///
/// It is built from the engine's output only, so a replayed log gives the same
/// picture as the live run. Ended connections (CLOSED, or in TIME_WAIT) stay
/// for `retention`, so short-lived ones can be seen, then leave.
public struct ConnectionBoard: Sendable {
    /// Which end of the connection this host is, as its first step showed.
    public enum Side: String, Sendable {
        case client, server, listener, unknown
    }

    /// How a connection's life ended.
    public enum Ending: String, Sendable {
        case closed, reset, aborted
        case timeWait = "time_wait"
    }

    /// A stretch of time in one state; `end` nil while it lasts.
    public struct Segment: Sendable, Equatable {
        public var state: TCPState
        public var start: UInt64
        public var end: UInt64?
    }

    /// An anomaly on a connection's row.
    public struct Mark: Sendable {
        public var kind: Anomaly.Kind
        public var severity: Anomaly.Severity
        public var mono: UInt64
        public var detail: String
    }

    /// One connection.
    public struct Row: Sendable {
        public var identity: ConnectionIdentity
        public var side: Side = .unknown
        public var state: TCPState
        public var opened: UInt64
        public var since: UInt64
        /// When it closed or entered TIME_WAIT.
        public var ended: UInt64?
        public var ending: Ending?
        public var segments: [Segment] = []
        public var marks: [Mark] = []
        /// Open before tracing started (from sock_diag).
        public var openAtStart = false
        /// Segments dropped from the front (a long life of many changes).
        public var segmentsDropped = 0
    }

    /// An anomaly in the feed, with its connection as it was then.
    public struct FeedItem: Sendable {
        public var mark: Mark
        public var identity: ConnectionIdentity
        /// More than one: a burst, counted (its mark's detail says so and where).
        public var count = 1
        /// A burst's window: which one it is, while it grows.
        var burst: (start: UInt64, endpoint: String)?

        init(mark: Mark, identity: ConnectionIdentity) {
            self.mark = mark
            self.identity = identity
        }
    }

    /// A state change in the recent-events list.
    public struct RecentChange: Sendable {
        public var identity: ConnectionIdentity
        public var mono: UInt64
        public var from: TCPState
        public var to: TCPState
        public var step: Step
        public var inferred: Bool
        public var reason: String?
    }

    /// How long ended rows stay (live: a few seconds; a report: for ever).
    public var retention: UInt64
    /// At most this many ended rows are kept (the oldest leave first).
    public var maxEndedRows: Int
    public var maxSegments = 64
    public var maxMarks = 32
    public var feedLimit = 200
    /// A flood of one anomaly on one endpoint: 5 items a second, then one that counts the rest.
    public var feedRate = AnomalyRateLimit(perSecond: 5)
    public var recentLimit = 500

    public private(set) var rows: [ConnectionID: Row] = [:]
    /// Ended rows in the order they ended, for retention.
    private var endedOrder: [(conn: ConnectionID, at: UInt64)] = []
    private var endedHead = 0
    public private(set) var endedRows = 0
    /// When each ended row that the cap let go before its retention ended, oldest first.
    private var cappedEnds: [UInt64] = []
    private var cappedHead = 0
    /// Newest last.
    public private(set) var feed: [FeedItem] = []
    public private(set) var recent: [RecentChange] = []
    /// Kernel events the board saw (changes and other kernel records).
    public private(set) var events: UInt64 = 0
    public private(set) var lost: UInt64 = 0
    public private(set) var anomalyCounts: [Anomaly.Kind: Int] = [:]
    /// The latest time seen.
    public private(set) var now: UInt64 = 0
    /// The earliest time seen (a report's left edge).
    public private(set) var first: UInt64?
    /// Events per second over the last few whole seconds.
    private var buckets = [UInt64](repeating: 0, count: 8)
    private var bucketSecond: UInt64 = 0

    public init(retention: UInt64 = 5_000_000_000, maxEndedRows: Int = 5000) {
        self.retention = retention
        self.maxEndedRows = maxEndedRows
    }

    /// Connections not yet ended.
    public var openConnections: Int { rows.count - endedRows }

    /// Connections that ended within `retention`: the ended rows kept, and
    /// those the cap (`maxEndedRows`) let go before their time.
    public var endedWithinRetention: Int { endedRows + cappedEnds.count - cappedHead }

    // MARK: - Feeding

    /// Takes one output of the engine.
    public mutating func apply(_ output: EngineOutput) {
        feedRate.note(output)
        switch output {
        case .snapshot(let identity, let state, _, let mono, _):
            see(mono)
            var row = Row(identity: identity, state: state, opened: mono, since: mono)
            row.openAtStart = true
            row.side = state == .listen ? .listener : .unknown
            row.segments = [Segment(state: state, start: mono)]
            if state == .timeWait {
                row.ended = mono
                row.ending = .timeWait
            }
            insert(row)
        case .change(let c):
            see(c.monoNanoseconds)
            if c.kernel != nil { count(c.monoNanoseconds) }
            change(c)
        case .anomaly(let a):
            see(a.monoNanoseconds)
            anomaly(a)
        case .event(let e):
            see(e.monoNanoseconds)
            count(e.monoNanoseconds)
            if !e.noSocket, var row = rows[e.connectionID], e.ownerKnown {
                row.identity.owner = e.owner
                row.identity.thread = e.thread
                row.identity.ownerKnown = true
                rows[e.connectionID] = row
            }
        }
    }

    /// The kernel's count of events it could not queue (a running total).
    public mutating func setLost(_ total: UInt64) { lost = total }

    /// Moves the clock (live: each refresh) and lets ended rows past `retention` go.
    public mutating func advance(to mono: UInt64) {
        see(mono)
        while endedHead < endedOrder.count {
            let (conn, at) = endedOrder[endedHead]
            let (leaves, never) = at.addingReportingOverflow(retention)
            let due = !never && leaves <= now
            guard due || endedRows > maxEndedRows else { break }
            endedHead += 1
            if let row = rows[conn], row.ended == at {
                rows[conn] = nil
                endedRows -= 1
                if !due { cappedEnds.append(at) }
            }
        }
        while cappedHead < cappedEnds.count {
            let (leaves, never) = cappedEnds[cappedHead].addingReportingOverflow(retention)
            guard !never && leaves <= now else { break }
            cappedHead += 1
        }
        if cappedHead > 1024 && cappedHead * 2 > cappedEnds.count {
            cappedEnds.removeFirst(cappedHead)
            cappedHead = 0
        }
        if endedHead > 1024 && endedHead * 2 > endedOrder.count {
            endedOrder.removeFirst(endedHead)
            endedHead = 0
        }
    }

    private mutating func see(_ mono: UInt64) {
        if mono > now { now = mono }
        if mono < (first ?? .max) { first = mono }
    }

    private mutating func count(_ mono: UInt64) {
        events += 1
        let second = mono / 1_000_000_000
        if second != bucketSecond {
            if second > bucketSecond {
                let steps = min(second - bucketSecond, UInt64(buckets.count))
                for k in 1...steps { buckets[Int((bucketSecond + k) % UInt64(buckets.count))] = 0 }
                bucketSecond = second
            } else if bucketSecond - second >= UInt64(buckets.count) {
                return
            }
        }
        buckets[Int(second % UInt64(buckets.count))] += 1
    }

    /// Events per second over the last 3 whole seconds.
    public var eventsPerSecond: Double {
        let current = now / 1_000_000_000
        guard current == bucketSecond || current > bucketSecond else { return 0 }
        var sum: UInt64 = 0
        var n: UInt64 = 0
        for back in 1...3 where current >= UInt64(back) {
            let s = current - UInt64(back)
            if s + UInt64(buckets.count) > bucketSecond && s <= bucketSecond {
                sum += buckets[Int(s % UInt64(buckets.count))]
            }
            n += 1
        }
        return n == 0 ? 0 : Double(sum) / Double(n)
    }

    private mutating func insert(_ row: Row) {
        let conn = row.identity.conn
        if let old = rows[conn], old.ended != nil { endedRows -= 1 }
        rows[conn] = row
        if let at = row.ended {
            endedRows += 1
            endedOrder.append((conn, at))
        }
    }

    private mutating func change(_ c: StateChange) {
        let conn = c.connection.conn
        remember(c)
        var row: Row
        if let existing = rows[conn] {
            row = existing
            // The 2MSL end of a row still shown: TIME_WAIT is over.
            if c.kernel == nil && c.from == .timeWait {
                if var last = row.segments.last, last.end == nil {
                    last.end = c.monoNanoseconds
                    row.segments[row.segments.count - 1] = last
                }
                row.state = .closed
                row.since = c.monoNanoseconds
                rows[conn] = row
                return
            }
            if existing.ended != nil {
                // A reused connection id should not happen (generations); start afresh.
                endedRows -= 1
                row = Row(identity: c.connection, state: c.from, opened: c.monoNanoseconds, since: c.monoNanoseconds)
            }
        } else {
            // A TIME_WAIT expiry of a row that already left: nothing to show.
            if c.kernel == nil && c.from == .timeWait { return }
            let began = c.kernel?.previousStateNanoseconds.map { c.monoNanoseconds.subtractingSaturating($0) } ?? c.monoNanoseconds
            row = Row(identity: c.connection, state: c.from, opened: began, since: began)
            // A passive open's LISTEN was the listener's state, not this socket's.
            if c.from != .closed && c.step != .synReceived { row.segments = [Segment(state: c.from, start: began)] }
        }
        row.identity = c.connection
        switch c.step {
        case .synSent: row.side = .client
        case .synReceived: row.side = .server
        case .listen: row.side = .listener
        default: break
        }
        if var last = row.segments.last, last.end == nil {
            last.end = c.monoNanoseconds
            row.segments[row.segments.count - 1] = last
        }
        row.state = c.to
        row.since = c.monoNanoseconds
        if c.to != .closed {
            row.segments.append(Segment(state: c.to, start: c.monoNanoseconds))
            if row.segments.count > maxSegments {
                row.segments.removeFirst()
                row.segmentsDropped += 1
            }
        }
        var ended = false
        if c.to == .closed || c.to == .timeWait {
            row.ended = c.monoNanoseconds
            row.ending = c.to == .timeWait ? .timeWait : c.step == .reset ? .reset : c.step == .aborted ? .aborted : .closed
            ended = true
        }
        rows[conn] = row
        if ended {
            endedRows += 1
            endedOrder.append((conn, c.monoNanoseconds))
        }
    }

    private mutating func remember(_ c: StateChange) {
        recent.append(RecentChange(identity: c.connection, mono: c.monoNanoseconds, from: c.from, to: c.to,
                                   step: c.step, inferred: c.inferred, reason: c.reason))
        if recent.count > recentLimit * 2 { recent.removeFirst(recent.count - recentLimit) }
    }

    private mutating func anomaly(_ a: Anomaly) {
        anomalyCounts[a.kind, default: 0] += 1
        let mark = Mark(kind: a.kind, severity: a.severity, mono: a.monoNanoseconds, detail: a.detail)
        if let b = feedRate.count(a) {
            // One item per window, kept newest: its count and time move on.
            var item = FeedItem(mark: mark, identity: a.connection)
            if let i = feed.lastIndex(where: { $0.mark.kind == b.kind && $0.burst?.start == b.start && $0.burst?.endpoint == b.endpoint }) {
                item = feed.remove(at: i)
            }
            item.mark = Mark(kind: b.kind, severity: b.severity, mono: b.latest, detail: b.detail)
            item.count = b.counted
            item.burst = (b.start, b.endpoint)
            feed.append(item)
        } else {
            feed.append(FeedItem(mark: mark, identity: a.connection))
        }
        if feed.count > feedLimit * 2 { feed.removeFirst(feed.count - feedLimit) }
        let conn = a.connection.conn
        if var row = rows[conn] {
            row.marks.append(mark)
            if row.marks.count > maxMarks { row.marks.removeFirst() }
            rows[conn] = row
        }
    }

    /// The newest `limit` anomalies, newest first.
    public func recentAnomalies(limit: Int) -> [FeedItem] {
        Array(feed.suffix(limit).reversed())
    }

    /// The newest `limit` state changes, newest first.
    public func recentChanges(limit: Int) -> [RecentChange] {
        Array(recent.suffix(limit).reversed())
    }
}

// MARK: - Queries

extension ConnectionBoard {
    /// Which rows a view shows, and in what order.
    public struct Query: Sendable, Equatable {
        public enum Order: String, Sendable, CaseIterable {
            /// Anomalies first, then the most recent change.
            case interest
            case age
            case timeInState = "state-time"
            case process
            case state
        }

        /// Matches the process name (escaped form) or pid, as a substring.
        public var process: String?
        /// Matches the local or the remote port.
        public var port: UInt16?
        public var state: TCPState?
        public var anomaly: Anomaly.Kind?
        public var anomaliesOnly = false
        public var order: Order = .interest

        public init() {}

        public func matches(_ row: Row) -> Bool {
            if let state, row.state != state { return false }
            if let port, row.identity.local.port != port && row.identity.remote.port != port { return false }
            if anomaliesOnly && row.marks.isEmpty { return false }
            if let anomaly, !row.marks.contains(where: { $0.kind == anomaly }) { return false }
            if let process, !process.isEmpty {
                let name = row.identity.owner.comm.escaped
                if !name.contains(process) && !(row.identity.ownerKnown && String(row.identity.owner.pid) == process) { return false }
            }
            return true
        }
    }

    /// The rows the query keeps, in its order (ended rows after open ones of equal rank).
    public func rows(matching query: Query) -> [Row] {
        var out = rows.values.filter(query.matches)
        switch query.order {
        case .interest:
            out.sort { a, b in
                let ma = a.marks.last?.mono ?? 0, mb = b.marks.last?.mono ?? 0
                if (ma > 0) != (mb > 0) { return ma > 0 }
                if ma != mb { return ma > mb }
                if a.since != b.since { return a.since > b.since }
                return a.identity.conn < b.identity.conn
            }
        case .age:
            out.sort { ($0.opened, $0.identity.conn) < ($1.opened, $1.identity.conn) }
        case .timeInState:
            out.sort { ($0.since, $0.identity.conn) < ($1.since, $1.identity.conn) }
        case .process:
            out.sort { ($0.identity.owner.comm.escaped, $0.identity.owner.pid, $0.identity.conn) < ($1.identity.owner.comm.escaped, $1.identity.owner.pid, $1.identity.conn) }
        case .state:
            out.sort { (Self.rank($0.state), $0.identity.conn) < (Self.rank($1.state), $1.identity.conn) }
        }
        return out
    }

    static func rank(_ s: TCPState) -> Int { TCPState.allCases.firstIndex(of: s) ?? 0 }

    /// Rows folded by what they share.
    public enum Grouping: String, Sendable, CaseIterable {
        case process
        case remote
    }

    /// A group of rows: how many in each state, and their anomalies.
    public struct Group: Sendable {
        public var name: String
        public var connections = 0
        public var byState: [TCPState: Int] = [:]
        public var anomalies = 0
        public var ended = 0
    }

    /// The groups of the rows the query keeps, largest first.
    public func groups(_ grouping: Grouping, matching query: Query) -> [Group] {
        var groups: [String: Group] = [:]
        for row in rows.values where query.matches(row) {
            let name: String
            switch grouping {
            case .process:
                name = row.identity.ownerKnown ? "\(row.identity.owner.comm.escaped) (\(row.identity.owner.pid))" : "(owner unknown)"
            case .remote:
                // A server's remote end is a client's ephemeral port: group by the service instead.
                switch row.side {
                case .listener: name = "(listening)"
                case .server: name = Self.endpoint(row.identity, remote: false) + " (served)"
                default: name = Self.endpoint(row.identity, remote: true)
                }
            }
            var g = groups[name] ?? Group(name: name)
            g.connections += 1
            g.byState[row.state, default: 0] += 1
            g.anomalies += row.marks.count
            if row.ended != nil { g.ended += 1 }
            groups[name] = g
        }
        return groups.values.sorted { ($0.connections, $1.name) > ($1.connections, $0.name) }
    }

    /// "198.18.0.2:8080" or "[fd00::2]:8080".
    public static func endpoint(_ id: ConnectionIdentity, remote: Bool) -> String {
        var out = OutputBuffer(capacity: 64)
        out.append(endpointOf: id, remote: remote)
        return out.string
    }
}
