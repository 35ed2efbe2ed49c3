/// How the text view writes each line's time.
public enum TimeFormat: String, Sendable, CaseIterable {
    /// `07:55:43.123456`, UTC (the default, as tcpstates' -T).
    case utc
    /// `08:55:43.123456`, in the host's zone at start.
    case local
    /// `2026-12-03T07:55:43.123456Z`: date and time, UTC (RFC 3339).
    case iso
    /// `2026-12-03T08:55:43.123456+01:00`: date and time in the host's zone.
    case isoLocal = "iso-local"
    /// `12.345678`: seconds since the trace started.
    case relative
}

/// Aligned columns for a person, or one record per line for a spreadsheet.
public enum TextStyle: String, Sendable, CaseIterable {
    case aligned, csv, tsv
}

/// The text view's columns, in their order.
public enum TextColumn: String, Sendable, CaseIterable {
    case time
    /// What the line is: transition, retransmit, reset, error, listen_drop, anomaly, snapshot (and, for
    /// the lines that count, snapshot_digest, anomaly_burst, lost, untracked).
    case event
    case pid, comm
    /// The owner's systemd unit, from its cgroup (`-w`, or chosen with `--columns`).
    case unit
    case laddr, lport, raddr, rport
    /// The state before and after (a single state for lines that are not changes).
    case old, new
    /// Time in the old state.
    case ms
    /// The documents' step, or what happened (`!! RST sent (no socket)`, an anomaly's sentence).
    case step

    /// Aligned text shows all but `event` (its lines say it with `!!`) and
    /// `unit` (`-w` or `--columns` adds it); CSV and TSV all.
    public static func defaults(_ style: TextStyle) -> [TextColumn] {
        style == .aligned ? wide(style).filter { $0 != .unit } : allCases
    }

    /// `-w`'s columns: the defaults and the unit.
    public static func wide(_ style: TextStyle) -> [TextColumn] {
        style == .aligned ? allCases.filter { $0 != .event } : allCases
    }
}

/// Writes the default terminal view: one aligned line per event, in the
/// spirit of libbpf-tools `tcpstates`, with every byte that could act on the
/// terminal escaped; or the same fields as CSV or TSV, with a chosen time
/// format and columns (`-T`, `--csv`/`--tsv`, `-w`, `--columns`).
public struct TextLinesWriter: Sendable {
    public var clock: WallClock
    /// Width of the address columns: 15 fits IPv4, 39 any IPv6 address.
    /// A longer address widens them to 39 for the rest of the run, under a new header.
    public private(set) var addressWidth: Int

    /// Show the documents' state names and steps (from the engine) instead of the kernel's.
    public var documented: Bool
    public let style: TextStyle
    public let timeFormat: TimeFormat
    /// Seconds east of UTC for the local formats (the host's zone at start: the core reads no zone files).
    public let utcOffsetSeconds: Int
    /// `relative`'s zero: when the trace started (kernel monotonic ns).
    public let startMono: UInt64
    /// Bit `Layout.index(c)` set: column `c` is shown (a mask, so a layout copies without a retain).
    private let shown: UInt16
    private let last: TextColumn
    /// The header has been written: a widening writes it again.
    private var headerShown = false
    private var localClock: WallClock

    public init(clock: WallClock, addressWidth: Int = 15, documented: Bool = false, style: TextStyle = .aligned,
                timeFormat: TimeFormat = .utc, columns: [TextColumn]? = nil, utcOffsetSeconds: Int = 0, startMono: UInt64 = 0) {
        self.clock = clock
        self.addressWidth = addressWidth
        self.documented = documented
        self.style = style
        self.timeFormat = timeFormat
        self.utcOffsetSeconds = utcOffsetSeconds
        self.startMono = startMono
        localClock = WallClock(bootOffsetNanoseconds: clock.bootOffsetNanoseconds.addingSaturating(Int64(utcOffsetSeconds) * 1_000_000_000))
        let chosen = columns ?? TextColumn.defaults(style)
        shown = chosen.reduce(0) { $0 | 1 << Layout.index($1) }
        last = TextColumn.allCases.last { chosen.contains($0) } ?? .step
    }

    /// Parses `--columns time,pid,laddr` (names as in `TextColumn`).
    public static func columns(_ list: String) -> Result<[TextColumn], ColumnError> {
        var out: [TextColumn] = []
        for name in list.split(separator: ",", omittingEmptySubsequences: false) {
            let trimmed = name.trimmingSpaces
            guard let c = TextColumn(rawValue: trimmed) else { return .failure(ColumnError(name: trimmed)) }
            if !out.contains(c) { out.append(c) }
        }
        return out.isEmpty ? .failure(ColumnError(name: "")) : .success(out)
    }

