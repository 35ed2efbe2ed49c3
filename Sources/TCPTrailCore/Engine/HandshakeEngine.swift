#if canImport(Glibc)
import Glibc  // errno constants only
#endif
import Histogram

/// What the engine emits, in order.
public enum EngineOutput: Sendable, Equatable {
    case change(StateChange)
    case anomaly(Anomaly)
    /// A kernel event that is not a transition (retransmit, reset, error),
    /// passed through in order.
    case event(KernelEvent)
    /// A connection that was open when tracing started, as sock_diag showed it
    /// (`expires`: ms left in TIME_WAIT).
    case snapshot(ConnectionIdentity, state: TCPState, kernel: KernelTCPState, mono: UInt64, expires: UInt32)

    /// When it happened (kernel monotonic ns).
    public var monoNanoseconds: UInt64 {
        switch self {
        case .change(let c): c.monoNanoseconds
        case .anomaly(let a): a.monoNanoseconds
        case .event(let e): e.monoNanoseconds
        case .snapshot(_, _, _, let mono, _): mono
        }
    }
}

/// Turns the kernel's raw transitions into each connection's life as the TCP
/// documents describe it, fills in what the kernel hides, and flags anomalies.
///
/// Feed it kernel events with `process`, and call `advance(to:)` as time passes
/// (it runs the timers: TIME_WAIT expiry, stalls, held closes). It is a plain
/// value with no I/O, so live tracing and replay give the same answers.
public struct HandshakeEngine: Sendable {
    /// Linux's TCP_TIMEWAIT_LEN: TIME_WAIT lasts 60 s (not a sysctl).
    public static let timeWaitNanoseconds: UInt64 = 60_000_000_000
    /// How much longer than 2MSL a TIME_WAIT the kernel side follows waits
    /// for the kernel's own end before the engine ends it (a lost event; a
    /// FIN retransmitted into TIME_WAIT restarts the kernel's 60 s).
    public static let followedTimeWaitGrace: UInt64 = 5_000_000_000
    /// TCP_RTO_MAX: retransmits of one unanswered run are never further apart.
    static let maxRetransmitTimeout: UInt64 = 120_000_000_000
    static let etimedout: Int32 = ETIMEDOUT

    /// How long a -> CLOSE waits for the reset or error that explains it
    /// (the kernel reports a sent RST right after the transition).
    public static let closeCauseWindow: UInt64 = 5_000_000
    /// The wait from a state whose abort sends an RST (`tcp_need_reset()`):
    /// tcp_disconnect() and tcp_close() with unread data set CLOSE first and
    /// send the RST after, and in between the peer's own events (the RST
    /// arriving over veth runs in the same call) and a descheduled vCPU can
    /// put far more than 5 ms. Seen in the emulated 6.1 guest: a SO_LINGER 0
    /// close called "aborted" because the server's events came first.
    public static let abortCauseWindow: UInt64 = 1_000_000_000

    /// How long a close from `state` waits for its cause.
    static func causeWindow(from state: TCPState) -> UInt64 {
        state.abortSendsReset ? abortCauseWindow : closeCauseWindow
    }

    public var thresholds: AnomalyThresholds
    private var connections = ConnectionTable()
    private var buildupReported: Set<EndpointKey> = []
    /// Per listener: when listen_overflow was last reported, drops since.
    private var listenDrops: [EndpointKey: (UInt64, Int)] = [:]
    private var lastDropIdentity: [EndpointKey: ConnectionIdentity] = [:]
    /// The latest time seen: events from two CPUs may come slightly out of order.
    public private(set) var now: UInt64 = 0
    private var nextTimer: UInt64 = .max
    /// Connections whose -> CLOSE waits for its cause.
    private var pendingCloses: Set<ConnectionID> = []
    /// Connections in CLOSE_WAIT or FIN_WAIT_2 not yet reported as stalled.
    private var stallWatch: Set<ConnectionID> = []
    /// Connections in TIME_WAIT: they leave `connections`; only their identity
    /// stays, found by connection and by address pair (a new connection on the
    /// same pair ends the old TIME_WAIT: the kernel recycles it).
    private var timeWaits = TimeWaitTable()
    private var timerScratch: [ConnectionID] = []

    public private(set) var anomalyCounts: [Anomaly.Kind: Int] = [:]
    /// Connections of this run by their state at the end (CLOSED once closed).
    public private(set) var finalStates: [TCPState: Int] = [:]
    /// Sockets the snapshot listed that no kernel event touched, by their
    /// state at the end (CLOSED: their TIME_WAIT ran out): apart from
    /// `finalStates`, so other work's TIME_WAITs do not fill the summary.
    public private(set) var openAtStartStates: [TCPState: Int] = [:]
    /// Of `timeWaits`, those still as the snapshot listed them.
    private var openAtStartTimeWaits = 0
    /// SYN_SENT -> ESTABLISHED and SYN_RECEIVED -> ESTABLISHED, in µs.
    public private(set) var activeHandshakes = TraceSummary.handshakeHistogram()
    public private(set) var passiveHandshakes = TraceSummary.handshakeHistogram()

    struct EndpointKey: Hashable, Sendable {
        var netns: UInt32
        var address: RawAddress
        var port: UInt16
    }

