import CLibBPF
import CTCPTrailEvent
import TCPTrailCore
import Foundation

/// The embedded BPF object through its life: open, configure, load, attach,
/// close. Each step is its own call with its own typed error; `close()` (or
/// deinit) releases links, ring buffer and object in reverse order.
public final class TraceProgram {
    fileprivate(set) var object: OpaquePointer?
    private var links: [OpaquePointer] = []
    private var objectBytes: [UInt8]
    public private(set) var isLoaded = false

    /// The programs in the object and the tracepoints they attach to.
    public static let tracepoints: [(program: String, tracepoint: String)] = [
        ("handle_set_state", "sock:inet_sock_set_state"),
        ("handle_retransmit_skb", "tcp:tcp_retransmit_skb"),
        ("handle_retransmit_synack", "tcp:tcp_retransmit_synack"),
        ("handle_send_reset", "tcp:tcp_send_reset"),
        ("handle_receive_reset", "tcp:tcp_receive_reset"),
        ("handle_error_report", "sock:inet_sk_error_report"),
        ("handle_destroy_sock", "tcp:tcp_destroy_sock"),
        ("handle_exit_connect", "syscalls:sys_exit_connect"),
        ("handle_exit_listen", "syscalls:sys_exit_listen"),
        ("handle_kfree_skb", "skb:kfree_skb"),
    ]

    /// The compiled object embedded at build time.
    public static func embeddedObject() -> [UInt8]? {
        guard let data = Data(base64Encoded: EmbeddedBPFObject.base64, options: .ignoreUnknownCharacters),
              data.count == EmbeddedBPFObject.size
        else { return nil }
        return [UInt8](data)
    }

    /// Step 1: parses the embedded object. Nothing reaches the kernel yet.
    public static func open() throws(LoaderError) -> TraceProgram {
        guard let bytes = embeddedObject() else { throw .openFailed(errno: EINVAL) }
        return try TraceProgram(objectBytes: bytes)
    }

    private init(objectBytes: [UInt8]) throws(LoaderError) {
        self.objectBytes = objectBytes
        var opts = bpf_object_open_opts()
        opts.sz = MemoryLayout<bpf_object_open_opts>.size
        let name = strdup("tcptrail")
        defer { free(name) }
        opts.object_name = UnsafePointer(name)
        let obj = self.objectBytes.withUnsafeBytes { raw in
            bpf_object__open_mem(raw.baseAddress, raw.count, &opts)
        }
        guard let obj else { throw .openFailed(errno: errno) }
        object = obj
    }

    deinit { close() }

    private func map(named suffix: String) -> OpaquePointer? {
        var m = bpf_object__next_map(object, nil)
        while let current = m {
            if let n = bpf_map__name(current), String(cString: n).hasSuffix(suffix) { return current }
            m = bpf_object__next_map(object, current)
        }
        return nil
    }

    /// Step 2: writes the filters and buffer sizes into the object.
    public func configure(_ settings: TraceSettings) throws(LoaderError) {
        guard !isLoaded else { throw .configureFailed("already loaded") }
        guard let rodata = map(named: ".rodata") else { throw .configureFailed("no .rodata map for tt_config") }
        var size = 0
        guard let initial = bpf_map__initial_value(rodata, &size), size >= MemoryLayout<tcptrail_config>.size else {
            throw .configureFailed(".rodata is smaller than tcptrail_config")
        }
        var config = settings.kernelConfig()
        withUnsafeBytes(of: &config) { src in
            UnsafeMutableRawPointer(mutating: initial).copyMemory(from: src.baseAddress!, byteCount: src.count)
        }
        guard let events = map(named: "events") else { throw .configureFailed("no events ring buffer map") }
        let bytes = settings.ringBufferBytes
        guard bytes >= 4096, bytes & (bytes - 1) == 0 else {
            throw .configureFailed("ring buffer size \(bytes) is not a power of two of at least 4096")
        }
        let rc = bpf_map__set_max_entries(events, bytes)
        if rc != 0 { throw .configureFailed("ring buffer size \(bytes): \(errnoText(-rc))") }
    }

    /// Step 3: loads maps and programs into the kernel (the verifier runs here).
    public func load() throws(LoaderError) {
        let rc = bpf_object__load(object)
        guard rc == 0 else {
            let err = -rc
            let log = LibBPFLog.text
            if err == ESRCH || err == ENOENT,
               let missing = Self.tracepoints.first(where: { log.contains("'\($0.program)'") && log.contains("failed to find") })
            {
                throw .tracepointMissing(program: missing.tracepoint, errno: err)
            }
            if err == EPERM { throw .notPrivileged }
            throw .loadFailed(errno: err, verifierLog: log)
        }
        isLoaded = true
    }

