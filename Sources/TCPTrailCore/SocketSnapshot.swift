
/// One TCP socket as netlink sock_diag reports it (what `ss -tan` shows).
public struct SocketSnapshot: Sendable, Equatable {
    /// The socket cookie: the same id the kernel side uses (`conn`).
    public var cookie: UInt64
    public var state: KernelTCPState
    public var family: AddressFamily
    public var local: Endpoint
    public var remote: Endpoint
    /// 0 for TIME_WAIT and request socks.
    public var inode: UInt32
    public var netns: UInt32
    /// Milliseconds until the socket's timer fires (TIME_WAIT: until it ends).
    public var expiresMilliseconds: UInt32
    /// LISTEN: connections waiting in the accept queue, and the queue's limit (backlog).
    public var acceptQueue: UInt32 = 0
    public var acceptQueueLimit: UInt32 = 0
    /// The owning process, from /proc/PID/fd, if one holds the socket (pid 0: none).
    public var owner = Owner()

    public init(cookie: UInt64, state: KernelTCPState, family: AddressFamily, local: Endpoint, remote: Endpoint,
                inode: UInt32, netns: UInt32, expiresMilliseconds: UInt32,
                acceptQueue: UInt32 = 0, acceptQueueLimit: UInt32 = 0, owner: Owner = Owner()) {
        self.cookie = cookie
        self.state = state
        self.family = family
        self.local = local
        self.remote = remote
        self.inode = inode
        self.netns = netns
        self.expiresMilliseconds = expiresMilliseconds
        self.acceptQueue = acceptQueue
        self.acceptQueueLimit = acceptQueueLimit
        self.owner = owner
    }
}

extension SocketSnapshot {
    /// The listener a CLOSE -> LISTEN event opened, with its owner.
    public init(listener e: KernelEvent) {
        self.init(cookie: e.cookie, state: .listen, family: e.family, local: e.local, remote: Endpoint(),
                  inode: 0, netns: e.netns, expiresMilliseconds: 0, owner: e.owner)
    }
}

/// The netlink sock_diag messages `ss` uses, as bytes: the dump request and
/// the inet_diag_msg answers. Pure, so it is tested from recorded bytes.
public enum SockDiagMessage {
    /// What one netlink message in a dump answer is.
    public enum Item: Equatable, Sendable {
        case socket(SocketSnapshot)
        /// A message this codec does not read (another type, or a state it does not know).
        case skipped
        /// NLMSG_DONE: the dump is over.
        case done
        /// NLMSG_ERROR.
        case error
    }

    /// A SOCK_DIAG_BY_FAMILY dump request for TCP sockets of `family`
    /// in `states` (a bit per kernel state): nlmsghdr (16) + inet_diag_req_v2 (56).
    public static func dumpRequest(family: AddressFamily, states: UInt32) -> [UInt8] {
        var request = [UInt8](repeating: 0, count: 72)
        func put32(_ v: UInt32, _ at: Int) { withUnsafeBytes(of: v) { for (i, b) in $0.enumerated() { request[at + i] = b } } }
        func put16(_ v: UInt16, _ at: Int) { withUnsafeBytes(of: v) { for (i, b) in $0.enumerated() { request[at + i] = b } } }
        put32(72, 0)                 // nlmsg_len
        put16(20, 4)                 // SOCK_DIAG_BY_FAMILY
        put16(0x301, 6)              // NLM_F_REQUEST | NLM_F_DUMP
        put32(1, 8)                  // seq
        request[16] = UInt8(family.kernel)
        request[17] = 6              // IPPROTO_TCP
        put32(states, 20)            // idiag_states
        return request
    }

    /// The messages in the first `count` bytes of one recv(); stops at a cut message.
    public static func items(in b: [UInt8], count n: Int) -> [Item] {
        var out: [Item] = []
        var offset = 0
        let n = min(n, b.count)
        while offset + 16 <= n {
            let (len, type) = b.withUnsafeBytes { raw in
                (Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)), raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self))
            }
            guard len >= 16, offset + len <= n else { out.append(.done); return out }
            if type == 3 { out.append(.done); return out }  // NLMSG_DONE
            if type == 2 { out.append(.error); return out }
            if len >= 16 + 72, let s = parse(b, at: offset + 16) { out.append(.socket(s)) } else { out.append(.skipped) }
            offset += (len + 3) & ~3
        }
        return out
    }

    /// An inet_diag_msg.
    static func parse(_ b: [UInt8], at o: Int) -> SocketSnapshot? {
        guard let state = KernelTCPState(rawValue: b[o + 1]) else { return nil }
        guard let family = AddressFamily(kernel: UInt16(b[o])) else { return nil }
        let width = family.addressBits / 8
        return b.withUnsafeBytes { raw in
            let c0 = UInt64(raw.loadUnaligned(fromByteOffset: o + 44, as: UInt32.self))
            let c1 = UInt64(raw.loadUnaligned(fromByteOffset: o + 48, as: UInt32.self))
            // As the kernel side reports it: a v4-mapped pair is IPv4.
            let (f, local, remote) = RawAddress.dualStack(family: family, local: RawAddress(bytes: b[(o + 8)..<(o + 8 + width)]),
                                                          remote: RawAddress(bytes: b[(o + 24)..<(o + 24 + width)]))
            return SocketSnapshot(
                cookie: c0 | c1 << 32, state: state, family: f,
                local: Endpoint(address: local, port: UInt16(b[o + 4]) << 8 | UInt16(b[o + 5])),
                remote: Endpoint(address: remote, port: UInt16(b[o + 6]) << 8 | UInt16(b[o + 7])),
                inode: raw.loadUnaligned(fromByteOffset: o + 68, as: UInt32.self),
                netns: 0,
                expiresMilliseconds: raw.loadUnaligned(fromByteOffset: o + 52, as: UInt32.self),
                acceptQueue: raw.loadUnaligned(fromByteOffset: o + 56, as: UInt32.self),
                acceptQueueLimit: raw.loadUnaligned(fromByteOffset: o + 60, as: UInt32.self)
            )
        }
    }
}