    public init(thresholds: AnomalyThresholds = AnomalyThresholds()) {
        self.thresholds = thresholds
    }

    /// Connections the engine tracks now (not yet CLOSED, or in TIME_WAIT).
    public var trackedConnections: Int { connections.count + timeWaits.count }

    /// Connections the engine holds in `state` now (TIME_WAIT: those in its
    /// TIME_WAIT table; FIN_WAIT_2 includes orphans in timewait sockets).
    public func connections(in state: TCPState) -> Int {
        connections.inState[state.index] + (state == .timeWait ? timeWaits.count : 0)
    }

    /// The documented state of a connection, if tracked.
    public func state(of conn: ConnectionID) -> TCPState? {
        if let c = connections[conn] { return c.state }
        return timeWaits.contains(conn) ? .timeWait : nil
    }

    /// Keeps a connection's record, or forgets it once it is over or in TIME_WAIT.
    private mutating func store(_ c: ConnectionRecord, _ id: ConnectionID) {
        if c.state == .closed || c.state == .timeWait {
            connections[id] = nil
            if !stallWatch.isEmpty { stallWatch.remove(id) }
        } else {
            connections[id] = c
        }
    }

    // MARK: - Events

    /// Starts tracking the sockets that were open when tracing began (sock_diag),
    /// and emits one snapshot per socket. Call before the first event.
    public mutating func seed(_ sockets: [SocketSnapshot], at mono: UInt64, emit: (EngineOutput) -> Void) {
        if mono > now { now = mono }
        var listening: Set<EndpointKey> = []
        for s in sockets where s.state == .listen {
            listening.insert(EndpointKey(netns: s.netns, address: RawAddress(), port: s.local.port))
        }
        seedingBuildups = [:]
        defer { reportSeedingBuildups(emit: emit) }
        for s in sockets.sorted(by: { $0.expiresMilliseconds < $1.expiresMilliseconds }) {
            var identity = ConnectionIdentity(cookie: s.cookie, snapshot: s)
            identity.openAtStart = true
            let state = TCPState(kernel: s.state)
            var c = ConnectionRecord(identity: identity, state: state, since: mono, lastMono: mono)
            // An endpoint on a listening port was accepted: the server side.
            c.passive = s.state != .listen && listening.contains(EndpointKey(netns: s.netns, address: RawAddress(), port: s.local.port))
            emit(.snapshot(identity, state: state, kernel: s.state, mono: mono, expires: s.state == .timeWait ? s.expiresMilliseconds : 0))
            let id = identity.conn
            switch state {
            case .timeWait:
                beginTimeWait(identity, ends: mono.addingSaturating(UInt64(s.expiresMilliseconds) * 1_000_000), emit: emit)
                openAtStartTimeWaits += 1
                continue
            case .closeWait, .finWait2:
                stallWatch.insert(id)
                scheduleTimer(mono.addingSaturating(min(thresholds.closeWaitNanoseconds, thresholds.finWait2Nanoseconds)))
            default:
                break
            }
            connections[id] = c
        }
    }

    public mutating func process(_ e: KernelEvent, emit: (EngineOutput) -> Void) {
        let id = e.connectionID
        // A reset or error for a close still waiting for its cause is that
        // cause, however late its timestamp: the kernel raised it after the
        // close, and nothing came between them. It goes to the close before
        // the clock moves past the window (a descheduled vCPU can put more
        // than 5 ms between the two; seen in the emulated 6.1 guest).
        let explainsAPendingClose = (e.kind == .reset || e.kind == .error) && connections[id]?.pendingClose != nil
        if !explainsAPendingClose { advance(to: e.monoNanoseconds, emit: emit) }
        defer { if explainsAPendingClose { advance(to: e.monoNanoseconds, emit: emit) } }
        switch e.kind {
        case .transition:
            transition(e, id: id, emit: emit)
        case .retransmit:
            emit(.event(e))
            retransmit(e, id: id, emit: emit)
        case .reset:
            emit(.event(e))
            reset(e, id: id, emit: emit)
        case .listenDrop:
            emit(.event(e))
            listenDrop(e, emit: emit)
        case .accept:
            break  // AcceptHold's: the owner it names is already in the events
        case .error:
            emit(.event(e))
            // errno 0: tcp_disconnect() reporting after a failed connect() has
            // consumed the error; it must not erase the error that closed it.
            if e.errorNumber != 0, var c = connections[id] {
                c.lastError = e.errorNumber
                connections[id] = c
                if c.pendingClose != nil { resolvePendingClose(id: id, emit: emit) }
            }
        }
    }

