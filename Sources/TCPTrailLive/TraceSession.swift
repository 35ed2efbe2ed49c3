import CTCPTrailSys
#if canImport(Glibc)
import Glibc
#endif
import TCPTrailCore
import TCPTrailLoader
import TCPTrailHost
import TCPTrailLog

/// The live tracer that `trace`, `top` and `serve` share: the BPF program
/// opened, loaded and attached, the ring buffer read into the sink, the
/// sockets open at start, lost events and listen-queue overflows.
///
/// `init` and `begin` throw the failure that ends the command (one line and
/// its exit status); `step` is one turn of the loop; `stop` detaches, drains
/// what is queued and settles the engine.
public final class TraceSession {
    public let program: TraceProgram
    /// Where the records go; set by `begin`.
    public private(set) var sink: LivePipeline?
    private var reader: RingBufferReader?
    private var loss: LossReporter?
    private var queues: ListenQueueMonitor?
    private var nextQueueCheck: UInt64 = 0
    private var checks = 0
    private let pollInterval: Int32
    private let ringBufferBytes: UInt64
    /// The ring's fill, sampled before each drain; nil if its pages could not be mapped.
    private var fill: RingBufferFill?
    private var fullestSinceTaken: UInt64 = 0
    private var stopped = false
    /// The listeners open at start, for user space's owner fallback.
    private var startListeners: [ListenerOwner] = []

    /// Ring-buffer reads that failed (the first is said on stderr).
    public private(set) var pollErrors: UInt64 = 0

    /// Open, configure, load, attach: each step's failure is thrown with its line and exit status.
    public init(options: SessionOptions) throws(CommandFailure) {
        LibBPFLog.install(verbose: options.verbose)
        let settings = options.settings
        var scanned: [ListenerOwner] = []
        let started = Result { () throws(LoaderError) -> TraceProgram in
            try Preflight.checkBeforeTrace()
            // Read before load: the tables are sized from what is open now.
            let listeners = ListenerScan.scan()
            var sized = settings
            sized.tables = TableSizes.forHost(maxConnections: options.maxConnections, maxListeners: options.maxListeners,
                                              listenersNow: listeners.count)
            let program = try TraceProgram.load(sized, facts: try KernelFacts.read())
            program.seedListeners(listeners)
            guard program.seedCgroups(settings.cgroupIDs) else { throw LoaderError.configureFailed("the --cgroup set did not fit its table") }
            scanned = listeners
            try program.attach()
            return program
        }
        switch started {
        case .success(let p): program = p
        case .failure(let error): throw error.failure
        }
        pollInterval = options.pollInterval
        ringBufferBytes = UInt64(settings.ringBufferBytes)
        startListeners = scanned
        let missing = program.plan.features.filter { !$0.available }.map(\.feature.rawValue)
        if !missing.isEmpty {
            Diagnostics.note("tcptrail: tracing without \(missing.joined(separator: ", ")) on kernel \(KernelFacts.runningRelease()): run 'tcptrail doctor' for why and what each means")
        }
        // Once the program is attached (so a refusal stays one line), and before
        // any thread starts, so the log writer inherits it.
        if options.nice != 0, case let err = tt_set_nice(options.nice), err != 0 {
            Diagnostics.note("tcptrail: cannot set nice \(options.nice): \(String(cString: strerror(err))); tracing at the inherited priority (pass --nice 0 to silence this)")
        }
    }

    /// Starts reading into `sink`, and hands it the sockets open now.
    public func begin(sink: LivePipeline, raw: Bool = false) throws(CommandFailure) {
        self.sink = sink
        sink.learnListeners(startListeners)
        startListeners = []
        let fd = program.eventsFD
        switch Result(catching: { () throws(LoaderError) in try RingBufferReader(mapFD: fd, consumer: sink) }) {
        case .success(let r): reader = r
        case .failure(let error):
            program.close()
            throw error.failure
        }
        loss = LossReporter(program: program, sink: sink)
        fill = RingBufferFill(mapFD: fd, capacity: ringBufferBytes)
        // Attached first, then read what is open, so nothing falls between the two.
        if !raw {
            let open = SocketDiag.snapshotAllNamespaces()
            program.seedOwners(open)
            program.seedTimewaits(open)
            sink.seed(open)
        }
        // Counters are read before we say we trace, so no overflow falls between.
        queues = raw ? nil : ListenQueueMonitor()
        nextQueueCheck = WallClock.monotonicNow() + 1_000_000_000
        // Loading parsed the kernel's BTF (megabytes) and freed it: give it back.
        tt_release_free_memory()
    }

