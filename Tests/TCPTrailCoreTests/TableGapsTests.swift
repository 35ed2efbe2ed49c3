import CTCPTrailEvent
import Foundation
import Testing
@testable import TCPTrailCore
@testable import TCPTrailLog

/// Issue 14: full kernel tables are a reported gap, the owner of an accepted
/// socket survives a full listener table, and log strings reach no terminal raw.
@Suite struct TableGapsTests {
    static let owned = UInt8(TT_FLAG_OWNER_KNOWN.rawValue)

    func transition(_ cookie: UInt64, _ from: KernelTCPState, _ to: KernelTCPState, port: UInt16, pid: UInt32 = 0,
                    comm: String = "", mono: UInt64 = 1) -> KernelEvent {
        KernelEvent(monoNanoseconds: mono, cookie: cookie, netns: 7, pid: pid, comm: ProcessName(comm), kind: .transition,
                    localPort: port, remotePort: 50_000, oldState: from, newState: to, flags: pid != 0 ? Self.owned : 0)
    }

    @Test func anAcceptedSocketTakesTheOwnerOfTheListenUserSpaceSaw() {
        var fallback = OwnerFallback()
        var listen = transition(1, .close, .listen, port: 8080, pid: 41, comm: "nginx")
        fallback.fill(&listen)
        // The kernel side's table was full: the child's events carry no owner.
        var child = transition(2, .listen, .synRecv, port: 8080)
        fallback.fill(&child) { Issue.record("no rescan needed for a listener seen"); return [] }
        #expect(child.ownerKnown && child.pid == 41 && child.comm == ProcessName("nginx"))
        var established = transition(2, .synRecv, .established, port: 8080)
        fallback.fill(&established)
        #expect(established.pid == 41)
        var retransmit = KernelEvent(monoNanoseconds: 2, cookie: 2, netns: 7, kind: .retransmit, localPort: 8080)
        fallback.fill(&retransmit)
        #expect(retransmit.pid == 41)
        var closed = transition(2, .lastAck, .close, port: 8080)
        fallback.fill(&closed)
        #expect(closed.pid == 41)
        // Gone at CLOSE: a later socket with that cookie is not given the owner.
        var later = transition(2, .synSent, .established, port: 40_000)
        fallback.fill(&later)
        #expect(!later.ownerKnown)
        #expect(fallback.named == 1 && fallback.unnamed == 0)
    }

    @Test func aListenerNeverSeenIsLookedUpOnceThenCountedIfNobodyHasIt() {
        var fallback = OwnerFallback()
        var asked = 0
        var child = transition(3, .listen, .synRecv, port: 9000)
        fallback.fill(&child) {
            asked += 1
            return [ListenerOwner(key: ListenerKey(netns: 7, family: .ipv4, port: 9000), owner: Owner(pid: 77, comm: ProcessName("old-daemon")))]
        }
        #expect(asked == 1 && child.pid == 77)
        var orphan = transition(4, .listen, .synRecv, port: 9001)
        fallback.fill(&orphan) { [] }
        #expect(!orphan.ownerKnown && fallback.unnamed == 1)
    }

    @Test func aReusePortKeyLivesUntilItsLastListenerCloses() {
        var fallback = OwnerFallback()
        for (cookie, pid) in [(10 as UInt64, 100 as UInt32), (11, 101)] {
            var l = transition(cookie, .close, .listen, port: 7000, pid: pid, comm: "w")
            fallback.fill(&l)
        }
        var close = transition(10, .listen, .close, port: 7000)
        fallback.fill(&close)
        var child = transition(12, .listen, .synRecv, port: 7000)
        fallback.fill(&child) { [] }
        #expect(child.ownerKnown)
        var close2 = transition(11, .listen, .close, port: 7000)
        fallback.fill(&close2)
        var child2 = transition(13, .listen, .synRecv, port: 7000)
        fallback.fill(&child2) { [] }
        #expect(!child2.ownerKnown)
    }

    @Test func untrackedRecordsAndTheSummaryReadBackWithTheirCounts() throws {
        var gaps = TableGaps()
        gaps.sockets = 337
        gaps.events = 1013
        gaps.listeners = 84
        gaps.acceptedWithoutOwner = 90
        gaps.acceptedNamed = 84
        gaps.childIDs = 2
        gaps.ownerSeeds = 1
        var writer = JSONLinesWriter(clock: WallClock(bootOffsetNanoseconds: 0))
        var out = OutputBuffer()
        writer.appendUntracked(gaps, mono: 5, to: &out)
        writer.appendSummary(recordsByType: [], anomalies: [], lost: 0, exportErrors: 0, untracked: gaps, mono: 6, to: &out)
        var parser = LogRecordParser()
        for line in out.string.split(separator: "\n") {
            let r = try Array(line.utf8).withUnsafeBytes { try parser.parse($0).get() }
            #expect(r.untracked == gaps, "\(line)")
        }
        #expect(gaps.phrases.count == 5)
        #expect(!gaps.isEmpty)
    }

