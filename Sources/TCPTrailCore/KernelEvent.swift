import CTCPTrailEvent

/// What a kernel record is about.
public enum KernelEventKind: UInt8, Sendable {
    /// A state change (`sock:inet_sock_set_state`).
    case transition = 1
    /// A retransmitted SYN, SYN-ACK or data segment.
    case retransmit = 2
    /// An RST sent or received.
    case reset = 3
    /// A socket error reported to the application (`sock:inet_sk_error_report`).
    case error = 4
    /// A segment dropped because a listener's queue was full (`skb:kfree_skb`).
    case listenDrop = 5
    /// accept() returned the socket: `pid`/`comm` are the acceptor's. The
    /// live tracer consumes it (`AcceptHold`); it is never a record.
    case accept = 6

    /// The record's `type` in the JSON contract.
    public var recordType: LogRecordType {
        switch self {
        case .transition: .transition
        case .retransmit: .retransmit
        case .reset: .reset
        case .error: .error
        case .listenDrop: .listenDrop
        case .accept: .accept
        }
    }
}

/// An enum whose cases the log writes by name (`what`, `direction`, `timewait`).
public protocol NamedCase: CaseIterable {
    var name: StaticString { get }
}

/// Which segment was retransmitted.
public enum RetransmitKind: UInt8, Sendable, NamedCase {
    case data = 0
    case syn = 1
    case synack = 2

    public var name: StaticString {
        switch self {
        case .data: "data"
        case .syn: "syn"
        case .synack: "synack"
        }
    }
}

/// Whether this host sent or received an RST.
public enum ResetDirection: UInt8, Sendable, NamedCase {
    case sent = 1
    case received = 2

    public var name: StaticString {
        switch self {
        case .sent: "sent"
        case .received: "received"
        }
    }
}

/// What a transition says about a connection the kernel handed to a
/// timewait socket (tcp_time_wait()), which keeps its cookie and lives on in
/// FIN_WAIT_2 or TIME_WAIT after the full socket's -> CLOSE.
public enum TimewaitStep: UInt8, Sendable, NamedCase {
    /// The full socket's FIN_WAIT2/CLOSING -> CLOSE: a timewait socket carries on.
    case handoff = 1
    /// FIN_WAIT2 -> TIME_WAIT in the timewait socket: the peer's FIN came.
    case timeWait = 2
    /// The same, first seen when the timer ran out (older kernels, or a
    /// reschedule that moved no timer bucket).
    case timeWaitLate = 3
    /// -> CLOSE: the timer ran out (2MSL; tcp_fin_timeout in FIN_WAIT2).
    case expired = 4
    /// -> CLOSE: a reset from the peer killed it.
    case resetReceived = 5
    /// -> CLOSE: this host answered a segment with a reset and killed it.
    case resetSent = 6
    /// -> CLOSE: descheduled without a reset: a new connection took the pair.
    case reused = 7

    /// The log's `timewait` value.
    public var name: StaticString {
        switch self {
        case .handoff: "handoff"
        case .timeWait: "time_wait"
        case .timeWaitLate: "time_wait_late"
        case .expired: "expired"
        case .resetReceived: "reset_received"
        case .resetSent: "reset_sent"
        case .reused: "reused"
        }
    }

    /// From the kernel record's `detail` and `reason` (TT_TW_*).
    init?(detail: UInt8, reason: UInt32) {
        switch UInt32(detail) {
        case TT_TW_HANDOFF.rawValue: self = .handoff
        case TT_TW_TIME_WAIT.rawValue: self = .timeWait
        case TT_TW_LATE.rawValue: self = .timeWaitLate
        case TT_TW_EXPIRED.rawValue: self = .expired
        case TT_TW_RESET.rawValue: self = reason == TT_RESET_SENT.rawValue ? .resetSent : .resetReceived
        case TT_TW_KILLED.rawValue: self = .reused
        default: return nil
        }
    }

