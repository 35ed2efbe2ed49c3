import CTCPTrailSys
import Foundation
import TCPTrailCore

/// The exported event log (`trace --output FILE`): JSON Lines, a header
/// record at the top of every file, mode 0600, never through a symlink.
///
/// The file is written on a thread of its own, so a slow disk (a journal
/// commit, writeback, the fsync and unlink of a rotation) never stops the
/// ring buffer from being read. The reader hands over full buffers from a
/// small pool; when all of them wait for the disk the reader waits too, the
/// kernel's ring buffer takes the rest, and what overflows it is counted as
/// lost.
///
/// Write-error policy: when a write fails (disk full, I/O error) the records
/// in that write are dropped whole (a partly written record is cut off the
/// file), counted, and reported once on stderr; tracing goes on, the next
/// flush tries again, and the summary gives the count.
final class EventLog: @unchecked Sendable {
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

    /// What the reader asks of the writer thread, in order.
    private enum Job {
        /// Records to append; `pooled` buffers go back to the pool.
        case records(OutputBuffer, pooled: Bool)
        case rotate(header: OutputBuffer)
        case reopen(header: OutputBuffer)
        case finish
    }

    let path: String
    /// Rotate before a file grows past this many bytes (nil: never).
    var rotateSize: Int?
    /// Rotated files kept beside the live one (path.1 is the newest).
    var rotateKeep = 5
    /// Writes the header of each new file (on the reader's thread: it takes the next seq).
    var header: (inout OutputBuffer) -> Void = { _ in }

    // The reader's side.
    /// Bytes handed over for the current file (what rotation goes by).
    private var bytesQueuedInFile = 0
    private var writer: Thread?
    /// Times the reader found every buffer waiting for the disk, and how long it waited.
    private(set) var readerWaits = 0
    private(set) var readerWaitNanoseconds: UInt64 = 0

    // Shared, under `condition`.
    private let condition = NSCondition()
    private var jobs: [Job] = []
    private var jobsHead = 0
    private var pool: [OutputBuffer]
    private var writerBusy = false
    private var writerDone = false
    private var notWritten: UInt64 = 0

    // The writer thread's side.
    private var fd: Int32 = -1
    private var bytesInFile = 0
    private var failing = false

    /// Buffers in the pool and what each holds before it is handed over.
    static let poolBuffers = 3
    static let bufferCapacity = 1 << 19
    static let handOverBytes = 1 << 18

    init(path: String, allowSharedDirectory: Bool) throws(OpenError) {
        self.path = path
        let dir = (path as NSString).deletingLastPathComponent.isEmpty ? "." : (path as NSString).deletingLastPathComponent
        var st = stat()
        if stat(dir, &st) == 0, st.st_mode & S_IWOTH != 0, !allowSharedDirectory {
            throw .sharedDirectory(dir)
        }
        pool = (0..<Self.poolBuffers).map { _ in OutputBuffer(capacity: Self.bufferCapacity) }
        // Opened here, on the caller's thread, so a bad path fails before tracing starts.
        try openFile()
        bytesQueuedInFile = bytesInFile
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

    // MARK: - The reader's side

    /// Whether `pending` more bytes would push the file past --rotate-size.
    func wouldOverflow(adding pending: Int) -> Bool {
        guard let rotateSize else { return false }
        return bytesQueuedInFile + pending > rotateSize && bytesQueuedInFile > 0
    }

    /// A new file's header record, made now so that it takes the next seq.
    private func makeHeader() -> OutputBuffer {
        var h = OutputBuffer(capacity: 4096)
        header(&h)
        return h
    }

    /// Starts a file's life with its header.
    func writeHeader() {
        let h = makeHeader()
        bytesQueuedInFile += h.count
        enqueue(.records(h, pooled: false))
    }

    /// Queues the buffer's records and gives back an empty buffer from the
    /// pool; waits while every buffer of the pool is still queued.
    func write(_ out: inout OutputBuffer) {
        guard !out.isEmpty else { return }
        bytesQueuedInFile += out.count
        condition.lock()
        if pool.isEmpty && !writerDone {
            let start = WallClock.monotonicNow()
            while pool.isEmpty && !writerDone { condition.wait() }
            readerWaits += 1
            readerWaitNanoseconds += WallClock.monotonicNow() &- start
        }
        var full = pool.popLast() ?? OutputBuffer(capacity: Self.bufferCapacity)
        swap(&full, &out)
        enqueueLocked(.records(full, pooled: true))
        condition.unlock()
    }

    /// Moves path to path.1 (path.1 to path.2, … dropping the oldest) and starts
    /// a new file, after everything queued before.
    func rotate() {
        let h = makeHeader()
        bytesQueuedInFile = h.count
        enqueue(.rotate(header: h))
    }

    /// SIGHUP: closes and reopens the path (logrotate moved the old file away).
    func reopen() {
        let h = makeHeader()
        var st = stat()
        bytesQueuedInFile = (lstat(path, &st) == 0 ? Int(st.st_size) : 0) + h.count
        enqueue(.reopen(header: h))
    }

    /// Waits until everything queued is on its way to the disk (written or counted).
    func waitUntilWritten() {
        condition.lock()
        while (jobsHead < jobs.count || writerBusy) && !writerDone { condition.wait() }
        condition.unlock()
    }

    /// Records the writer could not write so far.
    var recordsNotWritten: UInt64 {
        condition.lock()
        defer { condition.unlock() }
        return notWritten
    }

    /// Writes the last records, syncs, closes, and ends the writer thread.
    func finish(_ out: inout OutputBuffer) {
        write(&out)
        enqueue(.finish)
        condition.lock()
        while !writerDone { condition.wait() }
        condition.unlock()
    }

    private func enqueue(_ job: Job) {
        condition.lock()
        enqueueLocked(job)
        condition.unlock()
    }

    /// Queues a job (the caller holds `condition`), starting the writer on first use.
    private func enqueueLocked(_ job: Job) {
        if writer == nil && !writerDone {
            // Started on first use, so it inherits the reader's priority (--nice).
            let t = Thread { [self] in runWriter() }
            t.name = "tcptrail-log"
            writer = t
            t.start()
        }
        jobs.append(job)
        condition.broadcast()
    }

    // MARK: - The writer thread

    private func runWriter() {
        _ = tt_set_comm("tcptrail-log")
        while true {
            condition.lock()
            while jobsHead == jobs.count { condition.wait() }
            let job = jobs[jobsHead]
            jobs[jobsHead] = .finish  // drop the reference to the buffer
            jobsHead += 1
            if jobsHead == jobs.count { jobs.removeAll(keepingCapacity: true); jobsHead = 0 }
            writerBusy = true
            condition.unlock()

            var finished = false
            // Consumed, so the buffer's only owner is `out`: a second reference
            // would make the reader's next append copy it (OutputBuffer is copy-on-write).
            switch consume job {
            case .records(var out, let pooled):
                writeToFile(&out)
                if pooled {
                    out.removeAll()
                    condition.lock()
                    pool.append(consume out)
                    condition.unlock()
                }
            case .rotate(var header):
                rotateFile()
                writeToFile(&header)
            case .reopen(var header):
                reopenFile()
                writeToFile(&header)
            case .finish:
                if fd >= 0 {
                    fsync(fd)
                    close(fd)
                    fd = -1
                }
                finished = true
            }
            condition.lock()
            writerBusy = false
            if finished { writerDone = true }
            condition.broadcast()
            condition.unlock()
            if finished { return }
        }
    }

    private func countNotWritten(_ n: UInt64) {
        guard n > 0 else { return }
        condition.lock()
        notWritten += n
        condition.unlock()
    }

    private func rotateFile() {
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
        } catch {
            Diagnostics.note("tcptrail: \(error.message)")
        }
    }

