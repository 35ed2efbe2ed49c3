import CTCPTrailEvent
import Testing
@testable import TCPTrailCore

/// Issue 17, item 6: `top` at 80 columns keeps every column, an empty table
/// says why, and the ended count does not stop at the rows kept.
struct TopLayoutTests {
    /// Rows as the system test's 80x24 screen has them: a listener, a client
    /// with a long name, states up to ESTABLISHED, IPv4 endpoints of 16 characters.
    func screenRows() throws -> ArraySlice<ConnectionBoard.Row> {
        var board = ConnectionBoard()
        var engine = HandshakeEngine()
        let owner = UInt8(TT_FLAG_OWNER_KNOWN.rawValue)
        func event(_ cookie: UInt64, _ comm: String, _ from: KernelTCPState, _ to: KernelTCPState, lport: UInt16, rport: UInt16, remote: [UInt8]) -> KernelEvent {
            KernelEvent(monoNanoseconds: 1_000_000_000 + cookie, cookie: cookie, pid: 12345, comm: ProcessName(comm), kind: .transition,
                        family: .ipv4, localAddress: RawAddress(bytes: [198, 18, 0, 2]), remoteAddress: RawAddress(bytes: remote),
                        localPort: lport, remotePort: rport, oldState: from, newState: to, flags: owner)
        }
        let events = [
            event(1, "tt-topsrv", .close, .listen, lport: 20001, rport: 0, remote: [0, 0, 0, 0]),
            event(2, "tt-topcli", .close, .synSent, lport: 54321, rport: 20001, remote: [198, 18, 0, 1]),
            event(2, "tt-topcli", .synSent, .established, lport: 54321, rport: 20001, remote: [198, 18, 0, 1]),
            event(3, "\u{1b}[31mEVIL\u{7}", .close, .synSent, lport: 54322, rport: 20001, remote: [198, 18, 0, 1]),
            event(3, "\u{1b}[31mEVIL\u{7}", .synSent, .established, lport: 54322, rport: 20001, remote: [198, 18, 0, 1]),
        ]
        for e in events { engine.process(e) { board.apply($0) } }
        return Array(board.rows.values)[...]
    }

    @Test func at80ColumnsEveryColumnStaysAndTheListenerSaysListening() throws {
        let rows = try screenRows()
        let c = TopColumns.fitting(80, rows: rows)
        #expect(c.age > 0, "the age column stays: \(c)")
        #expect(c.bar >= TopColumns.leastBar, "\(c)")
        // "tt-topcli 12345" whole (the hostile name is the one cut).
        #expect(c.process >= "tt-topcli 12345".utf8.count, "\(c)")
        #expect(c.fixed + c.bar == 80, "\(c)")
        // Every remote end whole: "198.18.0.1:20001" and "(listening)".
        #expect(c.remote >= "198.18.0.1:20001".utf8.count && c.remote >= TopColumns.listening.utf8.count, "\(c)")
        #expect(c.state == "ESTABLISHED".utf8.count, "the state column is as wide as the longest state shown: \(c)")
        let listener = try #require(rows.first { $0.state == .listen })
        #expect(Fmt.endpoints(listener).remote == "(listening)")
        #expect(Fmt.fitLeft(Fmt.endpoints(listener).remote, c.remote).hasPrefix("(listening)"))
    }

    @Test func narrowerThan80TheAgeGoesBeforeTheFloors() throws {
        let rows = try screenRows()
        let c = TopColumns.fitting(60, rows: rows)
        #expect(c.age == 0 && c.localPortOnly, "\(c)")
        #expect(c.remote >= TopColumns.listening.utf8.count, "\(c)")
        #expect(c.fixed + c.bar <= 60 || c.bar == 1, "\(c)")
    }

    @Test func anEmptyTableNamesTheFiltersAndTheirKeys() {
        var view = TopView(window: 30)
        #expect(view.emptyTableLine(connections: 0) == "no connections yet")
        view.query.process = "nosuch"
        #expect(view.emptyTableLine(connections: 3) == "no match for process \"nosuch\": 3 connections hidden (key / changes it)")
        view.query.state = .closeWait
        view.query.anomaliesOnly = true
        #expect(view.emptyTableLine(connections: 1)
                == "no match for state CLOSE_WAIT, process \"nosuch\", anomalies only: 1 connection hidden (keys f / a change them)")
    }

    @Test func theEndedCountGoesPastTheRowsKept() {
        var board = ConnectionBoard(retention: 5_000_000_000, maxEndedRows: 100)
        var engine = HandshakeEngine()
        // 250 connections refused within 250 ms: each ends (CLOSED) at once.
        for i in 0..<250 {
            let s = Script(UInt64(1000 + i), lport: UInt16(40000 + i), at: 1_000_000_000 + UInt64(i) * 1_000_000).t(.close, .synSent).t(.synSent, .close)
            for e in s.events { engine.process(e) { board.apply($0) } }
        }
        engine.advance(to: 2_000_000_000) { board.apply($0) }
        board.advance(to: 2_000_000_000)
        #expect(board.endedRows == 100, "the rows kept stop at the cap")
        #expect(board.endedWithinRetention == 250)
        // After the retention every one has left, counted or kept.
        board.advance(to: 7_000_000_000)
        #expect(board.endedWithinRetention == 0 && board.endedRows == 0)
    }
}
