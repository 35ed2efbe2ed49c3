/// Which of the engine's output a replay shows.
public struct ReplaySelection: Sendable {
    /// Only this connection id (`4217`, `4217.1`).
    public var conn: ConnectionID?
    /// Only what happened in this window (kernel monotonic ns of the run).
    public var sinceMono: UInt64?
    public var untilMono: UInt64?
    /// Only connections (text) or records (JSON) with anomalies.
    public var anomaliesOnly = false

    public init() {}

    public func inWindow(_ mono: UInt64) -> Bool {
        if let sinceMono, mono < sinceMono { return false }
        if let untilMono, mono > untilMono { return false }
        return true
    }

    /// Whether one record of `--json` output is shown.
    public func shows(_ output: EngineOutput) -> Bool {
        let (conn, mono, isAnomaly): (ConnectionID, UInt64, Bool)
        switch output {
        case .change(let c): (conn, mono, isAnomaly) = (c.connection.conn, c.monoNanoseconds, false)
        case .anomaly(let a): (conn, mono, isAnomaly) = (a.connection.conn, a.monoNanoseconds, true)
        case .event(let e): (conn, mono, isAnomaly) = (e.connectionID, e.monoNanoseconds, false)
        case .snapshot(let id, _, _, let m, _): (conn, mono, isAnomaly) = (id.conn, m, false)
        }
        if anomaliesOnly && !isAnomaly { return false }
        if let want = self.conn, want != conn { return false }
        return inWindow(mono)
    }
}

/// Collects the engine's output per connection and writes each connection's
/// life as a block of text once it is over: the documented states with their
/// times and how long each lasted, the resets and errors, the anomalies.
///
/// A block is written a second (of log time) after the connection closed or
/// entered TIME_WAIT, so that what the engine says right after (a held close's
/// cause, `server_time_wait`) still joins it; TIME_WAIT's end is certain (2MSL),
/// so the block does not wait the 60 s for it.
public struct TimelineWriter {
    public var clock: WallClock
    public var selection: ReplaySelection
    /// The open connections' timelines, by connection: an index into `slots`
    /// (60,000 open at once in a busy log), looked up on every record.
    private var open = SlotIndex()
    private let seed = SlotIndex.randomSeed()
    /// Timelines, reused once written: a new connection takes a free slot
    /// and its entries' storage, so steady state allocates nothing.
    private var slots: [Timeline] = []
    private var freeSlots: [Int] = []
    /// Connections that are over, in the order they ended.
    private var ended: [(conn: ConnectionID, at: UInt64)] = []
    private var endedHead = 0
    /// At the end: the open connections, in the order their blocks go out.
    private var held: ArraySlice<ConnectionID>?
    public private(set) var connectionsShown = 0
    public private(set) var connectionsSeen = 0
    public private(set) var anomaliesShown = 0
    static let settleNanoseconds: UInt64 = 1_000_000_000

    /// One line of a block, kept small: a replay holds every open connection's.
    enum Entry {
        case change(Change)
        /// An index into `Timeline.anomalies`.
        case anomaly(Int, UInt64)
        case event(Note)
        case snapshot(TCPState, UInt64)

        var mono: UInt64 {
            switch self {
            case .change(let c): c.mono
            case .anomaly(_, let m): m
            case .event(let e): e.mono
            case .snapshot(_, let m): m
            }
        }
    }

    /// What a block shows of a `StateChange`.
    struct Change {
        var mono: UInt64
        var from: TCPState
        var to: TCPState
        var step: Step
        var inferred: Bool
        var reason: String?
        /// The kernel's time in the previous state, where it knew it.
        var previousStateNanoseconds: UInt64?

        init(_ c: StateChange) {
            mono = c.monoNanoseconds
            from = c.from
            to = c.to
            step = c.step
            inferred = c.inferred
            reason = c.reason
            previousStateNanoseconds = c.kernel?.previousStateNanoseconds
        }
    }

    /// What a block shows of a kernel event that is not a step.
    struct Note {
        var mono: UInt64
        var kind: KernelEventKind
        var newState: KernelTCPState?
        var reset: ResetDirection?
        var retransmit: RetransmitKind?
        var timewait: TimewaitStep?
        var errorNumber: Int32

        init(_ e: KernelEvent) {
            mono = e.monoNanoseconds
            kind = e.kind
            newState = e.newState
            reset = e.reset
            retransmit = e.retransmit
            timewait = e.timewait
            errorNumber = e.errorNumber
        }
    }

