import CTCPTrailEvent
import Testing
@testable import TCPTrailCore
@testable import TCPTrailLog

/// The engine on timewait sequences as the kernel side records them (the
/// orders seen on 6.18 and in the 6.1 guest): a connection handed to a
/// timewait socket ends by the kernel's word, and nothing fires that the
/// kernel did not show.
@Suite struct TimewaitEngineTests {
    /// The server closes first; the client's FIN comes 3 s later, 2MSL after that.
    @Test func anOrphanInFinWait2TakesThePeersFinThenExpires() {
        let s = Script(30, lport: 8080, rport: 40000)
        s.t(.listen, .synRecv).t(.synRecv, .established).t(.established, .finWait1).t(.finWait1, .finWait2)
            .t(.finWait2, .close, timewait: .handoff)
            .t(.finWait2, .timeWait, after: 3000, timewait: .timeWait)
            .t(.timeWait, .close, after: 60_000, timewait: .expired)
        let run = Run(s.events, advanceTo: s.mono + 10 * minute)
        #expect(run.steps == [.synReceived, .established, .finSent, .finAcked, .timeWait, .closed])
        let tw = run.changes[4], end = run.changes[5]
        #expect(!tw.inferred && tw.from == .finWait2 && tw.monoNanoseconds == s.events[5].monoNanoseconds)
        #expect(!end.inferred && end.reason == "2msl_expired" && end.monoNanoseconds == s.events[6].monoNanoseconds)
        #expect(run.kinds == [.serverTimeWait], "server_time_wait once, when the accepted socket entered TIME_WAIT")
        #expect(run.engine.trackedConnections == 0)
    }