    /// The kernel record's (`detail`, `reason`).
    var kernel: (detail: UInt8, reason: UInt32) {
        switch self {
        case .handoff: (UInt8(TT_TW_HANDOFF.rawValue), 0)
        case .timeWait: (UInt8(TT_TW_TIME_WAIT.rawValue), 0)
        case .timeWaitLate: (UInt8(TT_TW_LATE.rawValue), 0)
        case .expired: (UInt8(TT_TW_EXPIRED.rawValue), 0)
        case .resetReceived: (UInt8(TT_TW_RESET.rawValue), TT_RESET_RECEIVED.rawValue)
        case .resetSent: (UInt8(TT_TW_RESET.rawValue), TT_RESET_SENT.rawValue)
        case .reused: (UInt8(TT_TW_KILLED.rawValue), 0)
        }
    }
}

/// A 16-byte address as the kernel stores it, network order; IPv4 in the first 4 bytes.
public struct RawAddress: Sendable, Equatable, Hashable {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64 = 0, low: UInt64 = 0) {
        self.high = high
        self.low = low
    }

    /// Builds an address from up to 16 bytes in network order.
    public init<C: Collection>(bytes: C) where C.Element == UInt8 {
        var value = RawAddress()
        withUnsafeMutableBytes(of: &value) { raw in
            for (i, b) in bytes.prefix(16).enumerated() { raw[i] = b }
        }
        self = value
    }

    /// Calls body with the 16 bytes.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes(of: self, body)
    }
}

extension RawAddress {
    /// `::ffff:a.b.c.d`: an IPv4 peer of an AF_INET6 socket.
    public var isV4Mapped: Bool {
        withBytes { b in (0..<10).allSatisfy { b[$0] == 0 } && b[10] == 0xff && b[11] == 0xff }
    }

    public var isZero: Bool { high == 0 && low == 0 }

    /// The IPv4 address of a v4-mapped one, in the first 4 bytes.
    var unmapped: RawAddress { withBytes { RawAddress(bytes: $0[12..<16]) } }

    /// A v4-mapped pair (an unset side allowed) as IPv4, the way the kernel
    /// side reports it: every filter and view sees one family for one
    /// conversation, whatever the socket's family.
    public static func dualStack(family: AddressFamily, local: RawAddress, remote: RawAddress) -> (AddressFamily, RawAddress, RawAddress) {
        guard family == .ipv6, local.isV4Mapped || remote.isV4Mapped,
              local.isV4Mapped || local.isZero, remote.isV4Mapped || remote.isZero
        else { return (family, local, remote) }
        return (.ipv4, local.unmapped, remote.unmapped)
    }
}

/// A process name as the kernel keeps it: up to 16 bytes, NUL-padded, any bytes.
public struct ProcessName: Sendable, Equatable {
    public var a: UInt64
    public var b: UInt64

    public init(a: UInt64 = 0, b: UInt64 = 0) {
        self.a = a
        self.b = b
    }

    /// No name: all 16 bytes NUL.
    public var isEmpty: Bool { a == 0 && b == 0 }

    /// Builds a name from a string's UTF-8 bytes, cut at 15 bytes like the kernel.
    public init(_ string: String) {
        var value = ProcessName()
        withUnsafeMutableBytes(of: &value) { raw in
            for (i, b) in string.utf8.prefix(15).enumerated() { raw[i] = b }
        }
        self = value
    }

    /// Builds a name from raw bytes (up to 16, as the kernel's TASK_COMM_LEN).
    public init<C: Collection>(bytes: C) where C.Element == UInt8 {
        var value = ProcessName()
        withUnsafeMutableBytes(of: &value) { raw in
            for (i, b) in bytes.prefix(16).enumerated() { raw[i] = b }
        }
        self = value
    }

    /// Calls body with the bytes up to the trailing NULs. The kernel pads a
    /// name with NULs after its end (strscpy_pad); a NUL inside one (only a
    /// log can hold that) is kept, so views show it as `\x00`, not cut there.
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeBytes(of: self) { raw in
            var n = raw.count
            while n > 0 && raw[n - 1] == 0 { n -= 1 }
            return try body(UnsafeRawBufferPointer(rebasing: raw[0..<n]))
        }
    }

    /// The name with every byte that is not printable ASCII escaped as `\xNN`.
    public var escaped: String {
        var out = OutputBuffer(capacity: 64)
        out.appendEscapedText(self)
        return out.string
    }
}