    struct Timeline {
        var identity: ConnectionIdentity
        var entries: [Entry]
        var anomalies: [Anomaly] = []
        var state: TCPState?
        var first: UInt64
        var last: UInt64
        var ended = false
        var dataRetransmits = 0

        /// Room for a whole handshake and close from the start, instead of
        /// growing the entries 1, 2, 4, 8 (three reallocations per connection).
        init(identity: ConnectionIdentity, first: UInt64) {
            self.identity = identity
            entries = []
            entries.reserveCapacity(8)
            self.first = first
            last = first
        }

        /// Starts over for another connection, keeping the arrays' storage.
        mutating func reuse(identity: ConnectionIdentity, first: UInt64) {
            self.identity = identity
            entries.removeAll(keepingCapacity: true)
            anomalies.removeAll(keepingCapacity: true)
            state = nil
            self.first = first
            last = first
            ended = false
            dataRetransmits = 0
        }
    }

    public init(clock: WallClock, selection: ReplaySelection = ReplaySelection()) {
        self.clock = clock
        self.selection = selection
    }

    /// Adds one output of the engine; writes the blocks that are settled.
    public mutating func add(_ output: EngineOutput, to out: inout OutputBuffer) {
        let mono: UInt64
        switch output {
        case .change(let c):
            mono = c.monoNanoseconds
            // The 2MSL expiry of a block already written: the block said when.
            if c.kernel == nil && openSlot(of: c.connection.conn, hash: hash(c.connection.conn)) == nil { return }
            record(c.connection, mono) { t in
                t.entries.append(.change(Change(c)))
                t.state = c.to
                if (c.to == .closed || c.to == .timeWait) && !t.ended {
                    t.ended = true
                    return true
                }
                return false
            }
        case .anomaly(let a):
            mono = a.monoNanoseconds
            record(a.connection, mono) { t in
                t.entries.append(.anomaly(t.anomalies.count, mono))
                t.anomalies.append(a)
                return false
            }
        case .event(let e):
            mono = e.monoNanoseconds
            if e.noSocket {
                writeSocketless(e, to: &out)
                return
            }
            record(ConnectionIdentity(e), mono) { t in
                if e.kind == .retransmit && e.retransmit == .data {
                    t.dataRetransmits += 1
                } else {
                    t.entries.append(.event(Note(e)))
                }
                return false
            }
        case .snapshot(let id, let state, _, let m, _):
            mono = m
            record(id, mono) { t in
                t.entries.append(.snapshot(state, m))
                t.state = state
                return false
            }
        }
        writeSettled(before: mono, to: &out)
    }

    /// Applies `change` to the connection's timeline in place (a copy out of
    /// the dictionary would copy its entries on every append); `change`
    /// returns true when the connection just ended.
    @inline(__always)
    private mutating func record(_ identity: ConnectionIdentity, _ mono: UInt64, _ change: (inout Timeline) -> Bool) {
        let conn = identity.conn
        guard selection.conn == nil || selection.conn == conn else { return }
        let h = hash(conn)
        let slot: Int
        if let known = openSlot(of: conn, hash: h) {
            slot = Int(known)
        } else {
            slot = takeSlot(identity, mono)
            open.insert(Int32(slot), hash: h)
            connectionsSeen += 1
        }
        slots[slot].identity = identity
        if mono > slots[slot].last { slots[slot].last = mono }
        if change(&slots[slot]) { ended.append((conn, mono)) }
    }

    private func hash(_ conn: ConnectionID) -> Int { SlotIndex.hash(conn, seed: seed) }

    private func openSlot(of conn: ConnectionID, hash: Int) -> Int32? {
        open.find(hash) { slots[Int($0)].identity.conn == conn }
    }

    private mutating func takeSlot(_ identity: ConnectionIdentity, _ mono: UInt64) -> Int {
        if let slot = freeSlots.popLast() {
            slots[slot].reuse(identity: identity, first: mono)
            return slot
        }
        slots.append(Timeline(identity: identity, first: mono))
        return slots.count - 1
    }

    /// Writes the block of a connection that is over, and frees its slot.
    private mutating func writeAndRemove(_ conn: ConnectionID, to out: inout OutputBuffer) -> Bool {
        let h = hash(conn)
        guard let found = openSlot(of: conn, hash: h) else { return false }
        open.remove(found, hash: h)
        let slot = Int(found)
        if shows(slots[slot]) {
            connectionsShown += 1
            anomaliesShown += slots[slot].anomalies.count
            // Static, and the timeline inout: it is read in place (passed by
            // value it was copied, its arrays retained, for every connection).
            Self.write(&slots[slot], clock: &clock, to: &out)
        }
        freeSlots.append(slot)
        return true
    }

