import TCPTrailCore
#if canImport(Glibc)
import Glibc
#endif

/// Writing a buffer's bytes to a file descriptor: the core fills buffers, this module writes them.
extension OutputBuffer {
    /// Writes the buffer to `fd` and empties it; returns the errno that stopped it (0 when all went out).
    @discardableResult
    public mutating func flush(to fd: Int32) -> Int32 {
        let failure = withUnsafeBytes { Self.writeAll(fd, $0).error }
        removeAll()
        return failure
    }

    /// Writes all of `raw` to `fd` (retrying short writes and EINTR): how many
    /// bytes went out, and the errno that stopped it (0 when all did).
    public static func writeAll(_ fd: Int32, _ raw: UnsafeRawBufferPointer) -> (written: Int, error: Int32) {
        guard let base = raw.baseAddress else { return (0, 0) }
        var written = 0
        while written < raw.count {
            let n = write(fd, base + written, raw.count - written)
            if n < 0 {
                if errno == EINTR { continue }
                return (written, errno)
            }
            if n == 0 { return (written, EIO) }
            written += n
        }
        return (written, 0)
    }
}