    private mutating func transition(_ e: KernelEvent, id: ConnectionID, emit: (EngineOutput) -> Void) {
        guard let kfrom = e.oldState, let kto = e.newState else { return }
        // FIN_WAIT2 -> FIN_WAIT2 and the like: close() on a socket already
        // closing (tcp_close_state sets the state it has). No step; passed on.
        if kfrom == kto && kto != .close {
            emit(.event(e))
            if var c = connections[id] {
                c.lastMono = e.monoNanoseconds
                connections[id] = c
            }
            return
        }
        if let step = e.timewait, step != .handoff {
            timewaitTransition(e, step: step, id: id, emit: emit)
            return
        }
        let identity = ConnectionIdentity(e, conn: id)
        var known = connections[id]
        // A new transition settles a held close of the same connection first.
        if known?.pendingClose != nil {
            resolvePendingClose(id: id, emit: emit)
            known = connections[id]
        }
        var c = known ?? ConnectionRecord(identity: identity, state: TCPState(kernel: kfrom), since: e.monoNanoseconds.subtractingSaturating(e.previousStateNanoseconds ?? 0), lastMono: e.monoNanoseconds)
        c.identity = identity
        c.lastMono = e.monoNanoseconds

        guard let move = StateDiagram.move(kfrom, kto) else {
            let change = StateChange(connection: identity, monoNanoseconds: e.monoNanoseconds, from: TCPState(kernel: kfrom), to: TCPState(kernel: kto), step: .aborted, inferred: false, kernel: e, reason: "outside the state diagram")
            emit(.change(change))
            report(.unexpectedTransition, .warning, "The kernel moved \(identity.endpoints) from \(kfrom.name) to \(kto.name), which RFC 9293's state diagram has no arrow for.", e.monoNanoseconds, identity, emit: emit)
            c.state = TCPState(kernel: kto)
            c.since = e.monoNanoseconds
            store(c, id)
            return
        }

        if kto == .close && move.step == .aborted {
            // FIN_WAIT2 -> CLOSE: the hand-over to TIME_WAIT if the peer's FIN came.
            if kfrom == .finWait2 {
                let change: StateChange
                let followed = e.timewait == .handoff
                if followed { c.inTimewaitSocket = true }
                if e.peerFinReceived {
                    change = StateChange(connection: identity, monoNanoseconds: e.monoNanoseconds, from: .finWait2, to: .timeWait, step: .timeWait, inferred: !followed, kernel: e)
                } else if followed {
                    // The orphan lives on in a FIN_WAIT2 timewait socket whose
                    // end the kernel side reports: the state goes on.
                    emit(.event(e))
                    store(c, id)
                    return
                } else {
                    // No peer FIN: the application closed and the kernel handed the
                    // orphan to a FIN_WAIT_2 timewait sock (tcp_time_wait(sk,
                    // TCP_FIN_WAIT2, tmo)); its end (peer FIN or fin timeout) is
                    // invisible to tracepoints, so say that rather than guess.
                    change = StateChange(connection: identity, monoNanoseconds: e.monoNanoseconds, from: .finWait2, to: .closed, step: .closed, inferred: true, kernel: e, reason: "fin_wait_2_orphaned")
                }
                apply(change, to: &c, id: id, emit: emit)
                store(c, id)
                return
            }
            // Other -> CLOSE: wait for the reset or error that explains it,
            // unless a reset already came (tcp_reset() reports before tcp_done()).
            c.pendingClose = e
            c.pendingCloseFrom = c.state == move.from ? c.state : move.from
            connections[id] = c
            pendingCloses.insert(id)
            // tcp_write_err() reports ETIMEDOUT before tcp_done(), and no RST follows.
            if c.resetReceived || c.resetSent || c.lastError == Self.etimedout {
                resolvePendingClose(id: id, emit: emit)
                return
            }
            scheduleTimer(e.monoNanoseconds.addingSaturating(Self.causeWindow(from: c.pendingCloseFrom)))
            return
        }

        if move.step == .synSent || move.step == .synReceived { timeWaitReused(by: identity, at: e.monoNanoseconds, emit: emit) }
        // CLOSING -> CLOSE is the hand-over to TIME_WAIT: the state is
        // inferred unless the kernel side follows the timewait socket.
        let followed = e.timewait == .handoff
        if followed { c.inTimewaitSocket = true }
        let change = StateChange(connection: identity, monoNanoseconds: e.monoNanoseconds, from: move.from, to: move.to, step: move.step, inferred: move.to == .timeWait && !followed, kernel: e)
        if move.step == .synReceived { c.passive = true }
        apply(change, to: &c, id: id, emit: emit)
        store(c, id)
    }

    /// Records a change: emits it, updates the connection and the statistics.
    private mutating func apply(_ change: StateChange, to c: inout ConnectionRecord, id: ConnectionID, emit: (EngineOutput) -> Void) {
        let elapsed = change.monoNanoseconds >= c.since ? change.monoNanoseconds - c.since : 0
        if change.step == .established {
            let micros = min(max(elapsed / 1000, 1), 3_600_000_000)
            if change.from == .synSent { _ = activeHandshakes.record(micros) }
            if change.from == .synReceived { _ = passiveHandshakes.record(micros) }
        }
        emit(.change(change))
        c.state = change.to
        c.since = change.monoNanoseconds
        c.stallReported = false
        if change.to == .closeWait || change.to == .finWait2 {
            stallWatch.insert(id)
        } else if change.from == .closeWait || change.from == .finWait2 || c.state == .closeWait || c.state == .finWait2 {
            stallWatch.remove(id)
        }
        switch change.to {
        case .timeWait:
            let grace = c.inTimewaitSocket ? Self.followedTimeWaitGrace : 0
            let length = change.timeWaitLeftMilliseconds.map { UInt64($0) * 1_000_000 } ?? Self.timeWaitNanoseconds + grace
            beginTimeWait(c.identity, ends: change.monoNanoseconds.addingSaturating(length), emit: emit)
            if c.passive {
                report(.serverTimeWait, .warning, "The server side of \(c.identity.endpoints) closed first and now holds TIME_WAIT for 60 s; servers should let clients close first, or TIME_WAIT sockets pile up on the listening port.", change.monoNanoseconds, c.identity, emit: emit)
            }
        case .closeWait:
            scheduleTimer(change.monoNanoseconds.addingSaturating(thresholds.closeWaitNanoseconds))
        case .finWait2:
            scheduleTimer(change.monoNanoseconds.addingSaturating(thresholds.finWait2Nanoseconds))
        case .closed:
            finalStates[.closed, default: 0] += 1
        default:
            break
        }
    }