    /// Whether a connection's block is shown (--anomalies-only, --since, --until).
    private func shows(_ t: Timeline) -> Bool {
        if selection.anomaliesOnly && t.anomalies.isEmpty { return false }
        if let since = selection.sinceMono, t.last < since { return false }
        if let until = selection.untilMono, t.first > until { return false }
        return true
    }

    /// Writes the blocks of connections that ended more than a second before `mono`.
    private mutating func writeSettled(before mono: UInt64, to out: inout OutputBuffer) {
        while endedHead < ended.count, ended[endedHead].at.addingSaturating(Self.settleNanoseconds) <= mono {
            let conn = ended[endedHead].conn
            endedHead += 1
            _ = writeAndRemove(conn, to: &out)
        }
        if endedHead > 1024 && endedHead * 2 > ended.count {
            ended.removeFirst(endedHead)
            endedHead = 0
        }
    }

    /// Writes the next block still held at the end of the log (those that
    /// ended first, then the open ones by first sight); false when none is
    /// left. One at a time, so the caller can flush in between.
    public mutating func finishOne(to out: inout OutputBuffer) -> Bool {
        while endedHead < ended.count {
            let conn = ended[endedHead].conn
            endedHead += 1
            if writeAndRemove(conn, to: &out) { return true }
        }
        // By first sight; ties by connection id, so that the output is the same every run.
        if held == nil {
            held = open.allSlots.map { (slots[Int($0)].first, slots[Int($0)].identity.conn) }.sorted { $0 < $1 }.map(\.1)[...]
        }
        while let conn = held?.popFirst() {
            if writeAndRemove(conn, to: &out) { return true }
        }
        return false
    }

    /// Writes every block still held.
    public mutating func finish(to out: inout OutputBuffer) {
        while finishOne(to: &out) {}
    }

