import CTCPTrailEvent
import Testing
@testable import TCPTrailCore

/// Builds recorded kernel event sequences for one connection.
final class Script {
    var cookie: UInt64
    var mono: UInt64 = 1_000_000_000
    var lport: UInt16 = 40000
    var rport: UInt16 = 8080
    var generation: UInt32 = 0
    var events: [KernelEvent] = []

    init(_ cookie: UInt64, lport: UInt16 = 40000, rport: UInt16 = 8080, at mono: UInt64 = 1_000_000_000) {
        self.cookie = cookie
        self.lport = lport
        self.rport = rport
        self.mono = mono
    }

    private func base(_ kind: KernelEventKind) -> KernelEvent {
        KernelEvent(monoNanoseconds: mono, cookie: cookie, generation: generation, netns: 1, pid: 42, comm: ProcessName("app"),
                    kind: kind, family: .ipv4, localAddress: RawAddress(bytes: [198, 18, 0, 1]), remoteAddress: RawAddress(bytes: [198, 18, 0, 2]),
                    localPort: lport, remotePort: rport, flags: UInt8(TT_FLAG_OWNER_KNOWN.rawValue))
    }

    @discardableResult func t(_ from: KernelTCPState, _ to: KernelTCPState, after ms: UInt64 = 1, peerFin: Bool = false,
                              timewait: TimewaitStep? = nil) -> Self {
        mono += ms * 1_000_000
        var e = base(.transition)
        e.oldState = from
        e.newState = to
        e.timewait = timewait
        if peerFin { e.flags |= UInt8(TT_FLAG_PEER_FIN.rawValue) }
        events.append(e)
        return self
    }

    @discardableResult func retransmit(_ what: RetransmitKind, in state: KernelTCPState, after ms: UInt64 = 1) -> Self {
        event(.retransmit, in: state, after: ms) { $0.retransmit = what }
    }

    @discardableResult func reset(_ d: ResetDirection, in state: KernelTCPState, after ms: UInt64 = 0) -> Self {
        event(.reset, in: state, after: ms) { $0.reset = d }
    }

    @discardableResult func error(_ errno: Int32, in state: KernelTCPState, after ms: UInt64 = 0) -> Self {
        event(.error, in: state, after: ms) { $0.errorNumber = errno }
    }

    /// An event that is not a transition, in `state`, `ms` after the last.
    private func event(_ kind: KernelEventKind, in state: KernelTCPState, after ms: UInt64, _ fill: (inout KernelEvent) -> Void) -> Self {
        mono += ms * 1_000_000
        var e = base(kind)
        e.oldState = state
        e.newState = state
        fill(&e)
        events.append(e)
        return self
    }
}

struct Run {
    var changes: [StateChange] = []
    var anomalies: [Anomaly] = []
    var engine: HandshakeEngine

    init(_ events: [KernelEvent], thresholds: AnomalyThresholds = AnomalyThresholds(), advanceTo: UInt64? = nil) {
        engine = HandshakeEngine(thresholds: thresholds)
        var changes: [StateChange] = [], anomalies: [Anomaly] = []
        let sink: (EngineOutput) -> Void = { out in
            switch out {
            case .change(let c): changes.append(c)
            case .anomaly(let a): anomalies.append(a)
            case .event, .snapshot: break
            }
        }
        for e in events { engine.process(e, emit: sink) }
        if let advanceTo { engine.advance(to: advanceTo, emit: sink) }
        engine.finish(emit: sink)
        self.changes = changes
        self.anomalies = anomalies
    }

    var steps: [Step] { changes.map(\.step) }
    var kinds: [Anomaly.Kind] { anomalies.map(\.kind) }
    func steps(_ conn: String) -> [Step] { changes.filter { $0.connection.conn.description == conn }.map(\.step) }
}

let minute: UInt64 = 60_000_000_000

