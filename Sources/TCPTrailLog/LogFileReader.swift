import CZlib
#if canImport(Glibc)
import Glibc
#endif
import TCPTrailCore
import TCPTrailHost

/// Why a log file could not be read.
public struct LogFileError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Reads a log file line by line, plain or gzip-compressed, through one
/// large buffer: lines are handed out in place.
///
/// Which of the two a file is, its first bytes say (gzip's magic 1f 8b), never
/// a seek: pipes, FIFOs, `<(cat log)` and standard input read like files, and
/// the first line can be looked at (`withFirstLine`) before the replay starts.
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
    /// core here) by the time they were parsed.
    static let readBytes = 1 << 19

    public let path: String
    private let fd: Int32
    private var buffer: UnsafeMutableRawBufferPointer
    /// Bytes read into `buffer` and not yet handed out: `0..<end` (lines are
    /// handed out by `forEachLine`, which starts at 0).
    private var end = 0
    /// Set once the first bytes showed a gzip stream.
    private var gzip: GzipStream?
    private var sniffed = false
    private var atEnd = false
    private var failure: LogFileError?

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
        self.fd = fd
        buffer = .allocate(byteCount: 4 << 20, alignment: 64)
    }

    deinit {
        close(fd)
        buffer.deallocate()
    }

    /// Shows `body` the first line without using it up: `forEachLine` hands
    /// it out again. Returns a read error, nil otherwise (also for an empty file).
    public func withFirstLine(_ body: (Line) -> Void) -> LogFileError? {
        guard let base = buffer.baseAddress else { return nil }
        while memchr(base, 0x0a, end) == nil && end <= Self.maxLineBytes && !atEnd {
            if fill(base, at: end) < 0 { return failure }
        }
        if let nl = memchr(base, 0x0a, end) {
            let n = base.distance(to: nl)
            body(n > Self.maxLineBytes ? .tooLong(bytes: n) : .complete(UnsafeRawBufferPointer(start: base, count: n)))
        } else if end > Self.maxLineBytes {
            body(.tooLong(bytes: end))
        } else if end > 0 {
            body(.unterminated(UnsafeRawBufferPointer(start: base, count: end)))
        }
        return nil
    }

    /// Reads more bytes to `base + at`, growing `end`: the count, 0 at the
    /// end of the input, -1 on an error (in `failure`).
    private func fill(_ base: UnsafeMutableRawPointer, at: Int) -> Int {
        let room = min(buffer.count - at, Self.readBytes)
        if !sniffed {
            sniffed = true
            // Two bytes tell gzip from text; a pipe may hand out fewer at first.
            var have = 0
            while have < 2 {
                let n = readSome(base + at + have, room - have)
                if n < 0 { return -1 }
                if n == 0 { break }
                have += n
            }
            let bytes = base.advanced(by: at).assumingMemoryBound(to: UInt8.self)
            if have >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
                guard let stream = GzipStream.make(path: path) else {
                    failure = LogFileError(message: "cannot read \(path): out of memory")
                    return -1
                }
                stream.give(UnsafeRawBufferPointer(start: base + at, count: have))
                gzip = stream
            } else {
                if have == 0 { atEnd = true }
                end = at + have
                return have
            }
        }
        let n: Int
        if let gzip {
            n = gzip.inflate(into: base + at, room) { readSome($0, $1) }
            if n < 0 { failure = gzip.failure ?? failure }
        } else {
            n = readSome(base + at, room)
        }
        if n < 0 { return -1 }
        if n == 0 { atEnd = true }
        end = at + n
        return n
    }

    /// read(2), again after a signal; -1 sets `failure`.
    private func readSome(_ p: UnsafeMutableRawPointer, _ count: Int) -> Int {
        while true {
            let n = read(fd, p, count)
            if n >= 0 { return n }
            if errno == EINTR { continue }
            failure = LogFileError(message: "cannot read \(path): \(String(cString: strerror(errno)))")
            return -1
        }
    }

    /// Calls `body` with each line and its number (from 1) until it returns
    /// false or the file ends. Returns a read error (a corrupt or cut gzip
    /// stream, an I/O error), nil at a clean end.
    public func forEachLine(_ body: (Line, Int) -> Bool) -> LogFileError? {
        // A local: a class property costs an exclusivity check on every access.
        var start = 0, end = self.end, lineNumber = 0
        var skipping = false  // inside a line past maxLineBytes
        var skipped = 0
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
            let n = atEnd ? 0 : fill(base, at: end)
            if n < 0 { return failure }
            end += n
            if n == 0 {
                if skipping {
                    lineNumber += 1
                    _ = body(.tooLong(bytes: skipped + end), lineNumber)
                } else if end > 0 {
                    lineNumber += 1
                    _ = body(.unterminated(UnsafeRawBufferPointer(start: base, count: end)), lineNumber)
                }
                self.end = 0
                return nil
            }
        }
    }
}