    /// A name `--columns` does not know.
    public struct ColumnError: Error, Sendable { public let name: String }

    // MARK: - Fields

    private var timeWidth: Int { Layout.timeWidth(timeFormat) }

    /// The columns as they are now (the address width can grow): a copy, so a
    /// field's writer may use the clock (which caches) while it is in use.
    private var layout: Layout {
        Layout(style: style, shown: shown, last: last, addressWidth: addressWidth, documented: documented, timeWidth: timeWidth)
    }
    private mutating func appendTime(mono: UInt64, to out: inout OutputBuffer) {
        switch timeFormat {
        case .utc: clock.appendTimeOfDay(mono: mono, to: &out)
        case .local: localClock.appendTimeOfDay(mono: mono, to: &out)
        case .iso: clock.appendDateTime(mono: mono, to: &out); out.append(UInt8(ascii: "Z"))
        case .isoLocal:
            localClock.appendDateTime(mono: mono, to: &out)
            Self.appendOffset(utcOffsetSeconds, to: &out)
        case .relative:
            let ns = mono.subtractingSaturating(startMono)
            out.append(decimal: ns / 1_000_000_000)
            out.append(UInt8(ascii: "."))
            out.append(decimal: ns / 1000 % 1_000_000, zeroPaddedTo: 6)
        }
    }

    /// `+01:00`, `-05:30`, `+00:00`.
    static func appendOffset(_ seconds: Int, to out: inout OutputBuffer) {
        out.append(seconds < 0 ? UInt8(ascii: "-") : UInt8(ascii: "+"))
        let m = seconds.magnitude / 60
        out.append(decimal: UInt64(m / 60), zeroPaddedTo: 2)
        out.append(UInt8(ascii: ":"))
        out.append(decimal: UInt64(m % 60), zeroPaddedTo: 2)
    }

    // MARK: - Lines

    /// Appends what the engine emitted: documented transitions, events, anomalies.
    public mutating func append(_ output: EngineOutput, to out: inout OutputBuffer) {
        switch output {
        case .event(let e):
            append(e, to: &out)
        case .change(let change):
            appendPrefix(change.connection, mono: change.monoNanoseconds, event: "transition", to: &out)
            layout.field(.old, to: &out) { $0.append(change.from.rawValue) }
            layout.field(.new, to: &out) { o in
                if style == .aligned { o.append("-> " as StaticString) }
                o.append(change.to.rawValue)
            }
            layout.field(.ms, to: &out) { o in
                if let prev = change.kernel?.previousStateNanoseconds { Self.appendMilliseconds(prev, to: &o) } else if style == .aligned { o.append(UInt8(ascii: "-")) }
            }
            layout.field(.step, to: &out) { o in
                o.append(change.step.rawValue)
                if change.inferred { o.append(" (inferred)" as StaticString) }
                if let reason = change.reason {
                    o.append(" " as StaticString)
                    o.append(reason)
                }
            }
            endLine(&out)
        case .snapshot(let id, let state, _, let mono, _):
            appendPrefix(id, mono: mono, event: "snapshot", to: &out)
            appendDetail(state: nil, to: &out) { o in
                o.append("(open at start) " as StaticString)
                o.append(state.rawValue)
            } newState: { $0.append(state.rawValue) }
            endLine(&out)
        case .anomaly(let a):
            appendPrefix(a.connection, mono: a.monoNanoseconds, event: "anomaly", to: &out)
            appendDetail(state: nil, to: &out) { o in
                o.append(a.severity == .critical ? "!!! " as StaticString : "!! " as StaticString)
                o.append(a.kind.rawValue)
                o.append(": " as StaticString)
                o.append(a.detail)
            }
            endLine(&out)
        }
    }

    /// A line that is not a change: its text right after the state column
    /// (aligned), or in the step field with the new and ms fields empty (CSV, TSV).
    private mutating func appendDetail(state: ((inout OutputBuffer) -> Void)?, to out: inout OutputBuffer,
                                       _ detail: (inout OutputBuffer) -> Void, newState: ((inout OutputBuffer) -> Void)? = nil) {
        if let state { layout.field(.old, to: &out, state) } else if style != .aligned { layout.field(.old, to: &out) { _ in } }
        if style == .aligned {
            // The text takes the columns left: after the state, or where the state would be.
            if layout.shows(.step) || layout.shows(.new) {
                detail(&out)
            }
        } else {
            layout.field(.new, to: &out) { o in newState?(&o) }
            layout.field(.ms, to: &out) { _ in }
            layout.field(.step, to: &out, detail)
        }
    }

