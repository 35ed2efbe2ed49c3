import CTCPTrailEvent
import Foundation
import Testing
@testable import TCPTrailCore

/// The live views' model: recorded event sequences through the real engine
/// into a `ConnectionBoard`, and its JSON as the page reads it.
struct BoardTests {
    /// Every output of the engine for `events`, applied to a board.
    func board(_ events: [KernelEvent], retention: UInt64 = 5_000_000_000, maxEnded: Int = 5000, until: UInt64? = nil) -> ConnectionBoard {
        var engine = HandshakeEngine()
        var board = ConnectionBoard(retention: retention, maxEndedRows: maxEnded)
        for e in events.sorted(by: { $0.monoNanoseconds < $1.monoNanoseconds }) { engine.process(e) { board.apply($0) } }
        if let until {
            engine.advance(to: until) { board.apply($0) }
            board.advance(to: until)
        }
        return board
    }

    func clientAndServer(client: UInt64, server: UInt64) -> [KernelEvent] {
        let c = Script(client, lport: 40000, rport: 8080)
            .t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1, after: 100)
            .t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true)
        let s = Script(server, lport: 8080, rport: 40000)
            .t(.listen, .synRecv).t(.synRecv, .established).t(.established, .closeWait, after: 101)
            .t(.closeWait, .lastAck).t(.lastAck, .close)
        return c.events + s.events
    }

    @Test func segmentsSidesAndEndings() throws {
        let b = board(clientAndServer(client: 1, server: 2))
        let client = try #require(b.rows[ConnectionID(cookie: 1)])
        #expect(client.side == .client)
        #expect(client.segments.map(\.state) == [.synSent, .established, .finWait1, .finWait2, .timeWait])
        #expect(client.segments.dropLast().allSatisfy { $0.end != nil } && client.segments.last?.end == nil)
        #expect(client.state == .timeWait && client.ending == .timeWait)
        let server = try #require(b.rows[ConnectionID(cookie: 2)])
        #expect(server.side == .server)
        // The passive open's LISTEN belongs to the listener, not to this socket.
        #expect(server.segments.map(\.state) == [.synReceived, .established, .closeWait, .lastAck])
        #expect(server.state == .closed && server.ending == .closed)
        #expect(b.openConnections == 0)
        #expect(b.events == 10)
    }

    @Test func refusedConnectIsMarkedAndFed() throws {
        let s = Script(7, rport: 9).t(.close, .synSent)
        s.reset(.received, in: .synSent).t(.synSent, .close, after: 0)
        let b = board(s.events, until: s.mono + 10_000_000)
        let row = try #require(b.rows[ConnectionID(cookie: 7)])
        #expect(row.ending == .reset)
        #expect(row.marks.map(\.kind) == [.connectionRefused])
        #expect(b.recentAnomalies(limit: 10).map(\.mark.kind) == [.connectionRefused])
        #expect(b.anomalyCounts[.connectionRefused] == 1)
    }

    @Test func endedRowsLeaveAfterRetentionAndAtTheCap() {
        var events: [KernelEvent] = []
        for i in 0..<50 { events += clientAndServer(client: UInt64(100 + 2 * i), server: UInt64(101 + 2 * i)) }
        let open = Script(999).t(.close, .synSent).t(.synSent, .established)
        let all = events + open.events
        let kept = board(all, retention: 5_000_000_000, until: 2_000_000_000)
        #expect(kept.rows.count == 101)
        let expired = board(all, retention: 5_000_000_000, until: 20_000_000_000)
        #expect(expired.rows.count == 1, "only the open connection stays")
        #expect(expired.rows[ConnectionID(cookie: 999)]?.state == .established)
        let capped = board(all, retention: .max, maxEnded: 10, until: 2_000_000_000)
        #expect(capped.rows.count == 11)
    }

    @Test func queriesAndGroups() {
        let b = board(clientAndServer(client: 1, server: 2) + Script(5, rport: 443).t(.close, .synSent).events)
        var q = ConnectionBoard.Query()
        q.state = .synSent
        #expect(b.rows(matching: q).map(\.identity.conn) == [ConnectionID(cookie: 5)])
        q = ConnectionBoard.Query()
        q.port = 443
        #expect(b.rows(matching: q).count == 1)
        q = ConnectionBoard.Query()
        q.process = "42"
        #expect(b.rows(matching: q).count == 3)
        q.process = "nope"
        #expect(b.rows(matching: q).isEmpty)
        let byProcess = b.groups(.process, matching: ConnectionBoard.Query())
        #expect(byProcess.map(\.name) == ["app (42)"] && byProcess.first?.connections == 3)
        #expect(byProcess.first?.byState[.synSent] == 1 && byProcess.first?.byState[.timeWait] == 1)
        let byRemote = b.groups(.remote, matching: ConnectionBoard.Query())
        #expect(Set(byRemote.map(\.name)) == ["198.18.0.2:8080", "198.18.0.1:8080 (served)", "198.18.0.2:443"])
    }

    @Test func jsonIsWhatThePageReadsAndNamesAreEscaped() throws {
        var events = clientAndServer(client: 1, server: 2)
        for i in events.indices where events[i].cookie == 1 {
            events[i].comm = ProcessName("\u{1b}[31mX<b>\u{7}")
        }
        let b = board(events)
        var out = OutputBuffer()
        BoardJSON(clock: WallClock(bootOffsetNanoseconds: 1_700_000_000_000_000_000), source: "live", host: "h\"<", windowSeconds: 60, limit: 400)
            .append(b, to: &out)
        #expect(!out.bytes.contains(0x1b) && !out.bytes.contains(0x07))
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(out.bytes)) as? [String: Any])
        #expect(obj["host"] as? String == "h\"<")
        let rows = try #require(obj["connections"] as? [[String: Any]])
        #expect(rows.count == 2)
        let client = try #require(rows.first { $0["conn"] as? String == "1" })
        #expect(client["comm"] as? String == #"\x1b[31mX<b>\x07"#)
        #expect(client["local"] as? String == "198.18.0.1:40000")
        #expect(client["state"] as? String == "TIME_WAIT" && client["end"] as? String == "time_wait")
        let segments = try #require(client["segments"] as? [[String: Any]])
        #expect(segments.map { $0["state"] as? String } == ["SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"])
        let first = try #require(segments.first?["start"] as? Int64)
        #expect(first == 1_700_000_001_001)  // boot offset + 1.001 s, in ms
    }
}
