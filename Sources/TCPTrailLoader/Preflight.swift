import CLibBPF
import Foundation

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

        // Each tracepoint: BTF knows the tp_btf ones; tracefs or a real attach knows the rest.
        var attachResults: [String: Int32] = [:]
        if isPrivileged, vmlinux != nil { attachResults = tryAttachEach() }
        for (program, tracepoint) in TraceProgram.tracepoints {
            let event = String(tracepoint.split(separator: ":").last ?? "")
            if let err = attachResults[program] {
                checks.append(Check(outcome: err == 0 ? .ok : .fail, name: "tracepoint \(tracepoint)",
                                    detail: err == 0 ? "loaded and attached" : "cannot attach: \(errnoText(err))",
                                    exitStatus: err == 0 ? 0 : LoaderError.tracepointMissing(program: tracepoint, errno: err).exitStatus))
                continue
            }
            if tracepoint.hasPrefix("syscalls:") {
                let path = "/sys/kernel/tracing/events/syscalls/\(event)"
                if access("/sys/kernel/tracing/events", F_OK) == 0 {
                    let ok = access(path, F_OK) == 0
                    checks.append(Check(outcome: ok ? .ok : .fail, name: "tracepoint \(tracepoint)", detail: ok ? "present in tracefs" : "absent from tracefs",
                                        exitStatus: ok ? 0 : LoaderError.tracepointMissing(program: tracepoint, errno: ENOENT).exitStatus))
                } else {
                    checks.append(Check(outcome: .warn, name: "tracepoint \(tracepoint)", detail: "not checked: tracefs is not mounted and attaching needs privileges"))
                }
            } else if let vmlinux {
                let found = btf__find_by_name_kind(vmlinux, "btf_trace_\(event)", UInt32(BTF_KIND_TYPEDEF)) > 0
                checks.append(Check(outcome: found ? .ok : .fail, name: "tracepoint \(tracepoint)", detail: found ? "present in kernel BTF" : "absent from kernel BTF",
                                    exitStatus: found ? 0 : LoaderError.tracepointMissing(program: tracepoint, errno: ENOENT).exitStatus))
            } else {
                checks.append(Check(outcome: .warn, name: "tracepoint \(tracepoint)", detail: "not checked: no BTF"))
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

    /// Loads the object once and attaches each program alone; errno per program (0 = ok).
    static func tryAttachEach() -> [String: Int32] {
        var results: [String: Int32] = [:]
        do {
            let program = try TraceProgram.open()
            try program.configure(TraceSettings())
            try program.load()
            results = program.attachEachForCheck()
            program.close()
        } catch {
            // Load failed as a whole: leave the per-tracepoint checks to BTF/tracefs.
        }
        return results
    }
}
