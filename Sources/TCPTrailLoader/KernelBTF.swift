import CLibBPF
#if canImport(Glibc)
import Glibc
#endif
import TCPTrailCore

extension KernelFacts {
    /// Reads what the hook variants need from the running kernel's BTF
    /// (/sys/kernel/btf/vmlinux): each tracepoint's prototype, the enumerators
    /// they relocate; and the addresses they compare with from /proc/kallsyms
    /// (shown to root or CAP_SYSLOG). Needs no tracefs.
    public static func read() throws(LoaderError) -> KernelFacts {
        guard let btf = btf__load_vmlinux_btf() else { throw .noKernelBTF }
        defer { btf__free(btf) }
        return read(from: btf, release: runningRelease())
    }

    /// `uname -r`.
    public static func runningRelease() -> String {
        var uts = utsname()
        uname(&uts)
        return withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    static func read(from btf: OpaquePointer, release: String) -> KernelFacts {
        var arguments: [String: Int] = [:]
        for v in HookVariant.all where arguments[v.event] == nil {
            // typedef void (*btf_trace_<event>)(void *ctx, <the tracepoint's arguments>);
            let id = btf__find_by_name_kind(btf, "btf_trace_\(v.event)", UInt32(BTF_KIND_TYPEDEF as Int))
            guard id > 0, let typedef = btf__type_by_id(btf, UInt32(id)),
                  let pointer = btf__type_by_id(btf, typedef.pointee.type), Int(btf_kind(pointer)) == (BTF_KIND_PTR as Int),
                  let proto = btf__type_by_id(btf, pointer.pointee.type), Int(btf_kind(proto)) == (BTF_KIND_FUNC_PROTO as Int)
            else { continue }
            arguments[v.event] = max(Int(btf_vlen(proto)) - 1, 0)
        }
        var enumerators: Set<String> = []
        let enums = Set(HookVariant.all.compactMap { $0.enumerator?.type })
        for name in enums {
            var id = btf__find_by_name_kind(btf, name, UInt32(BTF_KIND_ENUM as Int))
            if id <= 0 { id = btf__find_by_name_kind(btf, name, UInt32(BTF_KIND_ENUM64 as Int)) }
            guard id > 0, let t = btf__type_by_id(btf, UInt32(id)) else { continue }
            let n = Int(btf_vlen(t))
            for i in 0..<n {
                let offset: UInt32
                if Int(btf_kind(t)) == (BTF_KIND_ENUM64 as Int) {
                    guard let e = btf_enum64(t) else { continue }
                    offset = e[i].name_off
                } else {
                    guard let e = btf_enum(t) else { continue }
                    offset = e[i].name_off
                }
                if let cName = btf__name_by_offset(btf, offset) { enumerators.insert("\(name).\(String(cString: cName))") }
            }
        }
        return KernelFacts(release: release, tracepointArguments: arguments, enumerators: enumerators,
                           symbols: KernelSymbols.addresses(of: Set(HookVariant.all.compactMap(\.symbol))))
    }
}

/// Kernel function addresses from /proc/kallsyms.
public enum KernelSymbols {
    /// The addresses of `names` (text symbols, "ADDR t NAME"); a name is
    /// left out when the file lacks it or shows it as 0 (kptr_restrict, or
    /// a reader without CAP_SYSLOG).
    public static func addresses(of names: Set<String>, path: String = "/proc/kallsyms") -> [String: UInt64] {
        guard !names.isEmpty, let f = fopen(path, "r") else { return [:] }
        defer { fclose(f) }
        var found: [String: UInt64] = [:]
        var line: UnsafeMutablePointer<CChar>?
        var capacity = 0
        defer { free(line) }
        let wanted = names.map { (name: $0, bytes: Array($0.utf8)) }
        while getline(&line, &capacity, f) > 0, let l = line {
            // Only lines ending in one of the names are turned into Strings.
            let n = strlen(l)
            for w in wanted where n > w.bytes.count + 19 {
                let tail = n - 1 - w.bytes.count
                guard l[n - 1] == 0x0A, l[tail - 1] == 0x20,
                      w.bytes.withUnsafeBufferPointer({ b in b.baseAddress.map { memcmp(l + tail, $0, b.count) == 0 } ?? false }) else { continue }
                let fields = String(cString: l).split(separator: " ")
                if fields.count >= 3, fields[1] == "t" || fields[1] == "T", let a = UInt64(fields[0], radix: 16), a != 0 {
                    found[w.name] = a
                }
            }
            if found.count == names.count { break }
        }
        return found
    }
}