    private mutating func endLine(_ out: inout OutputBuffer) {
        // Aligned text pads the last field it wrote; nothing should trail a line.
        if style == .aligned {
            let n = out.withUnsafeBytes { raw in
                var n = raw.count
                while n > 0 && raw[n - 1] == 0x20 { n -= 1 }
                return n
            }
            out.truncate(to: n)
        }
        out.append(UInt8(ascii: "\n"))
    }

    private mutating func appendPrefix(_ id: ConnectionIdentity, mono: UInt64, event: StaticString, to out: inout OutputBuffer) {
        appendPrefix(mono: mono, event: event, owner: id.owner, ownerKnown: id.ownerKnown, family: id.family, local: id.local, remote: id.remote, to: &out)
    }

    /// Time, owner and endpoint columns.
    private mutating func appendPrefix(mono: UInt64, event: StaticString, owner: Owner, ownerKnown: Bool, family: AddressFamily,
                                       local: Endpoint, remote: Endpoint, to out: inout OutputBuffer) {
        if style == .aligned && addressWidth < 39 && family == .ipv6 { widenIfNeeded(local, remote, to: &out) }
        layout.field(.time, to: &out) { o in appendTime(mono: mono, to: &o) }
        layout.field(.event, to: &out) { $0.append(event) }
        layout.field(.pid, to: &out) { o in if ownerKnown { o.append(decimal: UInt64(owner.pid)) } else if style == .aligned { o.append(UInt8(ascii: "-")) } }
        layout.field(.comm, to: &out) { o in if ownerKnown { o.appendEscapedText(owner.comm) } else if style == .aligned { o.append(UInt8(ascii: "-")) } }
        layout.field(.unit, to: &out) { o in
            if ownerKnown, var unit = owner.cgroup.info?.unit { unit.withUTF8 { o.appendEscapedText(UnsafeRawBufferPointer($0)) } } else if style == .aligned { o.append(UInt8(ascii: "-")) }
        }
        layout.field(.laddr, to: &out) { $0.append(address: local.address, family: family) }
        layout.field(.lport, to: &out) { $0.append(decimal: UInt64(local.port)) }
        layout.field(.raddr, to: &out) { $0.append(address: remote.address, family: family) }
        layout.field(.rport, to: &out) { $0.append(decimal: UInt64(remote.port)) }
    }

    /// An address longer than the columns: they take 39 from now on, under a new header.
    private mutating func widenIfNeeded(_ local: Endpoint, _ remote: Endpoint, to out: inout OutputBuffer) {
        var probe = OutputBuffer(capacity: 48)
        probe.append(address: local.address, family: .ipv6)
        var longest = probe.count
        probe.removeAll()
        probe.append(address: remote.address, family: .ipv6)
        longest = max(longest, probe.count)
        guard longest > addressWidth else { return }
        addressWidth = 39
        if headerShown { appendHeader(to: &out) }
    }

    private static func appendMilliseconds(_ ns: UInt64, to out: inout OutputBuffer) {
        out.append(decimal: ns / 1_000_000)
        out.append(UInt8(ascii: "."))
        out.append(decimal: ns / 1000 % 1000, zeroPaddedTo: 3)
    }

    /// The column titles (CSV and TSV: the field names).
    public mutating func appendHeader(to out: inout OutputBuffer) {
        headerShown = true
        for c in TextColumn.allCases {
            layout.field(c, to: &out) { o in
                if style != .aligned { o.append(c.rawValue); return }
                switch c {
                case .time:
                    switch timeFormat {
                    case .utc, .iso: o.append("TIME(UTC)" as StaticString)
                    case .local, .isoLocal:
                        o.append("TIME(" as StaticString)
                        Self.appendOffset(utcOffsetSeconds, to: &o)
                        o.append(UInt8(ascii: ")"))
                    case .relative: o.append("TIME(s)" as StaticString)
                    }
                case .event: o.append("EVENT" as StaticString)
                case .pid: o.append("PID" as StaticString)
                case .comm: o.append("COMM" as StaticString)
                case .unit: o.append("UNIT" as StaticString)
                case .laddr: o.append("LADDR" as StaticString)
                case .lport: o.append("LPORT" as StaticString)
                case .raddr: o.append("RADDR" as StaticString)
                case .rport: o.append("RPORT" as StaticString)
                case .old: o.append("OLDSTATE" as StaticString)
                case .new: o.append("-> NEWSTATE" as StaticString)
                case .ms: o.append("MS" as StaticString)
                case .step: if documented { o.append("STEP" as StaticString) }
                }
            }
        }
        endLine(&out)
    }

