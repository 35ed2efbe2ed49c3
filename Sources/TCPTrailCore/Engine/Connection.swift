/// Who and where a connection is, as the latest kernel event said.
public struct ConnectionIdentity: Sendable, Equatable {
    public var conn: ConnectionID
    public var owner: Owner
    /// The owner's thread that took the socket, where known.
    public var thread: ProcessName
    public var ownerKnown: Bool
    public var netns: UInt32
    public var family: AddressFamily
    public var local: Endpoint
    public var remote: Endpoint
    /// Listed by the snapshot at start and touched by no kernel event since
    /// (an event's identity replaces it): views may count such sockets
    /// instead of listing each, and the summary tells them apart.
    public var openAtStart = false
}

extension ConnectionIdentity {
    public init(_ e: KernelEvent) {
        self.init(e, conn: e.connectionID)
    }

    public init(_ e: KernelEvent, conn: ConnectionID) {
        self.init(conn: conn, owner: e.owner, thread: e.thread, ownerKnown: e.ownerKnown, netns: e.netns, family: e.family,
                  local: e.local, remote: e.remote)
    }

    /// The identity of a socket read through sock_diag (no thread: /proc names the process only).
    public init(cookie: UInt64, snapshot s: SocketSnapshot) {
        self.init(conn: ConnectionID(cookie: cookie), owner: s.owner, thread: ProcessName(), ownerKnown: s.owner.pid != 0,
                  netns: s.netns, family: s.family, local: s.local, remote: s.remote)
    }

    /// "198.18.0.1:41234 -> 198.18.0.2:8080" for sentences.
    public var endpoints: String {
        var out = OutputBuffer(capacity: 96)
        out.append(endpoints: self)
        return out.string
    }
}

extension OutputBuffer {
    /// The one endpoint formatter: "198.18.0.2:8080", "[fd00::2]:8080"
    /// (brackets for IPv6 with a port, as RFC 3986 and `ss` write it).
    public mutating func append(endpoint: Endpoint, family: AddressFamily) {
        if family == .ipv6 { append(UInt8(ascii: "[")) }
        append(address: endpoint.address, family: family)
        if family == .ipv6 { append(UInt8(ascii: "]")) }
        append(UInt8(ascii: ":"))
        append(decimal: UInt64(endpoint.port))
    }

    /// One side of a connection, through `append(endpoint:family:)`.
    public mutating func append(endpointOf id: ConnectionIdentity, remote: Bool) {
        append(endpoint: remote ? id.remote : id.local, family: id.family)
    }

    /// A documented step's members, `,"from":…,"to":…,"step":…,"inferred":…`
    /// and `"reason"` when there is one: the log's records and the board's feed alike.
    public mutating func appendDocumented(from: TCPState, to: TCPState, step: Step, inferred: Bool, reason: String?) {
        append(",\"from\":\"" as StaticString)
        append(from.nameBytes)
        append("\",\"to\":\"" as StaticString)
        append(to.nameBytes)
        append("\",\"step\":\"" as StaticString)
        append(step.nameBytes)
        append("\",\"inferred\":" as StaticString)
        append(inferred ? "true" as StaticString : "false")
        if let reason { append(",\"reason\":", jsonString: reason) }
    }

    /// `ConnectionIdentity.endpoints`, without a String in between (replay
    /// writes one per connection).
    public mutating func append(endpoints id: ConnectionIdentity) {
        append(endpointOf: id, remote: false)
        append(" -> " as StaticString)
        append(endpointOf: id, remote: true)
    }
}

/// One step of a connection's life in the documents' terms.
public struct StateChange: Sendable, Equatable {
    public var connection: ConnectionIdentity
    public var monoNanoseconds: UInt64
    public var from: TCPState
    public var to: TCPState
    public var step: Step
    /// The engine worked this out; the kernel did not report it as such.
    public var inferred: Bool
    /// The kernel transition behind it; nil for changes the engine made up
    /// (TIME_WAIT -> CLOSED after 2MSL).
    public var kernel: KernelEvent?
    /// Why, where the step alone does not say (e.g. `fin_wait_2_orphaned`).
    public var reason: String?
    /// A TIME_WAIT read from the kernel's socket table: what was left of it (ms).
    public var timeWaitLeftMilliseconds: UInt32?

    public init(connection: ConnectionIdentity, monoNanoseconds: UInt64, from: TCPState, to: TCPState, step: Step,
                inferred: Bool, kernel: KernelEvent?, reason: String? = nil, timeWaitLeftMilliseconds: UInt32? = nil) {
        self.connection = connection
        self.monoNanoseconds = monoNanoseconds
        self.from = from
        self.to = to
        self.step = step
        self.inferred = inferred
        self.kernel = kernel
        self.reason = reason
        self.timeWaitLeftMilliseconds = timeWaitLeftMilliseconds
    }
}

/// What the engine knows about one connection.
struct ConnectionRecord {
    var identity: ConnectionIdentity
    var state: TCPState
    var since: UInt64
    /// Opened by LISTEN -> SYN_RECEIVED: the server side.
    var passive = false
    var synRetransmits = 0
    var dataRetransmits = 0
    var dataRetransmitReported = false
    var stallReported = false
    var lastError: Int32 = 0
    var resetReceived = false
    var resetSent = false
    /// A -> CLOSE whose cause (reset, error, nothing) may still arrive.
    var pendingClose: KernelEvent?
    var pendingCloseFrom: TCPState = .closed
    var lastMono: UInt64
    /// The kernel handed it to a timewait socket it follows (TT_TW_HANDOFF):
    /// its FIN_WAIT_2 and TIME_WAIT end by the kernel's word.
    var inTimewaitSocket = false
    /// The current run of data retransmits: its first and latest, and how
    /// many (a gap above TCP_RTO_MAX, 120 s, starts a new run).
    var retransmitRunStart: UInt64 = 0
    var lastRetransmit: UInt64 = 0
    var retransmitRun = 0
    /// When the kernel's socket table is next asked about it, if it idles in
    /// a state the kernel leaves within round trips (see `staleConnections`).
    var tableCheckDelay = HandshakeEngine.tableCheckFirstDelay
}
