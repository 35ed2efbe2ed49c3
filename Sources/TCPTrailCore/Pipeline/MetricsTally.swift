/// What `/metrics` counts, tallied from the records as they pass the sinks:
/// plain integers in fixed arrays on the tracing thread (no lock, no atomic,
/// no allocation per record); `serve` publishes them to the Prometheus
/// registry a few times a second. It counts the records the log writes, so
/// its totals are the log's.
public struct MetricsTally: RecordSink {
    /// `tcptrail_transitions_total`, by `from.index * states + to.index`.
    public private(set) var transitions = [UInt64](repeating: 0, count: Self.states * Self.states)
    /// `tcptrail_anomalies_total`, by `kind.index * 3 + severity.index`.
    public private(set) var anomalies = [UInt64](repeating: 0, count: Anomaly.Kind.allCases.count * 3)
    /// Handshake durations in seconds since the last `takeHandshakes`, client side then server side.
    private var handshakes: [(seconds: Double, server: Bool)] = []
    /// `listen_overflow` drops per listener, the first `maxListeners` listeners
    /// by name; the rest go to `otherListeners`.
    public private(set) var listenOverflows: [ListenerKey: UInt64] = [:]
    public private(set) var otherListenerOverflows: UInt64 = 0
    /// Listeners named in `tcptrail_listen_overflows_total`; later ones are counted as `other`.
    public let maxListeners: Int

    static let states = TCPState.allCases.count

    /// A listener as its labels name it.
    public struct ListenerKey: Hashable, Sendable {
        public var address: String
        public var port: UInt16
    }

    public init(maxListeners: Int = 64) {
        self.maxListeners = maxListeners
        handshakes.reserveCapacity(4096)
    }

    public mutating func record(_ output: EngineOutput, to out: inout OutputBuffer) {
        switch output {
        case .change(let c):
            transitions[c.from.index * Self.states + c.to.index] &+= 1
            // The kernel's time in SYN_SENT or SYN_RECEIVED: the handshake's.
            if c.step == .established, c.from == .synSent || c.from == .synReceived,
               let spent = c.kernel?.previousStateNanoseconds {
                handshakes.append((Double(spent) / 1e9, c.from == .synReceived))
            }
        case .anomaly(let a):
            anomalies[a.kind.index * 3 + a.severity.index] &+= 1
            if a.kind == .listenOverflow { noteOverflow(a) }
        case .event, .snapshot:
            break
        }
    }

    private mutating func noteOverflow(_ a: Anomaly) {
        let drops = UInt64(max(a.count ?? 1, 0))
        var text = OutputBuffer(capacity: 48)
        text.append(address: a.connection.local.address, family: a.connection.family)
        let key = ListenerKey(address: text.string, port: a.connection.local.port)
        if listenOverflows[key] != nil || listenOverflows.count < maxListeners {
            listenOverflows[key, default: 0] += drops
        } else {
            otherListenerOverflows += drops
        }
    }

    /// The handshakes since the last call (for the histogram), emptied.
    public mutating func takeHandshakes() -> [(seconds: Double, server: Bool)] {
        defer { handshakes.removeAll(keepingCapacity: true) }
        return handshakes
    }

    public func transitions(from: TCPState, to: TCPState) -> UInt64 {
        transitions[from.index * Self.states + to.index]
    }

    public func anomalies(_ kind: Anomaly.Kind, _ severity: Anomaly.Severity) -> UInt64 {
        anomalies[kind.index * 3 + severity.index]
    }
}

extension Anomaly.Kind {
    /// Its place in `allCases`, for counts kept in arrays.
    public var index: Int { Self.indexes[self] ?? 0 }
    private static let indexes: [Anomaly.Kind: Int] = Dictionary(uniqueKeysWithValues: allCases.enumerated().map { ($1, $0) })
}

extension Anomaly.Severity {
    /// In `index` order.
    public static let allCases: [Anomaly.Severity] = [.info, .warning, .critical]

    /// Its place in `allCases`.
    public var index: Int {
        switch self {
        case .info: 0
        case .warning: 1
        case .critical: 2
        }
    }
}
