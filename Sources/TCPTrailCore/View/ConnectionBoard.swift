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
        /// The earliest time known of it: its first step, or for a socket
        /// open at start the snapshot (in TIME_WAIT: when its timer says it entered it).
        public var opened: UInt64
        /// When it entered its current state.
        public var since: UInt64
        /// When it closed or entered TIME_WAIT (retention counts from here).
        public var ended: UInt64?
        public var ending: Ending?
        /// In TIME_WAIT: when 2MSL runs out (the kernel's timer for a socket
        /// in TIME_WAIT at start, else 60 s after it entered it).
        public var timeWaitEnds: UInt64?
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
    /// Connections the board has had a row for, those since let go included.
    public private(set) var connectionsSeen = 0
    /// Ended rows let go because more than `maxEndedRows` were held (not by `retention`).
    public private(set) var endedRowsDropped = 0
    /// Connections left out of the board altogether (serve's own, unless asked for).
    public var hidden: HiddenEndpoint?
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
        if let hidden, hidden.covers(output) { return }
        feedRate.note(output)
        switch output {
        case .snapshot(let identity, let state, _, let mono, let expires):
            see(mono)
            // TIME_WAIT lasts 2MSL: the time its timer has left says when it began.
            let left = UInt64(expires) * 1_000_000
            let began = state == .timeWait ? mono.subtractingSaturating(HandshakeEngine.timeWaitNanoseconds.subtractingSaturating(left)) : mono
            var row = Row(identity: identity, state: state, opened: began, since: began)
            row.openAtStart = true
            row.side = state == .listen ? .listener : .unknown
            row.segments = [Segment(state: state, start: began)]
            if state == .timeWait {
                row.ended = mono
                row.ending = .timeWait
                row.timeWaitEnds = mono.addingSaturating(left)
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
            let retained = never || leaves > now
            guard !retained || endedRows > maxEndedRows else { break }
            endedHead += 1
            if let row = rows[conn], row.ended == at {
                rows[conn] = nil
                endedRows -= 1
                if retained {
                    cappedEnds.append(at)
                    endedRowsDropped += 1
                }
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
        if let old = rows[conn] {
            if old.ended != nil { endedRows -= 1 }
        } else {
            connectionsSeen += 1
        }
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
            // TIME_WAIT is over: 2MSL ran out, or the kernel's timewait socket was
            // killed by a reset or reused. The same connection, not a new row.
            if c.from == .timeWait && existing.state == .timeWait {
                if var last = row.segments.last, last.end == nil {
                    last.end = c.monoNanoseconds
                    row.segments[row.segments.count - 1] = last
                }
                row.state = c.to
                row.since = c.monoNanoseconds
                row.timeWaitEnds = nil
                rows[conn] = row
                return
            }
            if existing.ended != nil {
                // A reused connection id should not happen (generations); start afresh.
                endedRows -= 1
                connectionsSeen += 1
                row = Row(identity: c.connection, state: c.from, opened: c.monoNanoseconds, since: c.monoNanoseconds)
            }
        } else {
            // A TIME_WAIT expiry of a row that already left: nothing to show.
            if c.kernel == nil && c.from == .timeWait { return }
            let began = c.kernel?.previousStateNanoseconds.map { c.monoNanoseconds.subtractingSaturating($0) } ?? c.monoNanoseconds
            connectionsSeen += 1
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
        row.timeWaitEnds = c.to == .timeWait ? c.monoNanoseconds.addingSaturating(HandshakeEngine.timeWaitNanoseconds) : nil
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

        /// Matches the process name (escaped form) or its unit as a substring, or the pid.
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
                if !name.contains(process) && !(row.identity.ownerKnown && String(row.identity.owner.pid) == process)
                    && !(row.identity.ownerKnown && row.identity.owner.cgroup.info?.unit?.contains(process) == true) { return false }
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
        /// The owner's systemd unit, from its cgroup.
        case unit
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
            case .unit:
                name = row.identity.ownerKnown ? row.identity.owner.cgroup.info?.unit?.escaped ?? "(no unit)" : "(owner unknown)"
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

// MARK: - Serve's own connections

/// An address and port whose connections a view leaves out: `serve`'s own
/// listening socket, so its API and stream clients do not fill the board
/// (each page refresh would otherwise add a row of its own).
public struct HiddenEndpoint: Sendable {
    /// nil: any address (a listen on 0.0.0.0 or ::).
    public var address: AddressPrefix?
    public var port: UInt16
    /// The namespace of the listening socket; nil: any.
    public var netns: UInt32?

    public init(address: AddressPrefix?, port: UInt16, netns: UInt32?) {
        self.address = address
        self.port = port
        self.netns = netns
    }

    /// For `serve --listen HOST:PORT`, in the namespace `netns`.
    public init?(listen: ServeAddress, netns: UInt32?) {
        guard let port = UInt16(exactly: listen.port), let prefix = AddressPrefix(listen.host) else { return nil }
        let wildcard = prefix.address == RawAddress()
        self.init(address: wildcard ? nil : prefix, port: port, netns: netns)
    }

    /// Whether one end of a connection is this endpoint.
    public func covers(netns: UInt32, family: AddressFamily, local: Endpoint, remote: Endpoint) -> Bool {
        if let want = self.netns, want != netns { return false }
        return isHere(local, family) || isHere(remote, family)
    }

    private func isHere(_ end: Endpoint, _ family: AddressFamily) -> Bool {
        end.port == port && (address?.contains(end.address, family: family) ?? true)
    }

    func covers(_ id: ConnectionIdentity) -> Bool {
        covers(netns: id.netns, family: id.family, local: id.local, remote: id.remote)
    }

    func covers(_ output: EngineOutput) -> Bool {
        switch output {
        case .snapshot(let id, _, _, _, _): covers(id)
        case .change(let c): covers(c.connection)
        case .anomaly(let a): covers(a.connection)
        case .event(let e): covers(netns: e.netns, family: e.family, local: e.local, remote: e.remote)
        }
    }
}

// MARK: - The API's query parameters

extension ConnectionBoard {
    /// What an API request asked for: the rows, and how many at most.
    public struct Request: Sendable, Equatable {
        public var query = Query()
        public var limit: Int

        /// A parameter the API does not take, or a value it cannot read:
        /// `message` is the one line the answer (400) gives.
        public struct Refusal: Error, Equatable {
            public var message: String
        }

        /// The parameters an API path takes.
        public struct Accepted: Sendable {
            public var path: String
            /// Besides `limit`, the row filters (`process`, `port`, ...); false: `limit` only.
            public var filters: Bool
            public var limits: ClosedRange<Int>
            public var defaultLimit: Int

            public init(path: String, filters: Bool, limits: ClosedRange<Int>, defaultLimit: Int) {
                self.path = path
                self.filters = filters
                self.limits = limits
                self.defaultLimit = defaultLimit
            }

            var names: [String] {
                filters ? ["process", "port", "state", "anomaly", "anomalies_only", "order", "limit"] : ["limit"]
            }
        }

        /// Reads `pairs` (name, value: percent-decoded) as `accepted` says; every
        /// one must be a parameter it takes with a value it can read.
        public init(_ pairs: [(name: String, value: String)], accepted: Accepted) throws(Refusal) {
            limit = accepted.defaultLimit
            for (name, value) in pairs {
                func refuse(_ why: String) -> Refusal {
                    Refusal(message: "\(accepted.path): \(name)=\(Self.shown(value)) \(why)")
                }
                guard accepted.names.contains(name) else {
                    throw Refusal(message: "\(accepted.path): unknown query parameter '\(Self.shown(name))'; it takes \(accepted.names.joined(separator: ", "))")
                }
                switch name {
                case "limit":
                    guard let n = Int(value), accepted.limits.contains(n) else {
                        throw refuse("is not a whole number from \(accepted.limits.lowerBound) to \(accepted.limits.upperBound)")
                    }
                    limit = n
                case "process":
                    query.process = value.isEmpty ? nil : value
                case "port":
                    guard let port = UInt16(value) else { throw refuse("is not a port number from 0 to 65535") }
                    query.port = port
                case "state":
                    guard let state = TCPState(rawValue: value.uppercased()) else {
                        throw refuse("is not a TCP state; use one of \(TCPState.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                    query.state = state
                case "anomaly":
                    guard let kind = Anomaly.Kind(rawValue: value) else {
                        throw refuse("is not an anomaly kind; use one of \(Anomaly.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                    query.anomaly = kind
                case "anomalies_only":
                    switch value {
                    case "1", "true": query.anomaliesOnly = true
                    case "0", "false": query.anomaliesOnly = false
                    default: throw refuse("is not 1, true, 0 or false")
                    }
                default:  // "order"
                    guard let order = Query.Order(rawValue: value) else {
                        throw refuse("is not an order; use one of \(Query.Order.allCases.map(\.rawValue).joined(separator: ", "))")
                    }
                    query.order = order
                }
            }
        }

        /// A value as the answer quotes it: printable, and not too long for one line.
        static func shown(_ value: String) -> String {
            let e = value.escaped
            return e.count > 60 ? String(e.prefix(60)) + "..." : e
        }
    }
}