    private func reopenFile() {
        if fd >= 0 { fsync(fd); close(fd) }
        fd = -1
        do {
            try openFile()
        } catch {
            Diagnostics.note("tcptrail: \(error.message)")
        }
    }

    /// Writes whole records; on failure cuts the file back to the last whole
    /// record and counts the rest.
    private func writeToFile(_ out: inout OutputBuffer) {
        guard !out.isEmpty else { return }
        guard fd >= 0 else {
            countNotWritten(out.withUnsafeBytes { Self.lines(in: $0) })
            return
        }
        let start = lseek(fd, 0, SEEK_END)
        let (written, failure) = out.withUnsafeBytes { OutputBuffer.writeAll(fd, $0) }
        if failure == 0 {
            bytesInFile += written
            paceWriteback()
            if failing {
                failing = false
                Diagnostics.note("tcptrail: writing the log \(path) again; \(recordsNotWritten) records were not written")
            }
            return
        }
        // Keep whole records only: cut back to the last complete line.
        let kept = out.withUnsafeBytes { raw in
            (raw[..<written].lastIndex(of: 0x0a)).map { $0 + 1 } ?? 0
        }
        if start >= 0 { ftruncate(fd, start + off_t(kept)) }
        bytesInFile += kept
        countNotWritten(out.withUnsafeBytes { Self.lines(in: UnsafeRawBufferPointer(rebasing: $0[kept...])) })
        if !failing {
            failing = true
            Diagnostics.note("tcptrail: cannot write the log \(path): \(String(cString: strerror(failure))); tracing goes on, records are counted until writes succeed again")
        }
    }

    private static func lines(in raw: UnsafeRawBufferPointer) -> UInt64 {
        var n: UInt64 = 0
        for byte in raw where byte == 0x0a { n += 1 }
        return n
    }

    /// Where writeback was started, and up to where the page cache was let go.
    private var writebackStarted = 0
    private var cacheDropped = 0
    static let writebackStep = 4 << 20
    /// Dropping pages drains every CPU's page lists (lru_add_drain_all), which
    /// waits for each CPU: done once per 32 MiB, not per writeback step.
    static let cacheDropStep = 32 << 20

    /// Starts writeback of each 4 MiB as it is written, and drops what is
    /// already on its way to disk from the page cache. Without it a busy trace
    /// piles up gigabytes of dirty pages until the kernel throttles write().
    private func paceWriteback() {
        guard bytesInFile - writebackStarted >= Self.writebackStep else { return }
        _ = tt_start_writeback(fd, Int64(writebackStarted), Int64(bytesInFile - writebackStarted))
        if writebackStarted - cacheDropped >= Self.cacheDropStep {
            _ = tt_drop_cached(fd, Int64(cacheDropped), Int64(writebackStarted - cacheDropped))
            cacheDropped = writebackStarted
        }
        writebackStarted = bytesInFile
    }
}
