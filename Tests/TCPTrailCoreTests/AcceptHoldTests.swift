import CTCPTrailEvent
import Testing
@testable import TCPTrailCore

/// An accepted socket's events before accept() wait for it, and go out with
/// the acceptor as owner: the order the kernel side sends them in on 6.18
/// and 6.1 (LISTEN -> SYN_RECV and SYN_RECV -> ESTABLISHED at the final ACK,
/// the accept event at accept()'s return).
@Suite struct AcceptHoldTests {
    static let awaiting = UInt8(TT_FLAG_AWAITING_ACCEPT.rawValue | TT_FLAG_OWNER_KNOWN.rawValue)

    static func child(_ cookie: UInt64, at ms: UInt64, master: UInt32 = 100) -> [KernelEvent] {
        let base = KernelEvent(monoNanoseconds: ms * 1_000_000, cookie: cookie, netns: 1, pid: master, comm: ProcessName("nginx"),
                               kind: .transition, localPort: 80, remotePort: 40000, flags: awaiting)
        var a = base, b = base
        a.oldState = .listen; a.newState = .synRecv
        b.oldState = .synRecv; b.newState = .established
        b.monoNanoseconds += 1_000
        return [a, b]
    }

    static func accept(_ cookie: UInt64, at ms: UInt64, by pid: UInt32) -> KernelEvent {
        KernelEvent(monoNanoseconds: ms * 1_000_000, cookie: cookie, netns: 1, pid: pid, comm: ProcessName("nginx"), kind: .accept,
                    localPort: 80, remotePort: 40000, flags: UInt8(TT_FLAG_OWNER_KNOWN.rawValue))
    }

    @Test func theAcceptorOwnsEveryEventBeforeAccept() {
        var hold = AcceptHold()
        var out: [KernelEvent] = []
        for e in Self.child(7, at: 10) + Self.child(8, at: 11) { hold.take(e) { out.append($0) } }
        #expect(out.isEmpty && hold.count == 2)
        hold.take(Self.accept(8, at: 12, by: 202)) { out.append($0) }
        hold.take(Self.accept(7, at: 13, by: 201)) { out.append($0) }
        #expect(out.map(\.cookie) == [8, 8, 7, 7], "in accept order, each socket's events in theirs")
        #expect(out.map(\.pid) == [202, 202, 201, 201])
        #expect(out.allSatisfy { $0.ownerKnown && !$0.awaitingAccept })
        #expect(out.map(\.kind).allSatisfy { $0 == .transition }, "the accept event itself is no record")
        #expect(hold.count == 0)
    }

    @Test func eventsBeforeAcceptOfAHeldSocketWaitWithIt() {
        var hold = AcceptHold()
        var out: [KernelEvent] = []
        var closeWait = Self.child(9, at: 10)[1]
        closeWait.oldState = .established; closeWait.newState = .closeWait
        for e in Self.child(9, at: 10) + [closeWait] { hold.take(e) { out.append($0) } }
        hold.take(Self.accept(9, at: 50, by: 300)) { out.append($0) }
        #expect(out.map(\.newState) == [.synRecv, .established, .closeWait] && out.allSatisfy { $0.pid == 300 })
    }

    /// Never accepted within the window: out as they are, owner unknown.
    @Test func aSocketNobodyAcceptsGoesOutUnnamed() {
        var hold = AcceptHold()
        var out: [KernelEvent] = []
        for e in Self.child(10, at: 10) { hold.take(e) { out.append($0) } }
        hold.expire(now: 10 * 1_000_000 + AcceptHold.window - 1) { out.append($0) }
        #expect(out.isEmpty)
        hold.expire(now: 10 * 1_000_000 + AcceptHold.window) { out.append($0) }
        #expect(out.count == 2 && out.allSatisfy { !$0.ownerKnown && !$0.awaitingAccept && $0.pid == 100 })
        // accept() after the window: nothing held, nothing to rename.
        hold.take(Self.accept(10, at: 2000, by: 400)) { out.append($0) }
        #expect(out.count == 2)
    }

    @Test func otherEventsPassAtOnce() {
        var hold = AcceptHold()
        var out: [KernelEvent] = []
        for e in Self.child(11, at: 10) { hold.take(e) { out.append($0) } }
        let client = KernelEvent(monoNanoseconds: 12_000_000, cookie: 12, pid: 55, kind: .transition, oldState: .close, newState: .synSent,
                                 flags: UInt8(TT_FLAG_OWNER_KNOWN.rawValue))
        hold.take(client) { out.append($0) }
        #expect(out.map(\.cookie) == [12])
        hold.releaseAll { out.append($0) }
        #expect(out.map(\.cookie) == [12, 11, 11] && hold.count == 0)
    }

    @Test func aSocketWithTooManyEventsStopsWaiting() {
        var hold = AcceptHold()
        var out: [KernelEvent] = []
        var e = Self.child(13, at: 10)[1]
        for e in Self.child(13, at: 10) { hold.take(e) { out.append($0) } }
        for _ in 0..<AcceptHold.eventsPerSocket { e.monoNanoseconds += 1; hold.take(e) { out.append($0) } }
        #expect(out.count == AcceptHold.eventsPerSocket + 2 && hold.count == 0)
    }
}