    /// With the kernel following it, a TIME_WAIT does not end by the
    /// engine's clock at 60 s: the kernel's expiry ends it.
    @Test func aFollowedTimeWaitWaitsForTheKernelsExpiry() {
        let s = Script(31)
        s.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1).t(.finWait1, .finWait2)
            .t(.finWait2, .close, peerFin: true, timewait: .handoff)
        let run = Run(s.events, advanceTo: s.mono + HandshakeEngine.timeWaitNanoseconds + 1)
        #expect(run.changes.last?.to == .timeWait && run.changes.last?.inferred == false)
        // Lost expiry: the engine ends it after the grace.
        let late = Run(s.events, advanceTo: s.mono + HandshakeEngine.timeWaitNanoseconds + HandshakeEngine.followedTimeWaitGrace)
        #expect(late.changes.last?.reason == "2msl_expired" && late.changes.last?.inferred == true)
    }

    @Test func theFinWait2TimeoutClosesWithoutTimeWait() {
        let s = Script(32)
        s.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1).t(.finWait1, .finWait2)
            .t(.finWait2, .close, timewait: .handoff)
            .t(.finWait2, .close, after: 60_000, timewait: .expired)
        var t = AnomalyThresholds()
        t.finWait2Nanoseconds = 30_000_000_000
        let run = Run(s.events, thresholds: t, advanceTo: s.mono + 10 * minute)
        #expect(run.steps == [.synSent, .established, .finSent, .finAcked, .closed])
        #expect(run.changes.last?.reason == "fin_wait_2_timeout" && run.changes.last?.inferred == false)
        #expect(run.kinds == [.finWait2Stall], "an orphan's FIN_WAIT_2 is watched like any other")
        #expect(!run.changes.contains { $0.to == .timeWait })
    }

    /// The 6.1 order when no segment showed the FIN: TIME_WAIT first seen
    /// when the timer runs out, dated 2MSL before.
    @Test func aTimeWaitSeenOnlyAtExpiryIsDatedBack() {
        let s = Script(33, lport: 8080, rport: 40000)
        s.t(.listen, .synRecv).t(.synRecv, .established).t(.established, .finWait1).t(.finWait1, .finWait2)
            .t(.finWait2, .close, timewait: .handoff)
            .t(.finWait2, .timeWait, after: 63_000, timewait: .timeWaitLate)
            .t(.timeWait, .close, after: 0, timewait: .expired)
        let run = Run(s.events, advanceTo: s.mono + 10 * minute)
        let tw = run.changes[4]
        #expect(tw.to == .timeWait && tw.inferred && tw.reason == "seen_at_expiry")
        #expect(tw.monoNanoseconds == s.mono - HandshakeEngine.timeWaitNanoseconds)
        #expect(run.changes.last?.reason == "2msl_expired")
    }

    @Test(arguments: [(TimewaitStep.resetReceived, Step.reset, "reset"), (.resetSent, .reset, "reset"), (.reused, .closed, "time_wait_reused")])
    func aKilledTimeWaitSaysWhy(step: TimewaitStep, closing: Step, reason: String) {
        let s = Script(34)
        s.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1).t(.finWait1, .finWait2)
            .t(.finWait2, .close, peerFin: true, timewait: .handoff)
            .t(.timeWait, .close, after: 2000, timewait: step)
        let run = Run(s.events, advanceTo: s.mono + 10 * minute)
        #expect(run.changes.last?.step == closing && run.changes.last?.reason == reason && run.changes.last?.inferred == false)
        #expect(run.kinds.isEmpty, "a TIME_WAIT killed is no reset of a live connection")
        #expect(run.changes.filter { $0.to == .closed }.count == 1)
    }

    /// Must not fire: the kernel's reuse after the engine already ended the
    /// TIME_WAIT, an expiry of a connection never seen, and a full socket
    /// whose FIN_WAIT2 -> CLOSE no timewait socket took (bucket overflow).
    @Test func eventsThatFindNothingChangeNothing() {
        let a = Script(35)
        a.t(.finWait2, .close, after: 1, timewait: .expired)
        let stray = Run(a.events, advanceTo: a.mono + minute)
        #expect(stray.changes.isEmpty && stray.anomalies.isEmpty)

        let b = Script(36)
        b.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1).t(.finWait1, .finWait2)
            .t(.finWait2, .close)
        let unfollowed = Run(b.events, advanceTo: b.mono + minute)
        #expect(unfollowed.changes.last?.reason == "fin_wait_2_orphaned")

        let c = Script(37)
        c.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1).t(.finWait1, .finWait2)
            .t(.finWait2, .close, peerFin: true, timewait: .handoff)
            .t(.timeWait, .close, after: HandshakeEngine.timeWaitNanoseconds / 1_000_000 + HandshakeEngine.followedTimeWaitGrace / 1_000_000 + 10, timewait: .reused)
        let twice = Run(c.events, advanceTo: c.mono + minute)
        #expect(twice.changes.filter { $0.to == .closed }.count == 1, "ended once: by the engine after the grace")
    }

    /// CLOSING -> CLOSE handed to a timewait socket is TIME_WAIT by the kernel's word.
    @Test func simultaneousCloseHandsOverToTimeWait() {
        let s = Script(38)
        s.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1).t(.finWait1, .closing)
            .t(.closing, .close, timewait: .handoff)
        let run = Run(s.events, advanceTo: s.mono + 1)
        #expect(run.changes.last?.to == .timeWait && run.changes.last?.inferred == false)
    }

    /// The log keeps what the kernel said about the timewait socket, and both parsers read it back.
    @Test(arguments: TimewaitStep.allCases)
    func theTimewaitFieldRoundTrips(step: TimewaitStep) throws {
        let s = Script(39)
        s.t(.finWait2, .timeWait, timewait: step)
        var writer = JSONLinesWriter(clock: WallClock(bootOffsetNanoseconds: 0))
        var out = OutputBuffer()
        writer.append(s.events[0], to: &out)
        #expect(out.string.contains("\"timewait\":\"\(step.name)\""))
        let line = Array(out.bytes.dropLast())
        var parser = LogRecordParser()
        let back = try line.withUnsafeBytes { try parser.parse($0).get() }
        #expect(back.event.timewait == step)
        var fast = LogRecord()
        #expect(line.withUnsafeBufferPointer { WriterLayoutParser.parse($0.baseAddress!, $0.count, into: &fast) })
        #expect(fast.event.timewait == step)
        let raw = EventDecoder.encode(s.events[0]).withUnsafeBytes { EventDecoder.decode($0) }
        #expect(try raw.get().timewait == step)
    }
}
