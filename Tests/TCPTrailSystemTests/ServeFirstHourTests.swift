import Foundation
import Testing

/// Issue 17, the page and the API: durations to the µs and TIME_WAIT open at
/// start dated by the kernel's timer (truth: the log's own records, `ss -tano`),
/// the API's 400s (curl against a real serve), serve's own connections left
/// out (truth: `ss` saw them), and the report's header against the log it was made from.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct ServeFirstHourTests {
    let page = LiveViewTests()

    func curl(_ args: [String]) throws -> CommandResult {
        try run(["curl", "-sS"] + args, check: false, timeout: 20)
    }

    /// The connections /api/connections lists.
    func apiRows(_ webPort: UInt16, _ query: String = "") throws -> [[String: Any]] {
        let obj = try page.json(try curl(["http://127.0.0.1:\(webPort)/api/connections\(query)"]).stdout)
        return try #require(obj["connections"] as? [[String: Any]])
    }

    /// Seconds of a `timer:(timewait,52sec,0)` as `ss -o` prints it ("1min", "52sec", "300ms").
    static func timewaitSeconds(_ ssLine: Substring) -> Double? {
        guard let open = ssLine.range(of: "timer:(timewait,") else { return nil }
        let value = ssLine[open.upperBound...].prefix { $0 != "," }
        var total = 0.0, digits = ""
        var rest = Substring(value)
        while let c = rest.first {
            if c.isNumber || c == "." { digits.append(c); rest = rest.dropFirst(); continue }
            let unit = rest.prefix { !$0.isNumber }
            guard let n = Double(digits) else { return nil }
            switch unit {
            case "min": total += n * 60
            case "sec": total += n
            case "ms": total += n / 1000
            default: return nil
            }
            digits = ""
            rest = rest.dropFirst(unit.count)
        }
        return total
    }

    @Test func theAPIAnswers400NamingTheBadParameter() throws {
        let webPort = Unique.port()
        let serve = try Background([Products.tcptrail, "serve", "--listen", "127.0.0.1:\(webPort)", "--port", "\(Unique.port())"])
        try serve.waitFor("serving live timelines", inStderr: true)
        let base = "http://127.0.0.1:\(webPort)"
        let refused: [(String, String)] = [
            ("/api/board?state=bogus", "state=bogus is not a TCP state; use one of CLOSED, LISTEN, SYN_SENT"),
            ("/api/board?limit=abc", "limit=abc is not a whole number from 1 to 5000"),
            ("/api/connections?limit=abc", "limit=abc is not a whole number from 1 to 100000"),
            ("/api/connections?state=bogus", "state=bogus is not a TCP state"),
            ("/api/connections?port=http", "port=http is not a port number from 0 to 65535"),
            ("/api/connections?anomaly=slow", "anomaly=slow is not an anomaly kind; use one of connection_refused"),
            ("/api/connections?anomalies_only=yes", "anomalies_only=yes is not 1, true, 0 or false"),
            ("/api/connections?order=random", "order=random is not an order; use one of interest, age, state-time, process, state"),
            ("/api/connections?stat=LISTEN", "unknown query parameter 'stat'; it takes process, port, state, anomaly, anomalies_only, order, limit"),
            ("/api/events?limit=0", "limit=0 is not a whole number from 1 to 500"),
            ("/api/events?state=LISTEN", "unknown query parameter 'state'; it takes limit"),
            ("/api/stream?state=bogus", "state=bogus is not a TCP state"),
        ]
        for (path, reason) in refused {
            let r = try curl(["-w", "\n%{http_code}", base + path])
            let lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            #expect(lines.last == "400", "\(path): \(r.stdout)")
            let body = lines.dropLast().joined(separator: "\n")
            let apiPath = String(path.prefix { $0 != "?" })
            #expect(body.hasPrefix("tcptrail: \(apiPath): \(reason)"), "\(path): \(body)")
            #expect(body.split(separator: "\n").count == 1, "one line: \(body)")
        }
        // What it takes, it still answers (a value percent-encoded too).
        for path in ["/api/board?state=time%5Fwait&limit=5", "/api/connections?state=LISTEN&port=80&anomalies_only=0&order=age&process=x&anomaly=connection_refused",
                     "/api/events?limit=3", "/api/board"] {
            let r = try curl(["-o", "/dev/null", "-w", "%{http_code}", base + path])
            #expect(r.stdout == "200", "\(path): \(r.stdout)")
        }
        serve.signal(SIGINT)
        #expect(try serve.wait(timeout: 30) == 0)
    }

    @Test func serveLeavesItsOwnConnectionsOutUnlessIncludeSelf() throws {
        for includeSelf in [false, true] {
            let webPort = Unique.port()
            // Tracing serve's own port: without the exclusion its connections would all be listed.
            let serve = try Background([Products.tcptrail, "serve", "--listen", "127.0.0.1:\(webPort)", "--port", "\(webPort)"] + (includeSelf ? ["--include-self"] : []))
            try serve.waitFor("serving live timelines", inStderr: true)
            for _ in 0..<3 { _ = try curl(["-o", "/dev/null", "http://127.0.0.1:\(webPort)/api/board"]) }
            usleep(600_000)
            let rows = try apiRows(webPort)
            // Truth: curl's connections to serve's port were there, closed by now (TIME_WAIT on curl's side).
            let ss = try run(["ss", "-tanH", "state", "time-wait", "( dport = :\(webPort) )"]).stdout
            #expect(ss.split(separator: "\n").count >= 3, "ss shows no connection to serve: \(ss)")
            let own = rows.filter { $0.str("local") == "127.0.0.1:\(webPort)" || $0.str("remote") == "127.0.0.1:\(webPort)" }
            if includeSelf {
                #expect(own.contains { $0.str("state") == "LISTEN" && $0.str("local") == "127.0.0.1:\(webPort)" }, "\(own)")
                #expect(own.contains { $0.str("side") == "client" && $0.str("comm") == "curl" }, "\(own)")
                #expect(own.count >= 7, "the listener and both ends of 3 requests: \(own.count)")
            } else {
                #expect(own.isEmpty, "serve's own connections listed: \(own)")
            }
            serve.signal(SIGINT)
            #expect(try serve.wait(timeout: 30) == 0)
        }
        let help = try run([Products.tcptrail, "serve", "--help"]).stdout
        #expect(help.contains("--include-self"))
    }

    @Test func aTimeWaitOpenAtStartAgreesWithTheKernelsTimer() throws {
        let net = try VethPair()
        let port = Unique.port()
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "1", "--name", "tt-twsrv"])
        try server.background.waitFor("listening")
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "1", "--name", "tt-twcli", "--half-close", "--hold", "0.3"])
        _ = try client.background.wait(timeout: 30)
        _ = try server.background.wait(timeout: 30)
        let (laddr, lport, raddr, rport) = try #require(client.connections.first)
        // Some seconds into TIME_WAIT, so age and time left both differ from 0 and 60.
        sleep(4)
        let webPort = Unique.port()
        let serve = try Background([Products.tcptrail, "serve", "--listen", "127.0.0.1:\(webPort)", "--port", "\(port)"])
        try serve.waitFor("serving live timelines", inStderr: true)

        func ssLeft() throws -> Double {
            let ss = try run(net.client.command(["ss", "-tanoH", "state", "time-wait"])).stdout
            let line = try #require(ss.split(separator: "\n").first { $0.contains("\(laddr):\(lport)") && $0.contains("\(raddr):\(rport)") }, "ss: \(ss)")
            return try #require(Self.timewaitSeconds(line), "no timewait timer in \(line)")
        }
        let board = try page.json(try curl(["http://127.0.0.1:\(webPort)/api/board"]).stdout)
        let left = try ssLeft()
        let rows = try #require(board["connections"] as? [[String: Any]])
        let row = try #require(rows.first { $0.str("local") == "\(laddr):\(lport)" }, "no row for \(laddr):\(lport): \(rows)")
        #expect(row.str("state") == "TIME_WAIT" && row["open_at_start"] as? Bool == true)
        let now = try #require(board["now"] as? Double), since = try #require(row["since"] as? Double)
        let until = try #require(row["time_wait_until"] as? Double)
        // ss prints whole seconds of what is left; the API's now is within 0.5 s of ss's.
        #expect(abs((until - now) / 1000 - left) < 1.6, "API: \((until - now) / 1000) s left, ss: \(left) s")
        #expect(abs((now - since) / 1000 - (60 - left)) < 1.6, "API: in TIME_WAIT for \((now - since) / 1000) s, ss: \(60 - left) s")
        let segments = try #require(row["segments"] as? [[String: Any]])
        #expect(segments.count == 1 && segments.first?["start"] as? Double == since)

        // The page says the same: "open at start · TIME_WAIT 5.2 s, 54.8 s left".
        let dom = try page.checkPage("http://127.0.0.1:\(webPort)/", name: "serve-time-wait-at-start")
        let pageLeft = try ssLeft()
        let label = try #require(Self.label(in: dom, conn: row.str("conn")), "no row label in the page")
        let numbers = label.matches(of: try Regex(#"([0-9.]+) s"#)).compactMap { ($0.output[1].substring).flatMap { Double($0) } }
        #expect(label.hasPrefix("open at start \u{b7} TIME_WAIT ") && label.hasSuffix(" left") && numbers.count == 2, "\(label)")
        if numbers.count == 2 {
            #expect(abs(numbers[1] - pageLeft) < 2.6 && abs(numbers[0] - (60 - pageLeft)) < 2.6, "page: \(label); ss: \(pageLeft) s left")
        }
        serve.signal(SIGINT)
        #expect(try serve.wait(timeout: 30) == 0)
    }

    /// The text of a connection row's times in a rendered page.
    static func label(in dom: String, conn: String) -> String? {
        guard let row = dom.range(of: #"data-conn="\#(conn)""#),
              let tm = dom.range(of: #"class="tm""#, range: row.upperBound..<dom.endIndex),
              let open = dom[tm.upperBound...].firstIndex(of: ">"),
              let end = dom[open...].firstIndex(of: "<") else { return nil }
        return String(dom[dom.index(after: open)..<end])
    }

    @Test func theReportsHeaderAndDurationsAgreeWithTheLog() throws {
        let net = try VethPair()
        let port = Unique.port(), closedPort = Unique.port()
        let (dir, log, report, tracer) = try LiveViewTests.tracedRun("report", port: port, closedPort: closedPort)
        defer { try? FileManager.default.removeItem(at: dir) }
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "4", "--name", "tt-repsrv"])
        try server.background.waitFor("listening")
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "4", "--name", "tt-repcli"])
        _ = try client.background.wait(timeout: 30)
        _ = try server.background.wait(timeout: 30)
        // tt-peer stops at a refused connect: one client each.
        for _ in 0..<2 {
            let refused = try Peer(net.client, ["client", net.serverV4, "\(closedPort)", "1", "--name", "tt-refused"])
            _ = try refused.background.wait(timeout: 30)
        }
        usleep(300_000)
        tracer.signal(SIGINT)
        #expect(try tracer.wait(timeout: 30) == 0)

        // The log's own account.
        let records = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").compactMap {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        let timed = records.filter { !["header", "summary", "lost", "untracked"].contains($0.str("type")) }
        let conns = Set(records.filter { ["transition", "snapshot"].contains($0.str("type")) }.map { $0.str("conn") }.filter { !$0.isEmpty })
        var kinds: [String: Int] = [:]
        for r in records where r.str("type") == "anomaly" { kinds[r.str("anomaly"), default: 0] += 1 }
        let anomalous = Set(records.filter { $0.str("type") == "anomaly" }.map { $0.str("conn") }).intersection(conns)
        let mono = { (r: [String: Any]) in (r["mono_ns"] as? Int) ?? 0 }
        let first = try #require(timed.min { mono($0) < mono($1) }), last = try #require(timed.max { mono($0) < mono($1) })
        #expect(conns.count >= 11 && kinds["connection_refused"] == 2, "\(conns.count) connections, \(kinds)")

        let limit = 3
        let replay = try run([Products.tcptrail, "replay", "--html", report, "--html-limit", "\(limit)", log], check: false)
        #expect(replay.status == 0, "replay --html failed: \(replay.stderr)")

        // Durations: the embedded board against the records' own times, in µs.
        let html = try String(contentsOfFile: report, encoding: .utf8)
        let open = try #require(html.range(of: #"<script id="tcptrail-data" type="application/json">"#))
        let close = try #require(html.range(of: "</script>", range: open.upperBound..<html.endIndex))
        let board = try page.json(String(html[open.upperBound..<close.lowerBound]))
        let rows = try #require(board["connections"] as? [[String: Any]])
        let refusedRows = rows.filter { $0.str("comm") == "tt-refused" }
        #expect(refusedRows.count == 2)
        let dom = try pageOfReport(report)
        for row in refusedRows {
            let transitions = records.filter { $0.str("type") == "transition" && $0.str("conn") == row.str("conn") }.map(mono)
            let recordsUs = Double((try #require(transitions.max()) - (try #require(transitions.min()))) / 1000)
            let opened = try #require(row["opened"] as? Double), closed = try #require(row["closed"] as? Double)
            // Each end is cut to whole µs (up to 1 µs between them), and a double
            // holds 1.7e12 ms to about 0.25 µs; whole ms would be off by up to 1000.
            #expect(abs((closed - opened) * 1000 - recordsUs) <= 1.5, "API: \((closed - opened) * 1000) µs, records: \(recordsUs) µs")
            #expect(recordsUs > 0 && recordsUs < 1000, "a refused connect on a veth takes some µs: \(recordsUs)")
            #expect(closed >= (row["since"] as? Double ?? .infinity))
            // The page: "lived 41 µs · closed at 07:40:01.234".
            let label = try #require(Self.label(in: dom.html, conn: row.str("conn")))
            let shown = label.wholeMatch(of: try Regex(#"lived ([0-9]+) µs · closed at [0-9:.]{12}"#))?.output[1].substring.flatMap { Double($0) }
            #expect(shown.map { abs($0 - recordsUs) <= 1 } == true, "page: \(label), records: \(recordsUs) µs")
        }

        // The header: the log's time span, connections and anomalies by kind; no live-only figures.
        let day = { (r: [String: Any]) in r.str("time").prefix(10) }
        let clock = { (r: [String: Any]) in r.str("time").dropFirst(11).prefix(12) }
        let span = "from \(day(first)) \(clock(first)) to \(clock(last)) UTC"
        let header = try #require(dom.html.range(of: "<header>").flatMap { h in dom.html.range(of: "</header>", range: h.upperBound..<dom.html.endIndex).map { dom.html[h.upperBound..<$0.lowerBound] } })
        #expect(header.contains(#"<span id="range">\#(span) ("#), "range: want \(span) in \(header)")
        #expect(header.contains("connections <b>\(conns.count)</b>") && header.contains("in this report <b>\(limit)</b>"), "\(header)")
        #expect(!header.contains("events/s") && !header.contains("tracked"), "live-only figures in \(header)")
        for (kind, n) in kinds {
            #expect(header.contains(#"data-kind="\#(kind)">\#(kind) <b>\#(n)</b>"#), "no \(kind) \(n) chip in \(header)")
        }
        #expect(header.components(separatedBy: #"class="anom-count""#).count - 1 == kinds.count)
        // What was left out: one whole sentence, on screen, not cut.
        let leftAnomalous = max(anomalous.count - limit, 0)
        let statement = "This report holds \(limit) connections of the \(conns.count) in the log. Left out: \(conns.count - limit) past --html-limit \(limit) "
            + "(those with anomalies are kept first, then the latest to change; "
            + (leftAnomalous > 0 ? "\(leftAnomalous) of those left out have anomalies)." : "none of those left out has an anomaly).")
        #expect(dom.facts["notice"] as? String == statement, "notice: \(dom.facts["notice"] ?? "none")")
        #expect(dom.facts["noticeShown"] as? Bool == true && dom.facts["noticeCut"] as? Bool == false)
        #expect(dom.facts["capCut"] as? Bool == false, "the timeline's caption is cut: \(dom.facts["cap"] ?? "")")
    }

    /// The report in headless Chromium: its DOM, and what the layout shows of the notice and the caption.
    func pageOfReport(_ report: String) throws -> (html: String, facts: [String: Any]) {
        let prefix = LiveViewTests.artifacts.appendingPathComponent("report-header").path
        let facts = """
        (() => { const n = document.getElementById('notice'), c = document.getElementById('cap');
          return { notice: n.textContent, noticeShown: !n.hidden && n.getBoundingClientRect().height > 0,
                   noticeCut: n.scrollWidth > n.clientWidth || n.scrollHeight > n.clientHeight,
                   cap: c.textContent, capCut: c.scrollWidth > c.clientWidth }; })()
        """
        let r = try run(["env", "CHECK_PAGE_EVAL=\(facts)", LiveViewTests.root.appendingPathComponent("scripts/check-page").path, report, prefix], check: false, timeout: 120)
        #expect(r.status == 0, "check-page failed: \(r.stderr)")
        let html = try String(contentsOfFile: prefix + ".dom.html", encoding: .utf8)
        let data = try Data(contentsOf: URL(fileURLWithPath: prefix + ".eval.json"))
        return (html, try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any]))
    }
}
