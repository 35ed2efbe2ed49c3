import Foundation
import Testing
@testable import TCPTrailCore
@testable import TCPTrailLog

/// The owner's cgroup in every view: the log's members (read back by
/// replay, by both parsers), `-w`'s UNIT column, the board's rows and its
/// grouping by unit.
@Suite struct CgroupRecordTests {
    static let id = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d"

    /// One connection whose owner is in `path`.
    static func events(_ cookie: UInt64, path: String, lport: UInt16 = 40000) -> [KernelEvent] {
        let ref = CgroupNames.add(CgroupInfo(path: path, id: 7000 + cookie))
        let s = Script(cookie, lport: lport).t(.close, .synSent).t(.synSent, .established)
        return s.events.map { var e = $0; e.cgroup = ref; e.cgroupID = 7000 + cookie; return e }
    }

    @Test func theLogWritesCgroupUnitAndContainerAndReplayReadsThemBack() throws {
        let path = "/system.slice/docker-\(Self.id).scope"
        let e = Self.events(1, path: path)[0]
        var writer = JSONLinesWriter(clock: fixedClock)
        var out = OutputBuffer()
        writer.append(e, to: &out)
        let line = out.string
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(obj["cgroup"] as? String == path)
        #expect(obj["unit"] as? String == "docker-\(Self.id).scope")
        #expect(obj["container"] as? String == Self.id)
        #expect(obj["pod"] == nil)
        for fast in [true, false] {
            var parser = LogRecordParser()
            parser.tryWriterLayout = fast
            let r = try Array(line.utf8.dropLast()).withUnsafeBytes { try parser.parse($0).get() }
            #expect(r.event.cgroup.info?.path == path && r.event.cgroup.info?.container == Self.id, "fast path \(fast)")
        }
        // An owner with no cgroup known writes none of them.
        var none = e
        none.cgroup = .unknown
        out.removeAll()
        writer.append(none, to: &out)
        #expect(!out.string.contains("cgroup") && !out.string.contains("unit"))
    }

    @Test func replaysTimelineHeaderNamesTheUnit() {
        var writer = TimelineWriter(clock: fixedClock)
        var engine = HandshakeEngine()
        var out = OutputBuffer()
        for e in Self.events(8, path: "/system.slice/nginx.service") { engine.process(e) { writer.add($0, to: &out) } }
        writer.finish(to: &out)
        #expect(out.string.contains("pid 42 (app)  unit nginx.service  netns"), "\(out.string)")
    }

    @Test func aCgroupPathThatIsNotOneIsAMalformedLine() {
        let line = #"{"v":1,"seq":2,"type":"transition","time":"2026-11-21T04:43:00.000000002Z","mono_ns":2,"conn":"5","pid":1,"comm":"a","cgroup":"system.slice/../x","netns":1,"family":4,"laddr":"127.0.0.1","lport":1,"raddr":"127.0.0.1","rport":2,"owner_known":true,"cpu":0,"kernel_from":"CLOSE","kernel_to":"SYN_SENT","prev_state_ns":null,"peer_fin":false}"#
        var parser = LogRecordParser()
        guard case .failure(let f) = Array(line.utf8).withUnsafeBytes({ parser.parse($0) }) else {
            Issue.record("accepted \(line)")
            return
        }
        #expect(f.message.contains("cgroup"), "\(f.message)")
    }

    @Test func wideTextShowsTheUnitAndTheDefaultDoesNot() {
        let e = Self.events(2, path: "/system.slice/nginx.service")[0]
        var wide = TextLinesWriter(clock: fixedClock, columns: TextColumn.wide(.aligned))
        var out = OutputBuffer()
        wide.appendHeader(to: &out)
        wide.append(e, to: &out)
        let lines = out.string.split(separator: "\n")
        #expect(lines[0].contains("UNIT") && lines[1].contains("nginx.service"), "\(out.string)")
        var plain = TextLinesWriter(clock: fixedClock)
        out.removeAll()
        plain.appendHeader(to: &out)
        plain.append(e, to: &out)
        #expect(!out.string.contains("UNIT") && !out.string.contains("nginx.service"))
        var csv = TextLinesWriter(clock: fixedClock, style: .csv, columns: [.pid, .unit])
        out.removeAll()
        csv.append(e, to: &out)
        #expect(out.string == "42,nginx.service\n")
    }

    @Test func theBoardGroupsByUnitAndItsRowsNameTheCgroup() throws {
        var engine = HandshakeEngine()
        var board = ConnectionBoard()
        let events = Self.events(3, path: "/system.slice/nginx.service", lport: 40001) + Self.events(4, path: "/system.slice/nginx.service", lport: 40002)
            + Self.events(5, path: "/user.slice/user-1000.slice/session-3.scope", lport: 40003) + Script(6, lport: 40004).t(.close, .synSent).events
        for e in events { engine.process(e) { board.apply($0) } }
        let groups = board.groups(.unit, matching: ConnectionBoard.Query())
        #expect(groups.map(\.name) == ["nginx.service", "(no unit)", "session-3.scope"] || groups.map(\.name) == ["nginx.service", "session-3.scope", "(no unit)"])
        #expect(groups.first?.connections == 2)
        var q = ConnectionBoard.Query()
        q.process = "session-3"
        #expect(board.groups(.process, matching: q).map(\.connections) == [1])
        let row = try #require(board.rows[ConnectionID(cookie: 3)])
        var out = OutputBuffer()
        BoardJSON(clock: fixedClock, source: "test", host: "h", windowSeconds: 30, limit: 10).appendRow(row, to: &out)
        #expect(out.string.contains(#""cgroup":"/system.slice/nginx.service","unit":"nginx.service""#), "\(out.string)")
    }
}
