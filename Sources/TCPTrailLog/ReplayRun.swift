import TCPTrailCore
/// Re-runs the handshake engine over the records of one trace run (one or
/// more files of the same run, in `seq` order), so that it sees what it saw live.
///
/// What the live engine was fed, and where replay finds it:
/// - kernel events: `transition` records with `kernel_from`/`kernel_to`,
///   `retransmit`, `reset`, `error`, `listen_drop`;
/// - the sockets open at start: the `snapshot` records (`seed`);
/// - `listen_overflow` read from the kernel's counter: anomaly records with
///   `accept_queue` (no kernel record shows those drops);
/// - the passing of time: the engine's timers fire as its clock passes them.
///   Live, the clock is moved by events and by a tick; every timer that fired
///   wrote a record stamped at or before the clock, so moving the clock to each
///   record's `mono_ns` fires the same timers (stalls carry the tick's time).
public struct ReplayRun {
    public private(set) var engine: HandshakeEngine
    public let filter: EventFilter
    public private(set) var header: LogRecord?
    private var seeds: [SocketSnapshot] = []
    private var seedMono: UInt64 = 0
    private var lastSeq: UInt64 = 0
    private var engineStarted = false

    /// Records this run read, by what became of them.
    public private(set) var records: UInt64 = 0
    public private(set) var kernelEvents: UInt64 = 0
    public private(set) var filteredOut: UInt64 = 0
    /// Records whose `seq` was at or below one already read (a file given twice).
    public private(set) var duplicates: UInt64 = 0
    /// Records missing by `seq` (rotated away, never written, or not given).
    public private(set) var seqMissing: UInt64 = 0
    public private(set) var seqGaps: UInt64 = 0
    /// From the log's own `lost` and `summary` records.
    public private(set) var lostInKernel: UInt64 = 0
    /// What full kernel tables kept from the record (the last `untracked` or summary totals).
    public private(set) var untracked = TableGaps()
    public private(set) var summary: LogRecord?
    public private(set) var unknownTypes: UInt64 = 0

    public init(filter: EventFilter = EventFilter(), thresholds: AnomalyThresholds? = nil) {
        self.filter = filter
        engine = HandshakeEngine(thresholds: thresholds ?? AnomalyThresholds())
        overrideThresholds = thresholds != nil
    }

    private let overrideThresholds: Bool

    /// Feeds one record; `emit` gets what the engine makes of it, `lost` the
    /// log's own `lost` records (to pass on).
    public mutating func feed(_ r: borrowing LogRecord, emit: (EngineOutput) -> Void, lost: (LogRecord) -> Void = { _ in }) {
        if r.type != .header {
            if lastSeq != 0 && r.seq <= lastSeq {
                duplicates += 1
                return
            }
            countGap(to: r.seq)
            lastSeq = r.seq
        } else {
            // A header takes the next seq, like any record (rotation, SIGHUP).
            countGap(to: r.seq)
            if r.seq > lastSeq { lastSeq = r.seq }
        }
        records += 1
        if r.type != .snapshot && !seeds.isEmpty { flushSeeds(emit: emit) }

        switch r.type {
        case .header:
            if header == nil {
                header = copy r
                if !overrideThresholds, !engineStarted, let t = r.thresholds { engine.thresholds = t }
            }
        case .snapshot:
            engineStarted = true
            let s = r.snapshot
            guard filter.keeps(s) else { filteredOut += 1; return }
            if seeds.isEmpty { seedMono = r.mono }
            seeds.append(s)
        case .transition where !r.isKernelTransition:
            if let to = r.settledByTable {
                // Live, the kernel's socket table settled it: so does replay.
                guard filter.keeps(r.event) else { filteredOut += 1; return }
                engine.reconcile(r.event.connectionID, to: to, timeWaitLeftMilliseconds: r.expiresMilliseconds, at: r.mono, emit: emit)
            } else {
                // One the engine made (the 2MSL expiry): it will make it again.
                engine.advance(to: r.mono, emit: emit)
            }
        case .transition, .retransmit, .reset, .error, .listenDrop:
            engineStarted = true
            guard filter.keeps(r.event) else { filteredOut += 1; return }
            kernelEvents += 1
            engine.process(r.event, emit: emit)
            // Live, a held close is written once settled, after its causes: settle it here too.
            if r.hasDocumentedStep && r.event.newState == .close {
                engine.settlePendingClose(of: r.event.connectionID, emit: emit)
            }
        case .anomaly:
            if let queue = r.acceptQueue, r.anomalyName == Anomaly.Kind.listenOverflow.rawValue {
                // Live, counter drops are fed at the wall clock, not the engine's.
                var listener = r.snapshot
                listener.state = .listen
                listener.acceptQueue = queue.depth
                listener.acceptQueueLimit = queue.limit
                guard filter.keeps(listener) else { filteredOut += 1; return }
                engine.listenOverflow(ListenOverflow(listener: listener, drops: Int(r.count ?? 0)), at: r.mono, emit: emit)
            } else {
                engine.advance(to: r.mono, emit: emit)
            }
        case .lost:
            lostInKernel = max(lostInKernel, r.lostTotal)
            lost(r)
        case .summary:
            summary = copy r
            lostInKernel = max(lostInKernel, r.lostTotal)
            if let u = r.untracked { untracked = u }
        case .untracked:
            if let u = r.untracked { untracked = u }
            lost(r)
        case .other, .accept:
            unknownTypes += 1
        }
    }

    /// Counts the records missing between the last `seq` and `seq`. Saturating:
    /// a log may jump to any seq, but the count is at most all there could be.
    private mutating func countGap(to seq: UInt64) {
        guard lastSeq != 0, seq > lastSeq, seq - lastSeq > 1 else { return }
        seqGaps += 1
        seqMissing = seqMissing.addingSaturating(seq - lastSeq - 1)
    }

    private mutating func flushSeeds(emit: (EngineOutput) -> Void) {
        engine.seed(seeds, at: seedMono, emit: emit)
        seeds.removeAll()
    }

    /// Settles what the engine still holds, as `trace` does when it stops.
    public mutating func finish(emit: (EngineOutput) -> Void) {
        if !seeds.isEmpty { flushSeeds(emit: emit) }
        engine.finish(emit: emit)
    }
}
