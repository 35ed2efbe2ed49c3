import Foundation
import Testing

/// Issue 15: every view shows a socket the application has closed as the
/// kernel still holds it. A server closes an idle connection; the client
/// holds its end, then closes. `ss` in the server's namespace is the truth at
/// each step; `serve`'s API, `top`'s table, the log and `replay` (text and
/// HTML) must say the same, with the process that accepted the socket.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct OrphanViewTests {
    /// The server's socket in `ss -tanH` of its namespace: its state, or nil.
    static func ssState(_ net: VethPair, port: UInt16, clientPort: Int) throws -> String? {
        let out = try run(net.server.command(["ss", "-tanH"])).stdout
        let line = out.split(separator: "\n").first { $0.contains("\(net.serverV4):\(port) ") && $0.contains("\(net.clientV4):\(clientPort)") }
        return line?.split(whereSeparator: \.isWhitespace).first.map(String.init)
    }

    func api(_ webPort: UInt16, state: String) throws -> [[String: Any]] {
        let r = try run(["curl", "-sS", "http://127.0.0.1:\(webPort)/api/connections?state=\(state)"], check: false, timeout: 20)
        let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        return obj?["connections"] as? [[String: Any]] ?? []
    }

    @Test(.enabled(if: Tmux.available, "\(Tmux.reason)"))
    func theServersOrphanIsFinWait2ThenTimeWaitInEveryView() throws {
        let dir = try EventLogTests.PrivateDirectory()
        let log = dir.path + "/trace.jsonl", report = dir.path + "/report.html"
        let net = try VethPair()
        let port = Unique.port(), webPort = Unique.port()
        let thresholds = ["--fin-wait-2-threshold", "3"]
        let tracer = try Background([Products.tcptrail, "trace", "--output", log, "--port", "\(port)"] + thresholds)
        try tracer.waitFor("tracing TCP events", inStderr: true)
        let serve = try Background([Products.tcptrail, "serve", "--listen", "127.0.0.1:\(webPort)", "--port", "\(port)"] + thresholds)
        try serve.waitFor("serving live timelines", inStderr: true)
        let pane = try TmuxPane(command: "\(Products.tcptrail) top --refresh 200 --port \(port) \(thresholds.joined(separator: " ")); sleep 60", width: 160, height: 30)
        defer { pane.kill() }
        try pane.waitFor("top's header", timeout: 30) { $0.contains("tcptrail top") }

        // The server closes 0.3 s after accept; the client answers its FIN 9 s later.
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "1", "--name", "tt-orphsrv", "--close-first", "--hold", "0.3"])
        try server.background.waitFor("listening")
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "1", "--name", "tt-orphcli", "--close-first", "--hold", "9"])
        try client.background.waitFor("conn ")
        let clientPort = try #require(client.connections.first).1
        _ = try server.background.wait(timeout: 30)
        let serverPid = try server.pid
        // Past the 5 s an ended row stays in top and serve: a FIN_WAIT_2 orphan has not ended.
        usleep(6_000_000)

        let ss1 = try Self.ssState(net, port: port, clientPort: clientPort)
        let finWait2 = try api(webPort, state: "FIN_WAIT_2").filter { $0.str("local") == "\(net.serverV4):\(port)" && $0.str("remote") == "\(net.clientV4):\(clientPort)" }
        let top1: String
        do {
            top1 = try pane.waitFor("the orphan's row", timeout: 5) { s in topTableLines(s).contains { $0.contains("tt-orphsrv") && $0.contains("FIN_WAIT_2") } }
        } catch {
            // Seen once in CI (top kept the server at FIN_WAIT_1, 0 lost): say what the others saw.
            tracer.signal(SIGINT)
            _ = try? tracer.wait(timeout: 30)
            let logged = (try? EventLogTests().lines(log)) ?? []
            let mine = logged.filter { $0.int("rport") == clientPort || $0.int("lport") == clientPort || $0["type"] as? String != "transition" }
            Issue.record("ss \(ss1 ?? "none"); serve FIN_WAIT_2 \(finWait2); the log: \(mine.map { $0.map { "\($0.key)=\($0.value)" }.sorted().joined(separator: " ") })")
            throw error
        }
        #expect(ss1 == "FIN-WAIT-2", "ss: \(ss1 ?? "none")")
        #expect(finWait2.count == 1 && finWait2.first?.str("comm") == "tt-orphsrv" && finWait2.first?.int("pid") == serverPid, "serve: \(finWait2)")
        let row1 = try #require(topTableLines(top1).first { $0.contains("tt-orphsrv") && $0.contains("FIN_WAIT_2") })
        #expect(row1.contains("tt-orphsrv \(serverPid)"), "\(row1)")

        _ = try client.background.wait(timeout: 30)
        usleep(500_000)
        let ss2 = try Self.ssState(net, port: port, clientPort: clientPort)
        let timeWait = try api(webPort, state: "TIME_WAIT").filter { $0.str("local") == "\(net.serverV4):\(port)" && $0.str("remote") == "\(net.clientV4):\(clientPort)" }
        let top2 = try pane.waitFor("the TIME_WAIT row", timeout: 5) { s in topTableLines(s).contains { $0.contains("tt-orphsrv") && $0.contains("TIME_WAIT") } }
        #expect(ss2 == "TIME-WAIT", "ss: \(ss2 ?? "none")")
        #expect(timeWait.count == 1 && timeWait.first?.str("comm") == "tt-orphsrv", "serve: \(timeWait)")
        let kinds = Set((timeWait.first?["anomalies"] as? [[String: Any]] ?? []).map { $0.str("kind") })
        #expect(kinds.isSuperset(of: ["fin_wait_2_stall", "server_time_wait"]), "serve's anomalies: \(kinds)")
        #expect(topFeedLines(top2).contains { $0.contains("server_time_wait") }, "\(top2)")

        serve.signal(SIGINT)
        #expect(try serve.wait(timeout: 30) == 0)
        tracer.signal(SIGINT)
        #expect(try tracer.wait(timeout: 30) == 0)

        // The log, and replay's text and HTML, from the same run.
        let records = try EventLogTests().lines(log)
        let serverSide = records.filter { r in
            r.str("type") == "transition" && r.int("lport") == Int(port) && r.int("rport") == clientPort && r["to"] != nil
        }
        #expect(serverSide.map { $0.str("to") } == ["SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT"], "\(serverSide.map { $0.str("to") })")
        #expect(serverSide.allSatisfy { $0.int("pid") == serverPid && $0.str("comm") == "tt-orphsrv" && $0["inferred"] as? Bool == false })
        let replay = try run([Products.tcptrail, "replay", "--port", "\(port)", log], check: false)
        #expect(replay.status == 0, "\(replay.stderr)")
        let serverEndpoint = "\(net.serverV4):\(port)"
        let timeline = replay.stdout.split(separator: "\n").filter { (line: Substring) -> Bool in line.contains(serverEndpoint) }
        #expect(replay.stdout.contains("FIN_WAIT_2") && replay.stdout.contains("TIME_WAIT") && replay.stdout.contains("tt-orphsrv"), "\(timeline)")
        #expect(replay.stdout.contains("server_time_wait") && replay.stdout.contains("fin_wait_2_stall"), "\(replay.stdout)")
        let html = try run([Products.tcptrail, "replay", "--html", report, log], check: false)
        #expect(html.status == 0, "\(html.stderr)")
        let page = try String(contentsOfFile: report, encoding: .utf8)
        #expect(page.contains("\"tt-orphsrv\"") && page.contains("\"TIME_WAIT\"") && page.contains("\"FIN_WAIT_2\""))
        print("ORPHAN-VIEWS ss \(ss1 ?? "-") then \(ss2 ?? "-"); serve FIN_WAIT_2 rows \(finWait2.count), TIME_WAIT rows \(timeWait.count), anomalies \(kinds.sorted()); top: \(row1.split(whereSeparator: \.isWhitespace).prefix(6).joined(separator: " "))")
    }
}
