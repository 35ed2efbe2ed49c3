import Foundation
import Testing

/// Issue 5: `tcptrail serve` read by real clients (curl, headless Chromium)
/// while a scenario runs, and `replay --html` opened in Chromium. The truth
/// is what the peers themselves report and what `ss` shows in their namespaces.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct LiveViewTests {
    /// ESC, "<b>" and BEL: a name that would colour a terminal and bold a page.
    static let hostileName = "\u{1b}[31mEVIL<b>\u{7}"
    /// How every view must show it: printable, escaped.
    static let hostileEscaped = #"\x1b[31mEVIL<b>\x07"#

    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    /// Screenshots and DOM dumps a person can look at after the run.
    static let artifacts: URL = {
        let dir = Products.directory.deletingLastPathComponent().appendingPathComponent("test-artifacts")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }()

    func curl(_ args: [String], timeout: Double = 20) throws -> CommandResult {
        try run(["curl", "-sS"] + args, check: false, timeout: timeout)
    }

    func json(_ text: String) throws -> [String: Any] {
        guard let obj = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw TestFailure("not a JSON object: \(text.prefix(200))")
        }
        return obj
    }

    /// Runs scripts/check-page (headless Chromium): the rendered DOM, and a PNG beside it.
    func checkPage(_ target: String, name: String) throws -> String {
        let prefix = Self.artifacts.appendingPathComponent(name).path
        let r = try run([Self.root.appendingPathComponent("scripts/check-page").path, target, prefix], check: false, timeout: 120)
        #expect(r.status == 0, "check-page failed: \(r.stderr)")
        let png = try FileManager.default.attributesOfItem(atPath: prefix + ".png")
        #expect(((png[.size] as? Int) ?? 0) > 10_000, "the screenshot \(prefix).png is missing or empty")
        return try String(contentsOfFile: prefix + ".dom.html", encoding: .utf8)
    }

    @Test func serveAnswersRealClientsWhileAScenarioRuns() throws {
        let webPort = Unique.port()
        let port = Unique.port(), closedPort = Unique.port()
        let serve = try Background([Products.tcptrail, "serve", "--listen", "127.0.0.1:\(webPort)", "--port", "\(port)", "--port", "\(closedPort)"])
        try serve.waitFor("serving live timelines", inStderr: true)

        let net = try VethPair()
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "1", "--name", "tt-websrv"])
        try server.background.waitFor("listening")
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "1", "--name", "tt-webcli", "--hold", "12"])
        try client.background.waitFor("conn ")
        let refused = try Peer(net.client, ["client", net.serverV4, "\(closedPort)", "1", "--name", Self.hostileName])
        _ = try refused.background.wait(timeout: 30)
        let (laddr, lport, raddr, rport) = try #require(client.connections.first)
        usleep(800_000)

        // Truth: ss in the client's namespace shows the connection established.
        let ss = try run(net.client.command(["ss", "-tanH", "state", "established"])).stdout
        #expect(ss.contains("\(laddr):\(lport)") && ss.contains("\(raddr):\(rport)"))

        // The JSON API.
        let api = try json(try curl(["http://127.0.0.1:\(webPort)/api/connections"]).stdout)
        let rows = try #require(api["connections"] as? [[String: Any]])
        let clientRow = try #require(rows.first { $0.str("local") == "\(laddr):\(lport)" }, "no row for the client in \(rows)")
        #expect(clientRow.str("comm") == "tt-webcli")
        #expect(clientRow.str("remote") == "\(raddr):\(rport)")
        #expect(clientRow.str("state") == "ESTABLISHED")
        #expect(clientRow.str("side") == "client")
        let segments = (clientRow["segments"] as? [[String: Any]] ?? []).map { $0.str("state") }
        #expect(segments == ["SYN_SENT", "ESTABLISHED"])
        let serverRow = try #require(rows.first { $0.str("local") == "\(raddr):\(rport)" && $0.str("remote") == "\(laddr):\(lport)" })
        #expect(serverRow.str("comm") == "tt-websrv" && serverRow.str("state") == "ESTABLISHED" && serverRow.str("side") == "server")
        #expect(rows.contains { $0.str("comm") == "tt-websrv" && $0.str("state") == "LISTEN" })
        let hostile = try #require(rows.first { $0.str("remote") == "\(net.serverV4):\(closedPort)" })
        #expect(hostile.str("comm") == Self.hostileEscaped)
        #expect(hostile.str("end") == "reset")
        #expect((hostile["anomalies"] as? [[String: Any]] ?? []).map { $0.str("kind") } == ["connection_refused"])

        // Recent events: the client's handshake step and the refusal.
        let events = try json(try curl(["http://127.0.0.1:\(webPort)/api/events"]).stdout)
        let changes = try #require(events["changes"] as? [[String: Any]])
        #expect(changes.contains { $0.str("comm") == "tt-webcli" && $0.str("from") == "SYN_SENT" && $0.str("to") == "ESTABLISHED" })
        let anomalies = try #require(events["anomalies"] as? [[String: Any]])
        #expect(anomalies.contains { $0.str("kind") == "connection_refused" && $0.str("comm") == Self.hostileEscaped })

        // The event stream: board events whose data is the page's JSON.
        let stream = try curl(["-N", "--max-time", "2", "http://127.0.0.1:\(webPort)/api/stream"])
        #expect(stream.status == 28, "curl should stop at --max-time, the stream stays open")
        let dataLines = stream.stdout.split(separator: "\n").filter { $0.hasPrefix("data: ") }
        #expect(stream.stdout.contains("event: board"))
        #expect(dataLines.count >= 3, "about one board every 500 ms")
        let board = try json(String(try #require(dataLines.last).dropFirst(6)))
        #expect((board["connections"] as? [[String: Any]] ?? []).contains { $0.str("comm") == "tt-webcli" && $0.str("state") == "ESTABLISHED" })

        // A page on another site that rebinds its name to 127.0.0.1 is refused.
        let rebound = try curl(["-o", "/dev/null", "-w", "%{http_code}", "-H", "Host: attacker.example:\(webPort)", "http://127.0.0.1:\(webPort)/api/board"])
        #expect(rebound.stdout == "403")

        // A real browser renders the live page from the stream.
        let dom = try checkPage("http://127.0.0.1:\(webPort)/", name: "serve-live")
        #expect(dom.contains(#"data-comm="tt-webcli""#))
        #expect(dom.range(of: #"data-conn="\#(clientRow.str("conn"))"[^>]*data-state="ESTABLISHED""#, options: .regularExpression) != nil
                || dom.range(of: #"data-state="ESTABLISHED"[^>]*data-conn="\#(clientRow.str("conn"))""#, options: .regularExpression) != nil)
        #expect(dom.contains(#"class="seg""#) || dom.contains(#"class="seg "#))
        #expect(dom.contains(#"\x1b[31mEVIL&lt;b&gt;\x07"#), "the hostile name is shown escaped")
        #expect(!dom.contains("EVIL<b>"), "the hostile name's markup never reaches the DOM")
        #expect(!dom.contains("\u{1b}"), "no raw ESC in the page")

        _ = try client.background.wait(timeout: 60)
        _ = try server.background.wait(timeout: 60)
        serve.signal(SIGINT)
        #expect(try serve.wait(timeout: 30) == 0)
    }

    /// A tracer writing a log on `port` and `closedPort` into a new directory
    /// (the caller removes it), and where the report of that log goes.
    static func tracedRun(_ name: String, port: UInt16, closedPort: UInt16) throws -> (dir: URL, log: String, report: String, tracer: Background) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tt-\(name)-\(getpid())-\(Unique.next())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let log = dir.appendingPathComponent("trace.jsonl").path
        let tracer = try Background([Products.tcptrail, "trace", "--output", log, "--port", "\(port)", "--port", "\(closedPort)"])
        try tracer.waitFor("tracing TCP events", inStderr: true)
        return (dir, log, dir.appendingPathComponent("report.html").path, tracer)
    }

    @Test func replayHTMLReportRendersTheRun() throws {
        let net = try VethPair()
        let port = Unique.port(), closedPort = Unique.port()
        let (dir, log, report, tracer) = try Self.tracedRun("html", port: port, closedPort: closedPort)
        defer { try? FileManager.default.removeItem(at: dir) }
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "1", "--name", "tt-websrv"])
        try server.background.waitFor("listening")
        // Half-close, so the client still holds the socket when the server's FIN
        // comes: a socket closed in FIN_WAIT_2 goes on out of the tracepoints' sight.
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "1", "--name", "tt-webcli", "--half-close", "--hold", "0.3"])
        _ = try client.background.wait(timeout: 30)
        _ = try server.background.wait(timeout: 30)
        let refused = try Peer(net.client, ["client", net.serverV4, "\(closedPort)", "1", "--name", Self.hostileName])
        _ = try refused.background.wait(timeout: 30)
        let (laddr, lport, _, _) = try #require(client.connections.first)
        // Truth: the client closed first, so its socket sits in TIME_WAIT.
        let ss = try run(net.client.command(["ss", "-tanH", "state", "time-wait"])).stdout
        #expect(ss.contains("\(laddr):\(lport)"))
        usleep(300_000)
        tracer.signal(SIGINT)
        #expect(try tracer.wait(timeout: 30) == 0)

        let kept = Self.artifacts.appendingPathComponent("replay-report.jsonl")
        try? FileManager.default.removeItem(at: kept)
        try? FileManager.default.copyItem(atPath: log, toPath: kept.path)
        let replay = try run([Products.tcptrail, "replay", "--html", report, log], check: false)
        #expect(replay.status == 0, "replay --html failed: \(replay.stderr)")
        #expect(replay.stderr.contains("wrote"))
        let page = try String(contentsOfFile: report, encoding: .utf8)
        #expect(!page.contains("http://") && !page.contains("https://"), "the report loads nothing from elsewhere")

        let dom = try checkPage(report, name: "replay-report")
        let clientRow = try #require(dom.range(of: #"<div[^>]*class="conn[^"]*"[^>]*data-comm="tt-webcli"[^>]*>"#, options: .regularExpression)
                                        ?? dom.range(of: #"<div[^>]*data-comm="tt-webcli"[^>]*>"#, options: .regularExpression))
        #expect(dom[clientRow].contains(#"data-state="TIME_WAIT""#))
        for state in ["SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"] {
            #expect(dom.contains(#"class="seg" data-state="\#(state)""#) || dom.contains(#"data-state="\#(state)" class="seg""#)
                    || dom.range(of: #"class="seg[^"]*"[^>]*data-state="\#(state)""#, options: .regularExpression) != nil, "no \(state) segment")
        }
        #expect(dom.contains(#"data-kind="connection_refused""#))
        #expect(dom.contains(#"\x1b[31mEVIL&lt;b&gt;\x07"#))
        #expect(!dom.contains("EVIL<b>") && !dom.contains("\u{1b}"))
    }

    @Test func serveRefusesWhatItShouldNotDo() throws {
        // Not loopback, no --allow-remote: a usage error naming the flag.
        let remote = try run([Products.tcptrail, "serve", "--listen", "198.18.0.1:8080"], check: false)
        #expect(remote.status == 64)
        #expect(remote.stderr.contains("--allow-remote"))
        let bad = try run([Products.tcptrail, "serve", "--listen", "nonsense"], check: false)
        #expect(bad.status == 64 && bad.stderr.contains("ADDRESS:PORT"))
        // A port already taken: one line and exit 80, not a hang.
        let port = Unique.port()
        let holder = try Background(["python3", "-c", "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', \(port))); s.listen(); print('ready', flush=True); time.sleep(60)"])
        try holder.waitFor("ready")
        let busy = try run([Products.tcptrail, "serve", "--listen", "127.0.0.1:\(port)"], check: false, timeout: 60)
        #expect(busy.status == 80)
        #expect(busy.stderr.contains("in use"), "\(busy.stderr)")
        #expect(busy.stderr.split(separator: "\n").filter { $0.hasPrefix("tcptrail:") && $0.contains("cannot listen") }.count == 1)
    }
}