    /// Settles a held -> CLOSE now. Replay calls it where the live run wrote
    /// the close: everything that explained it is already in the log before it.
    public mutating func settlePendingClose(of conn: ConnectionID, emit: (EngineOutput) -> Void) {
        resolvePendingClose(id: conn, emit: emit)
    }

    private mutating func resolvePendingClose(id: ConnectionID, emit: (EngineOutput) -> Void) {
        guard var c = connections[id], let e = c.pendingClose else { return }
        c.pendingClose = nil
        pendingCloses.remove(id)
        let from = c.pendingCloseFrom
        let identity = c.identity
        var step = Step.aborted
        var reason: String?
        if c.resetReceived || c.resetSent {
            step = .reset
            reason = c.resetReceived ? "reset_received" : "reset_sent"
        } else if c.lastError != 0 {
            reason = ErrnoName.name(c.lastError)
        } else if from == .synSent || from == .synReceived || from == .listen {
            reason = "closed_by_application"
        }
        let change = StateChange(connection: identity, monoNanoseconds: e.monoNanoseconds, from: from, to: .closed, step: step, inferred: false, kernel: e, reason: reason)
        apply(change, to: &c, id: id, emit: emit)
        if from == .synSent {
            if c.resetReceived || c.lastError == ECONNREFUSED {
                report(.connectionRefused, .warning, "The connection to \(endpointText(identity, remote: true)) was refused: the peer answered the SYN with an RST (nothing listens on that port, or a firewall rejects it).", e.monoNanoseconds, identity, emit: emit)
            } else if c.lastError == Self.etimedout {
                report(.handshakeTimeout, .critical, "The connection to \(endpointText(identity, remote: true)) timed out after \(c.synRetransmits) SYN retransmissions: the peer or the path drops SYNs (host down, firewall dropping, wrong address).", e.monoNanoseconds, identity, count: c.synRetransmits, emit: emit)
            }
        }
        if from.isSynchronized && c.lastError == Self.etimedout {
            report(.connectionTimeout, .critical, timeoutText(c, from: from, at: e.monoNanoseconds), e.monoNanoseconds, identity,
                   count: c.retransmitRun > 0 ? c.retransmitRun : nil, emit: emit)
        }
        store(c, id)
    }

    /// connection_timeout's sentence: how long the peer had been silent.
    private func timeoutText(_ c: ConnectionRecord, from: TCPState, at mono: UInt64) -> String {
        let endpoints = "\(c.identity.endpoints) timed out in \(from.rawValue) (ETIMEDOUT)"
        guard c.retransmitRun > 0 else {
            return endpoints + ": its keepalive probes (or a zero-window probe) went unanswered, so the kernel gave up; the peer is gone or the path drops everything."
        }
        let ms = mono.subtractingSaturating(c.retransmitRunStart) / 1_000_000
        let frac = ms % 1000
        let fraction = frac < 10 ? "00\(frac)" : frac < 100 ? "0\(frac)" : "\(frac)"
        return endpoints + ": \(c.retransmitRun) retransmission\(c.retransmitRun == 1 ? "" : "s") over \(ms / 1000).\(fraction) s went unanswered (tcp_retries2), so the kernel gave up; the peer is gone or the path drops everything."
    }

    private mutating func retransmit(_ e: KernelEvent, id: ConnectionID, emit: (EngineOutput) -> Void) {
        let identity = ConnectionIdentity(e)
        switch e.retransmit ?? .data {
        case .syn:
            var c = connections[id] ?? ConnectionRecord(identity: identity, state: .synSent, since: e.monoNanoseconds, lastMono: e.monoNanoseconds)
            c.synRetransmits += 1
            c.identity = identity
            connections[id] = c
            report(.synRetransmit, .warning, "SYN to \(endpointText(identity, remote: true)) retransmitted (\(c.synRetransmits) so far): no SYN-ACK came back in time.", e.monoNanoseconds, identity, count: c.synRetransmits, emit: emit)
        case .synack:
            report(.synackRetransmit, .warning, "SYN-ACK to \(endpointText(identity, remote: true)) retransmitted: the client's ACK was lost or the client is gone.", e.monoNanoseconds, identity, emit: emit)
        case .data:
            guard var c = connections[id] else { return }
            c.dataRetransmits += 1
            if c.lastRetransmit == 0 || e.monoNanoseconds.subtractingSaturating(c.lastRetransmit) > Self.maxRetransmitTimeout {
                c.retransmitRunStart = e.monoNanoseconds
                c.retransmitRun = 0
            }
            c.retransmitRun += 1
            c.lastRetransmit = e.monoNanoseconds
            if c.dataRetransmits > thresholds.dataRetransmits && !c.dataRetransmitReported {
                c.dataRetransmitReported = true
                report(.dataRetransmit, .warning, "\(identity.endpoints) retransmitted \(c.dataRetransmits) segments: packets are being lost on the path or the peer is overloaded.", e.monoNanoseconds, identity, count: c.dataRetransmits, emit: emit)
            }
            connections[id] = c
        }
    }

