import TCPTrailCore
#if canImport(Glibc)
import Glibc
#endif

/// Finds the listeners that exist now and their processes, in every network
/// namespace a process sits in, the way `ss -ltp` does it from /proc: socket
/// inodes from /proc/PID/fd, listeners from /proc/PID/net/tcp{,6}.
///
/// The kernel side learns a listener's owner when listen() runs; listeners
/// older than the trace are learnt here, so their accepted children get the
/// right process from their first event.
public enum ListenerScan {
    public static func scan(procRoot: String = "/proc") -> [ListenerOwner] {
        let table = ProcSockets.scan(procRoot: procRoot)
        var result: [ListenerOwner] = []
        for (netns, pid) in table.pidInNetns {
            for (file, family) in [("tcp", AddressFamily.ipv4), ("tcp6", .ipv6)] {
                guard let text = ProcSockets.readText("\(procRoot)/\(pid)/net/\(file)") else { continue }
                for (port, inode) in ProcNetText.listeners(in: text) {
                    guard let owner = table.ownerOfInode[inode] else { continue }
                    result.append(ListenerOwner(key: ListenerKey(netns: netns, family: family, port: port), owner: table.owner(owner)))
                }
            }
        }
        return result
    }
}

/// Which process holds which socket inode, and one process per network
/// namespace, from /proc (as `ss -p` finds them).
public struct ProcSockets {
    public var ownerOfInode: [UInt64: UInt32] = [:]
    public var pidInNetns: [UInt32: UInt32] = [:]
    let procRoot: String

    public static func scan(procRoot: String = "/proc") -> ProcSockets {
        var t = ProcSockets(procRoot: procRoot)
        for pid in numericEntries(procRoot) {
            if let ns = linkNumber("\(procRoot)/\(pid)/ns/net", prefix: "net:["), t.pidInNetns[ns] == nil {
                t.pidInNetns[ns] = pid
            }
            let fdDir = "\(procRoot)/\(pid)/fd"
            for fd in numericEntries(fdDir) {
                if let inode = linkNumber("\(fdDir)/\(fd)", prefix: "socket:["), t.ownerOfInode[UInt64(inode)] == nil {
                    t.ownerOfInode[UInt64(inode)] = pid
                }
            }
        }
        return t
    }

    /// The process name from /proc/PID/comm.
    public func comm(of pid: UInt32) -> ProcessName {
        ProcessName(Self.readText("\(procRoot)/\(pid)/comm").map { String($0.prefix { $0 != "\n" }) } ?? "")
    }

    /// The process as an owner: its name and its cgroup.
    public func owner(_ pid: UInt32) -> Owner {
        Owner(pid: pid, comm: comm(of: pid), cgroup: CgroupResolver.shared.ofProcess(pid, procRoot: procRoot))
    }

    static func numericEntries(_ path: String) -> [UInt32] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var out: [UInt32] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let n = UInt32(name) { out.append(n) }
        }
        return out
    }

    /// The number in a link such as `socket:[12345]`.
    static func linkNumber(_ path: String, prefix: String) -> UInt32? {
        var buf = [CChar](repeating: 0, count: 128)
        let n = readlink(path, &buf, buf.count - 1)
        guard n > 0 else { return nil }
        let text = String(decoding: buf.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard text.hasPrefix(prefix), text.hasSuffix("]") else { return nil }
        return UInt32(text.dropFirst(prefix.count).dropLast())
    }

    static func readText(_ path: String) -> String? {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            data.append(contentsOf: chunk.prefix(n))
        }
        return String(decoding: data, as: UTF8.self)
    }
}

