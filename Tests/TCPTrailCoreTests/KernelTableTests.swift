import CTCPTrailEvent
import Testing
@testable import TCPTrailCore
@testable import TCPTrailLog

/// Connections the tracepoints left mid-close, settled by the kernel's
/// socket table (what `ss` reads): which ones are asked about, when, and
/// what each answer does; and that replay of the log does the same.
@Suite struct KernelTableTests {
    private static let second: UInt64 = 1_000_000_000

    /// A client whose FIN_WAIT1 -> FIN_WAIT2 and hand-over never came (seen on 6.18).
    private func strandedClient(_ cookie: UInt64 = 40) -> Script {
        let s = Script(cookie)
        s.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1)
        return s
    }

    private func engine(_ s: Script, advanceTo: UInt64, into changes: inout [StateChange]) -> HandshakeEngine {
        var engine = HandshakeEngine()
        var out: [StateChange] = []
        for e in s.events { engine.process(e) { if case .change(let c) = $0 { out.append(c) } } }
        engine.advance(to: advanceTo) { if case .change(let c) = $0 { out.append(c) } }
        changes = out
        return engine
    }

    @Test func aClosingConnectionIsAskedAboutAfterTwoIdleSeconds() {
        let s = strandedClient()
        var changes: [StateChange] = []
        let early = engine(s, advanceTo: s.mono + 2 * Self.second - 1, into: &changes)
        #expect(early.staleConnections().isEmpty)
        let due = engine(s, advanceTo: s.mono + 2 * Self.second, into: &changes)
        let q = due.staleConnections()
        #expect(q.count == 1 && q.first?.state == .finWait1 && q.first?.local.port == 40000 && q.first?.remote.port == 8080 && q.first?.netns == 1)
    }

    @Test func theTablesTimeWaitIsEnteredAndEndsWhenTheKernelsDoes() {
        let s = strandedClient()
        var changes: [StateChange] = []
        var e = engine(s, advanceTo: s.mono + 3 * Self.second, into: &changes)
        let at = s.mono + 3 * Self.second
        guard let q = e.staleConnections().first else { Issue.record("not asked about"); return }
        e.reconcile(q.conn, kernel: .timeWait, timeWaitLeftMilliseconds: 57_000, at: at) { if case .change(let c) = $0 { changes.append(c) } }
        guard let tw = changes.last else { Issue.record("no change"); return }
        #expect(tw.from == .finWait1 && tw.to == .timeWait && tw.step == .timeWait && tw.inferred && tw.kernel == nil)
        #expect(tw.reason == "kernel_table" && tw.timeWaitLeftMilliseconds == 57_000 && tw.monoNanoseconds == at)
        #expect(e.staleConnections().isEmpty && e.state(of: q.conn) == .timeWait)
        // 57 s on, not 60: the kernel's own end.
        e.advance(to: at + 57 * Self.second - 1) { if case .change(let c) = $0 { changes.append(c) } }
        #expect(changes.last?.to == .timeWait)
        e.advance(to: at + 57 * Self.second) { if case .change(let c) = $0 { changes.append(c) } }
        #expect(changes.last?.to == .closed && changes.last?.reason == "2msl_expired" && changes.last?.monoNanoseconds == at + 57 * Self.second)
    }

    @Test func aConnectionGoneFromTheTableIsClosed() {
        let s = strandedClient()
        var changes: [StateChange] = []
        var e = engine(s, advanceTo: s.mono + 2 * Self.second, into: &changes)
        guard let q = e.staleConnections().first else { Issue.record("not asked about"); return }
        e.reconcile(q.conn, kernel: nil, at: s.mono + 2 * Self.second) { if case .change(let c) = $0 { changes.append(c) } }
        #expect(changes.last?.to == .closed && changes.last?.reason == "gone_from_kernel_table" && changes.last?.inferred == true)
        #expect(e.trackedConnections == 0)
        e.finish { _ in }
        #expect(e.finalStates == [.closed: 1])
    }

    /// Still FIN_WAIT1 there (a peer that does not ACK): no change, and the
    /// next look waits twice as long.
    @Test func aConnectionStillThereIsLeftAndAskedAboutLess() {
        let s = strandedClient()
        var changes: [StateChange] = []
        var e = engine(s, advanceTo: s.mono + 2 * Self.second, into: &changes)
        let before = changes.count
        let t0 = s.mono + 2 * Self.second
        guard let q = e.staleConnections().first else { Issue.record("not asked about"); return }
        e.reconcile(q.conn, kernel: .finWait1, at: t0) { if case .change(let c) = $0 { changes.append(c) } }
        #expect(changes.count == before && e.state(of: q.conn) == .finWait1)
        e.advance(to: t0 + 4 * Self.second - 1) { _ in }
        #expect(e.staleConnections().isEmpty)
        e.advance(to: t0 + 4 * Self.second) { _ in }
        #expect(e.staleConnections().map(\.conn) == [q.conn])
    }

    /// States a connection may rightly keep (ESTABLISHED, CLOSE_WAIT, a
    /// FIN_WAIT_2 the kernel side follows in its timewait socket) are never asked about.
    @Test func longLivedStatesAreNotAskedAbout() {
        let established = Script(41, lport: 40001)
        established.t(.close, .synSent).t(.synSent, .established)
        let closeWait = Script(42, lport: 40002)
        closeWait.t(.close, .synSent).t(.synSent, .established).t(.established, .closeWait)
        let followed = Script(43, lport: 40003)
        followed.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1).t(.finWait1, .finWait2).t(.finWait2, .close, timewait: .handoff)
        var changes: [StateChange] = []
        for s in [established, closeWait, followed] {
            let e = engine(s, advanceTo: s.mono + 30 * Self.second, into: &changes)
            #expect(e.staleConnections().isEmpty, "\(changes.last.map { "\($0.to)" } ?? "-")")
        }
        // A full socket's FIN_WAIT_2 (no hand-over seen) is.
        let full = Script(44, lport: 40004)
        full.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1).t(.finWait1, .finWait2)
        #expect(engine(full, advanceTo: full.mono + 2 * Self.second, into: &changes).staleConnections().map(\.state) == [.finWait2])
    }

    /// After a loss every connection with no event since is asked about once,
    /// in any state, listeners too; a newer one is not.
    @Test func afterALossEveryConnectionWithNoEventSinceIsAskedAboutOnce() {
        let old = Script(45, lport: 40005)
        old.t(.close, .synSent).t(.synSent, .established)
        var changes: [StateChange] = []
        var e = engine(old, advanceTo: old.mono, into: &changes)
        e.checkEverythingInTable(lostBy: old.mono + 1)
        let newer = Script(46, lport: 40006, at: old.mono + 2)
        newer.t(.close, .synSent)
        for ev in newer.events { e.process(ev) { _ in } }
        let asked = e.staleConnections()
        #expect(asked.map(\.state) == [.established], "\(asked)")
        guard let q = asked.first else { return }
        e.reconcile(q.conn, kernel: .established, at: newer.mono + 1) { if case .change(let c) = $0 { changes.append(c) } }
        #expect(e.staleConnections().isEmpty && e.state(of: q.conn) == .established)
        // Gone from the table: an established connection whose close was lost ends.
        e.checkEverythingInTable(lostBy: newer.mono + 2)
        let again = e.staleConnections().map(\.conn)
        #expect(Set(again).count == 2)
        e.reconcile(q.conn, kernel: nil, at: newer.mono + 3) { if case .change(let c) = $0 { changes.append(c) } }
        #expect(changes.last?.from == .established && changes.last?.to == .closed && changes.last?.reason == "gone_from_kernel_table")
    }

    /// The settled change goes into the log with `expires_ms`, and replay
    /// settles it alike: the same transitions, the TIME_WAIT ended at the same time.
    @Test func replayOfTheLogSettlesItAlike() throws {
        let s = strandedClient()
        var live = LiveRunSimulator(thresholds: AnomalyThresholds())
        var engine = HandshakeEngine()
        var outputs: [EngineOutput] = []
        for ev in s.events { engine.process(ev) { outputs.append($0) } }
        let at = s.mono + 2 * Self.second
        engine.advance(to: at) { outputs.append($0) }
        guard let q = engine.staleConnections().first else { Issue.record("not asked about"); return }
        engine.reconcile(q.conn, kernel: .timeWait, timeWaitLeftMilliseconds: 12_345, at: at) { outputs.append($0) }
        engine.advance(to: at + 20 * Self.second) { outputs.append($0) }
        engine.finish { outputs.append($0) }
        for o in outputs { live.record(o) }
        let text = String(decoding: live.out.bytes, as: UTF8.self)
        #expect(text.contains("\"reason\":\"kernel_table\",\"expires_ms\":12345}"), "\(text)")
        let scratch = try Scratch()
        let path = try scratch.file("t.jsonl", text)
        let replayed = replay([path])
        #expect(!replayed.diagnostics.contains { $0.contains("skipped") || $0.contains("malformed") }, "\(replayed.diagnostics)")
        let liveKeys = changeKeys(jsonRecords(text)), replayKeys = changeKeys(jsonRecords(replayed.output))
        #expect(liveKeys == replayKeys, "\(liveKeys) vs \(replayKeys)")
        #expect(replayKeys.contains { $0.contains("TIME_WAIT CLOSED closed 1 2msl_expired") && $0.contains(" \(at + 12_345_000_000) ") }, "\(replayKeys) \(text)")
    }
}