    /// Listen-queue drops, reported at most once a second per listener with a count.
    private mutating func listenDrop(_ e: KernelEvent, emit: (EngineOutput) -> Void) {
        let key = EndpointKey(netns: e.netns, address: e.localAddress, port: e.localPort)
        var (last, pending) = listenDrops[key] ?? (0, 0)
        pending += 1
        if last == 0 || e.monoNanoseconds >= last.addingSaturating(1_000_000_000) {
            let identity = ConnectionIdentity(e)
            report(.listenOverflow, .critical, "The listener on \(endpointText(identity, remote: false)) dropped \(pending) segment(s) because its accept queue was full: \(identity.ownerKnown ? "process \(identity.owner.pid) (\(identity.owner.comm.escaped))" : "the application") does not accept() fast enough, or the backlog is too small.", e.monoNanoseconds, identity, count: pending, emit: emit)
            last = e.monoNanoseconds
            pending = 0
        }
        listenDrops[key] = (last, pending)
        lastDropIdentity[key] = ConnectionIdentity(e)
    }

    /// Drops the kernel counted for a listener whose accept queue was full
    /// (from `ListenQueueMonitor`, not a tracepoint).
    public mutating func listenOverflow(_ o: ListenOverflow, at mono: UInt64, emit: (EngineOutput) -> Void) {
        let identity = ConnectionIdentity(cookie: o.listener.cookie, snapshot: o.listener)
        report(.listenOverflow, .critical, "The listener on \(endpointText(identity, remote: false)) dropped \(o.drops) SYN(s) or ACK(s) because its accept queue was full (\(o.listener.acceptQueue) of \(o.listener.acceptQueueLimit)): \(processText(identity)) does not accept() fast enough, or the backlog is too small.", mono, identity, count: o.drops,
               acceptQueue: Anomaly.AcceptQueue(depth: o.listener.acceptQueue, limit: o.listener.acceptQueueLimit), emit: emit)
    }

    private mutating func reset(_ e: KernelEvent, id: ConnectionID, emit: (EngineOutput) -> Void) {
        guard !e.noSocket, var c = connections[id] else { return }
        let stateBefore = c.pendingClose != nil ? c.pendingCloseFrom : c.state
        if e.reset == .received { c.resetReceived = true } else { c.resetSent = true }
        connections[id] = c
        if stateBefore.isSynchronized {
            if e.reset == .received {
                report(.resetReceived, .warning, "\(c.identity.endpoints) was reset by the peer in \(stateBefore.rawValue): it aborted the connection (crashed, closed with unread data, or a middlebox cut it).", e.monoNanoseconds, c.identity, emit: emit)
            } else {
                report(.resetSent, .warning, "This host reset \(c.identity.endpoints) in \(stateBefore.rawValue): the application aborted it (SO_LINGER 0, or close with unread data) and the peer lost any data in flight.", e.monoNanoseconds, c.identity, emit: emit)
            }
        }
        if c.pendingClose != nil { resolvePendingClose(id: id, emit: emit) }
    }

    // MARK: - The kernel's socket table

    /// How long a connection idles in a state the kernel leaves within round
    /// trips before the kernel's socket table is asked where it is; doubled
    /// after each answer that it is still there, up to `tableCheckMaxDelay`.
    public static let tableCheckFirstDelay: UInt64 = 2_000_000_000
    public static let tableCheckMaxDelay: UInt64 = 64_000_000_000

    /// A connection to look up in the kernel's socket table (sock_diag).
    public struct TableQuery: Sendable, Equatable {
        public var conn: ConnectionID
        public var netns: UInt32
        public var family: AddressFamily
        public var local: Endpoint
        public var remote: Endpoint
        public var state: TCPState
    }

    /// Connections that idle in FIN_WAIT_1, CLOSING, LAST_ACK, or FIN_WAIT_2
    /// outside a followed timewait socket, for longer than their check delay:
    /// moves the tracepoints did not show. Under churn on 6.18, a socket now
    /// and then goes from FIN_WAIT1 to TIME_WAIT with no inet_sock_set_state
    /// and no tcp_destroy_sock at all (bpftrace on the same tracepoints misses
    /// them alike, while the wire shows the FIN, its ACK and the peer's FIN),
    /// and an event lost in the ring buffer leaves a connection behind the same way.
    ///
    /// After events were lost (`checkEverythingInTable`), every connection
    /// with no event since, listeners too, once, whatever its state.
    public func staleConnections(limit: Int = 4096) -> [TableQuery] {
        var out: [TableQuery] = []
        for (id, c) in connections where c.pendingClose == nil {
            if c.lastMono <= tableCheckBefore {
                guard c.state != .closed else { continue }
            } else {
                guard now.subtractingSaturating(c.lastMono) >= c.tableCheckDelay else { continue }
                switch c.state {
                case .finWait1, .closing, .lastAck: break
                case .finWait2 where !c.inTimewaitSocket: break
                default: continue
                }
            }
            out.append(TableQuery(conn: id, netns: c.identity.netns, family: c.identity.family, local: c.identity.local,
                                  remote: c.identity.remote, state: c.state))
            if out.count >= limit { break }
        }
        return out.sorted { $0.conn < $1.conn }
    }

