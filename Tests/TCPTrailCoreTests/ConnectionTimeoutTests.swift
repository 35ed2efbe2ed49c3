import Testing
@testable import TCPTrailCore

/// connection_timeout: an established connection the kernel gave up on
/// (tcp_write_err(): ETIMEDOUT reported, then tcp_done()).
@Suite struct ConnectionTimeoutTests {
    @Test func retransmissionsRunningOutAreAConnectionTimeout() throws {
        let s = Script(50)
        s.t(.close, .synSent).t(.synSent, .established)
        for gap: UInt64 in [200, 400, 800, 1600] { s.retransmit(.data, in: .established, after: gap) }
        s.error(110, in: .established, after: 3200).t(.established, .close, after: 0)
        let run = Run(s.events, advanceTo: s.mono + 1)
        #expect(run.steps == [.synSent, .established, .aborted])
        #expect(run.changes.last?.reason == "ETIMEDOUT")
        let timeout = try #require(run.anomalies.first { $0.kind == .connectionTimeout })
        #expect(timeout.severity == .critical && timeout.count == 4)
        #expect(timeout.detail.contains("4 retransmissions over 6.000 s went unanswered"), "\(timeout.detail)")
        #expect(run.kinds.filter { $0 == .connectionTimeout }.count == 1)
        #expect(run.changes.last?.monoNanoseconds == s.mono, "settled at once: the error came first")
    }

    /// A loss run long over (more than TCP_RTO_MAX before) is not counted.
    @Test func anEarlierRecoveredLossIsNotPartOfTheTimeout() throws {
        let s = Script(51)
        s.t(.close, .synSent).t(.synSent, .established).retransmit(.data, in: .established, after: 10)
        s.retransmit(.data, in: .established, after: 300_000).retransmit(.data, in: .established, after: 200)
        s.error(110, in: .established, after: 400).t(.established, .close, after: 0)
        let run = Run(s.events)
        let timeout = try #require(run.anomalies.first { $0.kind == .connectionTimeout })
        #expect(timeout.count == 2 && timeout.detail.contains("over 0.600 s"), "\(timeout.detail)")
    }

    @Test func keepaliveTimeoutsSaySo() throws {
        let s = Script(52)
        s.t(.close, .synSent).t(.synSent, .established).reset(.sent, in: .established, after: 75_000)
            .error(110, in: .established).t(.established, .close)
        let run = Run(s.events)
        let timeout = try #require(run.anomalies.first { $0.kind == .connectionTimeout })
        #expect(timeout.detail.contains("keepalive"))
    }

    /// Must not fire: a handshake that timed out, a reset, a plain abort.
    @Test func otherEndsAreNotConnectionTimeouts() {
        let a = Script(53)
        a.t(.close, .synSent).retransmit(.syn, in: .synSent, after: 1000).error(110, in: .synSent, after: 2000).t(.synSent, .close)
        #expect(Run(a.events).kinds.contains(.handshakeTimeout))
        #expect(!Run(a.events).kinds.contains(.connectionTimeout))
        let b = Script(54)
        b.t(.close, .synSent).t(.synSent, .established).reset(.received, in: .established).t(.established, .close).error(104, in: .close)
        #expect(!Run(b.events).kinds.contains(.connectionTimeout))
        let c = Script(55)
        c.t(.close, .synSent).t(.synSent, .established).t(.established, .close)
        #expect(Run(c.events).kinds.isEmpty)
    }
}
