import TCPTrailCore
import TCPTrailLoader
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import TCPTrailHost
import TCPTrailLog

/// The live pipeline, the hot path: decodes each ring-buffer record, fills
/// in its owner, filters it, runs the engine and hands each record to the
/// sinks (the log file, text or JSON Lines on stdout, the live board), through
/// one reused stdout buffer flushed in large writes.
public final class LivePipeline: RingBufferConsumer {
    /// `none`: nothing on stdout (`top`, `serve` take the records through `observer`).
    public enum Format: Sendable { case text, json, none }

    /// The connection filters; on live events only --addr is left to check here.
    private let filter: EventFilter
    private let limit: UInt64?
    /// Standard output's sink: one of these, or neither (`.none`).
    private var json: JSONLinesSink?
    private var text: TextLinesSink?
    /// The handshake engine; nil with --raw (kernel transitions only).
    public private(set) var engine: HandshakeEngine?
    private var out = OutputBuffer(capacity: 1 << 20)
    /// The exported log (--output FILE): its own writer, sequence, rotation and headers.
    private let log: LogFileSink?
    public private(set) var events: UInt64 = 0
    /// `/metrics`' counts of the records written (serve sets it).
    public var metrics: MetricsTally?
    /// Sees every record the engine makes (the live views' board).
    public var observer: ((EngineOutput) -> Void)?
    public private(set) var undecodable: UInt64 = 0
    /// Owners of accepted sockets the kernel side could not name.
    public private(set) var owners = OwnerFallback()
    private var lastRescan: UInt64 = 0
    /// stdout's reader went away (EPIPE): end quietly.
    public private(set) var outputClosed = false
    /// The run should end: --count reached or stdout closed.
    public var finished: Bool { outputClosed || (limit.map { events >= $0 } ?? false) }

    /// How the sockets open at start are shown (text) and recorded (`none`: not at all).
    private let snapshotMode: SnapshotMode

    public init(format: Format, filter: EventFilter, limit: UInt64?, engine: HandshakeEngine?,
         log: EventLog? = nil, snapshot: SnapshotMode = .full, anomalyLinesPerSecond: Int = 0, textFormat: TextFormat = TextFormat()) {
        self.filter = filter
        self.snapshotMode = snapshot
        self.limit = limit
        self.engine = engine
        let clock = WallClock.current()
        self.log = log.map { LogFileSink(log: $0, clock: clock) }
        switch format {
        case .json: json = JSONLinesSink(JSONLinesWriter(clock: clock))
        case .text:
            var writer = textFormat.writer(clock: clock, documented: engine != nil, startMono: WallClock.monotonicNow())
            writer.appendHeader(to: &out)
            text = TextLinesSink(writer, snapshot: snapshot, anomalyLinesPerSecond: anomalyLinesPerSecond)
        case .none: break
        }
    }