    /// Events were lost by `mono`: `staleConnections` names every connection
    /// with no event since (also those an accept hold hands over later).
    public mutating func checkEverythingInTable(lostBy mono: UInt64) {
        if mono > tableCheckBefore { tableCheckBefore = mono }
    }

    private var tableCheckBefore: UInt64 = 0

    /// How far along a connection's life a state is: the table's answer
    /// settles a connection only forward (a pair reused since is not it).
    private static func lifeRank(_ s: TCPState) -> Int {
        switch s {
        case .closed, .listen: 0
        case .synSent, .synReceived: 1
        case .established: 2
        case .finWait1, .closeWait: 3
        case .finWait2, .closing, .lastAck: 4
        case .timeWait: 5
        }
    }

    /// The step a settled move to `to` is told as.
    private static func settledStep(from: TCPState, to: TCPState) -> Step {
        switch to {
        case .established: .established
        case .finWait1: .finSent
        case .finWait2: .finAcked
        case .closeWait: .finReceived
        case .closing: .simultaneousClose
        case .lastAck: .finSent
        case .timeWait: .timeWait
        case .closed where from == .listen: .unlisten
        case .closed, .listen, .synSent, .synReceived: .closed
        }
    }

    /// What the kernel's socket table says of a connection `staleConnections`
    /// named: its state there (nil: gone), and for TIME_WAIT the ms left.
    /// A move the table shows is emitted as an inferred change (reason
    /// `kernel_table`; to CLOSED `gone_from_kernel_table`); the same state
    /// waits twice as long before the next look.
    public mutating func reconcile(_ conn: ConnectionID, kernel: KernelTCPState?, timeWaitLeftMilliseconds: UInt32 = 0,
                                   at mono: UInt64, emit: (EngineOutput) -> Void) {
        reconcile(conn, to: kernel.map { TCPState(kernel: $0) } ?? .closed, timeWaitLeftMilliseconds: timeWaitLeftMilliseconds, at: mono, emit: emit)
    }

    /// `reconcile` by the documented state the table showed (replay's way in).
    public mutating func reconcile(_ conn: ConnectionID, to: TCPState, timeWaitLeftMilliseconds: UInt32 = 0,
                                   at mono: UInt64, emit: (EngineOutput) -> Void) {
        advance(to: mono, emit: emit)
        guard var c = connections[conn], c.pendingClose == nil else { return }
        guard to == .closed || Self.lifeRank(to) > Self.lifeRank(c.state) else {
            // Still there (or a state it cannot have come to): look again later.
            c.lastMono = mono
            c.tableCheckDelay = min(c.tableCheckDelay * 2, Self.tableCheckMaxDelay)
            connections[conn] = c
            return
        }
        let step = Self.settledStep(from: c.state, to: to)
        let left = to == .timeWait ? timeWaitLeftMilliseconds : nil
        let change = StateChange(connection: c.identity, monoNanoseconds: mono, from: c.state, to: to, step: step, inferred: true, kernel: nil,
                                 reason: to == .closed ? "gone_from_kernel_table" : "kernel_table", timeWaitLeftMilliseconds: left)
        c.lastMono = mono
        c.tableCheckDelay = Self.tableCheckFirstDelay
        apply(change, to: &c, id: conn, emit: emit)
        store(c, conn)
    }

    // MARK: - Time

    private mutating func scheduleTimer(_ at: UInt64) {
        if at < nextTimer { nextTimer = at }
    }

    /// Moves the engine's clock forward and fires what is due. Time never goes back.
    public mutating func advance(to mono: UInt64, emit: (EngineOutput) -> Void) {
        if mono > now { now = mono }
        guard now >= nextTimer else { return }
        nextTimer = .max
        // In id order, so live and replay fire timers alike; through a kept
        // buffer, so a timer costs no allocation.
        timerScratch.removeAll(keepingCapacity: true)
        timerScratch.append(contentsOf: pendingCloses)
        timerScratch.sort()
        for id in timerScratch {
            guard let pending = connections[id]?.pendingClose else { pendingCloses.remove(id); continue }
            let due = pending.monoNanoseconds.addingSaturating(Self.causeWindow(from: connections[id]?.pendingCloseFrom ?? .closed))
            if now >= due {
                resolvePendingClose(id: id, emit: emit)
            } else {
                scheduleTimer(due)
            }
        }
        timerScratch.removeAll(keepingCapacity: true)
        timerScratch.append(contentsOf: stallWatch)
        timerScratch.sort()
        for id in timerScratch {
            guard var c = connections[id], !c.stallReported, c.state == .closeWait || c.state == .finWait2 else {
                stallWatch.remove(id)
                continue
            }
            let limit = c.state == .closeWait ? thresholds.closeWaitNanoseconds : thresholds.finWait2Nanoseconds
            let due = c.since.addingSaturating(limit)
            guard now >= due else {
                scheduleTimer(due)
                continue
            }
            c.stallReported = true
            stallWatch.remove(id)
            connections[id] = c
            if c.state == .closeWait {
                report(.closeWaitStall, .critical, "\(c.identity.endpoints) has been in CLOSE_WAIT for \((now - c.since) / 1_000_000_000) s: the peer closed and \(processText(c.identity)) never called close() on the socket (a descriptor leak).", now, c.identity, emit: emit)
            } else {
                report(.finWait2Stall, .warning, "\(c.identity.endpoints) has been in FIN_WAIT_2 for \((now - c.since) / 1_000_000_000) s: this side closed, and the peer has not closed its side.", now, c.identity, emit: emit)
            }
        }
        while let (identity, ends, left) = timeWaits.removeExpired(by: now) {
            closeTimeWait(identity, at: ends, leftOnEndpoint: left, reason: "2msl_expired", emit: emit)
        }
        if let ends = timeWaits.nextExpiry { scheduleTimer(ends) }
    }

