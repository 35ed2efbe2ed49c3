import CTCPTrailEvent
import Foundation
import Testing
@testable import TCPTrailCore

/// Issue 17: the board's times as the page and the API read them (to the µs,
/// `closed` when CLOSED came, a TIME_WAIT open at start dated by its timer),
/// what a report says it left out, the API's parameter checks, and serve's
/// own connections left out. Truth: the events' own timestamps.
struct BoardTimesTests {
    static let clock = WallClock(bootOffsetNanoseconds: 1_700_000_000_000_000_000)

    func json(_ board: ConnectionBoard, source: String = "live", limit: Int = 400, query: ConnectionBoard.Query = .init()) throws -> [String: Any] {
        var out = OutputBuffer()
        BoardJSON(clock: Self.clock, source: source, host: "h", windowSeconds: 60, limit: limit).append(board, query: query, to: &out)
        return try #require(try JSONSerialization.jsonObject(with: Data(out.bytes)) as? [String: Any])
    }

    func row(_ obj: [String: Any], _ conn: String) throws -> [String: Any] {
        let rows = try #require(obj["connections"] as? [[String: Any]])
        return try #require(rows.first { $0["conn"] as? String == conn }, "no row \(conn) in \(rows)")
    }

    /// Wall-clock ms of a kernel time, as the JSON should carry it (µs kept).
    func ms(_ mono: UInt64) -> Double { Double(Self.clock.unixNanoseconds(mono: mono) / 1000) / 1000 }

    @Test func aRefusedConnectLastsItsMicrosecondsNotZero() throws {
        let s = Script(7, rport: 9).t(.close, .synSent)
        s.mono += 40_123  // the RST 40.123 µs after the SYN
        s.reset(.received, in: .synSent).t(.synSent, .close, after: 0)
        var engine = HandshakeEngine()
        var board = ConnectionBoard()
        for e in s.events { engine.process(e) { board.apply($0) } }
        let row = try row(try json(board), "7")
        let opened = try #require(row["opened"] as? Double), closed = try #require(row["closed"] as? Double)
        let first = try #require(s.events.first?.monoNanoseconds), last = try #require(s.events.last?.monoNanoseconds)
        #expect(opened == ms(first) && closed == ms(last))
        // The records' difference in µs (whole µs of each end), not whole ms.
        #expect(((closed - opened) * 1000).rounded() == Double((last - first) / 1000), "\(closed - opened) ms")
        #expect(closed >= (row["since"] as? Double ?? .infinity))
    }

