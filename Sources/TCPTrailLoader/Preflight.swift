import CLibBPF
import TCPTrailCore
import Foundation
import TCPTrailHost

/// The checks `tcptrail doctor` prints and `trace` runs before loading.
public enum Preflight {
    /// Whether this process may load tracing programs: root, or CAP_BPF and CAP_PERFMON.
    public static func privileged() -> Bool {
        if geteuid() == 0 { return true }
        return hasCapabilities(bpf: true, perfmon: true)
    }

    /// Reads CapEff from /proc/self/status.
    static func effectiveCapabilities() -> UInt64? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("CapEff:") {
            let hex = line.dropFirst("CapEff:".count).trimmingCharacters(in: .whitespaces)
            return UInt64(hex, radix: 16)
        }
        return nil
    }

    static func hasCapabilities(bpf: Bool, perfmon: Bool) -> Bool {
        guard let caps = effectiveCapabilities() else { return false }
        let capPerfmon: UInt64 = 1 << 38, capBPF: UInt64 = 1 << 39, capSysAdmin: UInt64 = 1 << 21
        if caps & capSysAdmin != 0 { return true }
        return (!bpf || caps & capBPF != 0) && (!perfmon || caps & capPerfmon != 0)
    }

    public static let btfPath = "/sys/kernel/btf/vmlinux"

    public static func kernelBTFPresent() -> Bool {
        access(btfPath, R_OK) == 0
    }

    /// Whether the kernel offers BPF ring buffers (needs privileges to probe).
    public static func ringBufferSupported() -> Bool {
        libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, nil) == 1
    }

    /// The checks `trace` must pass before it opens the object, in order.
    public static func checkBeforeTrace() throws(LoaderError) {
        guard privileged() else { throw .notPrivileged }
        guard kernelBTFPresent() else { throw .noKernelBTF }
        guard ringBufferSupported() else { throw .noRingBuffer }
    }

    /// One doctor line.
    public struct Check: Sendable {
        public enum Outcome: String, Sendable { case ok, warn, fail }
        public var outcome: Outcome
        public var name: String
        public var detail: String
        /// The exit status this failure maps to, for `doctor`'s own status.
        public var exitStatus: Int32 = 0
    }

    /// Every check, each independent of the others where it can be.
    public static func doctor() -> [Check] {
        var checks: [Check] = []
        let isPrivileged = privileged()
        if geteuid() == 0 {
            checks.append(Check(outcome: .ok, name: "privileges", detail: "running as root"))
        } else if isPrivileged {
            checks.append(Check(outcome: .ok, name: "privileges", detail: "CAP_BPF and CAP_PERFMON are effective"))
        } else {
            checks.append(Check(outcome: .fail, name: "privileges", detail: LoaderError.notPrivileged.message, exitStatus: LoaderError.notPrivileged.exitStatus))
        }

        var vmlinux: OpaquePointer?
        if kernelBTFPresent() {
            vmlinux = btf__load_vmlinux_btf()
            let size = (try? FileManager.default.attributesOfItem(atPath: btfPath)[.size] as? Int) ?? 0
            checks.append(Check(outcome: vmlinux == nil ? .fail : .ok, name: "BTF",
                                detail: vmlinux == nil ? "\(btfPath) exists but libbpf cannot parse it" : "\(btfPath) (\(size / 1024) KiB)",
                                exitStatus: vmlinux == nil ? LoaderError.noKernelBTF.exitStatus : 0))
        } else {
            checks.append(Check(outcome: .fail, name: "BTF", detail: LoaderError.noKernelBTF.message, exitStatus: LoaderError.noKernelBTF.exitStatus))
        }
        defer { if let vmlinux { btf__free(vmlinux) } }

        if isPrivileged {
            let ok = ringBufferSupported()
            checks.append(Check(outcome: ok ? .ok : .fail, name: "ring buffer",
                                detail: ok ? "BPF_MAP_TYPE_RINGBUF is supported" : LoaderError.noRingBuffer.message,
                                exitStatus: ok ? 0 : LoaderError.noRingBuffer.exitStatus))
        } else {
            checks.append(Check(outcome: .warn, name: "ring buffer", detail: "not probed: needs privileges"))
        }

        // The features: what this kernel's BTF offers, then the real thing:
        // the object opened, loaded and attached as `trace` does it.
        var facts: KernelFacts?
        if let vmlinux {
            facts = KernelFacts.read(from: vmlinux, release: KernelFacts.runningRelease())
        }
        checks.append(Check(outcome: .ok, name: "kernel", detail: "Linux \(KernelFacts.runningRelease())"))
        let tracefsMounted = access("/sys/kernel/tracing/events", F_OK) == 0
        checks.append(Check(outcome: .ok, name: "tracefs",
                            detail: (tracefsMounted ? "mounted" : "not mounted") + "; not needed: every hook is found through BTF"))
        // The tables as 'trace' would size them here and now.
        let tables = TableSizes.forHost(maxConnections: nil, maxListeners: nil, listenersNow: isPrivileged ? ListenerScan.scan().count : nil)
        checks.append(Check(outcome: .ok, name: "tables",
                            detail: "connections \(tables.connections), listeners \(tables.listeners), owners at start \(tables.ownerSeeds) (from \(tables.basis); --max-connections and --max-listeners set them)"))
        if let facts {
            var plan = HookPlan.choose(for: facts)
            var how = "from BTF only: loading needs privileges"
            if isPrivileged {
                switch tryLoadAndAttach(facts, tables: tables) {
                case .success(let loaded):
                    plan = loaded
                    checks.append(Check(outcome: .ok, name: "load and attach",
                                        detail: "\(plan.programNames.count) programs verified and attached, as 'trace' does"))
                    how = ""
                case .failure(let error):
                    checks.append(Check(outcome: .fail, name: "load and attach", detail: error.message, exitStatus: error.exitStatus))
                    how = "from BTF only: loading failed"
                }
            }
            for status in plan.features {
                let f = status.feature
                let hooks = plan.variants.filter { $0.provides.contains(f) }.map(\.tracepoint)
                if let why = status.missing {
                    checks.append(Check(outcome: f.isRequired ? .fail : .warn, name: "feature \(f.rawValue)",
                                        detail: "unavailable: \(why); \(f.withoutIt)",
                                        exitStatus: f.isRequired ? LoaderError.tracepointMissing(program: "sock:inet_sock_set_state", errno: ENOENT).exitStatus : 0))
                } else {
                    checks.append(Check(outcome: .ok, name: "feature \(f.rawValue)",
                                        detail: hooks.joined(separator: ", ") + (how.isEmpty ? "" : " (\(how))")))
                }
            }
        }

        var limit = rlimit()
        getrlimit(__rlimit_resource_t(8), &limit) // RLIMIT_MEMLOCK
        let memlock = limit.rlim_cur == rlim_t.max ? "unlimited" : "\(limit.rlim_cur / 1024) KiB"
        var uts = utsname()
        uname(&uts)
        let release = withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix(while: { $0 != 0 }), as: UTF8.self) }
        let parts = release.split(whereSeparator: { !$0.isNumber }).compactMap { Int($0) }
        let memcg = parts.count >= 2 && (parts[0], parts[1]) >= (5, 11)
        if memcg || limit.rlim_cur == rlim_t.max || limit.rlim_cur >= 64 << 20 {
            checks.append(Check(outcome: .ok, name: "memlock", detail: "RLIMIT_MEMLOCK \(memlock)" + (memcg ? "; kernel \(release) charges BPF memory to the cgroup instead" : "")))
        } else {
            checks.append(Check(outcome: .fail, name: "memlock", detail: "RLIMIT_MEMLOCK is \(memlock) on kernel \(release): raise it with 'ulimit -l unlimited'",
                                exitStatus: LoaderError.loadFailed(errno: EPERM, verifierLog: "").exitStatus))
        }
        return checks
    }

    /// Opens, loads and attaches the object as `trace` does, then detaches:
    /// the plan in force, or the first failure.
    static func tryLoadAndAttach(_ facts: KernelFacts, tables: TableSizes) -> Result<HookPlan, LoaderError> {
        Result { () throws(LoaderError) -> HookPlan in
            var settings = TraceSettings()
            settings.tables = tables
            let program = try TraceProgram.load(settings, facts: facts)
            defer { program.close() }
            try program.attach()
            return program.plan
        }
    }
}
