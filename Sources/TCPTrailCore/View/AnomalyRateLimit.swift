/// What a person reads of a flood of anomalies: per kind and shared endpoint,
/// the first few of each second one by one, then one line a second counting
/// the rest ("server_time_wait ×10,995 in 1 s on 127.0.0.1:8081"). JSON and
/// the log keep every record; this is only for text, `top`'s feed and the page.
///
/// The endpoint is the one the connections share, as in `SnapshotDigest`: the
/// local one where a listener of the namespace holds the port (the server
/// side, "on"), else the peer's (the client side, "to").
public struct AnomalyRateLimit: Sendable {
    /// One window's count of what was not shown one by one.
    public struct Burst: Sendable, Equatable {
        public var kind: Anomaly.Kind
        public var severity: Anomaly.Severity
        /// "on 127.0.0.1:8081" or "to [::1]:443".
        public var endpoint: String
        /// "nginx (812)" when every one counted had that known owner.
        public var owner: String?
        /// Shown one by one in the window, and counted only.
        public var shown: Int
        public var counted: Int
        /// The window, kernel monotonic ns: [start, end).
        public var start: UInt64
        public var end: UInt64

        /// The latest one counted (kernel monotonic ns).
        public var latest: UInt64

        /// "×10,995 more in 1 s on 127.0.0.1:8081 nginx (812) (5 shown singly; --json and --output record each)".
        public var detail: String {
            var s = "×\(SnapshotDigest.grouped(counted)) more in 1 s \(endpoint)"
            if let owner { s += " " + owner }
            s += " (\(shown) shown singly; --json and --output record each)"
            return s
        }

        /// The kind, then `detail`: the text view's line.
        public var text: String { kind.rawValue + " " + detail }
    }

    /// Lines per kind and endpoint per second before the rest are counted; 0: no limit.
    public let perSecond: Int
    public static let window: UInt64 = 1_000_000_000

    private struct Key: Hashable {
        var kind: Anomaly.Kind
        var netns: UInt32
        var server: Bool
        var family: AddressFamily
        var endpoint: Endpoint
    }
    private struct Window {
        var start: UInt64
        var shown = 0
        var counted = 0
        var severity: Anomaly.Severity
        var identity: ConnectionIdentity
        /// nil once two owners differ.
        var owner: Owner?
        var ownerMixed = false
        var latest: UInt64 = 0
    }
    private var windows: [Key: Window] = [:]
    private var pruneAt = 4096
    /// The earliest end of a window that counted something: nothing is due before it.
    private var nextDue: UInt64 = .max
    private var listening: Set<ListeningPort> = []
    private struct ListeningPort: Hashable { var netns: UInt32; var port: UInt16 }

    public init(perSecond: Int) {
        self.perSecond = max(0, perSecond)
    }

    /// Learns the listeners from the records that pass (the snapshot, CLOSE -> LISTEN).
    public mutating func note(_ output: EngineOutput) {
        switch output {
        case .snapshot(let id, let state, _, _, _) where state == .listen:
            listening.insert(ListeningPort(netns: id.netns, port: id.local.port))
        case .change(let c) where c.to == .listen:
            listening.insert(ListeningPort(netns: c.connection.netns, port: c.connection.local.port))
        case .change(let c) where c.from == .listen && c.to == .closed:
            listening.remove(ListeningPort(netns: c.connection.netns, port: c.connection.local.port))
        default:
            break
        }
    }

    /// Whether this anomaly gets its own line; if not, it is counted in its window's burst.
    public mutating func admit(_ a: Anomaly) -> Bool {
        count(a) == nil
    }

    /// Nil when this anomaly is shown singly; else the burst of its window so
    /// far, this one counted (a view that keeps the burst as one growing item).
    public mutating func count(_ a: Anomaly) -> Burst? {
        guard perSecond > 0 else { return nil }
        if windows.count > pruneAt {
            // Windows past their second: a text view has written their bursts already (`due`).
            windows = windows.filter { $0.value.start.addingSaturating(Self.window) > a.monoNanoseconds }
            pruneAt = max(4096, windows.count * 2)
        }
        let id = a.connection
        let server = listening.contains(ListeningPort(netns: id.netns, port: id.local.port))
        let key = Key(kind: a.kind, netns: id.netns, server: server, family: id.family, endpoint: server ? id.local : id.remote)
        let owner: Owner? = id.ownerKnown ? id.owner : nil
        if var w = windows[key], a.monoNanoseconds < w.start.addingSaturating(Self.window) {
            if w.shown < perSecond {
                w.shown += 1
                windows[key] = w
                return nil
            }
            if w.counted == 0 {
                w.identity = id
                w.owner = owner
                nextDue = min(nextDue, w.start.addingSaturating(Self.window))
            } else if !w.ownerMixed && w.owner != owner {
                w.ownerMixed = true
                w.owner = nil
            }
            w.counted += 1
            w.latest = a.monoNanoseconds
            w.severity = a.severity == .critical ? .critical : w.severity
            windows[key] = w
            return burst(key, w, end: w.start.addingSaturating(Self.window))
        }
        // A window that counted something is taken out by `due` first (the caller's order).
        windows[key] = Window(start: a.monoNanoseconds, shown: 1, severity: a.severity, identity: id, owner: owner)
        return nil
    }

    /// Nothing is due before this: one comparison on the hot path.
    public var nextDueTime: UInt64 { nextDue }

    /// The bursts whose window ended by `mono`, oldest first; their windows close.
    public mutating func due(at mono: UInt64) -> [Burst] {
        guard mono >= nextDue else { return [] }
        var bursts: [Burst] = []
        var next: UInt64 = .max
        for (key, w) in windows where w.counted > 0 {
            let end = w.start.addingSaturating(Self.window)
            if end <= mono {
                bursts.append(burst(key, w, end: end))
                windows[key] = nil
            } else {
                next = min(next, end)
            }
        }
        nextDue = next
        return bursts.sorted { ($0.end, $0.kind.rawValue, $0.endpoint) < ($1.end, $1.kind.rawValue, $1.endpoint) }
    }

    /// Every burst still counting (the end of the run), oldest first.
    public mutating func drain() -> [Burst] {
        due(at: .max)
    }

    private func burst(_ key: Key, _ w: Window, end: UInt64) -> Burst {
        var out = OutputBuffer(capacity: 48)
        out.append(endpointOf: w.identity, remote: !key.server)
        let owner = w.owner.map { "\($0.comm.escaped) (\($0.pid))" }
        return Burst(kind: key.kind, severity: w.severity, endpoint: (key.server ? "on " : "to ") + out.string, owner: owner,
                     shown: w.shown, counted: w.counted, start: w.start, end: end, latest: w.latest)
    }
}