/// One event from the kernel, decoded from a `struct tcptrail_event`.
public struct KernelEvent: Sendable, Equatable {
    public var monoNanoseconds: UInt64
    public var cookie: UInt64
    public var generation: UInt32
    /// Nanoseconds spent in `oldState`, when the kernel side knew when it began.
    public var previousStateNanoseconds: UInt64?
    public var netns: UInt32
    public var pid: UInt32
    /// The owner's process name (its thread group leader's, as `ss -p` shows).
    public var comm: ProcessName
    /// The owner's thread that took the socket (accept, connect, listen,
    /// read); empty when unknown (owners seeded from /proc).
    public var thread: ProcessName
    /// The owner's cgroup v2 id as the kernel gave it (0: unknown).
    public var cgroupID: UInt64
    /// That cgroup's path, once user space resolved it (or read it from a log).
    public var cgroup: CgroupRef
    public var kind: KernelEventKind
    public var family: AddressFamily
    public var localAddress: RawAddress
    public var remoteAddress: RawAddress
    public var localPort: UInt16
    public var remotePort: UInt16
    /// The state before a transition; the current state for other kinds.
    public var oldState: KernelTCPState?
    /// The state after a transition; the current state for other kinds.
    public var newState: KernelTCPState?
    public var retransmit: RetransmitKind?
    public var reset: ResetDirection?
    /// For transitions of a connection in a timewait socket: what happened there.
    public var timewait: TimewaitStep?
    /// The socket error for `.error` events, the send error for retransmits.
    public var errorNumber: Int32
    public var resetReason: UInt32
    public var flags: UInt8
    public var cpu: UInt8

    public init(
        monoNanoseconds: UInt64, cookie: UInt64, generation: UInt32 = 0,
        previousStateNanoseconds: UInt64? = nil, netns: UInt32 = 0, pid: UInt32 = 0,
        comm: ProcessName = ProcessName(), thread: ProcessName = ProcessName(), cgroupID: UInt64 = 0, cgroup: CgroupRef = .unknown,
        kind: KernelEventKind, family: AddressFamily = .ipv4,
        localAddress: RawAddress = RawAddress(), remoteAddress: RawAddress = RawAddress(),
        localPort: UInt16 = 0, remotePort: UInt16 = 0,
        oldState: KernelTCPState? = nil, newState: KernelTCPState? = nil,
        retransmit: RetransmitKind? = nil, reset: ResetDirection? = nil, timewait: TimewaitStep? = nil,
        errorNumber: Int32 = 0, resetReason: UInt32 = 0, flags: UInt8 = 0, cpu: UInt8 = 0
    ) {
        self.monoNanoseconds = monoNanoseconds
        self.cookie = cookie
        self.generation = generation
        self.previousStateNanoseconds = previousStateNanoseconds
        self.netns = netns
        self.pid = pid
        self.comm = comm
        self.thread = thread
        self.cgroupID = cgroupID
        self.cgroup = cgroup
        self.kind = kind
        self.family = family
        self.localAddress = localAddress
        self.remoteAddress = remoteAddress
        self.localPort = localPort
        self.remotePort = remotePort
        self.oldState = oldState
        self.newState = newState
        self.retransmit = retransmit
        self.reset = reset
        self.timewait = timewait
        self.errorNumber = errorNumber
        self.resetReason = resetReason
        self.flags = flags
        self.cpu = cpu
    }

    /// The socket's holder as the event names it (see `ownerKnown`).
    public var owner: Owner { Owner(pid: pid, comm: comm, cgroup: cgroup) }
    public var local: Endpoint { Endpoint(address: localAddress, port: localPort) }
    public var remote: Endpoint { Endpoint(address: remoteAddress, port: remotePort) }

