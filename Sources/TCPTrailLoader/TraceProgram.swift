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

    /// Which of a tracepoint's programs this is. Every tp_btf tracepoint has
    /// two copies of its program, because the kernel skips a program hit while
    /// that same program runs on the CPU (a softirq interrupting it): the
    /// tracepoint runs the first copy then the second for every event, the
    /// first handles what it is run for, the second what the kernel skipped
    /// the first for (see "Two copies of each program" in bpf/tcptrail.bpf.c).
    public enum Copy: Sendable {
        /// The only program on its tracepoint (the syscall exits).
        case only
        /// Handles every event it runs for. Its recursion misses are the
        /// second copy's to handle: those it did not ("rescued") are lost.
        case first
        /// Handles the events the first copy was skipped for. Its recursion
        /// misses are events the first copy handled.
        case second
    }

    /// Every program in the object, in attach order (a tracepoint calls its
    /// programs in the order they were attached, and each first copy must
    /// run before its second): its tracepoint, which copy it is, its index
    /// in the kernel side's "rescued" counters, and what kind of event a
    /// lost run would have reported (nil: none, or not known).
    public static let programs: [(program: String, tracepoint: String, copy: Copy, hook: UInt32?, kind: KernelEventKind?)] = [
        ("tt_state_a", "sock:inet_sock_set_state", .first, TT_HOOK_SET_STATE.rawValue, .transition),
        ("tt_state_b", "sock:inet_sock_set_state", .second, TT_HOOK_SET_STATE.rawValue, .transition),
        ("tt_retrans_a", "tcp:tcp_retransmit_skb", .first, TT_HOOK_RETRANSMIT_SKB.rawValue, .retransmit),
        ("tt_retrans_b", "tcp:tcp_retransmit_skb", .second, TT_HOOK_RETRANSMIT_SKB.rawValue, .retransmit),
        ("tt_synack_a", "tcp:tcp_retransmit_synack", .first, TT_HOOK_RETRANSMIT_SYNACK.rawValue, .retransmit),
        ("tt_synack_b", "tcp:tcp_retransmit_synack", .second, TT_HOOK_RETRANSMIT_SYNACK.rawValue, .retransmit),
        ("tt_rst_out_a", "tcp:tcp_send_reset", .first, TT_HOOK_SEND_RESET.rawValue, .reset),
        ("tt_rst_out_b", "tcp:tcp_send_reset", .second, TT_HOOK_SEND_RESET.rawValue, .reset),
        ("tt_rst_in_a", "tcp:tcp_receive_reset", .first, TT_HOOK_RECEIVE_RESET.rawValue, .reset),
        ("tt_rst_in_b", "tcp:tcp_receive_reset", .second, TT_HOOK_RECEIVE_RESET.rawValue, .reset),
        ("tt_error_a", "sock:inet_sk_error_report", .first, TT_HOOK_ERROR_REPORT.rawValue, .error),
        ("tt_error_b", "sock:inet_sk_error_report", .second, TT_HOOK_ERROR_REPORT.rawValue, .error),
        ("tt_destroy_a", "tcp:tcp_destroy_sock", .first, TT_HOOK_DESTROY_SOCK.rawValue, nil),
        ("tt_destroy_b", "tcp:tcp_destroy_sock", .second, TT_HOOK_DESTROY_SOCK.rawValue, nil),
        // A skipped run delays a held event to the socket's next transition.
        ("tt_exit_connect", "syscalls:sys_exit_connect", .only, nil, nil),
        ("tt_exit_listen", "syscalls:sys_exit_listen", .only, nil, nil),
        // Only listen-overflow drops are events, and only those go through
        // the copies' hand-over (every other kfree_skb hit returns first):
        // the first copy's misses are mostly other drops, so they are not
        // counted as lost listen drops. (The listen queues' own counters are
        // read once a second besides.)
        ("tt_kfree_a", "skb:kfree_skb", .first, TT_HOOK_KFREE_SKB.rawValue, nil),
        ("tt_kfree_b", "skb:kfree_skb", .second, TT_HOOK_KFREE_SKB.rawValue, nil),
    ]

    /// The tracepoints, each with its first program (the name `doctor`'s
    /// per-tracepoint check is keyed by).
    public static let tracepoints: [(program: String, tracepoint: String)] = {
        var seen = Set<String>()
        return programs.compactMap { p in seen.insert(p.tracepoint).inserted ? (p.program, p.tracepoint) : nil }
    }()

    static func tracepoint(ofProgram name: String) -> String? {
        programs.first(where: { $0.program == name })?.tracepoint
    }

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
               let missing = Self.programs.first(where: { log.contains("'\($0.program)'") && log.contains("failed to find") })
            {
                throw .tracepointMissing(program: missing.tracepoint, errno: err)
            }
            if err == EPERM { throw .notPrivileged }
            throw .loadFailed(errno: err, verifierLog: log)
        }
        isLoaded = true
    }

    /// The object's programs in attach order: those of `programs` in its
    /// order, then any other.
    private func programsInAttachOrder() -> [OpaquePointer] {
        var listed: [OpaquePointer] = []
        for entry in Self.programs {
            if let p = bpf_object__find_program_by_name(object, entry.program) { listed.append(p) }
        }
        var rest: [OpaquePointer] = []
        var prog = bpf_object__next_program(object, nil)
        while let p = prog {
            if !listed.contains(p) { rest.append(p) }
            prog = bpf_object__next_program(object, p)
        }
        return listed + rest
    }

    /// Step 4: attaches every program to its tracepoint, each first copy
    /// before its second. On failure nothing stays attached.
    public func attach() throws(LoaderError) {
        for p in programsInAttachOrder() {
            guard let link = bpf_program__attach(p) else {
                let err = errno
                let name = bpf_program__name(p).map { String(cString: $0) } ?? "?"
                detach()
                let tp = Self.tracepoint(ofProgram: name) ?? name
                if err == ENOENT || err == ESRCH { throw .tracepointMissing(program: tp, errno: err) }
                throw .attachFailed(program: tp, errno: err)
            }
            links.append(link)
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
        out.ringBufferFull = out.lost
        addRecursionMisses(to: &out)
        return out
    }

    /// Recursion misses of every program as read before, with when.
    private var missHistory: [(at: UInt64, misses: [String: UInt64])] = []

    /// How often the kernel skipped each program because it already ran on
    /// that CPU (bpf_prog_info.recursion_misses), how many of the first
    /// copies' misses the second copies handled, and the events lost.
    private func addRecursionMisses(to out: inout KernelStats) {
        for p in programsInAttachOrder() {
            let fd = bpf_program__fd(p)
            guard fd >= 0, let cName = bpf_program__name(p) else { continue }
            var info = bpf_prog_info()
            var length = UInt32(MemoryLayout<bpf_prog_info>.size)
            guard bpf_obj_get_info_by_fd(fd, &info, &length) == 0 else { continue }
            out.recursionMisses[String(cString: cName)] = info.recursion_misses
        }
        // Read after the misses: a rescue follows its miss within the same
        // tracepoint call, so each miss read is matched by a rescue read now
        // unless that call is still running (on another CPU) or was lost.
        let rescued = readRescued()
        for entry in Self.programs where entry.copy == .second {
            if let hook = entry.hook, let n = rescued[hook], n > 0 { out.rescued[entry.tracepoint] = n }
        }
        // While attached, compare with misses read at least 100 ms ago, so a
        // miss whose rescue is running right now is not reported as lost.
        let now = WallClock.monotonicNow()
        var settled = out.recursionMisses
        if !links.isEmpty {
            missHistory.append((now, out.recursionMisses))
            while missHistory.count > 1, missHistory[1].at + 100_000_000 <= now { missHistory.removeFirst() }
            settled = missHistory[0].at + 100_000_000 <= now ? missHistory[0].misses : [:]
        }
        for entry in Self.programs where entry.copy == .first {
            guard let hook = entry.hook, let kind = entry.kind else { continue }
            let missed = settled[entry.program] ?? 0
            let lost = missed > (rescued[hook] ?? 0) ? missed - (rescued[hook] ?? 0) : 0
            guard lost > 0 else { continue }
            out.skipped += lost
            out.lost += lost
            out.lostByKind[kind, default: 0] += lost
        }
    }

    /// The second copies' rescues by hook, summed over CPUs.
    private func readRescued() -> [UInt32: UInt64] {
        guard let m = map(named: "rescued") else { return [:] }
        let fd = bpf_map__fd(m)
        let cpus = Int(max(libbpf_num_possible_cpus(), 1))
        var values = [UInt64](repeating: 0, count: cpus)
        var out: [UInt32: UInt64] = [:]
        for hook in 0..<UInt32(TT_HOOK_MAX.rawValue) {
            var key = hook
            let rc = values.withUnsafeMutableBytes { bpf_map_lookup_elem(fd, &key, $0.baseAddress) }
            if rc == 0 { out[hook] = values.reduce(0, &+) }
        }
        return out
    }
}

