import CZlib
#if canImport(Glibc)
import Glibc
#endif

/// Why a log file could not be read.
public struct LogFileError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Reads a log file line by line, plain or gzip-compressed (zlib tells them
/// apart), through one large buffer: lines are handed out in place.
public final class LogFileReader {
    /// Lines longer than this are skipped (reported as `.tooLong`), whatever they hold.
    public static let maxLineBytes = 1 << 20

    /// What `forEachLine` hands out.
    public enum Line {
        /// A line without its newline.
        case complete(UnsafeRawBufferPointer)
        /// A line past `maxLineBytes`; its bytes were skipped.
        case tooLong(bytes: Int)
        /// The file ends without a newline: the writer was cut off (SIGKILL, full disk).
        case unterminated(UnsafeRawBufferPointer)
    }

    /// Bytes asked of each read: the buffer holds a 1 MiB line and more, but
    /// reading it full left the first lines out of the L2 cache (1 MiB per
    /// core here) by the time they were parsed. At least twice zlib's buffer
    /// (`gzbuffer`), so zlib reads (or inflates) straight into ours.
    static let readBytes = 1 << 19

    public let path: String
    private let file: gzFile
    private var buffer: UnsafeMutableRawBufferPointer

    /// Opens `path` ("-" is standard input).
    public init(path: String) throws(LogFileError) {
        self.path = path
        let fd = path == "-" ? dup(STDIN_FILENO) : open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let why = errno == ENOENT ? "no such file" : errno == EACCES ? "permission denied" : String(cString: strerror(errno))
            throw LogFileError(message: "cannot open \(path): \(why)")
        }
        var st = stat()
        if fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR {
            close(fd)
            throw LogFileError(message: "cannot read \(path): it is a directory; give the log files in it")
        }
        guard let gz = gzdopen(fd, "rb") else {
            close(fd)
            throw LogFileError(message: "cannot read \(path): out of memory")
        }
        gzbuffer(gz, 1 << 18)
        file = gz
        buffer = .allocate(byteCount: 4 << 20, alignment: 64)
    }

    deinit {
        gzclose_r(file)
        buffer.deallocate()
    }

    /// Starts again from the first line (not on standard input).
    public func rewind() throws(LogFileError) {
        guard gzrewind(file) == 0 else { throw readError() }
    }

    /// Calls `body` with each line and its number (from 1) until it returns
    /// false or the file ends. Returns a read error (a corrupt or cut gzip
    /// stream, an I/O error), nil at a clean end.
    public func forEachLine(_ body: (Line, Int) -> Bool) -> LogFileError? {
        var start = 0, end = 0, lineNumber = 0
        var skipping = false  // inside a line past maxLineBytes
        var skipped = 0
        let capacity = buffer.count
        guard let base = buffer.baseAddress else { return nil }
        while true {
            // Hand out every complete line in the buffer.
            while start < end {
                guard let nl = memchr(base + start, 0x0a, end - start) else { break }
                let stop = base.distance(to: nl)
                if skipping {
                    lineNumber += 1
                    skipping = false
                    if !body(.tooLong(bytes: skipped + stop - start), lineNumber) { return nil }
                } else {
                    lineNumber += 1
                    if stop - start > Self.maxLineBytes {
                        if !body(.tooLong(bytes: stop - start), lineNumber) { return nil }
                    } else if !body(.complete(UnsafeRawBufferPointer(start: base + start, count: stop - start)), lineNumber) {
                        return nil
                    }
                }
                start = stop + 1
            }
            // A partial line: keep it (or, past the limit, count and drop it).
            if skipping {
                skipped += end - start
                start = end
            } else if end - start > Self.maxLineBytes {
                skipping = true
                skipped = end - start
                start = end
            }
            if start > 0 {
                if end > start { memmove(base, base + start, end - start) }
                end -= start
                start = 0
            }
            let room = min(capacity - end, Self.readBytes)
            let n = gzread(file, base + end, UInt32(room))
            if n < 0 {
                return readError()
            }
            if n == 0 {
                var zerr: Int32 = 0
                _ = gzerror(file, &zerr)
                if skipping {
                    lineNumber += 1
                    _ = body(.tooLong(bytes: skipped + end), lineNumber)
                } else if end > 0 {
                    lineNumber += 1
                    _ = body(.unterminated(UnsafeRawBufferPointer(start: base, count: end)), lineNumber)
                }
                return zerr == Z_OK || zerr == Z_STREAM_END ? nil : readError()
            }
            end += Int(n)
        }
    }

    private func readError() -> LogFileError {
        var zerr: Int32 = 0
        let text = gzerror(file, &zerr).map { String(cString: $0) } ?? "read error"
        if zerr == Z_ERRNO { return LogFileError(message: "cannot read \(path): \(String(cString: strerror(errno)))") }
        if zerr == Z_BUF_ERROR { return LogFileError(message: "\(path): the gzip stream is cut short (\(text)); the lines before the cut were read") }
        return LogFileError(message: "\(path): corrupt gzip data (\(text)); the lines before it were read")
    }
}
