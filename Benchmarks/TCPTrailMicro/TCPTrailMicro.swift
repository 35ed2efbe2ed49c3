// Per-event costs of tcptrail's hot path, with heap allocations counted
// (ordo-one/benchmark's malloc interposer). Each sample is 1,000 events of
// loopback churn in steady state: the engine's tables warmed, buffers grown.
//
//   swift package benchmark --target TCPTrailMicro     (or bench/micro)
import Benchmark
import CTCPTrailEvent
import TCPTrailCore
import TCPTrailLog

/// The kernel records of loopback churn: per connection, a client and a
/// server socket, 5 transitions each, 10 µs apart, as the ring buffer delivers
/// them. Made from a template, so making one costs no allocation.
struct Churn {
    private var pair: UInt64 = 0
    private var index = 0
    private var mono: UInt64 = 1_000_000_000
    /// The owners' cgroup v2 id as the kernel side records it (0: none).
    var cgroupID: UInt64 = 0
    private var template = KernelEvent(
        monoNanoseconds: 0, cookie: 0, netns: 4026531840, pid: 4242, comm: ProcessName("churn"), kind: .transition, family: .ipv4,
        localAddress: RawAddress(bytes: [127, 0, 0, 1]), remoteAddress: RawAddress(bytes: [127, 0, 0, 1]), cpu: 1)

    /// (client?, from, to, peer FIN seen) in the order they happen.
    private static let steps: [(Bool, KernelTCPState, KernelTCPState, Bool)] = [
        (true, .close, .synSent, false), (false, .listen, .synRecv, false),
        (true, .synSent, .established, false), (false, .synRecv, .established, false),
        (true, .established, .finWait1, false), (false, .established, .closeWait, true),
        (false, .closeWait, .lastAck, true), (true, .finWait1, .finWait2, false),
        (false, .lastAck, .close, true), (true, .finWait2, .close, true),
    ]

    mutating func next() -> KernelEvent {
        let (isClient, from, to, peerFin) = Self.steps[index]
        let port = UInt16(truncatingIfNeeded: 32768 + pair % 28000)
        var e = template
        e.cgroupID = cgroupID
        e.monoNanoseconds = mono
        e.cookie = 1000 + pair * 2 + (isClient ? 0 : 1)
        e.previousStateNanoseconds = from == .close || from == .listen ? nil : 10_000
        e.localPort = isClient ? port : 8080
        e.remotePort = isClient ? 8080 : port
        e.oldState = from
        e.newState = to
        e.flags = UInt8(TT_FLAG_OWNER_KNOWN.rawValue) | (peerFin ? UInt8(TT_FLAG_PEER_FIN.rawValue) : 0)
        mono += 10_000
        index += 1
        if index == Self.steps.count {
            index = 0
            pair += 1
        }
        return e
    }
}

/// Ring-buffer records of the same churn.
func records(_ n: Int) -> [[UInt8]] {
    var churn = Churn()
    return (0..<n).map { _ in EventDecoder.encode(churn.next()) }
}

/// Engines and writers warmed once and kept across samples: each sample
/// continues the same churn, so what is measured is the steady state.
final class Warm: @unchecked Sendable {
    var engine = HandshakeEngine()
    var churn = Churn()
    var writer = JSONLinesWriter(clock: WallClock(bootOffsetNanoseconds: 1_700_000_000_000_000_000))
    var out = OutputBuffer(capacity: 1 << 20)
    var outputs = 0

    /// The owners' cgroup, named as the live pipeline names it (`.unknown`: none).
    var cgroup = CgroupRef.unknown

    /// Past 60 s of churn time (10 µs per event): TIME_WAIT expiry runs as in steady state.
    init(events: Int = 6_500_000, cgroupPath: String? = nil) {
        if let cgroupPath {
            churn.cgroupID = 4242
            cgroup = CgroupNames.add(CgroupInfo(path: cgroupPath, id: 4242))
        }
        for _ in 0..<events {
            var e = churn.next()
            e.cgroup = cgroup
            engine.process(e) { _ in outputs += 1 }
        }
    }

    static let baseline = Warm(events: 0)
    static let engineOnly = Warm()
    static let hotPath = Warm()
    static let hotPathCgroup = Warm(cgroupPath: "/system.slice/churn.service")
    static let records = Records()
    static let changes = Changes()
    static let sinks = Sinks()
}

