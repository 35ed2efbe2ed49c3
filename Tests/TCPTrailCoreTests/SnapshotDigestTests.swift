import Testing
@testable import TCPTrailCore

/// Issue 17, item 2: the sockets open at start, counted instead of listed.
@Suite struct SnapshotDigestTests {
    static let lo = RawAddress(bytes: [127, 0, 0, 1])

    /// A listener on 8081 (nginx), `serverSide` TIME_WAITs on it, `clientSide`
    /// TIME_WAITs toward 443 and one ESTABLISHED of the listener's.
    static func sockets(serverSide: Int, clientSide: Int) -> [SocketSnapshot] {
        var s = [SocketSnapshot(cookie: 1, state: .listen, family: .ipv4, local: Endpoint(address: lo, port: 8081), remote: Endpoint(),
                                inode: 10, netns: 7, expiresMilliseconds: 0, owner: Owner(pid: 812, comm: ProcessName("nginx")))]
        for i in 0..<serverSide {
            s.append(SocketSnapshot(cookie: UInt64(100 + i), state: .timeWait, family: .ipv4, local: Endpoint(address: lo, port: 8081),
                                    remote: Endpoint(address: lo, port: UInt16(30000 + i)), inode: 0, netns: 7, expiresMilliseconds: 59_000))
        }
        for i in 0..<clientSide {
            s.append(SocketSnapshot(cookie: UInt64(50_000 + i), state: .timeWait, family: .ipv4, local: Endpoint(address: lo, port: UInt16(40000 + i)),
                                    remote: Endpoint(address: RawAddress(bytes: [198, 18, 0, 9]), port: 443), inode: 0, netns: 7, expiresMilliseconds: 1_000))
        }
        s.append(SocketSnapshot(cookie: 2, state: .established, family: .ipv4, local: Endpoint(address: lo, port: 8081),
                                remote: Endpoint(address: lo, port: 29999), inode: 11, netns: 7, expiresMilliseconds: 0, owner: Owner(pid: 812, comm: ProcessName("nginx"))))
        return s
    }

    static func text(_ sockets: [SocketSnapshot], mode: SnapshotMode) -> (stdout: String, engine: HandshakeEngine) {
        var engine = HandshakeEngine()
        var sink = TextLinesSink(TextLinesWriter(clock: fixedClock, documented: true), snapshot: mode)
        var out = OutputBuffer(capacity: 1 << 16)
        engine.seed(sockets, at: 1_000_000_000) { sink.record($0, to: &out) }
        sink.endSnapshot(mono: 1_000_000_000, to: &out)
        // Past every TIME_WAIT's end: each ends unseen.
        engine.advance(to: 200_000_000_000) { sink.record($0, to: &out) }
        engine.finish { sink.record($0, to: &out) }
        return (out.string, engine)
    }

    @Test func manySocketsAreCountedByStateAndSharedEndpoint() {
        let (stdout, engine) = Self.text(Self.sockets(serverSide: 9000, clientSide: 5000), mode: .compact)
        let lines = stdout.split(separator: "\n").map { String($0.dropFirst(16)) }
        #expect(lines.dropLast() == [
            "open at start: 14,002 sockets in 1 network namespace, counted by state and endpoint (--snapshot full lists each; --json and --output record each)",
            "  LISTEN             1  on 127.0.0.1:8081 nginx (812)",
            "  ESTABLISHED        1  on 127.0.0.1:8081 nginx (812)",
            "  TIME_WAIT     14,000  on 127.0.0.1:8081 ×9,000, to 198.18.0.9:443 ×5,000",
        ], "\(stdout)")
        // The buildup the snapshot shows is reported after the digest.
        #expect(lines.last?.contains("!! time_wait_buildup: 9000 sockets on local endpoint 127.0.0.1:8081") == true, "the total, not the 1,001st: \(lines.last ?? "")")
        // The TIME_WAITs running out are not 14,000 lines either; the summary keeps them apart.
        #expect(engine.openAtStartStates == [.closed: 14_000, .listen: 1, .established: 1])
        #expect(engine.finalStates.isEmpty)
        #expect(TraceSummary(engine: engine).lines[1] == "open at start with no event since: CLOSED 14000, ESTABLISHED 1, LISTEN 1 (CLOSED: their TIME_WAIT ran out)"
                || TraceSummary(engine: engine).lines[1] == "open at start with no event since: CLOSED 14000, LISTEN 1, ESTABLISHED 1 (CLOSED: their TIME_WAIT ran out)")
    }

    @Test func aFewSocketsAreListedOneEachAndFullListsAll() {
        let few = Self.text(Self.sockets(serverSide: 3, clientSide: 2), mode: .compact).stdout
        #expect(few.split(separator: "\n").filter { $0.contains("(open at start)") }.count == 7)
        let full = Self.text(Self.sockets(serverSide: 300, clientSide: 0), mode: .full).stdout
        #expect(full.split(separator: "\n").filter { $0.contains("(open at start) TIME_WAIT") }.count == 300)
        // Full mode also shows each TIME_WAIT running out.
        #expect(full.split(separator: "\n").filter { $0.contains("TIME_WAIT    -> CLOSED") }.count == 300)
        let none = Self.text(Self.sockets(serverSide: 300, clientSide: 0), mode: .none).stdout
        #expect(none.isEmpty)
    }

    @Test func anEventMakesASocketPartOfTheRun() {
        var engine = HandshakeEngine()
        engine.seed(Self.sockets(serverSide: 0, clientSide: 0), at: 1_000_000_000) { _ in }
        // The listed ESTABLISHED closes: ESTABLISHED -> CLOSE_WAIT -> LAST_ACK -> CLOSE.
        for (i, (from, to)) in [(KernelTCPState.established, KernelTCPState.closeWait), (.closeWait, .lastAck), (.lastAck, .close)].enumerated() {
            let e = KernelEvent(monoNanoseconds: 2_000_000_000 + UInt64(i), cookie: 2, pid: 812, comm: ProcessName("nginx"), kind: .transition,
                                family: .ipv4, localAddress: Self.lo, remoteAddress: Self.lo, localPort: 8081, remotePort: 29999,
                                oldState: from, newState: to, flags: 1)
            engine.process(e) { _ in }
        }
        engine.finish { _ in }
        #expect(engine.finalStates == [.closed: 1])
        #expect(engine.openAtStartStates == [.listen: 1])
    }

    @Test func countsAreGroupedByThousands() {
        #expect(SnapshotDigest.grouped(0) == "0" && SnapshotDigest.grouped(999) == "999" && SnapshotDigest.grouped(1000) == "1,000")
        #expect(SnapshotDigest.grouped(14_295) == "14,295" && SnapshotDigest.grouped(1_234_567) == "1,234,567")
    }
}
