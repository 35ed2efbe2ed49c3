/// Something about a connection an operator should know, with what to do.
public struct Anomaly: Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case connectionRefused = "connection_refused"
        case handshakeTimeout = "handshake_timeout"
        case synRetransmit = "syn_retransmit"
        case synackRetransmit = "synack_retransmit"
        case resetReceived = "reset_received"
        case resetSent = "reset_sent"
        case closeWaitStall = "close_wait_stall"
        case finWait2Stall = "fin_wait_2_stall"
        case serverTimeWait = "server_time_wait"
        case timeWaitBuildup = "time_wait_buildup"
        case dataRetransmit = "data_retransmit"
        case listenOverflow = "listen_overflow"
        case unexpectedTransition = "unexpected_transition"
        case connectionTimeout = "connection_timeout"
    }

    public enum Severity: String, Sendable {
        case info, warning, critical
    }

    public var kind: Kind
    public var severity: Severity
    /// One sentence an operator understands.
    public var detail: String
    /// When it was detected (kernel monotonic ns).
    public var monoNanoseconds: UInt64
    /// The connection it is about (endpoints, owner).
    public var connection: ConnectionIdentity
    /// A count where the kind has one (retransmits, TIME_WAIT sockets).
    public var count: Int?
    /// `listen_overflow` read from the kernel's counter: the listener's accept
    /// queue then. Replay feeds it back to the engine, as no kernel record shows it.
    public var acceptQueue: AcceptQueue?

    public struct AcceptQueue: Sendable, Equatable {
        public var depth: UInt32
        public var limit: UInt32
        public init(depth: UInt32, limit: UInt32) {
            self.depth = depth
            self.limit = limit
        }
    }

    public init(kind: Kind, severity: Severity, detail: String, monoNanoseconds: UInt64, connection: ConnectionIdentity,
                count: Int? = nil, acceptQueue: AcceptQueue? = nil) {
        self.kind = kind
        self.severity = severity
        self.detail = detail
        self.monoNanoseconds = monoNanoseconds
        self.connection = connection
        self.count = count
        self.acceptQueue = acceptQueue
    }
}

/// The thresholds behind the anomalies that have one.
public struct AnomalyThresholds: Sendable, Equatable {
    /// `close_wait_stall` after this long in CLOSE_WAIT.
    public var closeWaitNanoseconds: UInt64 = 60_000_000_000
    /// `fin_wait_2_stall` after this long in FIN_WAIT_2.
    public var finWait2Nanoseconds: UInt64 = 60_000_000_000
    /// `time_wait_buildup` when one local endpoint holds more TIME_WAIT sockets than this.
    public var timeWaitSockets: Int = 1000
    /// `data_retransmit` when one connection retransmits more data segments than this.
    public var dataRetransmits: Int = 3

    public init() {}

    /// The thresholds as the log header's `thresholds` object.
    public var json: String {
        func seconds(_ ns: UInt64) -> String {
            ns % 1_000_000_000 == 0 ? String(ns / 1_000_000_000) : String(Double(ns) / 1e9)
        }
        return "{\"close_wait_s\":\(seconds(closeWaitNanoseconds)),\"data_retransmits\":\(dataRetransmits),"
            + "\"fin_wait_2_s\":\(seconds(finWait2Nanoseconds)),\"time_wait_sockets\":\(timeWaitSockets)}"
    }
}