    public mutating func append(_ e: KernelEvent, to out: inout OutputBuffer) {
        if e.kind == .accept { return }  // consumed by the live tracer, never a line
        let event: StaticString = switch e.kind {
        case .transition: "transition"
        case .retransmit: "retransmit"
        case .reset: "reset"
        case .listenDrop: "listen_drop"
        case .error: "error"
        case .accept: "accept"
        }
        appendPrefix(mono: e.monoNanoseconds, event: event, owner: e.owner, ownerKnown: e.ownerKnown, family: e.family, local: e.local, remote: e.remote, to: &out)
        let documented = self.documented
        let state: (inout OutputBuffer) -> Void = { o in Self.appendState(e.newState, documented: documented, to: &o) }
        switch e.kind {
        case .transition:
            layout.field(.old, to: &out) { o in Self.appendState(e.oldState, documented: documented, to: &o) }
            layout.field(.new, to: &out) { o in
                if style == .aligned { o.append("-> " as StaticString) }
                Self.appendState(e.newState, documented: documented, to: &o)
            }
            layout.field(.ms, to: &out) { o in
                if let prev = e.previousStateNanoseconds { Self.appendMilliseconds(prev, to: &o) } else if style == .aligned { o.append(UInt8(ascii: "-")) }
            }
            layout.field(.step, to: &out) { o in
                // The application closed; the kernel keeps the connection in a
                // timewait socket, still in FIN_WAIT_2.
                if documented, e.timewait == .handoff {
                    o.append("closed by the application; the kernel holds FIN_WAIT_2 in a timewait socket" as StaticString)
                } else if documented, e.oldState == e.newState {
                    // tcp_close_state() setting the state a closing socket already has.
                    o.append("unchanged (close() on a closing socket)" as StaticString)
                }
            }
        case .retransmit:
            appendDetail(state: state, to: &out) { o in
                o.append("!! retransmit " as StaticString)
                o.append((e.retransmit ?? .data).name)
            }
        case .reset:
            appendDetail(state: state, to: &out) { o in
                o.append("!! RST " as StaticString)
                o.append((e.reset ?? .received).name)
                if e.noSocket { o.append(" (no socket)" as StaticString) }
            }
        case .listenDrop:
            appendDetail(state: state, to: &out) { $0.append("!! dropped: listen queue full" as StaticString) }
        case .accept:
            break
        case .error:
            appendDetail(state: state, to: &out) { o in
                o.append("!! error " as StaticString)
                ErrnoName.append(e.errorNumber, to: &o)
            }
        }
        endLine(&out)
    }

    /// The kernel's name (--raw), or the documents' (FIN_WAIT_1, not FIN_WAIT1).
    private static func appendState(_ state: KernelTCPState?, documented: Bool, to out: inout OutputBuffer) {
        guard let state else { out.append(UInt8(ascii: "?")); return }
        if documented { out.append(TCPState(kernel: state).rawValue) } else { out.append(state.nameBytes) }
    }

    /// A line of its own words (the snapshot's digest, an anomaly burst, a loss):
    /// after the time (aligned), or in the step field of a record named `event`.
    public mutating func appendNote(mono: UInt64, event: StaticString, to out: inout OutputBuffer, _ text: (inout OutputBuffer) -> Void) {
        if style == .aligned {
            let start = out.count
            appendTime(mono: mono, to: &out)
            out.pad(from: start, to: timeWidth)
            text(&out)
            out.append(UInt8(ascii: "\n"))
            return
        }
        for c in TextColumn.allCases {
            layout.field(c, to: &out) { o in
                switch c {
                case .time: appendTime(mono: mono, to: &o)
                case .event: o.append(event)
                case .step: text(&o)
                default: break
                }
            }
        }
        out.append(UInt8(ascii: "\n"))
    }

    /// The anomalies of one kind on one endpoint a second that had no line of their own.
    public mutating func appendBurst(_ b: AnomalyRateLimit.Burst, to out: inout OutputBuffer) {
        appendNote(mono: b.end, event: "anomaly_burst", to: &out) { o in
            o.append(b.severity == .critical ? "!!! " as StaticString : "!! " as StaticString)
            o.append(b.text)
        }
    }

    /// A line that says events were lost, as soon as the loss is counted.
    public mutating func appendLost(count: UInt64, total: UInt64, mono: UInt64, to out: inout OutputBuffer) {
        appendNote(mono: mono, event: "lost", to: &out) { o in
            o.append("*** LOST " as StaticString)
            o.append(decimal: count)
            o.append(" events (" as StaticString)
            o.append(decimal: total)
            o.append(" in all): the ring buffer was full; raise --buffer-size" as StaticString)
        }
    }