    @Test func aTimeWaitThatRanOutClosedWhenItEndedNotWhenItBegan() throws {
        let c = Script(1).t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1, after: 100)
            .t(.finWait1, .finWait2).t(.finWait2, .close, peerFin: true)
        var engine = HandshakeEngine()
        var board = ConnectionBoard(retention: .max)
        for e in c.events { engine.process(e) { board.apply($0) } }
        let entered = c.mono
        let during = try row(try json(board), "1")
        #expect(during["state"] as? String == "TIME_WAIT" && during["closed"] is NSNull)
        #expect(during["time_wait_until"] as? Double == ms(entered + HandshakeEngine.timeWaitNanoseconds))
        let end = entered + 70_000_000_000
        engine.advance(to: end) { board.apply($0) }
        board.advance(to: end)
        let after = try row(try json(board), "1")
        let closed = try #require(after["closed"] as? Double), since = try #require(after["since"] as? Double)
        #expect(after["state"] as? String == "CLOSED" && after["time_wait_until"] is NSNull)
        #expect(closed == since, "closed \(closed) is when CLOSED came (since \(since))")
        let segments = try #require(after["segments"] as? [[String: Any]])
        let tw = try #require(segments.last)
        #expect(tw["state"] as? String == "TIME_WAIT" && tw["end"] as? Double == closed)
        #expect(closed - (tw["start"] as? Double ?? 0) >= 60_000, "2MSL lasted \(closed - (tw["start"] as? Double ?? 0)) ms")
    }

    /// Seen replaying 1,500 loopback connections: 80 TIME_WAITs killed by a
    /// reset became new rows with no segments ("lived 0 µs") and were counted twice.
    @Test(arguments: [TimewaitStep.resetReceived, .resetSent, .reused])
    func aTimeWaitTheKernelEndsStaysTheSameRow(step: TimewaitStep) throws {
        let s = Script(34)
        s.t(.close, .synSent).t(.synSent, .established).t(.established, .finWait1).t(.finWait1, .finWait2)
            .t(.finWait2, .close, peerFin: true, timewait: .handoff)
        let entered = s.mono
        s.t(.timeWait, .close, after: 2000, timewait: step)
        var engine = HandshakeEngine()
        var board = ConnectionBoard(retention: .max)
        for e in s.events { engine.process(e) { board.apply($0) } }
        #expect(board.connectionsSeen == 1 && board.rows.count == 1)
        let row = try row(try json(board), "34")
        let segments = try #require(row["segments"] as? [[String: Any]])
        #expect(segments.map { $0["state"] as? String } == ["SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"])
        #expect(row["state"] as? String == "CLOSED" && row["closed"] as? Double == ms(s.mono) && segments.last?["end"] as? Double == ms(s.mono))
        #expect(row["opened"] as? Double == ms(1_001_000_000) && segments.last?["start"] as? Double == ms(entered))
    }

    @Test func aTimeWaitOpenAtStartIsDatedByTheKernelsTimer() throws {
        let at: UInt64 = 100_000_000_000
        let socket = SocketSnapshot(cookie: 9, state: .timeWait, family: .ipv4, local: Endpoint(address: RawAddress(bytes: [198, 18, 0, 1]), port: 40001),
                                    remote: Endpoint(address: RawAddress(bytes: [198, 18, 0, 2]), port: 80), inode: 0, netns: 1, expiresMilliseconds: 45_000)
        var engine = HandshakeEngine()
        var board = ConnectionBoard(retention: .max)
        engine.seed([socket], at: at) { board.apply($0) }
        let during = try row(try json(board), "9")
        // 45 s of 60 left: it entered TIME_WAIT 15 s before the snapshot.
        #expect(during["open_at_start"] as? Bool == true)
        #expect(during["since"] as? Double == ms(at - 15_000_000_000) && during["opened"] as? Double == ms(at - 15_000_000_000))
        #expect(during["time_wait_until"] as? Double == ms(at + 45_000_000_000))
        engine.advance(to: at + 50_000_000_000) { board.apply($0) }
        let after = try row(try json(board), "9")
        #expect(after["state"] as? String == "CLOSED")
        let closed = try #require(after["closed"] as? Double)
        #expect(closed >= ms(at + 45_000_000_000) && closed >= (after["since"] as? Double ?? .infinity))
    }

    @Test func aReportSaysWhatItLeftOut() throws {
        var events: [KernelEvent] = []
        for i in 0..<5 { events += Script(UInt64(10 + i), lport: UInt16(40000 + i)).t(.close, .synSent).t(.synSent, .established).events }
        let refused = Script(20, rport: 9).t(.close, .synSent)
        refused.reset(.received, in: .synSent).t(.synSent, .close, after: 0)
        events += refused.events
        var engine = HandshakeEngine()
        var board = ConnectionBoard(retention: .max, maxEndedRows: 200_000)
        for e in events.sorted(by: { $0.monoNanoseconds < $1.monoNanoseconds }) { engine.process(e) { board.apply($0) } }
        let obj = try json(board, source: "replay", limit: 2)
        #expect((obj["connections"] as? [[String: Any]])?.count == 2)
        #expect((obj["stats"] as? [String: Any])?["connections"] as? Int == 6)
        #expect(obj["limit"] as? Int == 2 && obj["total_connections"] as? Int == 6)
        let left = try #require(obj["left_out"] as? [String: Any])
        #expect(left["over_limit"] as? Int == 4 && left["over_limit_with_anomalies"] as? Int == 0 && left["not_matching"] as? Int == 0)
        var q = ConnectionBoard.Query()
        q.anomaliesOnly = true
        let only = try #require(try json(board, source: "replay", limit: 2, query: q)["left_out"] as? [String: Any])
        #expect(only["over_limit"] as? Int == 0 && only["not_matching"] as? Int == 5)
    }

    /// The refusal's line, or nil if the parameters were taken.
    func refusal(_ pairs: [(name: String, value: String)], _ accepted: ConnectionBoard.Request.Accepted) -> String? {
        let parsed = Result { () throws(ConnectionBoard.Request.Refusal) in try ConnectionBoard.Request(pairs, accepted: accepted) }
        guard case .failure(let r) = parsed else { return nil }
        return r.message
    }

    @Test func theAPIRefusesParametersItDoesNotTakeOrCannotRead() throws {
        let board = ConnectionBoard.Request.Accepted(path: "/api/board", filters: true, limits: 1...5000, defaultLimit: 400)
        let good = try ConnectionBoard.Request([("state", "time_wait"), ("port", "443"), ("limit", "7"), ("anomalies_only", "1"), ("order", "age")], accepted: board)
        #expect(good.query.state == .timeWait && good.query.port == 443 && good.limit == 7 && good.query.anomaliesOnly && good.query.order == .age)
        #expect(try ConnectionBoard.Request([], accepted: board).limit == 400)
        let bad: [(String, String, String)] = [
            ("state", "bogus", "state=bogus is not a TCP state; use one of CLOSED, LISTEN,"),
            ("limit", "abc", "limit=abc is not a whole number from 1 to 5000"),
            ("limit", "0", "limit=0 is not a whole number from 1 to 5000"),
            ("port", "70000", "port=70000 is not a port number"),
            ("anomaly", "nope", "anomaly=nope is not an anomaly kind; use one of connection_refused,"),
            ("anomalies_only", "yes", "anomalies_only=yes is not 1, true, 0 or false"),
            ("order", "random", "order=random is not an order; use one of interest, age"),
            ("stat", "LISTEN", "unknown query parameter 'stat'; it takes process, port, state"),
        ]
        for (name, value, message) in bad {
            let said = refusal([(name, value)], board)
            #expect(said.map { $0.hasPrefix("/api/board: \(message)") && !$0.contains("\n") } == true, "\(said ?? "accepted")")
        }
        let events = ConnectionBoard.Request.Accepted(path: "/api/events", filters: false, limits: 1...500, defaultLimit: 100)
        #expect(throws: ConnectionBoard.Request.Refusal(message: "/api/events: unknown query parameter 'state'; it takes limit")) {
            try ConnectionBoard.Request([("state", "LISTEN")], accepted: events)
        }
        // A hostile value is quoted printable.
        let hostile = refusal([("state", "\u{1b}[2J")], board)
        #expect(hostile.map { !$0.contains("\u{1b}") && $0.contains(#"\x1b[2J"#) } == true, "\(hostile ?? "accepted")")
    }

    @Test func servesOwnEndpointIsLeftOutOfTheBoard() throws {
        let client = Script(1, lport: 40000, rport: 8080).t(.close, .synSent).t(.synSent, .established)
        let server = Script(2, lport: 8080, rport: 40000).t(.listen, .synRecv).t(.synRecv, .established)
        let other = Script(3, lport: 40001, rport: 443).t(.close, .synSent)
        let events = (client.events + server.events + other.events).sorted { $0.monoNanoseconds < $1.monoNanoseconds }
        func conns(_ hidden: HiddenEndpoint?) -> Set<UInt64> {
            var engine = HandshakeEngine()
            var board = ConnectionBoard()
            board.hidden = hidden
            for e in events { engine.process(e) { board.apply($0) } }
            return Set(board.rows.keys.map(\.cookie))
        }
        // Script's local address is 198.18.0.1, the remote 198.18.0.2.
        let serverEnd = try #require(ServeAddress("198.18.0.1:8080"))
        #expect(conns(nil) == [1, 2, 3])
        #expect(conns(HiddenEndpoint(listen: serverEnd, netns: 1)) == [1, 3], "the accepted side's local end is serve's")
        #expect(conns(HiddenEndpoint(listen: try #require(ServeAddress("198.18.0.2:8080")), netns: 1)) == [2, 3], "the client's remote end is serve's")
        #expect(conns(HiddenEndpoint(listen: try #require(ServeAddress("0.0.0.0:8080")), netns: 1)) == [3], "a wildcard listen: any address")
        #expect(conns(HiddenEndpoint(listen: serverEnd, netns: 2)) == [1, 2, 3], "another namespace's port 8080 is not serve's")
    }
}