    /// Settles everything held (closes waiting for their cause) at the end of a run.
    public mutating func finish(emit: (EngineOutput) -> Void) {
        for id in connections.keys.sorted() where connections[id]?.pendingClose != nil {
            resolvePendingClose(id: id, emit: emit)
        }
        for c in connections.values {
            if c.identity.openAtStart { openAtStartStates[c.state, default: 0] += 1 } else { finalStates[c.state, default: 0] += 1 }
        }
        if timeWaits.count > openAtStartTimeWaits { finalStates[.timeWait, default: 0] += timeWaits.count - openAtStartTimeWaits }
        if openAtStartTimeWaits > 0 { openAtStartStates[.timeWait, default: 0] += openAtStartTimeWaits }
        // Drops counted since the last listen_overflow report are reported now.
        // In endpoint order, so the records come out the same on every run.
        let pending = listenDrops.filter { $0.value.1 > 0 }
            .sorted { ($0.key.netns, $0.key.address.high, $0.key.address.low, $0.key.port) < ($1.key.netns, $1.key.address.high, $1.key.address.low, $1.key.port) }
        for (key, value) in pending {
            listenDrops[key] = (value.0, 0)
            if let identity = lastDropIdentity[key] {
                report(.listenOverflow, .critical, "The listener on \(endpointText(identity, remote: false)) dropped \(value.1) more segment(s) because its accept queue was full.", now, identity, count: value.1, emit: emit)
            }
        }
    }

    // MARK: - TIME_WAIT

    private mutating func beginTimeWait(_ identity: ConnectionIdentity, ends: UInt64, emit: (EngineOutput) -> Void) {
        // A TIME_WAIT on the same pair is over: the kernel keeps one per pair.
        if let old = timeWaits.connection(onPairOf: identity), old != identity.conn {
            endTimeWait(old, at: now, reason: "time_wait_reused", emit: emit)
        }
        let onEndpoint = timeWaits.insert(identity, ends: ends)
        scheduleTimer(ends)
        enterTimeWait(identity, onEndpoint: onEndpoint, emit: emit)
    }

    /// A new connection on a pair still in TIME_WAIT: the kernel recycled the
    /// TIME_WAIT (tcp_tw_reuse for a connect(), or a new SYN to a server), and
    /// no tracepoint says so.
    private mutating func timeWaitReused(by identity: ConnectionIdentity, at mono: UInt64, emit: (EngineOutput) -> Void) {
        guard !timeWaits.isEmpty, let old = timeWaits.connection(onPairOf: identity), old != identity.conn else { return }
        endTimeWait(old, at: mono, reason: "time_wait_reused", emit: emit)
    }

    private mutating func endTimeWait(_ conn: ConnectionID, at mono: UInt64, reason: String, emit: (EngineOutput) -> Void) {
        guard let (identity, left) = timeWaits.remove(conn) else { return }
        closeTimeWait(identity, at: mono, leftOnEndpoint: left, reason: reason, emit: emit)
    }

    private mutating func closeTimeWait(_ identity: ConnectionIdentity, at mono: UInt64, leftOnEndpoint: Int, reason: String,
                                        step: Step = .closed, kernel: KernelEvent? = nil, emit: (EngineOutput) -> Void) {
        leaveTimeWait(identity, leftOnEndpoint: leftOnEndpoint)
        emit(.change(StateChange(connection: identity, monoNanoseconds: mono, from: .timeWait, to: .closed, step: step, inferred: kernel == nil, kernel: kernel, reason: reason)))
        if identity.openAtStart { openAtStartTimeWaits -= 1 }
        if identity.openAtStart && kernel == nil {
            openAtStartStates[.closed, default: 0] += 1
        } else {
            finalStates[.closed, default: 0] += 1
        }
    }

    // MARK: - Timewait sockets

