/// A TCP state as the Linux kernel numbers it (include/net/tcp_states.h).
///
/// These are the kernel's names, not the TCP documents': the kernel says
/// `FIN_WAIT1`, `SYN_RECV` and `CLOSE` where RFC 9293 says FIN-WAIT-1,
/// SYN-RECEIVED and CLOSED.
public enum KernelTCPState: UInt8, Sendable, CaseIterable {
    case established = 1
    case synSent = 2
    case synRecv = 3
    case finWait1 = 4
    case finWait2 = 5
    case timeWait = 6
    case close = 7
    case closeWait = 8
    case lastAck = 9
    case listen = 10
    case closing = 11
    case newSynRecv = 12

    /// The kernel's name without the `TCP_` prefix, as in the JSON contract.
    public var name: String { nameBytes.description }

    /// The name as static UTF-8 bytes, for writers on the hot path.
    public var nameBytes: StaticString {
        switch self {
        case .established: "ESTABLISHED"
        case .synSent: "SYN_SENT"
        case .synRecv: "SYN_RECV"
        case .finWait1: "FIN_WAIT1"
        case .finWait2: "FIN_WAIT2"
        case .timeWait: "TIME_WAIT"
        case .close: "CLOSE"
        case .closeWait: "CLOSE_WAIT"
        case .lastAck: "LAST_ACK"
        case .listen: "LISTEN"
        case .closing: "CLOSING"
        case .newSynRecv: "NEW_SYN_RECV"
        }
    }

    /// Parses a kernel name such as `SYN_SENT` (no `TCP_` prefix).
    public init?(name: String) {
        guard let state = Self.allCases.first(where: { $0.name == name }) else { return nil }
        self = state
    }
}

extension StaticString {
    var bytes: UnsafeBufferPointer<UInt8> {
        UnsafeBufferPointer(start: utf8Start, count: utf8CodeUnitCount)
    }
}