/// The same 1,000 state changes through the pipeline's stdout sinks (a generic
/// `RecordSink` call each), as the live pipeline and replay hand them on.
final class Sinks: @unchecked Sendable {
    let changes = Changes().changes
    var json = JSONLinesSink(JSONLinesWriter(clock: WallClock(bootOffsetNanoseconds: 1_700_000_000_000_000_000)))
    var text = TextLinesSink(TextLinesWriter(clock: WallClock(bootOffsetNanoseconds: 1_700_000_000_000_000_000), documented: true))
    var out = OutputBuffer(capacity: 1 << 21)

    func run<S: RecordSink>(_ sink: inout S) {
        for c in changes { sink.record(c, to: &out) }
    }
}

/// 1,000 ring-buffer records back to back.
final class Records: @unchecked Sendable {
    let raw: [UInt8] = records(batch).flatMap { $0 }
    let size = EventDecoder.recordSize
}

/// 1,000 state changes as the engine made them, and a writer.
final class Changes: @unchecked Sendable {
    var changes: [EngineOutput] = []
    var writer = JSONLinesWriter(clock: WallClock(bootOffsetNanoseconds: 1_700_000_000_000_000_000))
    var out = OutputBuffer(capacity: 1 << 20)

    init() {
        var engine = HandshakeEngine()
        var churn = Churn()
        while changes.count < batch { engine.process(churn.next()) { if case .change = $0, changes.count < batch { changes.append($0) } } }
    }
}

/// Events per measured iteration: the figures are per 1,000 events.
let batch = 1000
let metrics: [BenchmarkMetric] = [.wallClock, .cpuTotal, .mallocCountTotal, .throughput]

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: metrics, maxDuration: .seconds(3), maxIterations: 10_000)

    // What the harness itself costs per sample (its own allocations included),
    // and making the test events: subtract these from the others.
    Benchmark("baseline x1000: making the churn events only") { benchmark in
        let w = Warm.baseline
        for _ in 0..<batch { blackHole(w.churn.next().cookie) }
    }

    Benchmark("decode x1000: ring-buffer records to KernelEvents") { benchmark in
        let w = Warm.records
        w.raw.withUnsafeBytes { all in
            for k in 0..<batch {
                if case .success(let e) = EventDecoder.decode(UnsafeRawBufferPointer(rebasing: all[(k * w.size)..<((k + 1) * w.size)])) {
                    blackHole(e.monoNanoseconds)
                }
            }
        }
    }

    Benchmark("engine x1000: events through the handshake engine") { benchmark in
        let w = Warm.engineOnly
        for _ in 0..<batch { w.engine.process(w.churn.next()) { _ in w.outputs += 1 } }
    }

    Benchmark("json x1000: state changes written as v1 records") { benchmark in
        let w = Warm.changes
        for c in w.changes { w.writer.append(c, to: &w.out) }
        w.out.removeAll()
    }

    Benchmark("sinks x1000: state changes through the JSON Lines and text sinks") { benchmark in
        let w = Warm.sinks
        w.run(&w.json)
        w.run(&w.text)
        w.out.removeAll()
    }

    Benchmark("hot path x1000: decode, engine and JSON") { benchmark in
        let w = Warm.hotPath
        for _ in 0..<batch {
            // The ring buffer's bytes, built on the stack as the kernel would write them.
            let record = EventDecoder.record(w.churn.next())
            withUnsafeBytes(of: record) { bytes in
                if case .success(let e) = EventDecoder.decode(bytes) {
                    w.engine.process(e) { w.writer.append($0, to: &w.out) }
                }
            }
        }
        w.out.removeAll()
    }

    // The same with every owner in a cgroup: the id decoded, named through
    // the live pipeline's one-entry memo, and written as cgroup and unit.
    Benchmark("hot path x1000, owners in a cgroup: decode, engine and JSON") { benchmark in
        let w = Warm.hotPathCgroup
        var memo = (id: UInt64(0), ref: CgroupRef.unknown)
        for _ in 0..<batch {
            let record = EventDecoder.record(w.churn.next())
            withUnsafeBytes(of: record) { bytes in
                if case .success(var e) = EventDecoder.decode(bytes) {
                    if e.cgroupID != memo.id { memo = (e.cgroupID, w.cgroup) }
                    e.cgroup = memo.ref
                    w.engine.process(e) { w.writer.append($0, to: &w.out) }
                }
            }
        }
        w.out.removeAll()
    }
}
