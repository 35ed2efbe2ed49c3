/// Writes the default terminal view: one aligned line per event, in the
/// spirit of libbpf-tools `tcpstates`, with every byte that could act on the
/// terminal escaped.
public struct TextLinesWriter: Sendable {
    public var clock: WallClock
    /// Width of the address columns: 15 fits IPv4, 39 any IPv6 address.
    public var addressWidth: Int

    public init(clock: WallClock, addressWidth: Int = 15) {
        self.clock = clock
        self.addressWidth = addressWidth
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
        out.append("-> NEWSTATE     MS\n" as StaticString)
    }

    public mutating func append(_ e: KernelEvent, to out: inout OutputBuffer) {
        var start = out.count
        clock.appendTimeOfDay(mono: e.monoNanoseconds, to: &out)
        out.pad(from: start, to: 15); start = out.count
        if e.ownerKnown {
            out.append(decimal: UInt64(e.pid))
        } else {
            out.append(UInt8(ascii: "-"))
        }
        out.pad(from: start, to: 7); start = out.count
        if e.ownerKnown { out.appendEscapedText(e.comm) } else { out.append(UInt8(ascii: "-")) }
        out.pad(from: start, to: 15); start = out.count
        out.append(address: e.localAddress, family: e.family)
        out.pad(from: start, to: addressWidth); start = out.count
        out.append(decimal: UInt64(e.localPort))
        out.pad(from: start, to: 5); start = out.count
        out.append(address: e.remoteAddress, family: e.family)
        out.pad(from: start, to: addressWidth); start = out.count
        out.append(decimal: UInt64(e.remotePort))
        out.pad(from: start, to: 5); start = out.count
        switch e.kind {
        case .transition:
            appendState(e.oldState, to: &out)
            out.pad(from: start, to: 11); start = out.count
            out.append("-> " as StaticString)
            appendState(e.newState, to: &out)
            out.pad(from: start, to: 14)
            if let prev = e.previousStateNanoseconds {
                out.append(decimal: prev / 1_000_000)
                out.append(UInt8(ascii: "."))
                out.append(decimal: prev / 1000 % 1000, zeroPaddedTo: 3)
            } else {
                out.append(UInt8(ascii: "-"))
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

    /// A line that says events were lost, as soon as the loss is counted.
    public mutating func appendLost(count: UInt64, total: UInt64, mono: UInt64, to out: inout OutputBuffer) {
        clock.appendTimeOfDay(mono: mono, to: &out)
        out.append(" *** LOST " as StaticString)
        out.append(decimal: count)
        out.append(" events (" as StaticString)
        out.append(decimal: total)
        out.append(" in all): the ring buffer was full; raise --buffer-size\n" as StaticString)
    }
}