    /// A line that says a kernel table filled, as soon as it is counted.
    public mutating func appendUntracked(_ gaps: TableGaps, mono: UInt64, to out: inout OutputBuffer) {
        appendNote(mono: mono, event: "untracked", to: &out) { o in
            o.append("*** UNTRACKED " as StaticString)
            o.append(gaps.phrases.joined(separator: "; "))
        }
    }
}

/// Which columns a writer shows and how wide they are.
private struct Layout {
    let style: TextStyle
    let shown: UInt16
    let last: TextColumn
    let addressWidth: Int
    let documented: Bool
    let timeWidth: Int

    static func timeWidth(_ f: TimeFormat) -> Int {
        switch f {
        case .utc, .local: 15
        case .iso: 27
        case .isoLocal: 32
        case .relative: 12
        }
    }

    func width(_ c: TextColumn) -> Int {
        switch c {
        case .time: timeWidth
        case .event: 11
        case .pid: 7
        case .comm: 15
        case .unit: 24
        case .laddr, .raddr: addressWidth
        case .lport, .rport: 5
        // The documents' SYN_RECEIVED is one longer than the kernel's ESTABLISHED.
        case .old: documented ? 12 : 11
        case .new: documented ? 15 : 14
        case .ms: 10
        case .step: 0
        }
    }

    @inline(__always) func shows(_ c: TextColumn) -> Bool { shown & 1 << Self.index(c) != 0 }

    @inline(__always) static func index(_ c: TextColumn) -> UInt16 {
        switch c {
        case .time: 0
        case .event: 1
        case .pid: 2
        case .comm: 3
        case .laddr: 4
        case .lport: 5
        case .raddr: 6
        case .rport: 7
        case .old: 8
        case .new: 9
        case .ms: 10
        case .step: 11
        case .unit: 12
        }
    }

    /// Writes one field: padded to its column (aligned), or after a separator, quoted where CSV needs it.
    @inline(__always)
    func field(_ c: TextColumn, to out: inout OutputBuffer, _ write: (inout OutputBuffer) -> Void) {
        guard shows(c) else { return }
        switch style {
        case .aligned:
            let start = out.count
            write(&out)
            if c != last { out.pad(from: start, to: width(c)) }
        case .tsv:
            if !isFirst(c) { out.append(UInt8(ascii: "\t")) }
            write(&out)
        case .csv:
            if !isFirst(c) { out.append(UInt8(ascii: ",")) }
            let start = out.count
            write(&out)
            quoteIfNeeded(from: start, in: &out)
        }
    }

    private func isFirst(_ c: TextColumn) -> Bool {
        for other in TextColumn.allCases {
            if other == c { return true }
            if shows(other) { return false }
        }
        return true
    }

    /// RFC 4180: a field holding a comma, a quote or a line break is quoted, its quotes doubled.
    private func quoteIfNeeded(from start: Int, in out: inout OutputBuffer) {
        let bytes: [UInt8] = out.withUnsafeBytes { Array($0[start...]) }
        guard bytes.contains(where: { $0 == UInt8(ascii: ",") || $0 == UInt8(ascii: "\"") || $0 == 0x0a || $0 == 0x0d }) else { return }
        out.truncate(to: start)
        out.append(UInt8(ascii: "\""))
        for b in bytes {
            if b == UInt8(ascii: "\"") { out.append(b) }
            out.append(b)
        }
        out.append(UInt8(ascii: "\""))
    }
}

extension Substring {
    fileprivate var trimmingSpaces: String {
        String(drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
    }
}

/// What `trace`'s text options chose: style, time format, columns, width.
public struct TextFormat: Sendable {
    public var style: TextStyle = .aligned
    public var timeFormat: TimeFormat = .utc
    /// nil: `TextColumn.defaults(style)`.
    public var columns: [TextColumn]?
    /// Address columns 39 wide from the start (-w; -6 implies it).
    public var wide = false
    /// The host's zone at start, for the local time formats.
    public var utcOffsetSeconds = 0

    public init() {}

    /// The writer for a run that started at `startMono`.
    public func writer(clock: WallClock, documented: Bool, startMono: UInt64) -> TextLinesWriter {
        TextLinesWriter(clock: clock, addressWidth: wide ? 39 : 15, documented: documented, style: style, timeFormat: timeFormat,
                        columns: columns, utcOffsetSeconds: utcOffsetSeconds, startMono: startMono)
    }
}