    /// A transition the kernel side saw in a timewait socket: the peer's FIN
    /// (FIN_WAIT_2 -> TIME_WAIT), or its end (timer, reset, reuse). One that
    /// finds the connection elsewhere (its TIME_WAIT already ended by the
    /// engine, a connection never seen) is passed on as a bare event.
    private mutating func timewaitTransition(_ e: KernelEvent, step: TimewaitStep, id: ConnectionID, emit: (EngineOutput) -> Void) {
        switch step {
        case .timeWait, .timeWaitLate:
            guard var c = connections[id], c.state == .finWait2 else { emit(.event(e)); return }
            // Seen only when the timer ran out: the FIN came 2MSL before.
            let at = step == .timeWaitLate
                ? max(c.since, e.monoNanoseconds.subtractingSaturating(Self.timeWaitNanoseconds)) : e.monoNanoseconds
            c.inTimewaitSocket = true
            c.lastMono = e.monoNanoseconds
            let change = StateChange(connection: c.identity, monoNanoseconds: at, from: .finWait2, to: .timeWait, step: .timeWait,
                                     inferred: step == .timeWaitLate, kernel: e, reason: step == .timeWaitLate ? "seen_at_expiry" : nil)
            apply(change, to: &c, id: id, emit: emit)
            store(c, id)
        case .expired, .resetReceived, .resetSent, .reused:
            let isReset = step == .resetReceived || step == .resetSent
            let closing: Step = isReset ? .reset : .closed
            if timeWaits.contains(id) {
                let reason = step == .expired ? "2msl_expired" : isReset ? "reset" : "time_wait_reused"
                guard let (identity, left) = timeWaits.remove(id) else { return }
                closeTimeWait(identity, at: e.monoNanoseconds, leftOnEndpoint: left, reason: reason, step: closing, kernel: e, emit: emit)
            } else if var c = connections[id], c.state == .finWait2 {
                let reason = step == .expired ? "fin_wait_2_timeout" : isReset ? "reset" : "time_wait_reused"
                c.lastMono = e.monoNanoseconds
                let change = StateChange(connection: c.identity, monoNanoseconds: e.monoNanoseconds, from: .finWait2, to: .closed,
                                         step: closing, inferred: false, kernel: e, reason: reason)
                apply(change, to: &c, id: id, emit: emit)
                store(c, id)
            } else {
                emit(.event(e))
            }
        case .handoff:
            break
        }
    }

    // MARK: - TIME_WAIT accounting

    /// `n`: the TIME_WAITs on the connection's local endpoint, itself included.
    private mutating func enterTimeWait(_ identity: ConnectionIdentity, onEndpoint n: Int, emit: (EngineOutput) -> Void) {
        guard n > thresholds.timeWaitSockets else { return }
        let key = EndpointKey(netns: identity.netns, address: identity.local.address, port: identity.local.port)
        if seedingBuildups != nil {
            // The snapshot's sockets: one report per endpoint with its total, once all are in.
            seedingBuildups![key] = (identity, n)
            return
        }
        if !buildupReported.contains(key) {
            buildupReported.insert(key)
            report(.timeWaitBuildup, .warning, "\(n) sockets on local endpoint \(endpointText(identity, remote: false)) are in TIME_WAIT: connections there close first at a high rate, which ties up ports and memory; let the peer close first or reuse connections.", now, identity, count: n, emit: emit)
        }
    }

    /// While seeding: the endpoints past the TIME_WAIT threshold, with their latest count.
    private var seedingBuildups: [EndpointKey: (ConnectionIdentity, Int)]?

    /// Reports the snapshot's TIME_WAIT buildups with their totals (not the 1,001st socket's count).
    private mutating func reportSeedingBuildups(emit: (EngineOutput) -> Void) {
        guard let found = seedingBuildups else { return }
        seedingBuildups = nil
        for (key, (identity, n)) in found.sorted(by: { ($0.key.netns, $0.key.address.high, $0.key.address.low, $0.key.port) < ($1.key.netns, $1.key.address.high, $1.key.address.low, $1.key.port) }) {
            guard !buildupReported.contains(key) else { continue }
            enterTimeWait(identity, onEndpoint: n, emit: emit)
        }
    }

    private mutating func leaveTimeWait(_ identity: ConnectionIdentity, leftOnEndpoint n: Int) {
        guard !buildupReported.isEmpty, n <= thresholds.timeWaitSockets / 2 else { return }
        buildupReported.remove(EndpointKey(netns: identity.netns, address: identity.local.address, port: identity.local.port))
    }

    // MARK: - Reporting

    private mutating func report(_ kind: Anomaly.Kind, _ severity: Anomaly.Severity, _ detail: String, _ mono: UInt64, _ identity: ConnectionIdentity, count: Int? = nil,
                                 acceptQueue: Anomaly.AcceptQueue? = nil, emit: (EngineOutput) -> Void) {
        anomalyCounts[kind, default: 0] += 1
        emit(.anomaly(Anomaly(kind: kind, severity: severity, detail: detail, monoNanoseconds: mono, connection: identity, count: count, acceptQueue: acceptQueue)))
    }

    private func endpointText(_ id: ConnectionIdentity, remote: Bool) -> String {
        var out = OutputBuffer(capacity: 64)
        out.append(endpointOf: id, remote: remote)
        return out.string
    }

    private func processText(_ id: ConnectionIdentity) -> String {
        id.ownerKnown ? "process \(id.owner.pid) (\(id.owner.comm.escaped))" : "the owning process"
    }
}
