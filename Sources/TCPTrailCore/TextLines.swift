/// Writes the default terminal view: one aligned line per event, in the
/// spirit of libbpf-tools `tcpstates`, with every byte that could act on the
/// terminal escaped.
public struct TextLinesWriter: Sendable {
    public var clock: WallClock
    /// Width of the address columns: 15 fits IPv4, 39 any IPv6 address.
    public var addressWidth: Int

    /// Show the documents' state names and steps (from the engine) instead of the kernel's.
    public var documented: Bool

    public init(clock: WallClock, addressWidth: Int = 15, documented: Bool = false) {
        self.clock = clock
        self.addressWidth = addressWidth
        self.documented = documented
    }

    /// Appends what the engine emitted: documented transitions, events, anomalies.
    public mutating func append(_ output: EngineOutput, to out: inout OutputBuffer) {
        switch output {
        case .event(let e):
            append(e, to: &out)
        case .change(let change):
            var start = out.count
            appendPrefix(change.connection, mono: change.monoNanoseconds, to: &out)
            start = out.count
            out.append(change.from.rawValue)
            out.pad(from: start, to: 11); start = out.count
            out.append("-> " as StaticString)
            out.append(change.to.rawValue)
            out.pad(from: start, to: 15)
            start = out.count
            if let prev = change.kernel?.previousStateNanoseconds {
                appendMilliseconds(prev, to: &out)
            } else {
                out.append(UInt8(ascii: "-"))
            }
            out.pad(from: start, to: 10)
            out.append(change.step.rawValue)
            if change.inferred { out.append(" (inferred)" as StaticString) }
            if let reason = change.reason {
                out.append(" " as StaticString)
                out.append(reason)
            }
            out.append(UInt8(ascii: "\n"))
        case .snapshot(let id, let state, _, let mono, _):
            appendPrefix(id, mono: mono, to: &out)
            out.append("(open at start) " as StaticString)
            out.append(state.rawValue)
            out.append(UInt8(ascii: "\n"))
        case .anomaly(let a):
            appendPrefix(a.connection, mono: a.monoNanoseconds, to: &out)
            out.append(a.severity == .critical ? "!!! " as StaticString : "!! " as StaticString)
            out.append(a.kind.rawValue)
            out.append(": " as StaticString)
            out.append(a.detail)
            out.append(UInt8(ascii: "\n"))
        }
    }

    private mutating func appendPrefix(_ id: ConnectionIdentity, mono: UInt64, to out: inout OutputBuffer) {
        appendPrefix(mono: mono, owner: id.owner, ownerKnown: id.ownerKnown, family: id.family, local: id.local, remote: id.remote, to: &out)
    }

    /// Time, owner and endpoint columns.
    private mutating func appendPrefix(mono: UInt64, owner: Owner, ownerKnown: Bool, family: AddressFamily,
                                       local: Endpoint, remote: Endpoint, to out: inout OutputBuffer) {
        var start = out.count
        clock.appendTimeOfDay(mono: mono, to: &out)
        out.pad(from: start, to: 15); start = out.count
        if ownerKnown { out.append(decimal: UInt64(owner.pid)) } else { out.append(UInt8(ascii: "-")) }
        out.pad(from: start, to: 7); start = out.count
        if ownerKnown { out.appendEscapedText(owner.comm) } else { out.append(UInt8(ascii: "-")) }
        out.pad(from: start, to: 15); start = out.count
        out.append(address: local.address, family: family)
        out.pad(from: start, to: addressWidth); start = out.count
        out.append(decimal: UInt64(local.port))
        out.pad(from: start, to: 5); start = out.count
        out.append(address: remote.address, family: family)
        out.pad(from: start, to: addressWidth); start = out.count
        out.append(decimal: UInt64(remote.port))
        out.pad(from: start, to: 5)
    }

    private func appendMilliseconds(_ ns: UInt64, to out: inout OutputBuffer) {
        out.append(decimal: ns / 1_000_000)
        out.append(UInt8(ascii: "."))
        out.append(decimal: ns / 1000 % 1000, zeroPaddedTo: 3)
    }

