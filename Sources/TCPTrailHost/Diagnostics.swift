import TCPTrailCore
#if canImport(Glibc)
import Glibc
#endif

/// One-line messages on stderr.
public enum Diagnostics {
    /// A plain write(2): FileHandle traps on EPIPE or EIO (a terminal that went away).
    public static func note(_ line: String) {
        _ = Array((TerminalLine.sanitize(line) + "\n").utf8).withUnsafeBytes { OutputBuffer.writeAll(STDERR_FILENO, $0) }
    }
}
