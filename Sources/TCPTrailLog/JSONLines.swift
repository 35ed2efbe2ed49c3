import TCPTrailCore
import TCPTrailHost
/// Writes records in the JSON Lines contract v1 (docs/event-log.md).
///
/// Records are written by hand into a reused `OutputBuffer`: Foundation's
/// JSONEncoder allocates per record and is far too slow for the event path.
public struct JSONLinesWriter: Sendable {
    /// The contract version in every record's `v`.
    public static let formatVersion = 1

    public var clock: WallClock
    /// The `seq` of the next record.
    public private(set) var nextSequence: UInt64 = 1
    /// Records written, by `LogRecordType.rawValue`.
    public private(set) var recordCounts = [UInt64](repeating: 0, count: LogRecordType.allCases.count)

    /// What the `summary` record's `records` holds: the counts of the records
    /// that are not header or summary, by type name.
    public var countsByType: [(String, UInt64)] {
        LogRecordType.allCases.filter { $0 != .header && $0 != .summary && recordCounts[$0.rawValue] > 0 }
            .map { ($0.name.description, recordCounts[$0.rawValue]) }
    }

    public init(clock: WallClock) {
        self.clock = clock
    }

    private mutating func appendPrologue(type: LogRecordType, mono: UInt64, to out: inout OutputBuffer) {
        out.append("{\"v\":1,\"seq\":", decimal: nextSequence)
        nextSequence += 1
        recordCounts[type.rawValue] &+= 1
        out.append(",\"type\":\"" as StaticString)
        out.append(type.name)
        out.append("\",\"time\":\"" as StaticString)
        clock.appendRFC3339(mono: mono, to: &out)
        out.append("\",\"mono_ns\":", decimal: mono)
    }

    private func appendEndpoint(_ e: KernelEvent, to out: inout OutputBuffer) {
        // The conn id written straight from the numbers: no String per event.
        out.append(",\"conn\":" as StaticString)
        if e.noSocket {
            out.append("\"\"" as StaticString)
        } else {
            out.append(UInt8(ascii: "\""))
            out.append(decimal: e.cookie)
            if e.generation != 0 {
                out.append(UInt8(ascii: "."))
                out.append(decimal: UInt64(e.generation))
            }
            out.append(UInt8(ascii: "\""))
        }
        appendOwnerAndEndpoints(owner: e.owner, thread: e.thread, ownerKnown: e.ownerKnown, netns: e.netns, family: e.family,
                                local: e.local, remote: e.remote, to: &out)
        out.append(",\"cpu\":", decimal: UInt64(e.cpu))
    }

    /// The fields every connection record shares after `conn`.
    private func appendOwnerAndEndpoints(owner: Owner, thread: ProcessName, ownerKnown: Bool, netns: UInt32, family: AddressFamily,
                                         local: Endpoint, remote: Endpoint, to out: inout OutputBuffer) {
        out.append(",\"pid\":", decimal: UInt64(owner.pid))
        out.append(",\"comm\":", jsonString: owner.comm)
        if ownerKnown && !thread.isEmpty && thread != owner.comm {
            out.append(",\"thread\":", jsonString: thread)
        }
        if let cgroup = owner.cgroup.info { out.appendCgroupMembers(cgroup) }
        out.append(",\"netns\":", decimal: UInt64(netns))
        out.append(",\"family\":", decimal: UInt64(family.rawValue))
        out.append(",\"laddr\":\"" as StaticString)
        out.append(address: local.address, family: family)
        out.append("\",\"lport\":", decimal: UInt64(local.port))
        out.append(",\"raddr\":\"" as StaticString)
        out.append(address: remote.address, family: family)
        out.append("\",\"rport\":", decimal: UInt64(remote.port))
        out.append(",\"owner_known\":" as StaticString)
        out.append(ownerKnown ? "true" as StaticString : "false")
    }

    private func appendIdentity(_ id: ConnectionIdentity, to out: inout OutputBuffer) {
        out.append(",\"conn\":\"" as StaticString)
        out.append(connection: id.conn)
        out.append(UInt8(ascii: "\""))
        appendOwnerAndEndpoints(owner: id.owner, thread: id.thread, ownerKnown: id.ownerKnown, netns: id.netns, family: id.family,
                                local: id.local, remote: id.remote, to: &out)
    }

    private func appendDocumented(_ change: StateChange, to out: inout OutputBuffer) {
        out.appendDocumented(from: change.from, to: change.to, step: change.step, inferred: change.inferred, reason: change.reason)
    }

