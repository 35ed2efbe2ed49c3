import CTCPTrailSys
import TCPTrailCore
#if canImport(Glibc)
import Glibc
#endif

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
        for (netns, pid) in table.pidInNetns.sorted(by: { $0.key < $1.key }) {
            for var s in dump(inNamespaceOf: pid, procRoot: procRoot) {
                s.netns = netns
                if s.inode != 0, let owner = table.ownerOfInode[UInt64(s.inode)] {
                    s.owner = table.owner(owner)
                }
                result.append(s)
            }
        }
        // Namespaces `ip netns add` made that no process is in: sockets live
        // on there (TIME_WAIT, orphans) and the tracer sees their events.
        for (netns, fd) in namedNamespaces() where table.pidInNetns[netns] == nil {
            defer { close(fd) }
            let sockets = inNamespace(fd) { ((try? dump(family: .ipv4)) ?? []) + ((try? dump(family: .ipv6)) ?? []) } ?? []
            for var s in sockets {
                s.netns = netns
                result.append(s)
            }
        }
        return result
    }

    /// The network namespaces bound under /run/netns, by inode, each open.
    static func namedNamespaces(directory: String = "/run/netns") -> [(netns: UInt32, fd: Int32)] {
        let names = ListenQueueMonitor.entries(directory)
        var seen: Set<UInt32> = []
        var result: [(netns: UInt32, fd: Int32)] = []
        for name in names.sorted() {
            let fd = open("\(directory)/\(name)", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            var st = stat()
            // A bind mount of nsfs; a plain file left behind by a failed `ip netns add` is not one.
            guard fstat(fd, &st) == 0, st.st_ino != 0, seen.insert(UInt32(truncatingIfNeeded: st.st_ino)).inserted,
                  inNamespace(fd, { true }) == true else {
                close(fd)
                continue
            }
            result.append((UInt32(truncatingIfNeeded: st.st_ino), fd))
        }
        return result
    }

    /// Both families' sockets (in `states`, a bit per kernel state) in the network namespace of `pid`.
    public static func dump(inNamespaceOf pid: UInt32, states: UInt32 = 0xffff_ffff, procRoot: String = "/proc") -> [SocketSnapshot] {
        let fd = open("\(procRoot)/\(pid)/ns/net", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return [] }
        defer { close(fd) }
        return inNamespace(fd) { ((try? dump(family: .ipv4, states: states)) ?? []) + ((try? dump(family: .ipv6, states: states)) ?? []) } ?? []
    }

    /// Runs body with this thread in the network namespace open at `fd`, then returns home.
    public static func inNamespace<R>(_ fd: Int32, _ body: () -> R) -> R? {
        let home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC)
        guard home >= 0 else { return nil }
        defer { tt_enter_netns(home); close(home) }
        guard tt_enter_netns(fd) == 0 else { return nil }
        return body()
    }

    /// Dumps the TCP sockets of one family in this thread's namespace.
    public static func dump(family: AddressFamily, states: UInt32 = 0xffff_ffff) throws(Failure) -> [SocketSnapshot] {
        let fd = socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 4 /* NETLINK_SOCK_DIAG */)
        guard fd >= 0 else { throw Failure(description: "netlink socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        let request = SockDiagMessage.dumpRequest(family: family, states: states)
        let sent = request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
        guard sent == 72 else { throw Failure(description: "netlink send: \(String(cString: strerror(errno)))") }

        var out: [SocketSnapshot] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { throw Failure(description: "netlink recv: \(String(cString: strerror(errno)))") }
            for item in SockDiagMessage.items(in: buffer, count: n) {
                switch item {
                case .socket(let s): out.append(s)
                case .skipped: continue
                case .done: return out
                case .error: throw Failure(description: "netlink error answer to sock_diag")
                }
            }
        }
    }
}

/// Watches the kernel's listen-overflow counter in each namespace and, when it
/// grows, finds the listeners whose accept queue is full (sock_diag). The
/// tracepoints cannot show these drops on current kernels: a SYN refused for a
/// full accept queue is consumed without a drop reason.
public struct ListenQueueMonitor {
    /// A listener that dropped segments since the last check.
    public typealias Overflow = ListenOverflow

    /// An open handle on each namespace: it outlives the processes in it.
    private var namespaces: [UInt32: Int32] = [:]
    private var lastCount: [UInt32: Int] = [:]
    /// The listeners last seen full, per namespace: drops counted after a
    /// listener closed still belong to it.
    private var lastFull: [UInt32: [SocketSnapshot]] = [:]
    /// Listeners the trace saw open, per namespace: they name the drops of a
    /// listener gone before sock_diag could see its full queue.
    private var listenersSeen: [UInt32: [SocketSnapshot]] = [:]
    private let procRoot: String

    public init(procRoot: String = "/proc", netnsDir: String = "/run/netns") {
        self.procRoot = procRoot
        refreshNamespaces()
        // Namespaces `ip netns` keeps with no process in them yet.
        for name in Self.entries(netnsDir) {
            let fd = open("\(netnsDir)/\(name)", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            adopt(fd, counting: true)
        }
    }

    /// A directory's names but . and ..
    static func entries(_ path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var out: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { out.append(name) }
        }
        return out
    }

    /// Whether a namespace is watched.
    public func follows(_ netns: UInt32) -> Bool { namespaces[netns] != nil }