@Suite struct EngineStepTests {
    @Test func clientClosesFirstThenTimeWaitExpires() {
        let s = Script(1)
        let events = s.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1)
            .t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true).events
        let run = Run(events, advanceTo: s.mono + minute + 1)
        #expect(run.steps == [.synSent, .established, .finSent, .finAcked, .timeWait, .closed])
        #expect(run.changes.map(\.to) == [.synSent, .established, .finWait1, .finWait2, .timeWait, .closed])
        #expect(run.changes[4].inferred && run.changes[4].kernel != nil)
        let expiry = run.changes[5]
        #expect(expiry.inferred && expiry.kernel == nil && expiry.monoNanoseconds == s.mono + minute)
        #expect(run.anomalies.isEmpty, "a normal client close is not server_time_wait")
        #expect(run.engine.trackedConnections == 0)
        #expect(run.engine.activeHandshakes.totalCount == 1 && run.engine.activeHandshakes.max == 1000)
    }

    @Test func timeWaitStaysUntilTwoMSL() {
        let s = Script(1)
        let events = s.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1)
            .t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true).events
        let run = Run(events, advanceTo: s.mono + minute - 1)
        #expect(run.changes.last?.to == .timeWait)
        #expect(run.engine.state(of: ConnectionID(cookie: 1)) == .timeWait)
    }

    /// A connect() on the pair of a TIME_WAIT socket: the kernel recycles the
    /// TIME_WAIT (tcp_tw_reuse), so the old connection ends then, not 2MSL later.
    @Test func aNewConnectionOnTheSamePairEndsTimeWait() {
        let a = Script(1, at: 1_000_000_000)
        a.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1)
            .t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true)
        let b = Script(2, at: 3_000_000_000).t(.close, .synSent).t(.synSent, .established)
        let other = Script(3, lport: 40001, at: 3_500_000_000).t(.close, .synSent)
        let run = Run(a.events + b.events + other.events, advanceTo: a.mono + 2 * minute)
        let ends = run.changes.filter { $0.connection.conn == ConnectionID(cookie: 1) && $0.from == .timeWait }
        #expect(ends.count == 1, "one end: the reuse, and no 2MSL expiry after it")
        #expect(ends.first?.reason == "time_wait_reused" && ends.first?.inferred == true && ends.first?.kernel == nil)
        #expect(ends.first?.monoNanoseconds == b.events[0].monoNanoseconds)
        #expect(run.engine.state(of: ConnectionID(cookie: 1)) == nil)
        #expect(run.engine.state(of: ConnectionID(cookie: 2)) == .established)
        #expect(run.engine.trackedConnections == 2)
    }

    @Test func serverClosesPassively() {
        let s = Script(2, lport: 8080, rport: 40000)
        let events = s.t(.listen, .synRecv).t(.synRecv, .established).t(.established, .closeWait)
            .t(.closeWait, .lastAck).t(.lastAck, .close).events
        let run = Run(events)
        #expect(run.steps == [.synReceived, .established, .finReceived, .finSent, .finAcked])
        #expect(run.changes.map(\.to) == [.synReceived, .established, .closeWait, .lastAck, .closed])
        #expect(run.anomalies.isEmpty)
        #expect(run.engine.passiveHandshakes.totalCount == 1 && run.engine.passiveHandshakes.max == 1000)
    }

    @Test func serverClosingFirstIsFlagged() {
        let s = Script(3, lport: 8080, rport: 40000)
        let events = s.t(.listen, .synRecv).t(.synRecv, .established).t(.established, .finWait1)
            .t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true).events
        let run = Run(events)
        #expect(run.steps == [.synReceived, .established, .finSent, .finAcked, .timeWait])
        #expect(run.kinds == [.serverTimeWait])
    }

    @Test func finWait2WithoutPeerFinIsNotTimeWait() {
        let s = Script(4)
        let events = s.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1)
            .t(.finWait1, .finWait2).t(.finWait2, .close, after: 60_000).events
        let run = Run(events)
        #expect(run.changes.last?.to == .closed)
        #expect(run.changes.last?.reason == "fin_wait_2_orphaned")
        #expect(!run.changes.contains { $0.to == .timeWait })
    }

    @Test func simultaneousClose() {
        let s = Script(5)
        let events = s.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1)
            .t(.finWait1, .closing).t(.closing, .close, peerFin: true).events
        let run = Run(events)
        #expect(run.steps == [.synSent, .established, .finSent, .simultaneousClose, .timeWait])
        #expect(run.changes.last?.to == .timeWait)
    }

    @Test func listenAndUnlisten() {
        let s = Script(6, lport: 8080, rport: 0)
        let run = Run(s.t(.close, .listen).t(.listen, .close).events)
        #expect(run.steps == [.listen, .unlisten])
        #expect(run.anomalies.isEmpty)
    }

    @Test func unexpectedTransition() {
        let s = Script(7)
        let run = Run(s.t(.close, .synSent).t(.synSent, .established).t(.established, .synSent).events)
        #expect(run.kinds == [.unexpectedTransition])
    }
}