    /// Appends what the handshake engine made of the kernel's events: a kernel
    /// transition with its documented meaning, an inferred change, or an anomaly.
    public mutating func append(_ output: EngineOutput, to out: inout OutputBuffer) {
        switch output {
        case .event(let e):
            append(e, to: &out)
        case .change(let change):
            if let e = change.kernel {
                append(e, change: change, to: &out)
            } else {
                appendPrologue(type: .transition, mono: change.monoNanoseconds, to: &out)
                appendIdentity(change.connection, to: &out)
                appendDocumented(change, to: &out)
                if let left = change.timeWaitLeftMilliseconds { out.append(",\"expires_ms\":", decimal: UInt64(left)) }
                out.append("}\n" as StaticString)
            }
        case .snapshot(let id, let state, let kernel, let mono, let expires):
            appendPrologue(type: .snapshot, mono: mono, to: &out)
            appendIdentity(id, to: &out)
            out.append(",\"state\":\"" as StaticString)
            out.append(state.nameBytes)
            out.append("\",\"kernel_state\":\"" as StaticString)
            out.append(kernel.nameBytes)
            out.append(UInt8(ascii: "\""))
            if kernel == .timeWait {
                out.append(",\"expires_ms\":", decimal: UInt64(expires))
            }
            out.append("}\n" as StaticString)
        case .anomaly(let a):
            appendPrologue(type: .anomaly, mono: a.monoNanoseconds, to: &out)
            appendIdentity(a.connection, to: &out)
            out.append(",\"anomaly\":\"" as StaticString)
            out.append(a.kind.rawValue)
            out.append("\",\"severity\":\"" as StaticString)
            out.append(a.severity.rawValue)
            out.append("\",\"detail\":", jsonString: a.detail)
            if let count = a.count {
                out.append(",\"count\":", decimal: Int64(count))
            }
            if let q = a.acceptQueue {
                out.append(",\"accept_queue\":", decimal: UInt64(q.depth))
                out.append(",\"accept_queue_limit\":", decimal: UInt64(q.limit))
            }
            out.append("}\n" as StaticString)
        }
    }

    private func appendState(_ key: StaticString, _ state: KernelTCPState?, to out: inout OutputBuffer) {
        out.append(key)
        if let state {
            out.append(UInt8(ascii: "\""))
            out.append(state.nameBytes)
            out.append(UInt8(ascii: "\""))
        } else {
            out.append("null" as StaticString)
        }
    }

    /// Appends one kernel event as a record, with its newline; a transition
    /// carries its documented meaning when the engine gave one.
    public mutating func append(_ e: KernelEvent, change: StateChange? = nil, to out: inout OutputBuffer) {
        switch e.kind {
        case .transition:
            appendPrologue(type: .transition, mono: e.monoNanoseconds, to: &out)
            appendEndpoint(e, to: &out)
            appendState(",\"kernel_from\":", e.oldState, to: &out)
            appendState(",\"kernel_to\":", e.newState, to: &out)
            out.append(",\"prev_state_ns\":" as StaticString)
            if let prev = e.previousStateNanoseconds {
                out.append(decimal: prev)
            } else {
                out.append("null" as StaticString)
            }
            out.append(",\"peer_fin\":" as StaticString)
            out.append(e.peerFinReceived ? "true" as StaticString : "false")
            if e.untracked { out.append(",\"untracked\":true" as StaticString) }
            if let tw = e.timewait {
                out.append(",\"timewait\":\"" as StaticString)
                out.append(tw.name)
                out.append(UInt8(ascii: "\""))
            }
            if let change { appendDocumented(change, to: &out) }
        case .retransmit:
            appendPrologue(type: .retransmit, mono: e.monoNanoseconds, to: &out)
            appendEndpoint(e, to: &out)
            appendState(",\"kernel_state\":", e.newState, to: &out)
            out.append(",\"what\":\"" as StaticString)
            out.append((e.retransmit ?? .data).name)
            out.append(UInt8(ascii: "\""))
        case .reset:
            appendPrologue(type: .reset, mono: e.monoNanoseconds, to: &out)
            appendEndpoint(e, to: &out)
            out.append(",\"direction\":\"" as StaticString)
            out.append((e.reset ?? .received).name)
            out.append(UInt8(ascii: "\""))
            appendState(",\"kernel_state\":", e.newState, to: &out)
            if e.reset == .sent {
                out.append(",\"reason\":", decimal: UInt64(e.resetReason))
            }
            if e.noSocket { out.append(",\"no_socket\":true" as StaticString) }
        case .accept:
            return  // consumed by the live tracer (AcceptHold), never a record
        case .listenDrop:
            appendPrologue(type: .listenDrop, mono: e.monoNanoseconds, to: &out)
            appendEndpoint(e, to: &out)
        case .error:
            appendPrologue(type: .error, mono: e.monoNanoseconds, to: &out)
            appendEndpoint(e, to: &out)
            appendState(",\"kernel_state\":", e.newState, to: &out)
            out.append(",\"errno\":", decimal: Int64(e.errorNumber))
            out.append(",\"error\":\"" as StaticString)
            ErrnoName.append(e.errorNumber, to: &out)
            out.append(UInt8(ascii: "\""))
        }
        out.append("}\n" as StaticString)
    }

