import TCPTrailCore

/// A member name of a v1 record, at the top level or inside one of its
/// objects with fixed names (`thresholds`, `untracked`, `tables`). The
/// writer's output, both parsers and docs/event-log.schema.json are checked
/// against this one list (`LogSchemaTests`).
public enum LogKey: String, CaseIterable, Sendable {
    // Every record.
    case v, seq, type, time
    case monoNs = "mono_ns"
    // A connection's identity.
    case conn, pid, comm, thread, netns, family, laddr, lport, raddr, rport
    case cgroup, unit, container, pod
    case ownerKnown = "owner_known"
    case cpu
    // A documented step.
    case from, to, step, inferred, reason
    // Kernel facts.
    case kernelFrom = "kernel_from"
    case kernelTo = "kernel_to"
    case kernelState = "kernel_state"
    case prevStateNs = "prev_state_ns"
    case peerFin = "peer_fin"
    case timewait, untracked, state
    case expiresMs = "expires_ms"
    case what, direction
    case noSocket = "no_socket"
    case errno, error
    case anomaly, severity, detail, count
    case acceptQueue = "accept_queue"
    case acceptQueueLimit = "accept_queue_limit"
    // lost, summary.
    case total
    case totalByType = "total_by_type"
    case records, anomalies, lost
    case exportErrors = "export_errors"
    // header.
    case formatVersion = "format_version"
    case tcptrailVersion = "tcptrail_version"
    case hostname, kernel, started
    case bootOffsetNs = "boot_offset_ns"
    case filters, thresholds, features, tables
    // Inside `thresholds`.
    case closeWaitS = "close_wait_s"
    case finWait2S = "fin_wait_2_s"
    case timeWaitSockets = "time_wait_sockets"
    case dataRetransmits = "data_retransmits"
    // Inside `tables`.
    case connections, listeners
    case ownerSeeds = "owner_seeds"
}

/// The v1 contract in one table: which members each record type has.
public enum LogSchema {
    /// A record type's members: those it always has, and those it may have.
    public struct Members: Sendable {
        public var required: [LogKey]
        public var optional: [LogKey]
        public var all: Set<LogKey> { Set(required + optional) }
    }

    /// In every record.
    public static let common: [LogKey] = [.v, .seq, .type, .time, .monoNs]
    /// In every record about one connection.
    public static let connection: [LogKey] = [.conn, .pid, .comm, .netns, .family, .laddr, .lport, .raddr, .rport, .ownerKnown]
    public static let connectionOptional: [LogKey] = [.thread, .cgroup, .unit, .container, .pod, .cpu]
    /// A documented step (the handshake engine's view of a transition).
    public static let documented: [LogKey] = [.from, .to, .step, .inferred, .reason]
    /// The members of `header.thresholds`.
    public static let thresholds: [LogKey] = [.closeWaitS, .finWait2S, .timeWaitSockets, .dataRetransmits]
    /// The members `header.tables` must have.
    public static let tables: [LogKey] = [.connections, .listeners, .ownerSeeds]

    /// The record types written (not `accept`, never a record; not `other`, read only).
    public static let written: [LogRecordType] = LogRecordType.allCases.filter { $0 != .accept && $0 != .other }

    /// What a record of type `t` holds beside `common`.
    public static func members(_ t: LogRecordType) -> Members {
        switch t {
        case .header:
            Members(required: [.formatVersion, .tcptrailVersion, .hostname, .kernel, .started, .bootOffsetNs, .filters, .thresholds],
                    optional: [.features, .tables])
        case .summary:
            Members(required: [.records, .anomalies, .lost, .exportErrors], optional: [.untracked])
        case .untracked:
            Members(required: [.untracked], optional: [])
        case .lost:
            Members(required: [.count, .total, .totalByType], optional: [])
        case .snapshot:
            Members(required: connection + [.kernelState, .state], optional: connectionOptional + [.expiresMs])
        case .transition:
            // Raw (kernel_*), documented (from/to/step), or both.
            Members(required: connection,
                    optional: connectionOptional + documented + [.kernelFrom, .kernelTo, .prevStateNs, .peerFin, .timewait, .untracked, .expiresMs])
        case .retransmit:
            Members(required: connection + [.kernelState, .what], optional: connectionOptional)
        case .reset:
            Members(required: connection + [.kernelState, .direction], optional: connectionOptional + [.reason, .noSocket])
        case .error:
            Members(required: connection + [.kernelState, .errno, .error], optional: connectionOptional)
        case .listenDrop:
            Members(required: connection, optional: connectionOptional)
        case .anomaly:
            Members(required: connection + [.anomaly, .severity, .detail], optional: connectionOptional + [.count, .acceptQueue, .acceptQueueLimit])
        case .accept, .other:
            Members(required: [], optional: [])
        }
    }
}
