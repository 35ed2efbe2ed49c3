import CTCPTrailSys
import Foundation
import TCPTrailCore
import TCPTrailHost

/// The exported event log (`trace --output FILE`): JSON Lines, a header
/// record at the top of every file, mode 0600, only in a file no other user
/// could have made, linked or reached.
///
/// The directory is opened once and held ("LogDirectory"); every open,
/// rename and unlink goes through that descriptor, and the directory and the
/// file are checked again on every open (start, rotation, SIGHUP), so neither
/// renaming the directory's path nor loosening its mode mid-run can redirect
/// the log. A refusal at start ends the run (73); mid-run it is one line on
/// stderr and records are counted as not written until the next reopen works.
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
/// flush tries again, and the summary gives the count. No record goes into a
/// file before its header: a header that did not fit is written first when
/// space returns, so replay sees the dropped records as a `seq` gap.
public final class EventLog: @unchecked Sendable {
    /// An errno value, as swift-system's `Errno`.
    public struct Errno: Error, Equatable, CustomStringConvertible {
        var rawValue: Int32
        static var current: Errno { Errno(rawValue: errno) }
        static let exists = Errno(rawValue: EEXIST)
        static let noEntry = Errno(rawValue: ENOENT)
        static let tooManySymlinks = Errno(rawValue: ELOOP)
        static let isDirectory = Errno(rawValue: EISDIR)
        /// A FIFO or socket opened without a reader (O_NONBLOCK).
        static let noDevice = Errno(rawValue: ENXIO)
        public var description: String { String(cString: strerror(rawValue)) }
    }

    /// Why the log cannot be opened; each message names the problem and the fix.
    public enum OpenError: Error {
        case symlink(String)
        case sharedDirectory(String, mode: mode_t)
        case directoryOwner(String, uid: uid_t)
        case cannotOpenDirectory(String, Errno)
        case notRegularFile(String, kind: String)
        case fileOwner(String, uid: uid_t)
        case fileMode(String, mode: mode_t)
        case hardLinks(String, count: UInt64)
        case cannotOpen(String, Errno)

        public var message: String {
            switch self {
            case .symlink(let p):
                return "refusing to write the log through a symlink at \(p): remove it or choose another path"
            case .sharedDirectory(let d, let mode):
                return "refusing to write the log in \(d) (mode \(Self.octal(mode))), which other users can write: chmod go-w \(d), choose a private directory, or pass --allow-shared-dir"
            case .directoryOwner(let d, let uid):
                return "refusing to write the log in \(d), owned by uid \(uid) (not root or this user), who could swap the file: choose a directory root owns"
            case .cannotOpenDirectory(let d, let err):
                return "cannot open the log's directory \(d): \(err); check the path and permissions"
            case .notRegularFile(let p, let kind):
                return "refusing to write the log into \(p), which is \(kind), not a regular file: remove it or choose another path"
            case .fileOwner(let p, let uid):
                return "refusing to append the log to \(p), owned by uid \(uid) (not root or this user): remove it or choose another path"
            case .fileMode(let p, let mode):
                return "refusing to append the log to \(p), mode \(Self.octal(mode)) (a log must be 0600, no group or other access): chmod 600 \(p) or remove it"
            case .hardLinks(let p, let n):
                return "refusing to append the log to \(p), which has \(n) hard links (writes would reach the other names): remove it or choose another path"
            case .cannotOpen(let p, let err):
                return "cannot open the log \(p): \(err); check the path and permissions"
            }
        }

        private static func octal(_ mode: mode_t) -> String {
            let digits = String(mode & 0o7777, radix: 8)
            return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
        }

        public var status: ExitStatus { .cannotCreate }
        public var exitStatus: Int32 { status.rawValue }
        /// The failure that ends the command.
        public var failure: CommandFailure { CommandFailure(message, status: status) }
    }

    /// The log's directory, opened once at start: every file operation is
    /// relative to this descriptor, and its owner and mode are checked on it
    /// (not on the path) before every open.
    final class LogDirectory: Sendable {
        /// As given, for messages.
        let path: String
        let fd: Int32
        let allowShared: Bool

