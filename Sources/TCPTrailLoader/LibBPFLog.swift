import CLibBPF
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Collects libbpf's messages (including the verifier log on a rejection)
/// and, with `--verbose`, echoes them to stderr as they come.
public enum LibBPFLog {
    nonisolated(unsafe) private static var lines: [String] = []
    nonisolated(unsafe) static var echo = false
    /// Whether messages already go to stderr as they come.
    public static var echoing: Bool { echo }

    /// Routes libbpf's output here. Call once, before opening an object.
    public static func install(verbose: Bool) {
        echo = verbose
        libbpf_set_print { level, format, args in
            guard let format, let args else { return 0 }
            var buffer = [UInt8](repeating: 0, count: 1 << 20)  // verifier logs come in one piece
            let n = buffer.withUnsafeMutableBufferPointer { b in
                b.baseAddress!.withMemoryRebound(to: CChar.self, capacity: b.count) { vsnprintf($0, b.count, format, args) }
            }
            guard n >= 0 else { return 0 }
            let text = String(decoding: buffer.prefix(min(Int(n), buffer.count - 1)), as: UTF8.self)
            if level != LIBBPF_DEBUG || LibBPFLog.echo {
                LibBPFLog.lines.append(text)
                if LibBPFLog.lines.count > 4000 { LibBPFLog.lines.removeFirst(1000) }
            }
            if LibBPFLog.echo {
                let line = Array(("libbpf: " + text).utf8)
                _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
            }
            return 0
        }
    }

    /// Everything captured so far, one string.
    public static var text: String { lines.joined() }

    static func clear() { lines.removeAll() }

    /// The program libbpf says failed to load, and the verifier's last word
    /// on it ("invalid bpf_context access off=16 size=8"): the last line of
    /// its load log before the statistics, or "" if it printed no log.
    static func rejectedProgram(in log: String) -> (program: String, line: String)? {
        let lines = log.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        guard let failed = lines.first(where: { $0.contains("': BPF program load failed") || $0.contains("': failed to load") }),
              let open = failed.firstIndex(of: "'"),
              let close = failed[failed.index(after: open)...].firstIndex(of: "'")
        else { return nil }
        let program = String(failed[failed.index(after: open)..<close])
        var verdict = ""
        var inLog = false
        for line in lines {
            if line.contains("'\(program)': -- BEGIN PROG LOAD LOG --") { inLog = true; continue }
            guard inLog else { continue }
            if line.hasPrefix("-- END PROG LOAD LOG --") { break }
            let statistics = ["processed ", "verification time", "stack depth", "max_states_per_insn"]
            if !statistics.contains(where: { line.hasPrefix($0) }) { verdict = line }
        }
        return (program, verdict.trimmingCharacters(in: .whitespaces))
    }
}
