import CTCPTrailEvent
import TCPTrailCore
#if canImport(Glibc)
import Glibc
#endif

/// What the kernel side filters on and how it buffers, fixed before load.
public struct TraceSettings: Sendable, Equatable {
    /// The connection filters, the same value user space checks: the kernel
    /// side applies all but `addresses` (--addr), at most `maxFilterValues` per list.
    public var filter = EventFilter()
    /// Ring buffer size in bytes: a power of two, at least one page.
    public var ringBufferBytes: UInt32 = 16 << 20
    /// Wake the reader once this much is queued (it also drains on a timer).
    public var wakeupBytes: UInt64?
    /// Optional features the operator turned off, with the reason to show:
    /// their programs are not loaded.
    public var turnedOff: [KernelFeature: String] = [:]
    /// How many entries the kernel side's tables hold.
    public var tables = TableSizes()
    /// tw_timer_handler's address, when the timewait timer is followed (0: not).
    public var timewaitTimer: UInt64 = 0
    /// --cgroup: the ids of the filtered paths' subtrees at start (`cgroup_set`).
    public var cgroupIDs: [UInt64] = []

    /// How many values each filter list takes.
    public static let maxFilterValues = Int(TT_MAX_FILTER)

    public init() {}

    /// The `.rodata` block the BPF program reads as `tt_config`.
    func kernelConfig() -> tcptrail_config {
        var c = tcptrail_config()
        let f = filter
        withUnsafeMutableBytes(of: &c.pids) { raw in
            for (i, p) in f.pids.prefix(Self.maxFilterValues).enumerated() { raw.storeBytes(of: p, toByteOffset: i * 4, as: UInt32.self) }
        }
        func fill(_ tuple: inout (UInt16, UInt16, UInt16, UInt16, UInt16, UInt16, UInt16, UInt16), _ values: [UInt16]) {
            withUnsafeMutableBytes(of: &tuple) { raw in
                for (i, p) in values.prefix(Self.maxFilterValues).enumerated() { raw.storeBytes(of: p, toByteOffset: i * 2, as: UInt16.self) }
            }
        }
        fill(&c.ports, f.ports)
        fill(&c.lports, f.localPorts)
        fill(&c.rports, f.remotePorts)
        c.n_pids = UInt32(min(f.pids.count, Self.maxFilterValues))
        c.n_ports = UInt32(min(f.ports.count, Self.maxFilterValues))
        c.n_lports = UInt32(min(f.localPorts.count, Self.maxFilterValues))
        c.n_rports = UInt32(min(f.remotePorts.count, Self.maxFilterValues))
        c.netns = f.netns ?? 0
        c.family = f.family?.kernel ?? 0
        c.wakeup_bytes = wakeupBytes ?? UInt64(ringBufferBytes / 4)
        c.tw_timer_fn = timewaitTimer
        c.cgroup_filter = f.cgroups.isEmpty ? 0 : 1
        return c
    }
}

/// The sizes of the kernel side's tables (BPF maps), set before load.
///
/// A table that fills is a counted gap (`KernelStats.tables`), never a
/// silent eviction, so the defaults grow
/// with the host: four times what is open at start, if that is more.
public struct TableSizes: Sendable, Equatable {
    /// Sockets tracked at once (`conns`); accepted children with ids of their
    /// own (`child_ids`) and connections in timewait sockets (`timewaits`) as many.
    public var connections = 65_536
    /// Listeners whose owner accepted sockets inherit (`listeners`).
    public var listeners = 8_192
    /// Owners of sockets open at start (`owner_seeds`).
    public var ownerSeeds = 65_536
    /// Where the sizes came from, for the header and `doctor`.
    public var basis = "defaults"

    public static let connectionRange = 64...16_777_216
    public static let listenerRange = 16...1_048_576

    public init() {}

    /// The sizes for this host: explicit values as given, otherwise the
    /// defaults or four times the TCP sockets (`/proc/net/sockstat`'s alloc,
    /// all namespaces) and listeners open now, whichever is more.
    public static func forHost(maxConnections: Int?, maxListeners: Int?,
                               socketsNow: Int? = SocketCount.allocated(), listenersNow: Int? = nil) -> TableSizes {
        var t = TableSizes()
        let sockets = socketsNow ?? 0
        if let maxConnections {
            t.connections = maxConnections
        } else {
            t.connections = min(max(t.connections, sockets * 4), connectionRange.upperBound)
        }
        if let maxListeners {
            t.listeners = maxListeners
        } else if let listenersNow {
            t.listeners = min(max(t.listeners, listenersNow * 4), listenerRange.upperBound)
        }
        t.ownerSeeds = min(max(1024, sockets * 2), connectionRange.upperBound)
        var why: [String] = []
        why.append(maxConnections != nil ? "--max-connections" : "\(sockets) TCP sockets open now")
        if maxListeners != nil { why.append("--max-listeners") } else if let listenersNow { why.append("\(listenersNow) listeners open now") }
        t.basis = why.joined(separator: ", ")
        return t
    }

    /// `{"connections":N,"listeners":N,"owner_seeds":N}`, for the log header.
    public var headerJSON: String {
        "{\"connections\":\(connections),\"listeners\":\(listeners),\"owner_seeds\":\(ownerSeeds)}"
    }
}

/// How many TCP sockets the host has, cheaply, before anything is traced.
public enum SocketCount {
    /// `alloc` of the `TCP:` line of /proc/net/sockstat: TCP sockets
    /// allocated in every namespace (`inuse` counts this namespace only).
    public static func allocated(procRoot: String = "/proc") -> Int? {
        guard let f = fopen("\(procRoot)/net/sockstat", "r") else { return nil }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 512)
        while fgets(&line, Int32(line.count), f) != nil {
            let text = String(cString: line)
            guard text.hasPrefix("TCP:") else { continue }
            return parse(text)
        }
        return nil
    }

    /// "TCP: inuse 5 orphan 0 tw 2 alloc 9 mem 1" -> 9.
    public static func parse(_ line: String) -> Int? {
        let f = line.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard let i = f.firstIndex(of: "alloc"), i + 1 < f.count else { return nil }
        return Int(f[i + 1])
    }
}