    /// Step 4: attaches every program to its tracepoint. On failure nothing stays attached.
    public func attach() throws(LoaderError) {
        var prog = bpf_object__next_program(object, nil)
        while let p = prog {
            guard let link = bpf_program__attach(p) else {
                let err = errno
                let name = bpf_program__name(p).map { String(cString: $0) } ?? "?"
                detach()
                let tp = Self.tracepoints.first(where: { $0.program == name })?.tracepoint ?? name
                if err == ENOENT || err == ESRCH { throw .tracepointMissing(program: tp, errno: err) }
                throw .attachFailed(program: tp, errno: err)
            }
            links.append(link)
            prog = bpf_object__next_program(object, p)
        }
    }

    /// Detaches every program; the maps stay readable until `close()`.
    public func detach() {
        for link in links.reversed() { bpf_link__destroy(link) }
        links.removeAll()
    }

    /// Releases everything. Safe to call more than once.
    public func close() {
        detach()
        if let object { bpf_object__close(object) }
        object = nil
    }

    /// The ring buffer's file descriptor (after load).
    public var eventsFD: Int32 {
        guard let m = map(named: "events") else { return -1 }
        return bpf_map__fd(m)
    }

    /// Kernel-side counters summed over CPUs (after load).
    public func readStats() -> KernelStats {
        guard let m = map(named: "stats") else { return KernelStats() }
        let fd = bpf_map__fd(m)
        let cpus = Int(max(libbpf_num_possible_cpus(), 1))
        var values = [UInt64](repeating: 0, count: cpus)
        var out = KernelStats()
        for index in 0..<UInt32(TT_STAT_MAX.rawValue) {
            var key = index
            let rc = values.withUnsafeMutableBytes { bpf_map_lookup_elem(fd, &key, $0.baseAddress) }
            guard rc == 0 else { continue }
            let sum = values.reduce(0, &+)
            switch index {
            case TT_STAT_LOST.rawValue: out.lost = sum
            case TT_STAT_TRACK_FULL.rawValue: out.untracked = sum
            case TT_STAT_FILTERED.rawValue: out.filtered = sum
            case TT_STAT_SUBMITTED.rawValue: out.submitted = sum
            case (TT_STAT_LOST_BY_TYPE.rawValue + 1)...(TT_STAT_LOST_BY_TYPE.rawValue + 5):
                if let kind = KernelEventKind(rawValue: UInt8(index - TT_STAT_LOST_BY_TYPE.rawValue)) { out.lostByKind[kind] = sum }
            default: break
            }
        }
        return out
    }
}

/// The kernel side's own counters, summed over CPUs.
public struct KernelStats: Sendable, Equatable {
    /// Events dropped because the ring buffer was full.
    public var lost: UInt64 = 0
    /// Sockets not tracked because the connection table was full.
    public var untracked: UInt64 = 0
    /// Events the in-kernel filters dropped.
    public var filtered: UInt64 = 0
    /// Events written to the ring buffer.
    public var submitted: UInt64 = 0
    /// `lost` split by what the events were.
    public var lostByKind: [KernelEventKind: UInt64] = [:]
    public init() {}
}

extension TraceProgram {
    /// Attaches and detaches each program alone, for `doctor`.
    func attachEachForCheck() -> [String: Int32] {
        var results: [String: Int32] = [:]
        var prog = bpf_object__next_program(object, nil)
        while let p = prog {
            let name = bpf_program__name(p).map { String(cString: $0) } ?? "?"
            if let link = bpf_program__attach(p) {
                results[name] = 0
                bpf_link__destroy(link)
            } else {
                results[name] = errno
            }
            prog = bpf_object__next_program(object, p)
        }
        return results
    }
}

extension TraceProgram {
    /// Tells the kernel side who owns sockets that predate the trace (by cookie).
    @discardableResult
    public func seedOwners(_ sockets: [SocketSnapshot]) -> Int {
        guard let m = map(named: "owner_seeds") else { return 0 }
        let fd = bpf_map__fd(m)
        var written = 0
        for s in sockets where s.pid != 0 {
            var key = s.cookie
            var value = tcptrail_owner()
            value.pid = s.pid
            withUnsafeMutableBytes(of: &value.comm) { $0.storeBytes(of: s.comm, as: ProcessName.self) }
            if bpf_map_update_elem(fd, &key, &value, UInt64(BPF_ANY)) == 0 { written += 1 }
        }
        return written
    }

    /// Tells the kernel side who owns listeners that predate the trace
    /// (after load, before attach). Returns how many were written.
    @discardableResult
    public func seedListeners(_ owners: [ListenerOwner]) -> Int {
        guard let m = map(named: "listeners") else { return 0 }
        let fd = bpf_map__fd(m)
        var written = 0
        for o in owners {
            var key = tcptrail_listener_key(netns: o.netns, family: o.family == 6 ? 10 : 2, port: o.port)
            var value = tcptrail_owner()
            value.pid = o.pid
            withUnsafeMutableBytes(of: &value.comm) { $0.storeBytes(of: o.comm, as: ProcessName.self) }
            if bpf_map_update_elem(fd, &key, &value, UInt64(BPF_ANY)) == 0 { written += 1 }
        }
        return written
    }
}