        init(path: String, allowShared: Bool) throws(OpenError) {
            self.path = path
            self.allowShared = allowShared
            let f = Glibc.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY)
            guard f >= 0 else { throw .cannotOpenDirectory(path, .current) }
            fd = f
            try check()
        }

        deinit { close(fd) }

        /// Owned by root or this user and, without --allow-shared-dir, writable
        /// by nobody else (group-writable and sticky /tmp included): whoever
        /// else can write here can put their own file at the log's name.
        func check() throws(OpenError) {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw .cannotOpenDirectory(path, .current) }
            if st.st_uid != 0 && st.st_uid != geteuid() { throw .directoryOwner(path, uid: st.st_uid) }
            if !allowShared && st.st_mode & (S_IWGRP | S_IWOTH) != 0 { throw .sharedDirectory(path, mode: st.st_mode) }
        }
    }

    /// What the reader asks of the writer thread, in order.
    private enum Job {
        /// Records to append; `pooled` buffers go back to the pool.
        case records(OutputBuffer, pooled: Bool)
        /// The first file's header.
        case header(OutputBuffer)
        case rotate(header: OutputBuffer)
        case reopen(header: OutputBuffer)
        case finish
    }

    /// The path as given, for messages.
    public let path: String
    let directory: LogDirectory
    /// The file's name in `directory`.
    public let name: String
    /// When to rotate and how many rotated files to keep (set before `open`).
    public var rotation = LogRotation()
    /// Writes the header of each new file (on the reader's thread: it takes the next seq).
    public var header: (inout OutputBuffer) -> Void = { _ in }

    // The reader's side.
    /// Bytes handed over for the current file (what rotation goes by).
    private var bytesQueuedInFile = 0
    private var writer: Thread?
    /// Times the reader found every buffer waiting for the disk, and how long it waited.
    public private(set) var readerWaits = 0
    public private(set) var readerWaitNanoseconds: UInt64 = 0

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
    /// The current file's header while it is not in the file yet (the disk
    /// was full): written before any record, so no file holds records
    /// without the header that ties it to its run.
    private var pendingHeader: OutputBuffer?

    /// Buffers in the pool and what each holds before it is handed over.
    public static let poolBuffers = 3
    public static let bufferCapacity = 1 << 19
    public static let handOverBytes = 1 << 18

    /// Opens and checks the directory, and checks a file already at the path;
    /// creates nothing (`open()` does, once tracing is allowed and loaded).
    public init(path: String, allowSharedDirectory: Bool) throws(OpenError) {
        self.path = path
        let (dir, name) = try Self.split(path)
        self.name = name
        directory = try LogDirectory(path: dir, allowShared: allowSharedDirectory)
        pool = (0..<Self.poolBuffers).map { _ in OutputBuffer(capacity: Self.bufferCapacity) }
        var st = stat()
        if fstatat(directory.fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 { try checkExisting(st) }
    }

    /// Directory and file name; a path naming a directory is refused.
    private static func split(_ path: String) throws(OpenError) -> (String, String) {
        guard let slash = path.lastIndex(of: "/") else {
            guard path != "." && path != ".." && !path.isEmpty else { throw .notRegularFile(path, kind: "a directory") }
            return (".", path)
        }
        let name = String(path[path.index(after: slash)...])
        guard !name.isEmpty, name != ".", name != ".." else { throw .notRegularFile(path, kind: "a directory") }
        let dir = String(path[..<slash])
        return (dir.isEmpty ? "/" : dir, name)
    }

    /// Creates the file (on the caller's thread, so a failure ends the run before tracing starts).
    public func open() throws(OpenError) {
        try openFile()
        bytesQueuedInFile = bytesInFile
    }

    /// Creates the file exclusively (0600), or takes the one at the path only
    /// if it is a regular file of root or this user, mode 0600, with one link;
    /// the directory is checked first, each time.
    private func openFile() throws(OpenError) {
        try directory.check()
        var f: Int32 = -1
        // Twice: a file removed between the two opens is created on the second pass.
        for _ in 0..<2 {
            f = openat(directory.fd, name, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0o600)
            if f >= 0 {
                // Exactly 0600, whatever the umask.
                _ = fchmod(f, 0o600)
                break
            }
            guard Errno.current == .exists else { throw .cannotOpen(path, .current) }
            // O_NONBLOCK: a FIFO put here fails (ENXIO) instead of waiting for a reader.
            f = openat(directory.fd, name, O_WRONLY | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
            if f >= 0 {
                var st = stat()
                guard fstat(f, &st) == 0 else { let err = Errno.current; close(f); throw .cannotOpen(path, err) }
                do { try checkExisting(st) } catch { close(f); throw error }
                _ = fcntl(f, F_SETFL, O_WRONLY | O_APPEND)
                break
            }
            switch Errno.current {
            case .noEntry: continue
            case .tooManySymlinks: throw .symlink(path)
            case .isDirectory: throw .notRegularFile(path, kind: "a directory")
            case .noDevice: throw .notRegularFile(path, kind: "a FIFO or socket")
            case let err: throw .cannotOpen(path, err)
            }
        }
        guard f >= 0 else { throw .cannotOpen(path, .noEntry) }
        fd = f
        var st = stat()
        bytesInFile = fstat(f, &st) == 0 ? Int(st.st_size) : 0
        writebackStarted = bytesInFile
        cacheDropped = bytesInFile
    }

    /// A file already at the path is appended to only if nobody else could
    /// have made it, read it, or reached it by another name.
    private func checkExisting(_ st: stat) throws(OpenError) {
        switch st.st_mode & S_IFMT {
        case S_IFREG: break
        case S_IFLNK: throw .symlink(path)
        case S_IFDIR: throw .notRegularFile(path, kind: "a directory")
        default: throw .notRegularFile(path, kind: "a special file")
        }
        if st.st_uid != 0 && st.st_uid != geteuid() { throw .fileOwner(path, uid: st.st_uid) }
        if st.st_nlink != 1 { throw .hardLinks(path, count: UInt64(st.st_nlink)) }
        if st.st_mode & 0o7777 != 0o600 { throw .fileMode(path, mode: st.st_mode) }
    }

    // MARK: - The reader's side

    /// Whether `pending` more bytes would push the file past --rotate-size.
    public func wouldOverflow(adding pending: Int) -> Bool {
        rotation.rotates(inFile: bytesQueuedInFile, adding: pending)
    }

    /// A new file's header record, made now so that it takes the next seq.
    private func makeHeader() -> OutputBuffer {
        var h = OutputBuffer(capacity: 4096)
        header(&h)
        return h
    }

    /// Starts a file's life with its header.
    public func writeHeader() {
        let h = makeHeader()
        bytesQueuedInFile += h.count
        enqueue(.header(h))
    }

    /// Queues the buffer's records and gives back an empty buffer from the
    /// pool; waits while every buffer of the pool is still queued.
    public func write(_ out: inout OutputBuffer) {
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
    public func rotate() {
        let h = makeHeader()
        bytesQueuedInFile = h.count
        enqueue(.rotate(header: h))
    }

    /// SIGHUP: closes and reopens the path (logrotate moved the old file away).
    public func reopen() {
        let h = makeHeader()
        var st = stat()
        bytesQueuedInFile = (fstatat(directory.fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 ? Int(st.st_size) : 0) + h.count
        enqueue(.reopen(header: h))
    }

    /// Waits until everything queued is on its way to the disk (written or counted).
    public func waitUntilWritten() {
        condition.lock()
        while (jobsHead < jobs.count || writerBusy) && !writerDone { condition.wait() }
        condition.unlock()
    }

    /// Records the writer could not write so far.
    public var recordsNotWritten: UInt64 {
        condition.lock()
        defer { condition.unlock() }
        return notWritten
    }

    /// Writes the last records, syncs, closes, and ends the writer thread.
    public func finish(_ out: inout OutputBuffer) {
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
            case .header(let header):
                startFile(header: header)
            case .rotate(let header):
                rotateFile()
                startFile(header: header)
            case .reopen(let header):
                reopenFile()
                startFile(header: header)
            case .finish:
                closeFile()
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

    /// Whether the name in the directory is still the file we hold (nobody moved it).
    private func isStillAtPath() -> Bool {
        var held = stat(), named = stat()
        guard fd >= 0, fstat(fd, &held) == 0, fstatat(directory.fd, name, &named, AT_SYMLINK_NOFOLLOW) == 0 else { return false }
        return held.st_dev == named.st_dev && held.st_ino == named.st_ino
    }

    /// Syncs and closes the current file. A file whose header never fit is
    /// empty: it is removed (when it is still ours at the path) rather than
    /// left behind headerless. Returns whether it was removed.
    @discardableResult
    private func closeFile() -> Bool {
        guard fd >= 0 else { return false }
        var removed = false
        if pendingHeader != nil {
            pendingHeader = nil
            countNotWritten(1)
            if bytesInFile == 0, isStillAtPath() { removed = unlinkat(directory.fd, name, 0) == 0 }
        }
        fsync(fd)
        close(fd)
        fd = -1
        return removed
    }

    /// A new file's life starts with its header; until that is written no record goes in.
    private func startFile(header: OutputBuffer) {
        guard fd >= 0 else {
            countNotWritten(1)
            return
        }
        pendingHeader = header
        _ = writePendingHeader()
    }

    /// Writes the header if it is still due; whether the file has it now.
    private func writePendingHeader() -> Bool {
        guard var h = pendingHeader else { return true }
        let (kept, _) = appendWhole(&h)
        if kept == h.count { pendingHeader = nil; return true }
        return false
    }

    /// Moves path to path.1 (path.1 to path.2, … dropping the oldest) and
    /// opens a new file, all relative to the directory's descriptor. The
    /// directory is checked before anything is renamed; a file that is not
    /// ours at the path (moved away, or an earlier open was refused) is not
    /// rotated in, and an empty headerless one is removed, not rotated.
    private func rotateFile() {
        let ours = isStillAtPath()
        let removed = closeFile()
        do {
            try directory.check()
        } catch {
            refused(error)
            return
        }
        if ours && !removed {
            for move in rotation.moves(for: name) {
                switch move {
                case .remove(let file): unlinkat(directory.fd, file, 0)
                case .rename(let from, let to): renameat(directory.fd, from, directory.fd, to)
                }
            }
        }
        do {
            try openFile()
        } catch {
            refused(error)
        }
    }

    private func reopenFile() {
        closeFile()
        do {
            try openFile()
        } catch {
            refused(error)
        }
    }

    /// A refusal mid-run: one line; records are counted until an open works.
    private func refused(_ error: OpenError) {
        Diagnostics.note("tcptrail: \(error.message); tracing goes on, records are counted as not written until the next rotation or SIGHUP opens a log")
    }

    /// Writes whole records, the header first if it is still due; on failure
    /// cuts the file back to the last whole record and counts the rest.
    private func writeToFile(_ out: inout OutputBuffer) {
        guard !out.isEmpty else { return }
        guard fd >= 0, writePendingHeader() else {
            countNotWritten(out.withUnsafeBytes { Self.lines(in: $0) })
            return
        }
        let (kept, _) = appendWhole(&out)
        countNotWritten(out.withUnsafeBytes { Self.lines(in: UnsafeRawBufferPointer(rebasing: $0[kept...])) })
    }

    /// Appends `out`; on failure cuts the file back to the last whole line
    /// and reports the first failure of a run of them. Returns the bytes kept.
    private func appendWhole(_ out: inout OutputBuffer) -> (kept: Int, failure: Int32) {
        let start = lseek(fd, 0, SEEK_END)
        let (written, failure) = out.withUnsafeBytes { OutputBuffer.writeAll(fd, $0) }
        if failure == 0 {
            bytesInFile += written
            paceWriteback()
            if failing {
                failing = false
                Diagnostics.note("tcptrail: writing the log \(path) again; \(recordsNotWritten) records were not written")
            }
            return (written, 0)
        }
        // Keep whole records only: cut back to the last complete line.
        let kept = out.withUnsafeBytes { raw in
            (raw[..<written].lastIndex(of: 0x0a)).map { $0 + 1 } ?? 0
        }
        if start >= 0 { ftruncate(fd, start + off_t(kept)) }
        bytesInFile += kept
        if !failing {
            failing = true
            Diagnostics.note("tcptrail: cannot write the log \(path): \(String(cString: strerror(failure))); tracing goes on, records are counted until writes succeed again")
        }
        return (kept, failure)
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