/// A gzip stream inflated from bytes it is given or reads: one member after
/// another (`cat a.gz b.gz`), as zlib's gzread reads them; what follows the
/// last member that is not gzip is ignored, as gzread does.
final class GzipStream {
    private let path: String
    private let stream: UnsafeMutablePointer<z_stream>
    private let input: UnsafeMutableRawBufferPointer
    /// The compressed side has ended (or what follows the members is ignored).
    private var inputEnded = false
    /// Between two members (or after the last one).
    private var memberEnded = false
    private(set) var failure: LogFileError?

    /// nil when zlib cannot set up (out of memory).
    static func make(path: String) -> GzipStream? {
        let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
        stream.initialize(to: z_stream())
        // 15 + 16: a 32 KiB window, gzip framing only (the magic was seen).
        guard inflateInit2_(stream, 15 + 16, zlibVersion(), Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            stream.deallocate()
            return nil
        }
        return GzipStream(path: path, stream: stream)
    }

    /// `stream`: set up by inflateInit2 (zlib keeps its address: it must not move).
    private init(path: String, stream: UnsafeMutablePointer<z_stream>) {
        self.path = path
        self.stream = stream
        // As large as one read of the reader: the sniffed bytes fit.
        input = .allocate(byteCount: LogFileReader.readBytes, alignment: 16)
    }

    deinit {
        inflateEnd(stream)
        stream.deallocate()
        input.deallocate()
    }

    /// The bytes read before the stream was known to be gzip.
    func give(_ bytes: UnsafeRawBufferPointer) {
        guard let src = bytes.baseAddress, let dst = input.baseAddress else { return }
        let n = min(bytes.count, input.count)
        dst.copyMemory(from: src, byteCount: n)
        stream.pointee.next_in = dst.assumingMemoryBound(to: Bytef.self)
        stream.pointee.avail_in = uInt(n)
    }

    /// Inflates up to `count` bytes to `out`: the count, 0 at the end, -1 on
    /// an error (in `failure`). `read` fills the compressed side.
    func inflate(into out: UnsafeMutableRawPointer, _ count: Int, read: (UnsafeMutableRawPointer, Int) -> Int) -> Int {
        guard let inputBase = input.baseAddress, failure == nil, count > 0 else { return failure == nil ? 0 : -1 }
        let s = stream
        s.pointee.next_out = out.assumingMemoryBound(to: Bytef.self)
        s.pointee.avail_out = uInt(count)
        while true {
            if s.pointee.avail_in == 0 && !inputEnded {
                let n = read(inputBase, input.count)
                if n < 0 { return -1 }
                if n == 0 { inputEnded = true }
                s.pointee.next_in = inputBase.assumingMemoryBound(to: Bytef.self)
                s.pointee.avail_in = uInt(n)
            }
            if memberEnded {
                // Another member follows, or the stream is over.
                if s.pointee.avail_in == 0 { return 0 }
                if s.pointee.avail_in == 1 && !inputEnded && s.pointee.next_in[0] == 0x1f {
                    // Half a magic: keep the byte, read the rest after it.
                    inputBase.storeBytes(of: UInt8(0x1f), as: UInt8.self)
                    let n = read(inputBase + 1, input.count - 1)
                    if n < 0 { return -1 }
                    if n == 0 { inputEnded = true }
                    s.pointee.next_in = inputBase.assumingMemoryBound(to: Bytef.self)
                    s.pointee.avail_in = uInt(1 + n)
                    continue
                }
                guard s.pointee.avail_in >= 2, s.pointee.next_in[0] == 0x1f, s.pointee.next_in[1] == 0x8b else {
                    // Bytes after the last member that are not gzip: ignored, as gzread does.
                    inputEnded = true
                    s.pointee.avail_in = 0
                    return 0
                }
                inflateReset(s)
                memberEnded = false
            }
            let ret = CZlib.inflate(s, Z_NO_FLUSH)
            switch ret {
            case Z_STREAM_END:
                memberEnded = true
            case Z_OK:
                break
            case Z_BUF_ERROR where s.pointee.avail_in == 0 && !inputEnded:
                break  // more input is needed: read on
            case Z_BUF_ERROR:
                failure = LogFileError(message: "\(path): the gzip stream is cut short (unexpected end of file); the lines before the cut were read")
                return -1
            default:
                let why = s.pointee.msg.map { String(cString: $0) } ?? "zlib error \(ret)"
                failure = LogFileError(message: "\(path): corrupt gzip data (\(why)); the lines before it were read")
                return -1
            }
            let made = count - Int(s.pointee.avail_out)
            if made > 0 { return made }
        }
    }
}