@Suite struct EngineAnomalyTests {
    @Test func refusedConnect() {
        let s = Script(10)
        let events = s.t(.close, .synSent).reset(.received, in: .synSent).t(.synSent, .close).error(111, in: .close).events
        let run = Run(events)
        #expect(run.steps == [.synSent, .reset])
        #expect(run.kinds == [.connectionRefused], "an RST to a SYN is a refusal, not reset_received")
    }

    @Test func handshakeTimeoutAfterSynRetransmits() {
        let s = Script(11)
        let events = s.t(.close, .synSent).retransmit(.syn, in: .synSent, after: 1000).retransmit(.syn, in: .synSent, after: 2000)
            .error(110, in: .synSent, after: 4000).t(.synSent, .close).events
        let run = Run(events)
        #expect(run.steps == [.synSent, .aborted])
        #expect(run.kinds == [.synRetransmit, .synRetransmit, .handshakeTimeout])
        #expect(run.anomalies.map(\.count) == [1, 2, 2])
        #expect(run.changes.last?.reason == "ETIMEDOUT")
    }

    @Test func theErrnoZeroReportAfterAFailedConnectKeepsTheRealError() {
        // As on 6.18: the close, then ETIMEDOUT, then tcp_disconnect() from connect() reporting errno 0.
        let s = Script(1)
        let events = s.t(.close, .synSent).retransmit(.syn, in: .synSent, after: 1000)
            .t(.synSent, .close, after: 1000).error(110, in: .close).error(0, in: .close).events
        let run = Run(events)
        #expect(run.changes.last?.reason == "ETIMEDOUT")
        #expect(run.kinds == [.synRetransmit, .handshakeTimeout])
    }

