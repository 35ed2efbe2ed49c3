import CLibBPF
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
}
