import Testing
@testable import TCPTrailCore

/// `/metrics`' pure parts: the engine's per-state counts and the tally of records.
@Suite struct MetricsTallyTests {
    @Test func stateIndexesFollowAllCases() {
        #expect(TCPState.allCases.map(\.index) == Array(0..<TCPState.allCases.count))
        #expect(Anomaly.Kind.allCases.map(\.index) == Array(0..<Anomaly.Kind.allCases.count))
        #expect(Anomaly.Severity.allCases.map(\.index) == [0, 1, 2])
    }

    /// Interleaved connections: after each event, the engine's count per state
    /// equals what `state(of:)` says of every connection one by one; the
    /// tally's totals equal the records the engine emitted.
    @Test func countsAgreeWithTheEngineAndItsRecords() {
        var scripts: [Script] = []
        for i in 0..<7 {
            let s = Script(UInt64(100 + i), lport: UInt16(41000 + i), at: 1_000_000_000 + UInt64(i) * 1_000)
            s.t(.close, .synSent, after: 0).t(.synSent, .established, after: UInt64(1 + i))
            if i % 3 == 0 { s.t(.established, .finWait1).t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true) }
            if i % 3 == 1 { s.t(.established, .closeWait) }
            scripts.append(s)
        }
        let refused = Script(200, lport: 42000)
        refused.t(.close, .synSent).reset(.received, in: .synSent).t(.synSent, .close).error(111, in: .close)
        scripts.append(refused)
        // The kernel's time in SYN_SENT, as the kernel side reports it; the refused one has none.
        var events = scripts.flatMap(\.events).sorted { $0.monoNanoseconds < $1.monoNanoseconds }
        for i in events.indices where events[i].newState == .established {
            events[i].previousStateNanoseconds = UInt64(i + 1) * 1_000_000
        }
        let ids = Set(events.map(\.connectionID))

        var engine = HandshakeEngine()
        var tally = MetricsTally()
        var out = OutputBuffer(capacity: 64)
        var pairs: [String: UInt64] = [:], refusals: UInt64 = 0, handshakes: [Double] = []
        for e in events {
            engine.process(e) { o in
                tally.record(o, to: &out)
                if case .change(let c) = o {
                    pairs["\(c.from)>\(c.to)", default: 0] += 1
                    if c.step == .established { handshakes.append(Double(c.kernel?.previousStateNanoseconds ?? 0) / 1e9) }
                }
                if case .anomaly(let a) = o, a.kind == .connectionRefused { refusals += 1 }
            }
            for state in TCPState.allCases {
                let seen = ids.filter { engine.state(of: $0) == state }.count
                #expect(engine.connections(in: state) == seen, "\(state) after \(e.kind) of \(e.connectionID)")
            }
        }
        engine.advance(to: events.last!.monoNanoseconds + 6_000_000) { tally.record($0, to: &out) }
        #expect(engine.connections(in: .established) == 2)  // i = 2, 5
        #expect(engine.connections(in: .closeWait) == 2)    // i = 1, 4
        #expect(engine.connections(in: .timeWait) == 3)     // i = 0, 3, 6
        #expect(tally.anomalies(.connectionRefused, .warning) == refusals && refusals == 1)
        for from in TCPState.allCases {
            for to in TCPState.allCases {
                #expect(tally.transitions(from: from, to: to) == pairs["\(from)>\(to)"] ?? 0, "\(from) -> \(to)")
            }
        }
        #expect(tally.takeHandshakes().map(\.seconds) == handshakes && handshakes.count == 7)
        #expect(tally.takeHandshakes().isEmpty)
    }

    /// Listen overflows per listener up to the cap, the rest as one.
    @Test func listenerLabelsAreCapped() {
        var tally = MetricsTally(maxListeners: 2)
        var out = OutputBuffer(capacity: 64)
        for port in [8080, 8081, 8080, 8082, 8083] as [UInt16] {
            let e = Script(1, lport: port).t(.listen, .listen).events[0]
            tally.record(.anomaly(Anomaly(kind: .listenOverflow, severity: .critical, detail: "", monoNanoseconds: 1,
                                          connection: ConnectionIdentity(e), count: 3)), to: &out)
        }
        #expect(tally.listenOverflows == [.init(address: "198.18.0.1", port: 8080): 6, .init(address: "198.18.0.1", port: 8081): 3])
        #expect(tally.otherListenerOverflows == 6)
    }
}