    /// Appends the `header` record that opens every log file. `filters`,
    /// `thresholds` and `features` (what the kernel lets the tracer see, when
    /// a tracer wrote it) are JSON objects, written as given.
    public mutating func appendHeader(version: String, hostname: String, kernel: String, startedMono: UInt64,
                                      filters: String, thresholds: String, features: String? = nil, tables: String? = nil,
                                      mono: UInt64, to out: inout OutputBuffer) {
        appendPrologue(type: .header, mono: mono, to: &out)
        out.append(",\"format_version\":1,\"tcptrail_version\":", jsonString: version)
        out.append(",\"hostname\":", jsonString: hostname)
        out.append(",\"kernel\":", jsonString: kernel)
        out.append(",\"started\":\"" as StaticString)
        clock.appendRFC3339(mono: startedMono, to: &out)
        out.append("\",\"boot_offset_ns\":", decimal: clock.bootOffsetNanoseconds)
        out.append(",\"filters\":" as StaticString)
        out.append(filters)
        out.append(",\"thresholds\":" as StaticString)
        out.append(thresholds)
        if let features {
            out.append(",\"features\":" as StaticString)
            out.append(features)
        }
        if let tables {
            out.append(",\"tables\":" as StaticString)
            out.append(tables)
        }
        out.append("}\n" as StaticString)
    }

    /// Appends the `summary` record that ends a run: records written by type,
    /// anomalies by name, events lost in the kernel, records the log could not take.
    public mutating func appendSummary(recordsByType: [(String, UInt64)], anomalies: [(String, Int)], lost: UInt64,
                                       exportErrors: UInt64, untracked: TableGaps? = nil, mono: UInt64, to out: inout OutputBuffer) {
        appendPrologue(type: .summary, mono: mono, to: &out)
        out.append(",\"records\":{" as StaticString)
        for (i, (name, n)) in recordsByType.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.appendJSONString(name)
            out.append(UInt8(ascii: ":"))
            out.append(decimal: n)
        }
        out.append("},\"anomalies\":{" as StaticString)
        for (i, (name, n)) in anomalies.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.appendJSONString(name)
            out.append(UInt8(ascii: ":"))
            out.append(decimal: Int64(n))
        }
        out.append("},\"lost\":", decimal: lost)
        out.append(",\"export_errors\":", decimal: exportErrors)
        if let untracked {
            out.append(",\"untracked\":{" as StaticString)
            untracked.appendFields(to: &out)
            out.append(UInt8(ascii: "}"))
        }
        out.append("}\n" as StaticString)
    }

    /// Appends an `untracked` record: what the kernel side's full tables kept
    /// from the record so far (totals since the start), in an `untracked`
    /// object as the summary has it (`jq .untracked.sockets` reads both).
    public mutating func appendUntracked(_ gaps: TableGaps, mono: UInt64, to out: inout OutputBuffer) {
        appendPrologue(type: .untracked, mono: mono, to: &out)
        out.append(",\"untracked\":{" as StaticString)
        gaps.appendFields(to: &out)
        out.append("}}\n" as StaticString)
    }

    /// Appends a `lost` record: `count` events dropped since the last one, `total` in all,
    /// and `total_by_type`, the total split by record type.
    public mutating func appendLost(count: UInt64, total: UInt64, byKind: [KernelEventKind: UInt64] = [:], mono: UInt64, to out: inout OutputBuffer) {
        appendPrologue(type: .lost, mono: mono, to: &out)
        out.append(",\"count\":", decimal: count)
        out.append(",\"total\":", decimal: total)
        out.append(",\"total_by_type\":{" as StaticString)
        var first = true
        for kind in [KernelEventKind.transition, .retransmit, .reset, .error, .listenDrop, .accept] {
            guard let n = byKind[kind], n > 0 else { continue }
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            out.append(UInt8(ascii: "\""))
            out.append(kind.recordType.name)
            out.append("\":", decimal: n)
        }
        out.append("}}\n" as StaticString)
    }
}