    /// Writes the log file's header record (at start and after each reopen).
    public func writeLogHeader(version: String, filters: String, thresholds: String, features: String, tables: String) {
        guard let log else { return }
        var uts = utsname()
        uname(&uts)
        let kernel = withUnsafeBytes(of: uts.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        log.writeHeader(version: version, hostname: ProcessInfo.processInfo.hostName, kernel: kernel, filters: filters,
                        thresholds: thresholds, features: features, tables: tables)
    }

    /// SIGHUP: reopens the log path (after flushing what is buffered).
    public func reopenLog() {
        log?.reopen()
    }

    /// Writes the summary record, fsyncs and closes the log.
    public func finishLog(lost: UInt64, untracked: TableGaps) {
        guard let log else { return }
        var anomalies: [(String, Int)] = []
        if let engine { anomalies = engine.anomalyCounts.map { ($0.key.rawValue, $0.value) }.sorted { $0.0 < $1.0 } }
        log.finish(anomalies: anomalies, lost: lost, untracked: untracked)
    }

    public var exportErrors: UInt64 { log?.exportErrors ?? 0 }

    public func consume(_ record: UnsafeRawBufferPointer) -> Bool {
        if finished { return false }
        guard case .success(var event) = EventDecoder.decode(record) else {
            undecodable += 1
            return true
        }
        if !filter.keepsAddresses(family: event.family, local: event.localAddress, remote: event.remoteAddress) {
            return true
        }
        if event.cgroupID != 0 { event.cgroup = cgroup(event.cgroupID) }
        owners.fill(&event, rescan: rescanListeners)
        if event.kind == .transition { noteNamespace(event) }
        if event.kind == .accept || event.awaitingAccept || acceptHold.count > 0 {
            acceptHold.take(event) { process($0) }
        } else {
            process(event)
        }
        if event.kind != .accept { events += 1 }  // accept events are never records
        if out.count >= 1 << 19 { flush() }
        return !finished
    }

    /// The last cgroup id resolved: a socket's events come in runs.
    private var lastCgroup: (id: UInt64, ref: CgroupRef) = (0, .unknown)

    private func cgroup(_ id: UInt64) -> CgroupRef {
        if id == lastCgroup.id { return lastCgroup.ref }
        let r = CgroupResolver.shared.ref(id)
        if r.isKnown { lastCgroup = (id, r) }
        return r
    }

    /// Accepted sockets' first events, until accept() names their holder.
    private var acceptHold = AcceptHold()

    /// Accepted sockets the kernel side sent without owner that user space
    /// named: from its listener table, or at accept().
    public var acceptedNamed: UInt64 { owners.named + acceptHold.namedWithoutListener }

    /// One event, owner settled, into the engine (or out, with --raw).
    private func process(_ event: KernelEvent) {
        // The kernel lets an accepted socket's events before accept() pass its
        // pid filter; they are filtered here, by the holder accept() named.
        if !filter.pids.isEmpty && !(event.ownerKnown && filter.pids.contains(event.pid)) { return }
        if !filter.cgroups.isEmpty && !(event.ownerKnown && filter.keepsCgroup(event.cgroup)) { return }
        if engine != nil {
            engine!.process(event) { write($0) }
        } else {
            write(.event(event))
        }
    }

    /// One record to every sink.
    private func write(_ output: EngineOutput) {
        // --no-snapshot: a listed socket's TIME_WAIT running out is not news either.
        if snapshotMode == .none, case .change(let c) = output, c.connection.openAtStart, c.kernel == nil { return }
        log?.record(output, to: &out)
        json?.record(output, to: &out)
        text?.record(output, to: &out)
        metrics?.record(output, to: &out)
        observer?(output)
    }

    /// Namespaces first seen in an event, with a process in each; and the
    /// listeners seen opening. TraceSession hands them to the listen-queue
    /// monitor, so a namespace made during the trace is watched from its
    /// first listener on.
    public private(set) var newNamespaces: [(netns: UInt32, pid: UInt32)] = []
    public private(set) var newListeners: [SocketSnapshot] = []
    private var namespacesSeen: Set<UInt32> = []

    private func noteNamespace(_ e: KernelEvent) {
        // Owner context only: a softirq's pid is whatever task it interrupted.
        guard e.ownerKnown, e.netns != 0 else { return }
        if e.newState == .listen, e.oldState == .close {
            newListeners.append(SocketSnapshot(listener: e))
        }
        if namespacesSeen.insert(e.netns).inserted { newNamespaces.append((e.netns, e.pid)) }
    }

    /// What `noteNamespace` gathered since the last call.
    public func takeNewNamespaces() -> (namespaces: [(netns: UInt32, pid: UInt32)], listeners: [SocketSnapshot]) {
        defer { newNamespaces.removeAll(); newListeners.removeAll() }
        return (newNamespaces, newListeners)
    }

    /// The listeners open now, at most once a second (it walks /proc).
    private func rescanListeners() -> [ListenerOwner] {
        let now = WallClock.monotonicNow()
        guard now &- lastRescan >= 1_000_000_000 else { return [] }
        lastRescan = now
        return ListenerScan.scan()
    }

    /// The listeners open at start, for accepted sockets the kernel side cannot name.
    public func learnListeners(_ owners: [ListenerOwner]) {
        self.owners.learn(owners)
    }

    /// Reports and tracks the sockets open at start (those the filters keep).
    public func seed(_ sockets: [SocketSnapshot]) {
        guard engine != nil else { return }
        let kept = sockets.filter(filter.keeps)
        let now = WallClock.monotonicNow()
        let recorded = snapshotMode != .none
        engine!.seed(kept, at: now) { output in
            if !recorded, case .snapshot = output { return }
            write(output)
        }
        text?.endSnapshot(mono: now, to: &out)
        flush()
    }

    /// Reports listeners that overflowed since the last check.
    public func listenOverflows(_ overflows: [ListenQueueMonitor.Overflow]) {
        guard engine != nil else { return }
        let now = WallClock.monotonicNow()
        for o in overflows where filter.keeps(o.listener) {
            engine!.listenOverflow(o, at: now) { write($0) }
        }
    }

    /// Connections idle in a state the kernel leaves within round trips (for
    /// a look at the kernel's socket table).
    public func staleConnections() -> [HandshakeEngine.TableQuery] {
        engine?.staleConnections() ?? []
    }

    /// Settles `queries` by the kernel's socket table of their namespace
    /// (`tables`; a namespace missing there is not settled).
    public func reconcile(_ queries: [HandshakeEngine.TableQuery], tables: [UInt32: [SocketSnapshot]], at mono: UInt64) {
        guard engine != nil, !queries.isEmpty else { return }
        var index: [UInt32: [PairKey: SocketSnapshot]] = [:]
        for (netns, sockets) in tables {
            var byPair: [PairKey: SocketSnapshot] = [:]
            for s in sockets { byPair[PairKey(family: s.family, local: s.local, remote: s.remote)] = s }
            index[netns] = byPair
        }
        for q in queries {
            guard let table = index[q.netns] else { continue }
            var found = table[PairKey(family: q.family, local: q.local, remote: q.remote)]
            // Another socket on the pair since (the cookie says; an accepted
            // child's own id has the top bit and no cookie to compare): gone.
            if let f = found, q.conn.cookie & Self.childIDBit == 0, f.cookie != q.conn.cookie { found = nil }
            engine!.reconcile(q.conn, kernel: found?.state, timeWaitLeftMilliseconds: found?.expiresMilliseconds ?? 0, at: mono) { write($0) }
        }
    }

    private static let childIDBit: UInt64 = 1 << 63

    private struct PairKey: Hashable {
        var family: AddressFamily
        var local: Endpoint
        var remote: Endpoint
    }

    /// Runs the engine's timers up to `mono` (TIME_WAIT expiry, stalls).
    public func tick(to mono: UInt64) {
        if acceptHold.count > 0 { acceptHold.expire(now: mono) { process($0) } }
        guard engine != nil else { return }
        engine!.advance(to: mono) { write($0) }
        text?.advance(to: mono, to: &out)
    }

    /// Settles what the engine still holds at the end of the run.
    public func finish() {
        acceptHold.releaseAll { process($0) }
        guard engine != nil else { return }
        engine!.finish { write($0) }
        text?.finish(to: &out)
    }

    /// Reports events the kernel could not queue, as soon as they are counted.
    public func lost(count: UInt64, total: UInt64, byKind: [KernelEventKind: UInt64]) {
        let now = WallClock.monotonicNow()
        // What the lost events said is in the kernel's socket table.
        if count > 0 { engine?.checkEverythingInTable(lostBy: now) }
        log?.lost(count: count, total: total, byKind: byKind, mono: now, to: &out)
        json?.lost(count: count, total: total, byKind: byKind, mono: now, to: &out)
        text?.lost(count: count, total: total, byKind: byKind, mono: now, to: &out)
    }

    /// Reports what full kernel tables kept from the record, as it grows.
    public func untracked(_ gaps: TableGaps) {
        let now = WallClock.monotonicNow()
        log?.untracked(gaps, mono: now, to: &out)
        json?.untracked(gaps, mono: now, to: &out)
        text?.untracked(gaps, mono: now, to: &out)
    }

    /// Notices a reader that went away even when there is nothing to write
    /// (`tcptrail trace | head` on a quiet host).
    public func checkOutputClosed() {
        var pfd = pollfd(fd: STDOUT_FILENO, events: Int16(POLLOUT), revents: 0)
        if poll(&pfd, 1, 0) == 1 && pfd.revents & Int16(POLLERR | POLLHUP) != 0 {
            outputClosed = true
        }
    }

    public func flush() {
        log?.flush()
        guard !out.isEmpty, !outputClosed else { return }
        // Where a regular file's write stopped, so a cut line can be taken back.
        let start = stdoutIsFile ? lseek(STDOUT_FILENO, 0, SEEK_CUR) : -1
        let (written, err) = out.withUnsafeBytes { OutputBuffer.writeAll(STDOUT_FILENO, $0) }
        defer { out.removeAll() }
        guard err != 0 else { return }
        if err == EPIPE {
            outputClosed = true
            return
        }
        // Disk full, I/O error: whole lines only, the rest counted and said once.
        let (kept, dropped) = out.withUnsafeBytes { raw -> (Int, UInt64) in
            let kept = raw[..<written].lastIndex(of: UInt8(ascii: "\n")).map { $0 + 1 } ?? 0
            return (kept, UInt64(raw[kept...].reduce(0) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }))
        }
        if start >= 0, written > kept {
            _ = ftruncate(STDOUT_FILENO, start + off_t(kept))
            _ = lseek(STDOUT_FILENO, start + off_t(kept), SEEK_SET)
        }
        if stdoutErrors == 0 {
            Diagnostics.note("tcptrail: cannot write to standard output: \(String(cString: strerror(err))); records are being dropped (whole lines), the run ends with status 79")
        }
        stdoutErrors += dropped
    }

    /// Records standard output could not take (disk full, I/O error).
    public private(set) var stdoutErrors: UInt64 = 0
    private let stdoutIsFile: Bool = {
        var st = stat()
        return fstat(STDOUT_FILENO, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG
    }()
}