    @Test func closeOnAHalfClosedSocketIsNoStepAndNoAnomaly() {
        // shutdown(SHUT_WR), then close(): the kernel sets FIN_WAIT2 again.
        let s = Script(1)
        let events = s.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1).t(.finWait1, .finWait2)
            .t(.finWait2, .finWait2, after: 500).t(.finWait2, .close, peerFin: true).events
        let run = Run(events)
        #expect(run.anomalies.isEmpty)
        #expect(run.steps == [.synSent, .established, .finSent, .finAcked, .timeWait])
    }

    @Test func lingerZeroAbortResetsBothSides() {
        // The aborting side: the kernel reports CLOSE first, then the RST it sends.
        let a = Script(12)
        let aborting = a.t(.close, .synSent).t(.synSent, .established).t(.established, .close).reset(.sent, in: .close).events
        let runA = Run(aborting)
        #expect(runA.steps == [.synSent, .established, .reset])
        #expect(runA.kinds == [.resetSent])
        // The peer: RST in, then CLOSE.
        let b = Script(13, lport: 8080, rport: 40000)
        let peer = b.t(.listen, .synRecv).t(.synRecv, .established).reset(.received, in: .established).t(.established, .close).error(104, in: .close).events
        let runB = Run(peer)
        #expect(runB.steps == [.synReceived, .established, .reset])
        #expect(runB.kinds == [.resetReceived])
    }

    /// The RST comes well past the window in kernel time but next in the
    /// stream: it is still the close's cause.
    @Test func aLateResetNextInTheStreamStillExplainsTheClose() {
        let a = Script(15)
        let late = HandshakeEngine.closeCauseWindow / 1_000_000 * 4
        let events = a.t(.close, .synSent).t(.synSent, .established).t(.established, .close).reset(.sent, in: .close, after: late).events
        let run = Run(events)
        #expect(run.steps == [.synSent, .established, .reset])
        #expect(run.kinds == [.resetSent])
    }

    @Test func closeWithoutCauseIsAbortedAfterTheWindow() {
        let s = Script(14)
        let events = s.t(.close, .synSent).t(.synSent, .established).t(.established, .close).events
        var engine = HandshakeEngine()
        var closes = 0
        for e in events { engine.process(e) { if case .change(let c) = $0, c.to == .closed { closes += 1 } } }
        engine.advance(to: s.mono + HandshakeEngine.abortCauseWindow - 1) { if case .change(let c) = $0, c.to == .closed { closes += 1 } }
        #expect(closes == 0, "an abort from ESTABLISHED waits for its RST")
        let run = Run(events, advanceTo: s.mono + HandshakeEngine.abortCauseWindow)
        #expect(run.steps == [.synSent, .established, .aborted])
        #expect(run.anomalies.isEmpty)
        // From SYN_SENT no RST can follow: the short window applies.
        let t = Script(16)
        let connecting = t.t(.close, .synSent).t(.synSent, .close).events
        let short = Run(connecting, advanceTo: t.mono + HandshakeEngine.closeCauseWindow)
        #expect(short.steps == [.synSent, .aborted])
    }

    /// tcp_disconnect() sets CLOSE, then sends the RST; over veth the peer's
    /// reset and close run inside that send and reach the ring first, 40 ms
    /// later on a descheduled vCPU. The client's close is still a reset.
    @Test func thePeersEventsBetweenACloseAndItsResetDoNotSettleIt() {
        let client = Script(17)
        let server = Script(18, lport: 8080, rport: 40000)
        var events: [KernelEvent] = []
        func next(_ s: Script) { if let e = s.events.last { events.append(e) } }
        next(client.t(.close, .synSent)); next(server.t(.listen, .synRecv))
        next(client.t(.synSent, .established)); next(server.t(.synRecv, .established))
        next(client.t(.established, .close))
        let stall: UInt64 = 40
        next(server.reset(.received, in: .established, after: stall)); next(server.t(.established, .close))
        next(client.reset(.sent, in: .close, after: stall + 1))
        let run = Run(events)
        #expect(run.steps(ConnectionID(cookie: 17).description) == [.synSent, .established, .reset])
        #expect(run.steps(ConnectionID(cookie: 18).description) == [.synReceived, .established, .reset])
        #expect(run.kinds.sorted { $0.rawValue < $1.rawValue } == [.resetReceived, .resetSent])
    }

    @Test func closeWaitAndFinWait2Stalls() {
        var t = AnomalyThresholds()
        t.closeWaitNanoseconds = 1_000_000_000
        t.finWait2Nanoseconds = 2_000_000_000
        let server = Script(20, lport: 8080, rport: 40000)
        let client = Script(21)
        let events = client.t(.close, .synSent).events + server.t(.listen, .synRecv).events
            + client.t(.synSent, .established).events + server.t(.synRecv, .established).events
            + client.t(.established, .finWait1).events + server.t(.established, .closeWait).events
            + client.t(.finWait1, .finWait2).events
        let early = Run(events, thresholds: t, advanceTo: client.mono + 900_000_000)
        #expect(early.anomalies.isEmpty)
        let late = Run(events, thresholds: t, advanceTo: client.mono + 3_000_000_000)
        #expect(late.kinds.sorted { $0.rawValue < $1.rawValue } == [.closeWaitStall, .finWait2Stall])
        #expect(late.anomalies.first { $0.kind == .closeWaitStall }?.connection.conn == ConnectionID(cookie: 20))
        #expect(late.anomalies.first { $0.kind == .finWait2Stall }?.connection.conn == ConnectionID(cookie: 21))
        #expect(late.anomalies.first { $0.kind == .closeWaitStall }?.severity == .critical)
    }

    @Test func stallsFireOnce() {
        var t = AnomalyThresholds()
        t.closeWaitNanoseconds = 1_000_000_000
        let s = Script(22, lport: 8080, rport: 40000)
        let events = s.t(.listen, .synRecv).t(.synRecv, .established).t(.established, .closeWait).events
        var engine = HandshakeEngine(thresholds: t)
        var count = 0
        for e in events { engine.process(e) { if case .anomaly = $0 { count += 1 } } }
        for step in 1...10 { engine.advance(to: s.mono + UInt64(step) * 1_000_000_000) { if case .anomaly = $0 { count += 1 } } }
        #expect(count == 1)
    }

    @Test func dataRetransmitsPastThreshold() {
        var t = AnomalyThresholds()
        t.dataRetransmits = 2
        let s = Script(30)
        let events = s.t(.close, .synSent).t(.synSent, .established).retransmit(.data, in: .established)
            .retransmit(.data, in: .established).retransmit(.data, in: .established).retransmit(.data, in: .established).events
        let run = Run(events, thresholds: t)
        #expect(run.kinds == [.dataRetransmit])
        #expect(run.anomalies.first?.count == 3)
    }

    @Test func listenDropsAreReportedOncePerSecondWithCounts() {
        var events: [KernelEvent] = []
        for i in 0..<5 {
            var e = KernelEvent(monoNanoseconds: 1_000_000_000 + UInt64(i) * 300_000_000, cookie: 9, kind: .listenDrop,
                                localAddress: RawAddress(bytes: [198, 18, 0, 2]), localPort: 8080, remotePort: UInt16(40000 + i))
            e.oldState = .listen
            e.newState = .listen
            events.append(e)
        }
        // Drops at 1.0, 1.3, 1.6, 1.9, 2.2 s: reported at 1.0 (1) and 2.2 (4).
        let run = Run(events)
        #expect(run.kinds == [.listenOverflow, .listenOverflow])
        #expect(run.anomalies.map(\.count) == [1, 4])
        let tail = Run(Array(events.prefix(3)))
        #expect(tail.anomalies.map(\.count) == [1, 2], "drops since the last report are reported at the end")
    }

    @Test func dropsLeftAtTheEndAreReportedInEndpointOrder() {
        // Two drops per listener: the first is reported at once, the second at the end.
        let ports: [UInt16] = [9090, 80, 31000, 443, 8080, 22, 5432, 6379]
        var events: [KernelEvent] = []
        for (round, delay) in [UInt64(0), 100_000_000].enumerated() {
            for (k, port) in ports.enumerated() {
                var e = KernelEvent(monoNanoseconds: 1_000_000_000 + delay + UInt64(k), cookie: 100 + UInt64(k), kind: .listenDrop,
                                    localAddress: RawAddress(bytes: [198, 18, 0, 2]), localPort: port, remotePort: UInt16(40000 + round))
                e.oldState = .listen
                e.newState = .listen
                events.append(e)
            }
        }
        let run = Run(events)
        let atEnd = run.anomalies.suffix(ports.count)
        #expect(atEnd.allSatisfy { $0.kind == .listenOverflow && $0.count == 1 })
        #expect(atEnd.map(\.connection.local.port) == ports.sorted())
    }

    @Test func synackRetransmit() {
        let s = Script(31, lport: 8080, rport: 40000)
        let run = Run(s.retransmit(.synack, in: .synRecv).events)
        #expect(run.kinds == [.synackRetransmit])
    }

    @Test func timeWaitBuildupOnOneEndpoint() {
        var t = AnomalyThresholds()
        t.timeWaitSockets = 3
        var events: [KernelEvent] = []
        for i in 0..<5 {
            let s = Script(UInt64(100 + i), lport: 8080, rport: UInt16(40000 + i), at: 1_000_000_000 + UInt64(i) * 10_000_000)
            events += s.t(.listen, .synRecv).t(.synRecv, .established).t(.established, .finWait1)
                .t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true).events
        }
        let run = Run(events, thresholds: t)
        #expect(run.kinds.filter { $0 == .timeWaitBuildup }.count == 1)
        #expect(run.kinds.filter { $0 == .serverTimeWait }.count == 5)
        #expect(run.anomalies.first { $0.kind == .timeWaitBuildup }?.count == 4)
    }

    @Test func reusedSocketAddressesDoNotMix() {
        // Same 4-tuple, two connection ids: one in TIME_WAIT, one new.
        let first = Script(40)
        let second = Script(41, at: 2_000_000_000)
        let events = first.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1)
            .t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true).events
            + second.t(.close, .synSent).t(.synSent, .established).events
        let run = Run(events)
        // The new connection took the pair: the kernel recycled the TIME_WAIT.
        #expect(run.steps("40") == [.synSent, .established, .finSent, .finAcked, .timeWait, .closed])
        #expect(run.changes.last { $0.connection.conn == ConnectionID(cookie: 40) }?.reason == "time_wait_reused")
        #expect(run.steps("41") == [.synSent, .established])
        #expect(run.engine.state(of: ConnectionID(cookie: 40)) == nil)
        #expect(run.engine.state(of: ConnectionID(cookie: 41)) == .established)
    }

    @Test func eventsSlightlyOutOfOrderAcrossCPUs() {
        // Connection B's events carry earlier times than A's, as from another CPU.
        let a = Script(50, at: 10_000_000_000)
        let b = Script(51, at: 9_990_000_000)
        var events = a.t(.close, .synSent).t(.synSent, .established).events
        events += b.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1).t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true).events
        let run = Run(events, advanceTo: a.mono + minute / 2)
        #expect(run.steps("51") == [.synSent, .established, .finSent, .finAcked, .timeWait])
        #expect(run.steps("50") == [.synSent, .established])
        #expect(run.engine.now == a.mono + minute / 2)
        // TIME_WAIT of B ends 60 s after its own time, not after A's.
        let later = Run(events, advanceTo: b.mono + minute)
        #expect(later.steps("51").last == .closed)
        #expect(later.changes.last { $0.connection.conn == ConnectionID(cookie: 51) }?.monoNanoseconds == b.mono + minute)
    }
}
