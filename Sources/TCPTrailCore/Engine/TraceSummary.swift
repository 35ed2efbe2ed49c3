import Histogram

/// The end-of-trace report: connections by final state, anomalies by name,
/// handshake latency percentiles.
public struct TraceSummary {
    public let engine: HandshakeEngine

    public init(engine: HandshakeEngine) {
        self.engine = engine
    }

    public var text: String {
        lines.map { "tcptrail: " + $0 }.joined(separator: "\n")
    }

    /// The report, one finding per line.
    public var lines: [String] {
        var lines: [String] = []
        let states = engine.finalStates.sorted { $0.value > $1.value }.map { "\($0.key.rawValue) \($0.value)" }
        lines.append("connections by final state: " + (states.isEmpty ? "none" : states.joined(separator: ", ")))
        if !engine.openAtStartStates.isEmpty {
            let untouched = engine.openAtStartStates.sorted { $0.value > $1.value }.map { "\($0.key.rawValue) \($0.value)" }
            lines.append("open at start with no event since: " + untouched.joined(separator: ", ")
                         + (engine.openAtStartStates[.closed] != nil ? " (CLOSED: their TIME_WAIT ran out)" : ""))
        }
        let anomalies = engine.anomalyCounts.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue) \($0.value)" }
        lines.append("anomalies: " + (anomalies.isEmpty ? "none" : anomalies.joined(separator: ", ")))
        lines.append("handshake SYN_SENT -> ESTABLISHED: " + Self.percentiles(engine.activeHandshakes))
        lines.append("handshake SYN_RECEIVED -> ESTABLISHED: " + Self.percentiles(engine.passiveHandshakes))
        return lines
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
