import Histogram

/// The end-of-trace report: connections by final state, anomalies by name,
/// handshake latency percentiles.
public struct TraceSummary {
    public var finalStates: [TCPState: Int]
    /// Sockets listed at start that no event touched since.
    public var openAtStartStates: [TCPState: Int]
    public var anomalyCounts: [Anomaly.Kind: Int]
    /// SYN_SENT -> ESTABLISHED and SYN_RECEIVED -> ESTABLISHED, in µs.
    public var activeHandshakes: Histogram<UInt64>
    public var passiveHandshakes: Histogram<UInt64>

    /// Everything the engine saw.
    public init(engine: HandshakeEngine) {
        finalStates = engine.finalStates
        openAtStartStates = engine.openAtStartStates
        anomalyCounts = engine.anomalyCounts
        activeHandshakes = engine.activeHandshakes
        passiveHandshakes = engine.passiveHandshakes
    }

    /// Only what a selection showed.
    public init(_ tally: SelectionTally) {
        self = tally.summary
    }

    init(finalStates: [TCPState: Int], openAtStartStates: [TCPState: Int], anomalyCounts: [Anomaly.Kind: Int],
         activeHandshakes: Histogram<UInt64>, passiveHandshakes: Histogram<UInt64>) {
        self.finalStates = finalStates
        self.openAtStartStates = openAtStartStates
        self.anomalyCounts = anomalyCounts
        self.activeHandshakes = activeHandshakes
        self.passiveHandshakes = passiveHandshakes
    }

    static func handshakeHistogram() -> Histogram<UInt64> {
        Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
    }

    public var text: String {
        lines.map { "tcptrail: " + $0 }.joined(separator: "\n")
    }

    /// The report, one finding per line.
    public var lines: [String] {
        var lines: [String] = []
        let states = finalStates.sorted { ($0.value, $1.key.rawValue) > ($1.value, $0.key.rawValue) }.map { "\($0.key.rawValue) \($0.value)" }
        lines.append("connections by final state: " + (states.isEmpty ? "none" : states.joined(separator: ", ")))
        if !openAtStartStates.isEmpty {
            let untouched = openAtStartStates.sorted { ($0.value, $1.key.rawValue) > ($1.value, $0.key.rawValue) }.map { "\($0.key.rawValue) \($0.value)" }
            lines.append("open at start with no event since: " + untouched.joined(separator: ", ")
                         + (openAtStartStates[.closed] != nil ? " (CLOSED: their TIME_WAIT ran out)" : ""))
        }
        let anomalies = anomalyCounts.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue) \($0.value)" }
        lines.append("anomalies: " + (anomalies.isEmpty ? "none" : anomalies.joined(separator: ", ")))
        lines.append("handshake SYN_SENT -> ESTABLISHED: " + Self.percentiles(activeHandshakes))
        lines.append("handshake SYN_RECEIVED -> ESTABLISHED: " + Self.percentiles(passiveHandshakes))
        return lines
    }

    /// The anomaly counts as the summary record's (name, count) pairs, by name.
    public var anomalyPairs: [(String, Int)] {
        anomalyCounts.map { ($0.key.rawValue, $0.value) }.sorted { $0.0 < $1.0 }
    }

    /// "n=120 p50=0.052ms p90=0.110ms p99=0.400ms max=1.200ms" from µs values.
    static func percentiles(_ h: Histogram<UInt64>) -> String {
        guard h.totalCount > 0 else { return "none" }
        func ms(_ micros: UInt64) -> String {
            let whole = micros / 1000, frac = micros % 1000
            let f = String(frac)
            return "\(whole).\(String(repeating: "0", count: 3 - f.count))\(f)ms"
        }
        return "n=\(h.totalCount) p50=\(ms(h.valueAtPercentile(50))) p90=\(ms(h.valueAtPercentile(90))) p99=\(ms(h.valueAtPercentile(99))) max=\(ms(h.max))"
    }
}