    @Test func anUntrackedTransitionKeepsItsMarkThroughBothParsers() throws {
        var e = transition(5, .lastAck, .close, port: 0)
        e.flags |= UInt8(TT_FLAG_UNTRACKED.rawValue)
        var writer = JSONLinesWriter(clock: WallClock(bootOffsetNanoseconds: 0))
        var out = OutputBuffer()
        writer.append(e, to: &out)
        #expect(out.string.contains(#""untracked":true"#))
        for layout in [true, false] {
            var parser = LogRecordParser()
            parser.tryWriterLayout = layout
            let r = try out.bytes.dropLast().withUnsafeBytes { try parser.parse($0).get() }
            #expect(r.event.untracked, "writer layout \(layout)")
        }
    }

    @Test func replaySaysATableFilledInsteadOfComplete() throws {
        let s = try Scratch()
        var gaps = TableGaps()
        gaps.sockets = 3
        gaps.events = 9
        let summary = #"{"v":1,"seq":4,"type":"summary","time":"2026-11-21T06:30:00.000000000Z","mono_ns":4000,"records":{},"anomalies":{},"lost":0,"export_errors":0,"untracked":{"sockets":3,"events":9,"listeners":0,"accepted_without_owner":0,"accepted_named":0,"child_ids":0,"owner_seeds":0}}"#
        let path = try s.file("full.jsonl", (ReplayInputTests.goodLines + [summary]).joined(separator: "\n") + "\n")
        let (text, diagnostics, _) = replay([path], json: false)
        let last = text.split(separator: "\n").last { $0.hasPrefix("gaps:") || $0.hasPrefix("complete") } ?? ""
        #expect(last.contains("3 sockets untracked") && last.contains("9 events"), "\(text) \(diagnostics)")
        // The same log without the count is complete.
        let clean = summary.replacingOccurrences(of: #""sockets":3,"events":9"#, with: #""sockets":0,"events":0"#)
        let path2 = try s.file("clean.jsonl", (ReplayInputTests.goodLines + [clean]).joined(separator: "\n") + "\n")
        #expect(replay([path2], json: false).output.contains("complete: no gaps"))
    }

    @Test func stringsFromALogReachNoTerminalRaw() {
        #expect("host\u{1b}]0;pwned\u{7}".escaped == #"host\x1b]0;pwned\x07"#)
        #expect("a\\b".escaped == #"a\\b"#)
        #expect("nul\u{0}x".escaped == #"nul\x00x"#)
        // A NUL inside a process name (only a log can hold one) is shown, not a cut.
        #expect(ProcessName(bytes: Array("ab".utf8) + [0] + Array("cd".utf8)).escaped == #"ab\x00cd"#)
        #expect(ProcessName("nginx").escaped == "nginx")
        // stderr lines: text as is, controls escaped, a newline cannot forge a second line.
        #expect(TerminalLine.sanitize("cannot open /tmp/\u{1b}[2Jx\nfake: ok é") == #"cannot open /tmp/\x1b[2Jx\x0afake: ok é"#)
        #expect(TerminalLine.sanitize("a\u{9b}b\u{202e}c") == #"a\u{9b}b\u{202e}c"#)
    }

    @Test func aV4MappedPairIsIPv4AndAListenerOnAnyStaysIPv6() {
        let mapped = RawAddress(bytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 2])
        let peer = RawAddress(bytes: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 198, 18, 0, 1])
        let (f, l, r) = RawAddress.dualStack(family: .ipv6, local: mapped, remote: peer)
        #expect(f == .ipv4 && l == RawAddress(bytes: [198, 18, 0, 2]) && r == RawAddress(bytes: [198, 18, 0, 1]))
        // A child whose remote end is not set yet is IPv4 too; a listener on :: is not.
        #expect(RawAddress.dualStack(family: .ipv6, local: mapped, remote: RawAddress()).0 == .ipv4)
        #expect(RawAddress.dualStack(family: .ipv6, local: RawAddress(), remote: RawAddress()).0 == .ipv6)
        let real6 = RawAddress(bytes: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        #expect(RawAddress.dualStack(family: .ipv6, local: real6, remote: peer).0 == .ipv6)
    }

    @Test func anIPv4ChildOfADualStackListenerTakesItsOwner() {
        var fallback = OwnerFallback()
        var listen = KernelEvent(monoNanoseconds: 1, cookie: 1, netns: 7, pid: 9, comm: ProcessName("srv"), kind: .transition,
                                 family: .ipv6, localPort: 80, oldState: .close, newState: .listen, flags: Self.owned)
        fallback.fill(&listen)
        var child = transition(2, .listen, .synRecv, port: 80)
        fallback.fill(&child) { [] }
        #expect(child.pid == 9)
    }
}