    /// The pid and comm are the socket owner's (not the task a softirq interrupted).
    public var ownerKnown: Bool { flags & UInt8(TT_FLAG_OWNER_KNOWN.rawValue) != 0 }
    /// The peer's FIN had been received when the transition happened.
    public var peerFinReceived: Bool { flags & UInt8(TT_FLAG_PEER_FIN.rawValue) != 0 }
    /// A reset this host sent for a segment that no socket owned.
    public var noSocket: Bool { flags & UInt8(TT_FLAG_NO_SOCKET.rawValue) != 0 }
    /// The connection id is a SYN-ACK's request sock, not a full socket.
    public var requestSock: Bool { flags & UInt8(TT_FLAG_REQUEST_SOCK.rawValue) != 0 }
    /// The kernel side's connection table was full: no owner, previous state or saved endpoints.
    public var untracked: Bool { flags & UInt8(TT_FLAG_UNTRACKED.rawValue) != 0 }
    /// An accepted socket before accept(): the owner is its listener's.
    public var awaitingAccept: Bool { flags & UInt8(TT_FLAG_AWAITING_ACCEPT.rawValue) != 0 }

    /// The connection id: the socket cookie, with `.generation` when one
    /// socket carried more than one connection. `.none` for socket-less resets.
    public var connectionID: ConnectionID {
        noSocket ? .none : ConnectionID(cookie: cookie, generation: generation)
    }
}

/// A connection id: the socket cookie, plus a generation when one socket
/// carried more than one connection. Written "4217" or "4217.2". Two integers,
/// not a String: the engine keys its tables with it on every event.
public struct ConnectionID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var cookie: UInt64
    public var generation: UInt32

    public init(cookie: UInt64, generation: UInt32 = 0) {
        self.cookie = cookie
        self.generation = generation
    }

    /// No socket (a reset for a segment no socket owned); written "".
    public static let none = ConnectionID(cookie: 0, generation: .max)

    /// Parses "4217" or "4217.2"; nil for anything else.
    public init?(_ text: some StringProtocol) {
        let parts = text.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let first = parts.first, !first.isEmpty, first.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }),
              let cookie = UInt64(first) else { return nil }
        var generation: UInt32 = 0
        if parts.count == 2 {
            guard !parts[1].isEmpty, parts[1].utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let g = UInt32(parts[1]), g != .max else { return nil }
            generation = g
        }
        self.init(cookie: cookie, generation: generation)
    }

    public var description: String {
        var out = OutputBuffer(capacity: 32)
        out.append(connection: self)
        return out.string
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(cookie)
        hasher.combine(generation)
    }

    /// The tables keyed by connection are looked up several times per event;
    /// SipHash cost more than the lookup. Cookies are unique kernel counters,
    /// so a seeded multiply-xorshift mix spreads them well enough.
    public func _rawHashValue(seed: Int) -> Int {
        SlotIndex.hash(self, seed: UInt64(UInt(bitPattern: seed)))
    }

    public static func < (a: ConnectionID, b: ConnectionID) -> Bool {
        (a.cookie, a.generation) < (b.cookie, b.generation)
    }
}

extension OutputBuffer {
    /// "4217" or "4217.2" ("" for `.none`), without quotes.
    @inline(__always)
    public mutating func append(connection id: ConnectionID) {
        if id == .none { return }
        append(decimal: id.cookie)
        if id.generation != 0 {
            append(UInt8(ascii: "."))
            append(decimal: UInt64(id.generation))
        }
    }
}

/// Turns ring-buffer records into `KernelEvent`s.
public enum EventDecoder {
    /// Bytes in one kernel record (`TT_EVENT_SIZE`).
    public static let recordSize = Int(TT_EVENT_SIZE)

    /// Why a record could not be decoded.
    public enum Failure: Error, Equatable, Sendable {
        case wrongSize(Int)
        case unknownKind(UInt8)
        case unknownFamily(UInt16)
    }