/// The kernel side's own counters, summed over CPUs.
public struct KernelStats: Sendable, Equatable {
    /// Events lost: dropped because the ring buffer was full
    /// (`ringBufferFull`), plus those the kernel skipped both program copies
    /// for (`skipped`). A skipped event counts even if the in-kernel filters
    /// would have dropped it.
    public var lost: UInt64 = 0
    /// Events dropped because the ring buffer was full.
    public var ringBufferFull: UInt64 = 0
    /// Events the kernel's BPF recursion guard kept from both copies of a
    /// program (the first copy's misses that the second did not handle).
    /// Included in `lost` and `lostByKind`. While tracing, misses count here
    /// only once they are 100 ms old, so one whose second copy is still
    /// running is not taken for lost.
    public var skipped: UInt64 = 0
    /// The kernel's recursion_misses of each program, by program name (see
    /// `TraceProgram.programs`): runs it skipped because that program was
    /// already running on the CPU. A first copy's misses are the second
    /// copy's to handle; a second copy's, events the first copy handled.
    public var recursionMisses: [String: UInt64] = [:]
    /// Events the second copy handled because the kernel skipped the first,
    /// by tracepoint ("sock:inet_sock_set_state").
    public var rescued: [String: UInt64] = [:]
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
    /// Attaches and detaches each program alone, for `doctor`: errno by the
    /// name in `tracepoints`, the first failure of the tracepoint's copies.
    func attachEachForCheck() -> [String: Int32] {
        var results: [String: Int32] = [:]
        var prog = bpf_object__next_program(object, nil)
        while let p = prog {
            let name = bpf_program__name(p).map { String(cString: $0) } ?? "?"
            let tracepoint = Self.tracepoint(ofProgram: name)
            let key = Self.tracepoints.first(where: { $0.tracepoint == tracepoint })?.program ?? name
            var err: Int32 = 0
            if let link = bpf_program__attach(p) {
                bpf_link__destroy(link)
            } else {
                err = errno
            }
            if (results[key] ?? 0) == 0 { results[key] = err }
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