    /// The column titles.
    public func appendHeader(to out: inout OutputBuffer) {
        var start = out.count
        out.append("TIME(UTC)" as StaticString); out.pad(from: start, to: 15); start = out.count
        out.append("PID" as StaticString); out.pad(from: start, to: 7); start = out.count
        out.append("COMM" as StaticString); out.pad(from: start, to: 15); start = out.count
        out.append("LADDR" as StaticString); out.pad(from: start, to: addressWidth); start = out.count
        out.append("LPORT" as StaticString); out.pad(from: start, to: 5); start = out.count
        out.append("RADDR" as StaticString); out.pad(from: start, to: addressWidth); start = out.count
        out.append("RPORT" as StaticString); out.pad(from: start, to: 5); start = out.count
        out.append("OLDSTATE" as StaticString); out.pad(from: start, to: 11)
        out.append("-> NEWSTATE     MS" as StaticString)
        if documented { out.append("       STEP" as StaticString) }
        out.append(UInt8(ascii: "\n"))
    }

    public mutating func append(_ e: KernelEvent, to out: inout OutputBuffer) {
        if e.kind == .accept { return }  // consumed by the live tracer, never a line
        appendPrefix(mono: e.monoNanoseconds, owner: e.owner, ownerKnown: e.ownerKnown, family: e.family, local: e.local, remote: e.remote, to: &out)
        var start = out.count
        switch e.kind {
        case .transition:
            appendState(e.oldState, to: &out)
            out.pad(from: start, to: 11); start = out.count
            out.append("-> " as StaticString)
            appendState(e.newState, to: &out)
            out.pad(from: start, to: 14)
            start = out.count
            if let prev = e.previousStateNanoseconds {
                appendMilliseconds(prev, to: &out)
            } else {
                out.append(UInt8(ascii: "-"))
            }
            // The application closed; the kernel keeps the connection in a
            // timewait socket, still in FIN_WAIT_2.
            if documented, e.timewait == .handoff {
                out.pad(from: start, to: 10)
                out.append("closed by the application; the kernel holds FIN_WAIT_2 in a timewait socket" as StaticString)
            }
        case .retransmit:
            appendState(e.newState, to: &out)
            out.pad(from: start, to: 11)
            out.append("!! retransmit " as StaticString)
            out.append((e.retransmit ?? .data).name)
        case .reset:
            appendState(e.newState, to: &out)
            out.pad(from: start, to: 11)
            out.append("!! RST " as StaticString)
            out.append((e.reset ?? .received).name)
            if e.noSocket { out.append(" (no socket)" as StaticString) }
        case .listenDrop:
            appendState(e.newState, to: &out)
            out.pad(from: start, to: 11)
            out.append("!! dropped: listen queue full" as StaticString)
        case .accept:
            break
        case .error:
            appendState(e.newState, to: &out)
            out.pad(from: start, to: 11)
            out.append("!! error " as StaticString)
            ErrnoName.append(e.errorNumber, to: &out)
        }
        out.append(UInt8(ascii: "\n"))
    }

    private func appendState(_ state: KernelTCPState?, to out: inout OutputBuffer) {
        if let state { out.append(state.nameBytes) } else { out.append(UInt8(ascii: "?")) }
    }

    /// The anomalies of one kind on one endpoint a second that had no line of their own.
    public mutating func appendBurst(_ b: AnomalyRateLimit.Burst, to out: inout OutputBuffer) {
        let start = out.count
        clock.appendTimeOfDay(mono: b.end, to: &out)
        out.pad(from: start, to: 15)
        out.append(b.severity == .critical ? "!!! " as StaticString : "!! " as StaticString)
        out.append(b.text)
        out.append(UInt8(ascii: "\n"))
    }

    /// A line that says events were lost, as soon as the loss is counted.
    public mutating func appendLost(count: UInt64, total: UInt64, mono: UInt64, to out: inout OutputBuffer) {
        clock.appendTimeOfDay(mono: mono, to: &out)
        out.append(" *** LOST " as StaticString)
        out.append(decimal: count)
        out.append(" events (" as StaticString)
        out.append(decimal: total)
        out.append(" in all): the ring buffer was full; raise --buffer-size\n" as StaticString)
    }

    /// A line that says a kernel table filled, as soon as it is counted.
    public mutating func appendUntracked(_ gaps: TableGaps, mono: UInt64, to out: inout OutputBuffer) {
        clock.appendTimeOfDay(mono: mono, to: &out)
        out.append(" *** UNTRACKED " as StaticString)
        out.append(gaps.phrases.joined(separator: "; "))
        out.append(UInt8(ascii: "\n"))
    }
}