    /// Decodes one record; the bytes need no particular alignment.
    public static func decode(_ bytes: UnsafeRawBufferPointer) -> Result<KernelEvent, Failure> {
        guard bytes.count == recordSize, let base = bytes.baseAddress else {
            return .failure(.wrongSize(bytes.count))
        }
        let raw = base.loadUnaligned(as: tcptrail_event.self)
        guard let kind = KernelEventKind(rawValue: raw.type) else { return .failure(.unknownKind(raw.type)) }
        guard let family = AddressFamily(kernel: raw.family) else { return .failure(.unknownFamily(raw.family)) }
        let prevKnown = raw.flags & UInt8(TT_FLAG_PREV_KNOWN.rawValue) != 0
        var event = KernelEvent(
            monoNanoseconds: raw.mono_ns, cookie: raw.cookie, generation: raw.generation,
            previousStateNanoseconds: prevKnown ? raw.prev_state_ns : nil,
            netns: raw.netns, pid: raw.pid, cgroupID: raw.cgroup, kind: kind, family: family,
            localPort: raw.sport, remotePort: raw.dport,
            oldState: KernelTCPState(rawValue: raw.old_state),
            newState: KernelTCPState(rawValue: raw.new_state),
            errorNumber: raw.error, resetReason: raw.reason, flags: raw.flags, cpu: raw.cpu
        )
        withUnsafeBytes(of: raw.saddr) { event.localAddress = $0.loadUnaligned(as: RawAddress.self) }
        withUnsafeBytes(of: raw.daddr) { event.remoteAddress = $0.loadUnaligned(as: RawAddress.self) }
        withUnsafeBytes(of: raw.comm) { event.comm = $0.loadUnaligned(as: ProcessName.self) }
        withUnsafeBytes(of: raw.thread) { event.thread = $0.loadUnaligned(as: ProcessName.self) }
        switch kind {
        case .retransmit: event.retransmit = RetransmitKind(rawValue: raw.detail)
        case .reset: event.reset = ResetDirection(rawValue: raw.detail)
        case .transition:
            if raw.detail != 0 {
                event.timewait = TimewaitStep(detail: raw.detail, reason: raw.reason)
                event.resetReason = 0
            }
        default: break
        }
        return .success(event)
    }

    /// Encodes an event back into a kernel record, for tests and recordings.
    public static func encode(_ event: KernelEvent) -> [UInt8] {
        withUnsafeBytes(of: record(event)) { Array($0) }
    }

    /// The kernel record of an event, as a value (no allocation).
    public static func record(_ event: KernelEvent) -> tcptrail_event {
        var raw = tcptrail_event()
        raw.mono_ns = event.monoNanoseconds
        raw.cookie = event.cookie
        raw.generation = event.generation
        raw.prev_state_ns = event.previousStateNanoseconds ?? 0
        raw.netns = event.netns
        raw.pid = event.pid
        raw.cgroup = event.cgroupID
        raw.error = event.errorNumber
        raw.sport = event.localPort
        raw.dport = event.remotePort
        raw.family = event.family.kernel
        raw.type = event.kind.rawValue
        raw.old_state = event.oldState?.rawValue ?? 0
        raw.new_state = event.newState?.rawValue ?? 0
        raw.detail = event.retransmit?.rawValue ?? event.reset?.rawValue ?? event.timewait?.kernel.detail ?? 0
        raw.flags = event.flags | (event.previousStateNanoseconds != nil ? UInt8(TT_FLAG_PREV_KNOWN.rawValue) : 0)
        raw.cpu = event.cpu
        raw.reason = event.timewait?.kernel.reason ?? event.resetReason
        withUnsafeMutableBytes(of: &raw.saddr) { $0.storeBytes(of: event.localAddress, as: RawAddress.self) }
        withUnsafeMutableBytes(of: &raw.daddr) { $0.storeBytes(of: event.remoteAddress, as: RawAddress.self) }
        withUnsafeMutableBytes(of: &raw.comm) { $0.storeBytes(of: event.comm, as: ProcessName.self) }
        withUnsafeMutableBytes(of: &raw.thread) { $0.storeBytes(of: event.thread, as: ProcessName.self) }
        return raw
    }
}
