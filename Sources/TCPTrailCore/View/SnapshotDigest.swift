/// How `trace` shows the sockets open when it starts.
public enum SnapshotMode: String, Sendable, CaseIterable {
    /// Listed one per line when few, else counted by state and endpoint (text); each a record in JSON.
    case compact
    /// One line per socket, however many.
    case full
    /// Not shown or recorded at all (the engine still knows them).
    case none
}

/// The sockets open at start, counted by state and by the endpoint they
/// share: what a person reads instead of 14,000 TIME_WAIT lines. A socket
/// on a port some listener of its namespace holds is the server side
/// ("on" that endpoint), any other the client side ("to" its peer).
public struct SnapshotDigest: Sendable {
    /// Up to this many sockets are listed one per line.
    public static let listLimit = 20
    /// Endpoints named per state; the rest are counted.
    public static let endpointsPerState = 3

    public private(set) var sockets: [(identity: ConnectionIdentity, state: TCPState)] = []

    public init() {}

    public mutating func add(_ identity: ConnectionIdentity, state: TCPState) {
        sockets.append((identity, state))
    }

    public var count: Int { sockets.count }

    /// Whether the sockets are few enough to list one per line.
    public var listsEach: Bool { sockets.count <= Self.listLimit }

    /// One group: sockets of one state sharing an endpoint.
    public struct Group: Sendable, Equatable {
        public var state: TCPState
        /// The endpoint they share: their local one (server side, LISTEN) or their peer's.
        public var endpoint: String
        public var serverSide: Bool
        public var count: Int
        /// "nginx (812)" when all of them have one known owner.
        public var owner: String?
    }

    /// Per state (in the documents' order), its count and its largest groups,
    /// largest first; the endpoint count says how many groups there were.
    public func summary() -> [(state: TCPState, count: Int, endpoints: Int, groups: [Group])] {
        var listening: Set<ListeningPort> = []
        for s in sockets where s.state == .listen {
            listening.insert(ListeningPort(netns: s.identity.netns, port: s.identity.local.port))
        }
        struct Key: Hashable { var state: TCPState; var endpoint: String; var serverSide: Bool }
        var groups: [Key: Group] = [:]
        var owners: [Key: Owner?] = [:]
        for (id, state) in sockets {
            let server = state == .listen || listening.contains(ListeningPort(netns: id.netns, port: id.local.port))
            var out = OutputBuffer(capacity: 48)
            out.append(endpointOf: id, remote: !server)
            let key = Key(state: state, endpoint: out.string, serverSide: server)
            groups[key, default: Group(state: state, endpoint: key.endpoint, serverSide: server, count: 0)].count += 1
            let owner: Owner? = id.ownerKnown ? id.owner : nil
            if let seen = owners[key] {
                if seen != owner { owners[key] = .some(nil) }
            } else {
                owners[key] = .some(owner)
            }
        }
        var result: [(state: TCPState, count: Int, endpoints: Int, groups: [Group])] = []
        for state in TCPState.allCases {
            var of = groups.filter { $0.key.state == state }.map { key, group in
                var g = group
                if case .some(.some(let o)) = owners[key] { g.owner = "\(o.comm.escaped) (\(o.pid))" }
                return g
            }
            guard !of.isEmpty else { continue }
            of.sort { ($0.count, $1.endpoint) > ($1.count, $0.endpoint) }
            result.append((state, of.reduce(0) { $0 + $1.count }, of.count, Array(of.prefix(Self.endpointsPerState))))
        }
        return result
    }

    /// The lines `trace` prints (after its time column): a title, then one per state.
    public func lines() -> [String] {
        let namespaces = Set(sockets.map { $0.identity.netns }).count
        var lines = ["open at start: \(Self.grouped(sockets.count)) sockets in \(namespaces) network namespace\(namespaces == 1 ? "" : "s"), counted by state and endpoint (--snapshot full lists each; --json and --output record each)"]
        for (state, count, endpoints, groups) in summary() {
            var line = "  " + state.rawValue.padding(13) + Self.grouped(count).leftPadding(7) + "  "
            line += groups.map { g in
                (g.serverSide ? "on " : "to ") + g.endpoint + (g.owner.map { " " + $0 } ?? "") + (g.count > 1 ? " ×" + Self.grouped(g.count) : "")
            }.joined(separator: ", ")
            if endpoints > groups.count { line += ", and \(Self.grouped(endpoints - groups.count)) more endpoint\(endpoints - groups.count == 1 ? "" : "s")" }
            lines.append(line)
        }
        return lines
    }

    /// 14295 -> "14,295".
    public static func grouped(_ n: Int) -> String {
        let digits = String(n.magnitude)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return n < 0 ? "-" + out : out
    }

    private struct ListeningPort: Hashable { var netns: UInt32; var port: UInt16 }
}

extension String {
    fileprivate func padding(_ width: Int) -> String {
        count >= width ? self + " " : self + String(repeating: " ", count: width - count)
    }

    fileprivate func leftPadding(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
