import TCPTrailCore
import TCPTrailLoader

/// Turns the kernel's failed-reserve counter into `lost` records as it grows.
final class LossReporter {
    private let program: TraceProgram
    private let sink: LivePipeline
    private var seen: UInt64 = 0
    private var gapsSeen = TableGaps()

    init(program: TraceProgram, sink: LivePipeline) {
        self.program = program
        self.sink = sink
    }

    /// The counters as the last check read them.
    private(set) var latest = KernelStats()

    func check() {
        let stats = program.readStats()
        latest = stats
        if stats.lost > seen {
            sink.lost(count: stats.lost - seen, total: stats.lost, byKind: stats.lostByKind)
            seen = stats.lost
        }
        let gaps = TableGaps(stats, named: sink.owners.named)
        if gaps != gapsSeen && !gaps.isEmpty {
            sink.untracked(gaps)
        }
        gapsSeen = gaps
    }
}

extension TableGaps {
    /// The kernel side's table counters, with the accepted sockets user space named.
    public init(_ stats: KernelStats, named: UInt64) {
        self = stats.tables
        acceptedNamed = min(named, acceptedWithoutOwner)
    }
}