    /// Starts watching the namespace `pid` is in, first seen in an event
    /// (`netns`): one made after the start, whose counter began at 0, so
    /// every overflow in it is counted even if its listener lived only
    /// between two checks. (A namespace that predates the trace was found
    /// at start, by /proc or /run/netns.)
    public mutating func follow(netns: UInt32, pid: UInt32) {
        guard netns != 0, namespaces[netns] == nil, pid != 0 else { return }
        let fd = open("\(procRoot)/\(pid)/ns/net", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return }
        var st = stat()
        guard fstat(fd, &st) == 0, UInt32(truncatingIfNeeded: st.st_ino) == netns else {
            _ = Glibc.close(fd)
            return
        }
        namespaces[netns] = fd
        lastCount[netns] = 0
    }

    /// A listener the trace saw open (its CLOSE -> LISTEN), with its owner.
    public mutating func learn(_ listener: SocketSnapshot) {
        var list = listenersSeen[listener.netns] ?? []
        list.removeAll { $0.family == listener.family && $0.local == listener.local }
        list.append(listener)
        // Bounded: the most recent listeners of each namespace.
        if list.count > 64 { list.removeFirst(list.count - 64) }
        listenersSeen[listener.netns] = list
    }

    /// Watches the namespace open at `fd` (taking the descriptor), counting from now.
    private mutating func adopt(_ fd: Int32, counting: Bool) {
        var st = stat()
        let netns = fstat(fd, &st) == 0 ? UInt32(truncatingIfNeeded: st.st_ino) : 0
        guard netns != 0, namespaces[netns] == nil else {
            _ = Glibc.close(fd)
            return
        }
        namespaces[netns] = fd
        lastCount[netns] = SocketDiag.inNamespace(fd) { Self.listenOverflows(path: "/proc/thread-self/net/netstat") } ?? nil
    }

    /// The TCP sockets of a watched namespace in every state but LISTEN, as
    /// the tracer names them (a v4-mapped pair as IPv4); nil when the
    /// namespace is not watched or the dump failed.
    public func connections(in netns: UInt32) -> [SocketSnapshot]? {
        guard let fd = namespaces[netns] else { return nil }
        let states: UInt32 = 0xffff & ~(1 << 10)
        let dumped: [SocketSnapshot]?? = SocketDiag.inNamespace(fd) {
            guard let v4 = try? SocketDiag.dump(family: .ipv4, states: states),
                  let v6 = try? SocketDiag.dump(family: .ipv6, states: states) else { return nil }
            return v4 + v6
        }
        guard let dumped, var sockets = dumped else { return nil }
        for i in sockets.indices {
            (sockets[i].family, sockets[i].local.address, sockets[i].remote.address) =
                RawAddress.dualStack(family: sockets[i].family, local: sockets[i].local.address, remote: sockets[i].remote.address)
            sockets[i].netns = netns
        }
        return sockets
    }

    /// Closes the namespace handles.
    public mutating func close() {
        for fd in namespaces.values { _ = Glibc.close(fd) }
        namespaces.removeAll()
    }

    /// Compares the counters with the last check; names the full listeners where they grew.
    public mutating func check() -> [Overflow] {
        var out: [Overflow] = []
        var table: ProcSockets?
        for (netns, fd) in namespaces.sorted(by: { $0.key < $1.key }) {
            guard let now = SocketDiag.inNamespace(fd, { Self.listenOverflows(path: "/proc/thread-self/net/netstat") }) ?? nil else { continue }
            let before = lastCount[netns] ?? now
            lastCount[netns] = now
            guard now > before else { continue }
            let listeners = SocketDiag.inNamespace(fd) {
                ((try? SocketDiag.dump(family: .ipv4, states: 1 << 10)) ?? []) + ((try? SocketDiag.dump(family: .ipv6, states: 1 << 10)) ?? [])
            } ?? []
            var full = listeners.filter { $0.acceptQueueLimit > 0 ? $0.acceptQueue >= $0.acceptQueueLimit : $0.acceptQueue > 0 }
            if !full.isEmpty {
                let owners = table ?? ProcSockets.scan(procRoot: procRoot)
                table = owners
                for i in full.indices {
                    full[i].netns = netns
                    if let owner = owners.ownerOfInode[UInt64(full[i].inode)] {
                        full[i].owner = owners.owner(owner)
                    }
                }
                lastFull[netns] = full
            } else {
                // Gone before this check: the last seen full, or those the trace saw open there.
                full = lastFull[netns] ?? listenersSeen[netns] ?? []
            }
            for (l, share) in ProcNetText.share(drops: now - before, among: full) {
                out.append(Overflow(listener: l, drops: share))
            }
        }
        return out
    }

    /// Follows new namespaces (call now and then; it walks /proc).
    public mutating func refreshNamespaces() {
        for (netns, pid) in ProcSockets.scan(procRoot: procRoot).pidInNetns where namespaces[netns] == nil {
            let fd = open("\(procRoot)/\(pid)/ns/net", O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { continue }
            namespaces[netns] = fd
            lastCount[netns] = SocketDiag.inNamespace(fd) { Self.listenOverflows(path: "/proc/thread-self/net/netstat") } ?? nil
        }
    }

    /// TcpExtListenOverflows from a netstat file (/proc/thread-self/net/netstat: this thread's namespace).
    static func listenOverflows(path: String) -> Int? {
        ProcSockets.readText(path).flatMap(ProcNetText.listenOverflows(netstat:))
    }
}
