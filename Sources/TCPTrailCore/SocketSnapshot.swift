import CTCPTrailSys
#if canImport(Glibc)
import Glibc
#endif

/// One TCP socket as netlink sock_diag reports it (what `ss -tan` shows).
public struct SocketSnapshot: Sendable, Equatable {
    /// The socket cookie: the same id the kernel side uses (`conn`).
    public var cookie: UInt64
    public var state: KernelTCPState
    public var family: UInt8
    public var localAddress: RawAddress
    public var localPort: UInt16
    public var remoteAddress: RawAddress
    public var remotePort: UInt16
    /// 0 for TIME_WAIT and request socks.
    public var inode: UInt32
    public var netns: UInt32
    /// Milliseconds until the socket's timer fires (TIME_WAIT: until it ends).
    public var expiresMilliseconds: UInt32
    /// The owning process, from /proc/PID/fd, if one holds the socket.
    public var pid: UInt32 = 0
    public var comm = ProcessName()
}

/// Reads every TCP socket of every network namespace through netlink
/// sock_diag, as `ss` does, TIME_WAIT included.
public enum SocketDiag {
    /// Why a dump failed.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// All namespaces that some process sits in; owners from /proc.
    public static func snapshotAllNamespaces(procRoot: String = "/proc") -> [SocketSnapshot] {
        let table = ProcSockets.scan(procRoot: procRoot)
        var result: [SocketSnapshot] = []
        let home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        defer { if home >= 0 { close(home) } }
        for (netns, pid) in table.pidInNetns.sorted(by: { $0.key < $1.key }) {
            let fd = open("\(procRoot)/\(pid)/ns/net", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            guard tt_enter_netns(fd) == 0 else { continue }
            var sockets = (try? dump(family: 2)) ?? []
            sockets += (try? dump(family: 10)) ?? []
            if home >= 0 { tt_enter_netns(home) }
            for var s in sockets {
                s.netns = netns
                if s.inode != 0, let owner = table.ownerOfInode[UInt64(s.inode)] {
                    s.pid = owner
                    s.comm = table.comm(of: owner)
                }
                result.append(s)
            }
        }
        return result
    }

    /// Dumps the TCP sockets of one family (AF_INET 2, AF_INET6 10) in this thread's namespace.
    public static func dump(family: UInt8) throws(Failure) -> [SocketSnapshot] {
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 4 /* NETLINK_SOCK_DIAG */)
        guard fd >= 0 else { throw Failure(description: "netlink socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        // nlmsghdr (16) + inet_diag_req_v2 (56).
        var request = [UInt8](repeating: 0, count: 72)
        func put32(_ v: UInt32, _ at: Int) { withUnsafeBytes(of: v) { for (i, b) in $0.enumerated() { request[at + i] = b } } }
        func put16(_ v: UInt16, _ at: Int) { withUnsafeBytes(of: v) { for (i, b) in $0.enumerated() { request[at + i] = b } } }
        put32(72, 0)                 // nlmsg_len
        put16(20, 4)                 // SOCK_DIAG_BY_FAMILY
        put16(0x301, 6)              // NLM_F_REQUEST | NLM_F_DUMP
        put32(1, 8)                  // seq
        request[16] = family
        request[17] = 6              // IPPROTO_TCP
        put32(0xffff_ffff, 20)       // every state
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard sent == 72 else { throw Failure(description: "netlink send: \(String(cString: strerror(errno)))") }

        var out: [SocketSnapshot] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw Failure(description: "netlink recv: \(String(cString: strerror(errno)))") }
            var offset = 0
            while offset + 16 <= n {
                let (len, type) = buffer.withUnsafeBytes { raw in
                    (Int(raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)), raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt16.self))
                }
                guard len >= 16, offset + len <= n else { return out }
                if type == 3 { return out }  // NLMSG_DONE
                if type == 2 { throw Failure(description: "netlink error answer to sock_diag") }
                if len >= 16 + 72 {
                    if let s = parse(buffer, at: offset + 16) { out.append(s) }
                }
                offset += (len + 3) & ~3
            }
        }
    }

    /// An inet_diag_msg.
    static func parse(_ b: [UInt8], at o: Int) -> SocketSnapshot? {
        guard let state = KernelTCPState(rawValue: b[o + 1]) else { return nil }
        let family: UInt8 = b[o] == 10 ? 6 : 4
        let width = family == 6 ? 16 : 4
        return b.withUnsafeBytes { raw in
            let c0 = UInt64(raw.loadUnaligned(fromByteOffset: o + 44, as: UInt32.self))
            let c1 = UInt64(raw.loadUnaligned(fromByteOffset: o + 48, as: UInt32.self))
            return SocketSnapshot(
                cookie: c0 | c1 << 32, state: state, family: family,
                localAddress: RawAddress(bytes: b[(o + 8)..<(o + 8 + width)]),
                localPort: UInt16(b[o + 4]) << 8 | UInt16(b[o + 5]),
                remoteAddress: RawAddress(bytes: b[(o + 24)..<(o + 24 + width)]),
                remotePort: UInt16(b[o + 6]) << 8 | UInt16(b[o + 7]),
                inode: raw.loadUnaligned(fromByteOffset: o + 68, as: UInt32.self),
                netns: 0,
                expiresMilliseconds: raw.loadUnaligned(fromByteOffset: o + 52, as: UInt32.self)
            )
        }
    }
}
