/// A connection state as the TCP documents name it (RFC 9293 §3.3.2).
public enum TCPState: String, Sendable, CaseIterable {
    case closed = "CLOSED"
    case listen = "LISTEN"
    case synSent = "SYN_SENT"
    case synReceived = "SYN_RECEIVED"
    case established = "ESTABLISHED"
    case finWait1 = "FIN_WAIT_1"
    case finWait2 = "FIN_WAIT_2"
    case closeWait = "CLOSE_WAIT"
    case closing = "CLOSING"
    case lastAck = "LAST_ACK"
    case timeWait = "TIME_WAIT"

    /// The document state a kernel state stands for.
    public init(kernel: KernelTCPState) {
        switch kernel {
        case .established: self = .established
        case .synSent: self = .synSent
        case .synRecv, .newSynRecv: self = .synReceived
        case .finWait1: self = .finWait1
        case .finWait2: self = .finWait2
        case .timeWait: self = .timeWait
        case .close: self = .closed
        case .closeWait: self = .closeWait
        case .lastAck: self = .lastAck
        case .listen: self = .listen
        case .closing: self = .closing
        }
    }

    /// `rawValue` as static UTF-8 bytes, for writers on the hot path (no
    /// String per use); FormattingTests checks the two agree.
    public var nameBytes: StaticString {
        switch self {
        case .closed: "CLOSED"
        case .listen: "LISTEN"
        case .synSent: "SYN_SENT"
        case .synReceived: "SYN_RECEIVED"
        case .established: "ESTABLISHED"
        case .finWait1: "FIN_WAIT_1"
        case .finWait2: "FIN_WAIT_2"
        case .closeWait: "CLOSE_WAIT"
        case .closing: "CLOSING"
        case .lastAck: "LAST_ACK"
        case .timeWait: "TIME_WAIT"
        }
    }

    /// States in which an abort (SO_LINGER 0, close with unread data) sends
    /// an RST: the kernel's tcp_need_reset().
    public var abortSendsReset: Bool {
        switch self {
        case .established, .closeWait, .finWait1, .finWait2, .synReceived: true
        default: false
        }
    }

    /// Synchronized states: an RST here aborts an established exchange.
    public var isSynchronized: Bool {
        switch self {
        case .established, .finWait1, .finWait2, .closeWait, .closing, .lastAck, .timeWait: true
        default: false
        }
    }
}

/// What happened on the wire (or in the application) to move a connection
/// from one state to the next, in the documents' words.
public enum Step: String, Sendable, CaseIterable {
    case listen
    case unlisten
    case synSent = "syn_sent"
    case synReceived = "syn_received"
    case established
    case finSent = "fin_sent"
    case finReceived = "fin_received"
    case finAcked = "fin_acked"
    case simultaneousClose = "simultaneous_close"
    case timeWait = "time_wait"
    case closed
    case reset
    case aborted

    /// `rawValue` as static UTF-8 bytes, for writers on the hot path.
    public var nameBytes: StaticString {
        switch self {
        case .listen: "listen"
        case .unlisten: "unlisten"
        case .synSent: "syn_sent"
        case .synReceived: "syn_received"
        case .established: "established"
        case .finSent: "fin_sent"
        case .finReceived: "fin_received"
        case .finAcked: "fin_acked"
        case .simultaneousClose: "simultaneous_close"
        case .timeWait: "time_wait"
        case .closed: "closed"
        case .reset: "reset"
        case .aborted: "aborted"
        }
    }
}

/// The RFC 9293 state diagram as (kernel from, kernel to) -> documented
/// move. Transitions to CLOSE that depend on what else happened (TIME_WAIT,
/// reset, abort) are decided by the engine, not here.
enum StateDiagram {
    struct Move: Equatable {
        var from: TCPState
        var to: TCPState
        var step: Step
    }

    static func move(_ from: KernelTCPState, _ to: KernelTCPState) -> Move? {
        switch (from, to) {
        case (.close, .listen): Move(from: .closed, to: .listen, step: .listen)
        case (.listen, .close): Move(from: .listen, to: .closed, step: .unlisten)
        case (.close, .synSent): Move(from: .closed, to: .synSent, step: .synSent)
        case (.listen, .synRecv): Move(from: .listen, to: .synReceived, step: .synReceived)
        case (.synSent, .established): Move(from: .synSent, to: .established, step: .established)
        case (.synRecv, .established): Move(from: .synReceived, to: .established, step: .established)
        case (.established, .finWait1): Move(from: .established, to: .finWait1, step: .finSent)
        case (.synRecv, .finWait1): Move(from: .synReceived, to: .finWait1, step: .finSent)
        case (.closeWait, .lastAck): Move(from: .closeWait, to: .lastAck, step: .finSent)
        case (.established, .closeWait): Move(from: .established, to: .closeWait, step: .finReceived)
        case (.finWait1, .finWait2): Move(from: .finWait1, to: .finWait2, step: .finAcked)
        case (.lastAck, .close): Move(from: .lastAck, to: .closed, step: .finAcked)
        case (.finWait1, .closing): Move(from: .finWait1, to: .closing, step: .simultaneousClose)
        case (.closing, .close): Move(from: .closing, to: .timeWait, step: .timeWait)
        // The rest of -> CLOSE is decided with the engine's context.
        case (_, .close) where from != .close: Move(from: TCPState(kernel: from), to: .closed, step: .aborted)
        default: nil
        }
    }
}