    /// One turn: wait up to `timeout` ms for events, take them, run the timers.
    public func step(timeoutMilliseconds timeout: Int32? = nil) {
        guard let sink else { return }
        if let used = fill?.used, used > fullestSinceTaken { fullestSinceTaken = used }
        if let rc = reader?.poll(timeoutMilliseconds: timeout ?? pollInterval), rc < 0, -rc != EINTR {
            // A signal interrupts the wait (EINTR): not an error. Anything else is said once and counted.
            if pollErrors == 0 {
                Diagnostics.note("tcptrail: reading the ring buffer failed: \(ErrnoName.name(-rc)) (\(String(cString: strerror(-rc)))); tracing goes on, events may be late or lost")
            }
            pollErrors += 1
        }
        loss?.check()
        // Timers run a little behind the clock: events still in the ring may explain a close.
        sink.tick(to: WallClock.monotonicNow() &- 200_000_000)
        if tt_take_hangup() != 0 { sink.reopenLog() }
        followNewNamespaces()
        if queues != nil, WallClock.monotonicNow() >= nextQueueCheck {
            // Once a second; new namespaces every 10 s (that walks /proc).
            checks += 1
            if checks % 10 == 0 { queues!.refreshNamespaces() }
            sink.listenOverflows(queues!.check())
            reconcileStaleConnections()
            nextQueueCheck = WallClock.monotonicNow() + 1_000_000_000
        }
        sink.flush()
    }

    /// Asks the kernel's socket table (sock_diag, as `ss`) where connections
    /// idle in a closing state are, and settles those the tracepoints did not
    /// move. The ring is drained before and after the dump, so a move the
    /// kernel did report is taken first and not settled twice.
    private func reconcileStaleConnections() {
        guard let sink, queues != nil else { return }
        _ = reader?.drain()
        let candidates = sink.staleConnections()
        guard !candidates.isEmpty else { return }
        var tables: [UInt32: [SocketSnapshot]] = [:]
        for netns in Set(candidates.map(\.netns)) {
            if let t = queues!.connections(in: netns) { tables[netns] = t }
        }
        let mono = WallClock.monotonicNow()
        _ = reader?.drain()
        // Only those still idle once the ring is empty.
        let still = Set(sink.staleConnections().map(\.conn))
        sink.reconcile(candidates.filter { still.contains($0.conn) }, tables: tables, at: mono)
    }

    /// Watches the namespaces events showed first, at once: its processes
    /// (and `ip netns del`) may be gone by the next check, and the handle
    /// keeps the namespace's counters readable.
    private func followNewNamespaces() {
        guard queues != nil, let sink else { return }
        let (namespaces, listeners) = sink.takeNewNamespaces()
        for n in namespaces { queues!.follow(netns: n.netns, pid: n.pid) }
        for l in listeners { queues!.learn(l) }
    }

    /// What full kernel tables kept from the record, from `stats`.
    public func gaps(_ stats: KernelStats) -> TableGaps {
        TableGaps(stats, named: sink?.acceptedNamed ?? 0)
    }

    /// The kernel's counters as the last turn read them (no map read of its own).
    public var latestStats: KernelStats { loss?.latest ?? KernelStats() }

    /// The most bytes the ring held at a turn since the last call, and its size; nil if unknown.
    public func takeRingFill() -> (fullest: UInt64, capacity: UInt64)? {
        guard let fill else { return nil }
        defer { fullestSinceTaken = 0 }
        return (max(fullestSinceTaken, fill.used), fill.capacity)
    }

    /// Events the kernel could not queue so far.
    public var lost: UInt64 { program.readStats().lost }

    /// Detaches, takes what is still queued, settles the engine; returns the kernel's counters.
    @discardableResult
    public func stop() -> KernelStats {
        if !stopped, let sink {
            stopped = true
            program.detach()
            if !sink.finished { _ = reader?.drain() }
            loss?.check()
            followNewNamespaces()
            if queues != nil {
                sink.listenOverflows(queues!.check())
                queues!.close()
            }
            sink.finish()
            sink.flush()
        }
        return program.readStats()
    }

    deinit { program.close() }
}
