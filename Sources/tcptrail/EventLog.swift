import CTCPTrailSys
import Foundation
import TCPTrailCore

/// The exported event log (`trace --output FILE`): JSON Lines, a header
/// record at the top of every file, mode 0600, never through a symlink.
///
/// Write-error policy: when a write fails (disk full, I/O error) the records
/// in that write are dropped whole (a partly written record is cut off the
/// file), counted, and reported once on stderr; tracing goes on, the next
/// flush tries again, and the summary gives the count.
final class EventLog {
    enum OpenError: Error {
        case symlink(String)
        case sharedDirectory(String)
        case cannotOpen(String, Int32)

        var message: String {
            switch self {
            case .symlink(let p):
                return "refusing to write the log through a symlink at \(p): remove it or choose another path"
            case .sharedDirectory(let d):
                return "refusing to write the log in \(d), which other users can write: choose a private directory or pass --allow-shared-dir"
            case .cannotOpen(let p, let err):
                return "cannot open the log \(p): \(String(cString: strerror(err))); check the path and permissions"
            }
        }

        /// EX_CANTCREAT
        var exitStatus: Int32 { 73 }
    }

    let path: String
    private var fd: Int32 = -1
    /// Rotate before a file grows past this many bytes (nil: never).
    var rotateSize: Int?
    /// Rotated files kept beside the live one (path.1 is the newest).
    var rotateKeep = 5
    /// Bytes in the current file.
    private(set) var bytesInFile = 0
    private(set) var recordsNotWritten: UInt64 = 0
    private var failing = false
    /// Writes the header of each new file.
    var header: (inout OutputBuffer) -> Void = { _ in }

    init(path: String, allowSharedDirectory: Bool) throws(OpenError) {
        self.path = path
        let dir = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        var st = stat()
        if stat(dir, &st) == 0, st.st_mode & S_IWOTH != 0, !allowSharedDirectory {
            throw .sharedDirectory(dir)
        }
        try openFile()
    }

    private func openFile() throws(OpenError) {
        let f = open(path, O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0o600)
        if f < 0 {
            let err = errno
            if err == ELOOP { throw .symlink(path) }
            throw .cannotOpen(path, err)
        }
        fd = f
        var st = stat()
        bytesInFile = fstat(f, &st) == 0 ? Int(st.st_size) : 0
        writebackStarted = bytesInFile
        cacheDropped = bytesInFile
    }

    /// Whether `pending` more bytes would push the file past --rotate-size.
    func wouldOverflow(adding pending: Int) -> Bool {
        guard let rotateSize else { return false }
        return bytesInFile + pending > rotateSize && bytesInFile > 0
    }

    /// Moves path to path.1 (path.1 to path.2, … dropping the oldest) and starts a new file.
    func rotate() {
        if fd >= 0 { fsync(fd); close(fd) }
        fd = -1
        unlink("\(path).\(rotateKeep)")
        if rotateKeep > 1 {
            for i in stride(from: rotateKeep - 1, through: 1, by: -1) {
                rename("\(path).\(i)", "\(path).\(i + 1)")
            }
        }
        if rotateKeep > 0 { rename(path, "\(path).1") } else { unlink(path) }
        do {
            try openFile()
            writeHeader()
        } catch {
            Diagnostics.note("tcptrail: \(error.message)")
        }
    }

    /// Starts a file's life with its header.
    func writeHeader() {
        var out = OutputBuffer(capacity: 4096)
        header(&out)
        write(&out)
    }

    /// SIGHUP: closes and reopens the path (logrotate moved the old file away).
    func reopen() {
        if fd >= 0 { fsync(fd); close(fd) }
        fd = -1
        do {
            try openFile()
            writeHeader()
        } catch {
            Diagnostics.note("tcptrail: \(error.message)")
        }
    }

    /// Writes whole records and empties the buffer; on failure drops and counts them.
    func write(_ out: inout OutputBuffer) {
        guard !out.isEmpty else { return }
        guard fd >= 0 else {
            recordsNotWritten += UInt64(out.bytes.lazy.filter { $0 == 0x0a }.count)
            out.removeAll()
            return
        }
        let start = lseek(fd, 0, SEEK_END)
        let (written, failure) = out.withUnsafeBytes { OutputBuffer.writeAll(fd, $0) }
        if failure == 0 {
            bytesInFile += written
            paceWriteback()
        }
        if failure != 0 {
            // Keep whole records only: cut back to the last complete line.
            let kept = out.bytes[..<written].lastIndex(of: 0x0a).map { $0 + 1 } ?? 0
            if start >= 0 { ftruncate(fd, start + off_t(kept)) }
            bytesInFile += kept
            recordsNotWritten += UInt64(out.bytes[kept...].lazy.filter { $0 == 0x0a }.count)
            if !failing {
                failing = true
                Diagnostics.note("tcptrail: cannot write the log \(path): \(String(cString: strerror(failure))); tracing goes on, records are counted until writes succeed again")
            }
        } else if failing {
            failing = false
            Diagnostics.note("tcptrail: writing the log \(path) again; \(recordsNotWritten) records were not written")
        }
        out.removeAll()
    }

    /// Where writeback was started, and up to where the page cache was let go.
    private var writebackStarted = 0
    private var cacheDropped = 0
    static let writebackStep = 4 << 20

    /// Starts writeback of each 4 MiB as it is written, and drops the step
    /// before (already on disk) from the page cache. Without it a busy trace
    /// piles up gigabytes of dirty pages until the kernel throttles write(),
    /// the reader stalls, and the ring buffer overflows.
    private func paceWriteback() {
        guard bytesInFile - writebackStarted >= Self.writebackStep else { return }
        _ = tt_start_writeback(fd, Int64(writebackStarted), Int64(bytesInFile - writebackStarted))
        if writebackStarted > cacheDropped {
            _ = tt_drop_cached(fd, Int64(cacheDropped), Int64(writebackStarted - cacheDropped))
            cacheDropped = writebackStarted
        }
        writebackStarted = bytesInFile
    }

    /// Writes the last records, syncs and closes.
    func finish(_ out: inout OutputBuffer) {
        write(&out)
        if fd >= 0 {
            fsync(fd)
            close(fd)
            fd = -1
        }
    }
}
