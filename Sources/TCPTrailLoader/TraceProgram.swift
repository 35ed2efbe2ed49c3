import CLibBPF
import CTCPTrailEvent
import TCPTrailCore
import Foundation
import TCPTrailHost

/// The embedded BPF object through its life: open, configure, load, attach,
/// close. Each step is its own call with its own typed error; `close()` (or
/// deinit) releases links, ring buffer and object in reverse order.
public final class TraceProgram {
    fileprivate(set) var object: OpaquePointer?
    private var links: [OpaquePointer] = []
    private var objectBytes: [UInt8]
    public private(set) var isLoaded = false

    /// The programs chosen for this kernel and the features in force.
    public private(set) var plan = HookPlan(variants: [], missing: [:])

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

    private func map(_ name: BPFMapName) -> OpaquePointer? { map(named: name.rawValue) }

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
        guard let events = map(.events) else { throw .configureFailed("no events ring buffer map") }
        let bytes = settings.ringBufferBytes
        guard bytes >= 4096, bytes & (bytes - 1) == 0 else {
            throw .configureFailed("ring buffer size \(bytes) is not a power of two of at least 4096")
        }
        let rc = bpf_map__set_max_entries(events, bytes)
        if rc != 0 { throw .configureFailed("ring buffer size \(bytes): \(errnoText(-rc))") }
        let t = settings.tables
        let sized: [(BPFMapName, Int)] = [(.conns, t.connections), (.child_ids, t.connections), (.listeners, t.listeners),
                                          (.owner_seeds, t.ownerSeeds), (.timewaits, t.connections),
                                          // Room for the cgroups made under the path later; none without --cgroup.
                                          (.cgroup_set, settings.filter.cgroups.isEmpty ? 1 : max(16_384, settings.cgroupIDs.count * 2))]
        for (name, entries) in sized {
            guard let m = map(name) else { throw .configureFailed("no \(name.rawValue) map") }
            let rc = bpf_map__set_max_entries(m, UInt32(clamping: entries))
            if rc != 0 { throw .configureFailed("\(name.rawValue) size \(entries): \(errnoText(-rc))") }
        }
        tables = t
    }

    /// Owners of sockets, and listeners, from /proc that did not fit their tables.
    var seedFailures: UInt64 = 0
    var listenerSeedFailures: UInt64 = 0

    /// The table sizes set by `configure`.
    public private(set) var tables = TableSizes()

    /// Step 3: marks the plan's programs for loading and every other
    /// variant's not (libbpf's autoload), so each tracepoint gets the
    /// variant this kernel's prototype fits.
    public func choose(_ plan: HookPlan) {
        let wanted = Set(plan.programNames)
        var prog = bpf_object__next_program(object, nil)
        while let p = prog {
            let name = bpf_program__name(p).map { String(cString: $0) } ?? ""
            bpf_program__set_autoload(p, wanted.contains(name))
            prog = bpf_object__next_program(object, p)
        }
        self.plan = plan
    }

    /// Step 4: loads maps and programs into the kernel (the verifier runs here).
    public func load() throws(LoaderError) {
        LibBPFLog.clear()
        let rc = bpf_object__load(object)
        guard rc == 0 else {
            let err = -rc
            let log = LibBPFLog.text
            if let rejected = LibBPFLog.rejectedProgram(in: log) {
                if err == EPERM && rejected.line.isEmpty { throw .notPrivileged }
                throw .programRejected(program: rejected.program, errno: err, verifierLine: rejected.line, verifierLog: log)
            }
            if err == EPERM { throw .notPrivileged }
            throw .loadFailed(errno: err, verifierLog: log)
        }
        isLoaded = true
    }

    /// Steps 1 to 4 as `trace` and `doctor` take them: open, configure, choose
    /// the variants `facts` fit, load. A variant the verifier refuses that no
    /// required feature depends on is left out, with the verifier's line as
    /// the reason, and the object opened again without it.
    public static func load(_ settings: TraceSettings, facts: KernelFacts) throws(LoaderError) -> TraceProgram {
        var refused: [String: String] = [:]
        for (feature, why) in settings.turnedOff where !feature.isRequired {
            for v in HookVariant.all where v.provides.contains(feature) { refused[v.programs[0].name.rawValue] = why }
        }
        while true {
            let program = try open()
            let plan = HookPlan.choose(for: facts, refused: refused)
            var configured = settings
            configured.timewaitTimer = plan.missing[.timewaitSockets] == nil ? facts.symbols[HookVariant.twTimer] ?? 0 : 0
            try program.configure(configured)
            program.choose(plan)
            do throws(LoaderError) {
                try program.load()
                return program
            } catch {
                program.close()
                guard case .programRejected(let name, _, let line, _) = error,
                      let variant = HookVariant.of(program: name),
                      !variant.provides.contains(where: \.isRequired),
                      refused[variant.programs[0].name.rawValue] == nil
                else { throw error }
                refused[variant.programs[0].name.rawValue] = "the verifier refused \(name): \(line)"
            }
        }
    }

    /// Every program the object holds, loaded or not.
    func programNamesInObject() -> [String] {
        var names: [String] = []
        var prog = bpf_object__next_program(object, nil)
        while let p = prog {
            if let n = bpf_program__name(p) { names.append(String(cString: n)) }
            prog = bpf_object__next_program(object, p)
        }
        return names
    }

    /// The loaded programs with their variant, in attach order.
    private func loadedPrograms() -> [(program: OpaquePointer, name: String, variant: HookVariant)] {
        plan.variants.flatMap { v in
            v.programs.compactMap { entry in
                bpf_object__find_program_by_name(object, entry.name.rawValue).map { ($0, entry.name.rawValue, v) }
            }
        }
    }

    /// Step 5: attaches every chosen program, each first copy before its
    /// second. An optional variant that cannot attach is detached and its
    /// features marked missing; a required one detaches everything and throws.
    public func attach() throws(LoaderError) {
        for variant in plan.variants {
            var made: [OpaquePointer] = []
            for (name, _) in variant.programs {
                let p = bpf_object__find_program_by_name(object, name.rawValue)
                guard let p, let link = bpf_program__attach(p) else {
                    let err = p == nil ? ENOENT : errno
                    for l in made.reversed() { bpf_link__destroy(l) }
                    made.removeAll()
                    if variant.provides.contains(where: \.isRequired) {
                        detach()
                        if err == ENOENT || err == ESRCH { throw .tracepointMissing(program: variant.tracepoint, errno: err) }
                        throw .attachFailed(program: variant.tracepoint, errno: err)
                    }
                    var degraded = plan
                    degraded.variants.removeAll { $0 == variant }
                    // One variant per tracepoint: what it provided is gone
                    // (the timewait timer's feature needs all three of its).
                    for f in variant.provides {
                        degraded.missing[f] = "cannot attach to \(variant.tracepoint): \(errnoText(err))"
                    }
                    plan = degraded
                    break
                }
                made.append(link)
            }
            links.append(contentsOf: made)
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
        guard let m = map(.events) else { return -1 }
        return bpf_map__fd(m)
    }

    /// Kernel-side counters summed over CPUs (after load).
    public func readStats() -> KernelStats {
        guard let m = map(.stats) else { return KernelStats() }
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
            case TT_STAT_TRACK_FULL.rawValue: out.tables.events = sum
            case TT_STAT_FILTERED.rawValue: out.filtered = sum
            case TT_STAT_SUBMITTED.rawValue: out.submitted = sum
            case TT_STAT_UNTRACKED_SOCKETS.rawValue: out.tables.sockets = sum
            case TT_STAT_LISTENERS_FULL.rawValue: out.tables.listeners = sum
            case TT_STAT_OWNERLESS_CHILDREN.rawValue: out.tables.acceptedWithoutOwner = sum
            case TT_STAT_CHILD_IDS_FULL.rawValue: out.tables.childIDs = sum
            case (TT_STAT_LOST_BY_TYPE.rawValue + 1)...(TT_STAT_LOST_BY_TYPE.rawValue + 6):
                if let kind = KernelEventKind(rawValue: UInt8(index - TT_STAT_LOST_BY_TYPE.rawValue)) { out.lostByKind[kind] = sum }
            default: break
            }
        }
        out.ringBufferFull = out.lost
        out.tables.ownerSeeds = seedFailures
        out.tables.listeners += listenerSeedFailures
        addRecursionMisses(to: &out)
        return out
    }

    /// Recursion misses of every program as read before, with when.
    private var missHistory: [(at: UInt64, misses: [String: UInt64])] = []

    /// How often the kernel skipped each program because it already ran on
    /// that CPU (bpf_prog_info.recursion_misses), how many of the first
    /// copies' misses the second copies handled, and the events lost.
    private func addRecursionMisses(to out: inout KernelStats) {
        for (p, name, _) in loadedPrograms() {
            let fd = bpf_program__fd(p)
            guard fd >= 0 else { continue }
            var info = bpf_prog_info()
            var length = UInt32(MemoryLayout<bpf_prog_info>.size)
            guard bpf_obj_get_info_by_fd(fd, &info, &length) == 0 else { continue }
            out.recursionMisses[name] = info.recursion_misses
        }
        // Read after the misses: a rescue follows its miss within the same
        // tracepoint call, so each miss read is matched by a rescue read now
        // unless that call is still running (on another CPU) or was lost.
        let rescued = readRescued()
        for v in plan.variants {
            if let hook = v.hook, let n = rescued[hook], n > 0 { out.rescued[v.tracepoint] = n }
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
        for v in plan.variants {
            guard let hook = v.hook, let kind = v.kind, let first = v.programs.first(where: { $0.copy == .first }) else { continue }
            let missed = settled[first.name.rawValue] ?? 0
            let lost = missed > (rescued[hook] ?? 0) ? missed - (rescued[hook] ?? 0) : 0
            guard lost > 0 else { continue }
            out.skipped += lost
            out.lost += lost
            out.lostByKind[kind, default: 0] += lost
        }
    }

    /// The second copies' rescues by hook, summed over CPUs.
    private func readRescued() -> [UInt32: UInt64] {
        guard let m = map(.rescued) else { return [:] }
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
    /// What full tables kept from the record (`acceptedNamed` is user space's to fill).
    public var tables = TableGaps()
    /// Events the in-kernel filters dropped.
    public var filtered: UInt64 = 0
    /// Events written to the ring buffer.
    public var submitted: UInt64 = 0
    /// `lost` split by what the events were.
    public var lostByKind: [KernelEventKind: UInt64] = [:]
    public init() {}
}

extension tcptrail_owner {
    /// The kernel side's owner record for `o` (no thread: /proc names the process only).
    init(_ o: Owner) {
        self.init()
        pid = o.pid
        cgroup = o.cgroup.info?.id ?? 0
        withUnsafeMutableBytes(of: &comm) { $0.storeBytes(of: o.comm, as: ProcessName.self) }
    }
}

extension TraceProgram {
    /// Tells the kernel side who owns sockets that predate the trace (by cookie).
    @discardableResult
    public func seedOwners(_ sockets: [SocketSnapshot]) -> Int {
        guard let m = map(.owner_seeds) else { return 0 }
        let fd = bpf_map__fd(m)
        var written = 0
        for s in sockets where s.owner.pid != 0 {
            var key = s.cookie
            var value = tcptrail_owner(s.owner)
            if bpf_map_update_elem(fd, &key, &value, UInt64(BPF_ANY)) == 0 { written += 1 } else { seedFailures += 1 }
        }
        return written
    }

    /// Tells the kernel side which cgroups --cgroup keeps (after load, before
    /// attach); false if one did not fit.
    public func seedCgroups(_ ids: [UInt64]) -> Bool {
        guard !ids.isEmpty else { return true }
        guard let m = map(.cgroup_set) else { return false }
        let fd = bpf_map__fd(m)
        var one: UInt8 = 1
        for id in ids {
            var key = id
            if bpf_map_update_elem(fd, &key, &one, UInt64(BPF_ANY)) != 0 { return false }
        }
        return true
    }

    /// Hands the kernel side the orphans open at start: FIN_WAIT_2 timewait
    /// sockets (no inode: the application has closed them), so their end
    /// (the peer's FIN, the FIN_WAIT_2 timeout, a reset) is the kernel's word
    /// too. TIME_WAITs are left to the snapshot's own timer value.
    @discardableResult
    public func seedTimewaits(_ sockets: [SocketSnapshot]) -> Int {
        guard plan.missing[.timewaitSockets] == nil, let m = map(.timewaits) else { return 0 }
        let fd = bpf_map__fd(m)
        var written = 0
        for s in sockets where s.state == .finWait2 && s.inode == 0 {
            var key = tcptrail_tw_key()
            key.netns = s.netns
            key.family = s.family.kernel
            key.lport = s.local.port
            key.rport = s.remote.port
            withUnsafeMutableBytes(of: &key.laddr) { $0.storeBytes(of: s.local.address, as: RawAddress.self) }
            withUnsafeMutableBytes(of: &key.raddr) { $0.storeBytes(of: s.remote.address, as: RawAddress.self) }
            var value = tcptrail_tw()
            value.conn = s.cookie
            value.substate = KernelTCPState.finWait2.rawValue
            value.linked = 1
            // NOEXIST: one made since attach is already named, with its owner.
            if bpf_map_update_elem(fd, &key, &value, UInt64(BPF_NOEXIST)) == 0 { written += 1 }
        }
        return written
    }

    /// Tells the kernel side who owns listeners that predate the trace
    /// (after load, before attach). Returns how many were written.
    @discardableResult
    public func seedListeners(_ owners: [ListenerOwner]) -> Int {
        guard let m = map(.listeners) else { return 0 }
        let fd = bpf_map__fd(m)
        var written = 0
        // One entry per key, counting the listeners on it (SO_REUSEPORT).
        var refs: [ListenerKey: (owner: Owner, count: UInt32)] = [:]
        for o in owners {
            refs[o.key, default: (o.owner, 0)].count += 1
        }
        for (key, entry) in refs {
            var k = tcptrail_listener_key(netns: key.netns, family: key.family.kernel, port: key.port)
            var value = tcptrail_listener()
            value.owner = tcptrail_owner(entry.owner)
            value.refs = entry.count
            if bpf_map_update_elem(fd, &k, &value, UInt64(BPF_ANY)) == 0 { written += 1 } else { listenerSeedFailures += UInt64(entry.count) }
        }
        return written
    }
}