    private static func write(_ t: inout Timeline, clock: inout WallClock, to out: inout OutputBuffer) {
        let id = t.identity
        out.append("conn " as StaticString)
        out.append(connection: id.conn)
        out.append("  " as StaticString)
        out.append(endpoints: id)
        out.append("  " as StaticString)
        if id.ownerKnown {
            out.append("pid " as StaticString)
            out.append(decimal: UInt64(id.owner.pid))
            out.append(" (" as StaticString)
            out.appendEscapedText(id.owner.comm)
            out.append(UInt8(ascii: ")"))
            if var unit = id.owner.cgroup.info?.unit {
                out.append("  unit " as StaticString)
                unit.withUTF8 { out.appendEscapedText(UnsafeRawBufferPointer($0)) }
            }
        } else {
            out.append("owner unknown" as StaticString)
        }
        out.append("  netns " as StaticString)
        out.append(decimal: UInt64(id.netns))
        out.append("  from " as StaticString)
        clock.appendRFC3339(mono: t.first, to: &out)
        out.append(UInt8(ascii: "\n"))

        var since: UInt64?
        for entry in t.entries {
            out.append("  " as StaticString)
            clock.appendTimeOfDay(mono: entry.mono, to: &out)
            out.append("  " as StaticString)
            let start = out.count
            switch entry {
            case .change(let c):
                out.append(c.from.nameBytes)
                out.pad(from: start, to: 13)
                out.append("-> " as StaticString)
                out.append(c.to.nameBytes)
                out.pad(from: start, to: 30)
                out.append(c.step.nameBytes)
                if c.inferred { out.append(" (inferred)" as StaticString) }
                if let reason = c.reason {
                    out.append(UInt8(ascii: " "))
                    out.append(reason)
                }
                // Time in the state it left: from the previous change, or the kernel's own count.
                let spent: UInt64? = since.map { c.mono >= $0 ? c.mono - $0 : 0 } ?? c.previousStateNanoseconds
                if let spent, c.from != .closed || since != nil {
                    out.pad(from: start, to: 60)
                    out.append("after " as StaticString)
                    Self.appendDuration(spent, to: &out)
                    out.append(" in " as StaticString)
                    out.append(c.from.nameBytes)
                }
                since = c.mono
            case .snapshot(let s, let mono):
                out.append("open when the trace started, in " as StaticString)
                out.append(s.nameBytes)
                since = mono
            case .anomaly(let index, _):
                let a = t.anomalies[index]
                out.append(a.severity == .critical ? "!!! " as StaticString : "!! " as StaticString)
                out.append(a.kind.rawValue)
                out.append(": " as StaticString)
                out.append(a.detail)
            case .event(let e):
                switch e.kind {
                case .reset:
                    out.append(e.reset == .sent ? "RST sent" as StaticString : "RST received" as StaticString)
                case .error:
                    out.append("socket error " as StaticString)
                    ErrnoName.append(e.errorNumber, to: &out)
                case .retransmit:
                    out.append("retransmitted " as StaticString)
                    out.append((e.retransmit ?? .data).name)
                case .listenDrop:
                    out.append("segment dropped: accept queue full" as StaticString)
                case .transition:
                    if e.timewait == .handoff {
                        out.append("closed by the application; the kernel holds it in a timewait socket" as StaticString)
                    } else if let tw = e.timewait {
                        out.append("timewait socket: " as StaticString)
                        out.append(tw.name)
                    } else {
                        out.append("close() called; the kernel keeps it in its state" as StaticString)
                    }
                case .accept:
                    out.append("accepted" as StaticString)
                }
                if let s = e.newState {
                    out.append(" (kernel state " as StaticString)
                    out.append(s.nameBytes)
                    out.append(UInt8(ascii: ")"))
                }
            }
            out.append(UInt8(ascii: "\n"))
        }
        if t.dataRetransmits > 0 {
            out.append("  data segments retransmitted: " as StaticString)
            out.append(decimal: UInt64(t.dataRetransmits))
            out.append(UInt8(ascii: "\n"))
        }
        out.append("  " as StaticString)
        switch t.state {
        case .timeWait?:
            out.append("in TIME_WAIT until " as StaticString)
            clock.appendTimeOfDay(mono: (since ?? t.last).addingSaturating(HandshakeEngine.timeWaitNanoseconds), to: &out)
            out.append(" (2MSL, inferred)" as StaticString)
        case .closed?:
            out.append("CLOSED" as StaticString)
        case let s?:
            out.append("still " as StaticString)
            out.append(s.nameBytes)
            out.append(" at the end of the log" as StaticString)
        case nil:
            out.append("state unknown (no transition seen)" as StaticString)
        }
        if t.last > t.first {
            out.append(", lived " as StaticString)
            Self.appendDuration(t.last - t.first, to: &out)
            out.append(" in this log" as StaticString)
        }
        out.append("\n\n" as StaticString)
    }

    /// An RST this host sent for a segment no socket owned: one line of its own.
    private mutating func writeSocketless(_ e: KernelEvent, to out: inout OutputBuffer) {
        guard selection.conn == nil, !selection.anomaliesOnly, selection.inWindow(e.monoNanoseconds) else { return }
        out.append("no socket  " as StaticString)
        clock.appendRFC3339(mono: e.monoNanoseconds, to: &out)
        out.append("  RST sent to " as StaticString)
        out.append(address: e.remoteAddress, family: e.family)
        out.append(UInt8(ascii: ":"))
        out.append(decimal: UInt64(e.remotePort))
        out.append(": its segment to " as StaticString)
        out.append(address: e.localAddress, family: e.family)
        out.append(UInt8(ascii: ":"))
        out.append(decimal: UInt64(e.localPort))
        out.append(" found no socket (nothing listens there)\n\n" as StaticString)
    }

    /// "0.044 ms", "1.250 s", "2 min 5 s".
    static func appendDuration(_ ns: UInt64, to out: inout OutputBuffer) {
        if ns < 1_000_000_000 {
            out.append(decimal: ns / 1_000_000)
            out.append(UInt8(ascii: "."))
            out.append(decimal: ns / 1000 % 1000, zeroPaddedTo: 3)
            out.append(" ms" as StaticString)
        } else if ns < 120_000_000_000 {
            out.append(decimal: ns / 1_000_000_000)
            out.append(UInt8(ascii: "."))
            out.append(decimal: ns / 1_000_000 % 1000, zeroPaddedTo: 3)
            out.append(" s" as StaticString)
        } else {
            out.append(decimal: ns / 60_000_000_000)
            out.append(" min " as StaticString)
            out.append(decimal: ns / 1_000_000_000 % 60)
            out.append(" s" as StaticString)
        }
    }
}
