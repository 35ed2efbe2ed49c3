import Prometheus
import TCPTrailCore
import TCPTrailLoader
import TCPTrailLive

/// `serve`'s `/metrics`: swift-prometheus' registry, fed from the pipeline's
/// `MetricsTally` by the tracing loop at most every `interval` (deltas into
/// counters, values into gauges), read by the HTTP handlers. docs/metrics.md
/// lists every series.
final class ServeMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    /// At most this often the loop publishes (and always at the end).
    static let interval: UInt64 = 100_000_000

    private let feed: Feed

    init(version: String, tables: TableSizes) {
        feed = Feed(registry: registry)
        registry.makeGauge(descriptor: .named("tcptrail_build_info", "The tracer's version; always 1."), labels: [("version", version)]).set(Int64(1))
        for (table, size) in [("connections", tables.connections), ("listeners", tables.listeners), ("owner_seeds", tables.ownerSeeds)] {
            registry.makeGauge(descriptor: .named("tcptrail_kernel_table_capacity", "Entries each kernel-side table can hold (--max-connections, --max-listeners)."), labels: [("table", table)]).set(Int64(size))
        }
    }

    /// The text exposition (format 0.0.4).
    func exposition() -> [UInt8] { registry.emitToBuffer() }

    /// Publishes what the pipeline counted since the last call. Tracing thread only.
    func publish(_ pipeline: LivePipeline, _ session: TraceSession, now: UInt64, force: Bool = false) {
        feed.publish(pipeline, session, now: now, force: force)
    }

    /// The tracing thread's side: what was published so far, to add only the difference.
    private final class Feed: @unchecked Sendable {
        let registry: PrometheusCollectorRegistry
        var due: UInt64 = 0
        let events: Counter
        let logDropped: Counter
        var published: [ObjectIdentifier: UInt64] = [:]
        /// Series made at their first count, by label values.
        var transitions: [Int: Counter] = [:]
        var anomalies: [Int: Counter] = [:]
        var overflows: [MetricsTally.ListenerKey: Counter] = [:]
        var otherOverflows: Counter?
        let lost: [(KernelEventKind, Counter)]
        let untracked: [(KeyPath<TableGaps, UInt64>, Counter)]
        let states: [(TCPState, Gauge)]
        let tracked: Gauge
        let ringFill: Gauge
        let ringSize: Gauge
        let client: ValueHistogram
        let server: ValueHistogram

        /// Seconds: 100 µs (loopback) to 10 s (SYN retransmits).
        static let handshakeBuckets: [Double] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

        init(registry r: PrometheusCollectorRegistry) {
            registry = r
            events = r.makeCounter(descriptor: .named("tcptrail_events_total", "Kernel events the tracer took from the ring buffer (accept() events excluded)."))
            logDropped = r.makeCounter(descriptor: .named("tcptrail_log_records_dropped_total", "Records the --output log could not take (export errors: disk full, I/O error)."))
            lost = [KernelEventKind.transition, .retransmit, .reset, .error, .listenDrop, .accept].map { kind in
                (kind, r.makeCounter(descriptor: .named("tcptrail_events_lost_total", "Events the kernel could not hand over (ring buffer full, or skipped by the BPF recursion guard), by record type."), labels: [("type", "\(kind.recordType.name)")]))
            }
            let gaps: [(String, KeyPath<TableGaps, UInt64>)] = [("sockets", \.sockets), ("events", \.events), ("listeners", \.listeners),
                                                               ("accepted_without_owner", \.acceptedWithoutOwner), ("child_ids", \.childIDs), ("owner_seeds", \.ownerSeeds)]
            untracked = gaps.map { name, path in
                (path, r.makeCounter(descriptor: .named("tcptrail_untracked_total", "What full kernel tables kept from the record (the log's untracked record)."), labels: [("what", name)]))
            }
            states = TCPState.allCases.map { state in
                (state, r.makeGauge(descriptor: .named("tcptrail_connections", "Connections the engine holds in each documented state now (sockets open at start included)."), labels: [("state", state.rawValue)]))
            }
            tracked = r.makeGauge(descriptor: .named("tcptrail_engine_connections", "Connections the handshake engine tracks (its table and its TIME_WAIT table)."))
            ringFill = r.makeGauge(descriptor: .named("tcptrail_ring_buffer_fill_bytes", "The most bytes waiting in the ring buffer at a turn of the loop since the last update."))
            ringSize = r.makeGauge(descriptor: .named("tcptrail_ring_buffer_size_bytes", "The ring buffer's size (--buffer-size)."))
            let help = "Handshake time: SYN_SENT to ESTABLISHED (client) or SYN_RECEIVED to ESTABLISHED (server), the kernel's time in the state."
            client = r.makeValueHistogram(descriptor: .named("tcptrail_handshake_duration_seconds", help), labels: [("side", "client")], buckets: Self.handshakeBuckets)
            server = r.makeValueHistogram(descriptor: .named("tcptrail_handshake_duration_seconds", help), labels: [("side", "server")], buckets: Self.handshakeBuckets)
        }

        /// Adds to `counter` what `total` grew by since it was last published.
        func advance(_ counter: Counter, to total: UInt64) {
            let key = ObjectIdentifier(counter)
            let before = published[key] ?? 0
            guard total > before else { return }
            counter.increment(by: Int64(clamping: total - before))
            published[key] = total
        }

        func publish(_ pipeline: LivePipeline, _ session: TraceSession, now: UInt64, force: Bool) {
            guard force || now >= due, let tally = pipeline.metrics else { return }
            due = now &+ ServeMetrics.interval
            advance(events, to: pipeline.events)
            advance(logDropped, to: pipeline.exportErrors)
            let stats = session.latestStats
            for (kind, counter) in lost { advance(counter, to: stats.lostByKind[kind] ?? 0) }
            let gaps = session.gaps(stats)
            for (path, counter) in untracked { advance(counter, to: gaps[keyPath: path]) }
            let n = TCPState.allCases.count
            for (i, total) in tally.transitions.enumerated() where total > 0 {
                let counter = transitions[i] ?? {
                    let c = registry.makeCounter(descriptor: .named("tcptrail_transitions_total", "Documented state changes (the log's transition records with from/to), by from and to state."), labels: [("from", TCPState.allCases[i / n].rawValue), ("to", TCPState.allCases[i % n].rawValue)])
                    transitions[i] = c
                    return c
                }()
                advance(counter, to: total)
            }
            for (i, total) in tally.anomalies.enumerated() where total > 0 {
                let counter = anomalies[i] ?? {
                    let c = registry.makeCounter(descriptor: .named("tcptrail_anomalies_total", "Anomaly records, by kind and severity."), labels: [("anomaly", Anomaly.Kind.allCases[i / 3].rawValue), ("severity", Anomaly.Severity.allCases[i % 3].rawValue)])
                    anomalies[i] = c
                    return c
                }()
                advance(counter, to: total)
            }
            let overflowHelp = "Segments dropped because a listener's accept queue was full (the listen_overflow records' counts), per listener; past the first \(tally.maxListeners) listeners, laddr=\"other\"."
            for (key, total) in tally.listenOverflows {
                let counter = overflows[key] ?? {
                    let c = registry.makeCounter(descriptor: .named("tcptrail_listen_overflows_total", overflowHelp), labels: [("laddr", key.address), ("lport", String(key.port))])
                    overflows[key] = c
                    return c
                }()
                advance(counter, to: total)
            }
            if tally.otherListenerOverflows > 0 {
                let counter = otherOverflows ?? registry.makeCounter(descriptor: .named("tcptrail_listen_overflows_total", overflowHelp), labels: [("laddr", "other"), ("lport", "other")])
                otherOverflows = counter
                advance(counter, to: tally.otherListenerOverflows)
            }
            if let engine = pipeline.engine {
                for (state, gauge) in states { gauge.set(Int64(engine.connections(in: state))) }
                tracked.set(Int64(engine.trackedConnections))
            }
            if let (fullest, capacity) = session.takeRingFill() {
                ringFill.set(Int64(clamping: fullest))
                ringSize.set(Int64(clamping: capacity))
            }
            for h in pipeline.metrics?.takeHandshakes() ?? [] {
                (h.server ? server : client).record(h.seconds)
            }
        }
    }
}

extension MetricNameDescriptor {
    /// A series by its whole name (tcptrail_..._total), with its HELP text.
    static func named(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }
}
