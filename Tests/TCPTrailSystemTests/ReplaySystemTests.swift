import Foundation
import Testing

/// Issue 4's replay: real scenarios traced to a file, then replayed; the replay
/// must say what the live run said.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct ReplaySystemTests {
    func records(_ text: String) throws -> [[String: Any]] {
        try text.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    func anomalyKeys(_ records: [[String: Any]]) -> [String] {
        records.filter { $0.str("type") == "anomaly" }
            .map { "\($0.str("conn")) \($0.str("anomaly")) \($0["count"] ?? "-") \($0.int("mono_ns")) \($0.str("detail"))" }.sorted()
    }

    func changeKeys(_ records: [[String: Any]]) -> [String] {
        records.filter { $0.str("type") == "transition" }
            .map { "\($0.str("conn")) \($0.int("mono_ns")) \($0.str("from")) \($0.str("to")) \($0.str("step")) \($0["inferred"] ?? "") \($0.str("reason"))" }.sorted()
    }

    @Test func recordThenReplayGivesTheSameTimelinesAndAnomalies() throws {
        let dir = try EventLogTests.PrivateDirectory()
        let net = try VethPair()
        let ports = (0..<6).map { _ in Unique.port() }
        let (normal, serverFirst, refused, abort, stall, dropped) = (ports[0], ports[1], ports[2], ports[3], ports[4], ports[5])
        try run(net.client.command(["sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=2"]))
        try run(net.server.command(["nft", "add table inet ttr; add chain inet ttr in { type filter hook input priority 0; }; add rule inet ttr in tcp dport \(dropped) drop"]))
        let path = dir.path + "/scenarios.jsonl"
        let tracer = try Background([Products.tcptrail, "trace", "--output", path, "--close-wait-threshold", "1", "--fin-wait-2-threshold", "1"]
                                    + ports.flatMap { ["--port", "\($0)"] })
        try tracer.waitFor("tracing TCP events", inStderr: true)

        func pair(_ port: UInt16, server: [String], client: [String], n: Int = 1) throws -> (Peer, Peer) {
            let s = try Peer(net.server, ["server", net.serverV4, "\(port)", "\(n)"] + server)
            try s.background.waitFor("listening")
            return (s, try Peer(net.client, ["client", net.serverV4, "\(port)", "\(n)"] + client))
        }
        // The slow ones (stalls, SYN retries) run while the quick ones do.
        let stalled = try pair(stall, server: ["--hold", "2.5"], client: ["--half-close", "--no-drain", "--hold", "2.5"])
        let timeout = try Peer(net.client, ["client", net.serverV4, "\(dropped)", "1"])
        for (s, c) in [try pair(normal, server: [], client: [], n: 3), try pair(serverFirst, server: ["--close-first", "--half-close", "--hold", "0.3"], client: ["--close-first"]),
                       try pair(abort, server: ["--hold", "0.3"], client: ["--linger0"])] {
            _ = try c.background.wait(timeout: 30)
            _ = try s.background.wait(timeout: 30)
        }
        _ = try Peer(net.client, ["client", net.serverV4, "\(refused)", "1"]).background.wait(timeout: 30)
        for p in [stalled.1, stalled.0, timeout] { _ = try p.background.wait(timeout: 60) }
        usleep(1_300_000)
        tracer.signal(SIGINT)
        #expect(try tracer.wait() == 0)

        let live = try records(try String(contentsOfFile: path, encoding: .utf8))
        let liveAnomalies = Set(live.filter { $0.str("type") == "anomaly" }.map { $0.str("anomaly") })
        for expected in ["connection_refused", "server_time_wait", "reset_sent", "reset_received", "close_wait_stall",
                         "fin_wait_2_stall", "syn_retransmit", "handshake_timeout"] {
            #expect(liveAnomalies.contains(expected), "the live run did not flag \(expected): \(liveAnomalies)")
        }

        // Replay as JSON: the same anomalies and documented transitions, to the nanosecond.
        let replayed = try run([Products.tcptrail, "replay", "--json", path])
        let again = try records(replayed.stdout)
        #expect(anomalyKeys(again) == anomalyKeys(live))
        #expect(changeKeys(again) == changeKeys(live))
        #expect(again.first?.str("type") == "header" && again.last?.str("type") == "summary")
        let out = dir.path + "/replayed.jsonl"
        try replayed.stdout.write(toFile: out, atomically: false, encoding: .utf8)
        try EventLogTests().validate([path, out])

        // Replay as text: every connection has its block, every anomaly its line.
        let text = try run([Products.tcptrail, "replay", path]).stdout
        for conn in Set(live.filter { $0.str("type") == "transition" }.map { $0.str("conn") }) {
            #expect(text.contains("conn \(conn)  "), "no timeline for \(conn)")
        }
        for a in live.filter({ $0.str("type") == "anomaly" }) {
            #expect(text.contains(a.str("anomaly") + ": " + a.str("detail")))
        }
        #expect(text.contains("complete: no gaps"))
        // The client of the normal exchange, step by step with its durations.
        let client = try #require(live.first { $0.str("type") == "transition" && $0.int("rport") == Int(normal) && $0.str("step") == "syn_sent" })
        let block = text.components(separatedBy: "conn \(client.str("conn"))  ").dropFirst().first?.components(separatedBy: "\n\n").first ?? ""
        #expect(block.contains("CLOSED        -> SYN_SENT      syn_sent"))
        #expect(block.contains("SYN_SENT      -> ESTABLISHED   established") && block.contains("in SYN_SENT"))
        // How it ended is what the live run saw: TIME_WAIT when the peer's FIN came
        // with the ACK of ours, else the kernel's orphaned FIN_WAIT_2 (a race of the peers).
        let liveSteps = live.filter { $0.str("type") == "transition" && $0.str("conn") == client.str("conn") }
        if liveSteps.contains(where: { $0.str("to") == "TIME_WAIT" }) {
            #expect(block.contains("in TIME_WAIT until"), "live: \(liveSteps)")
        } else {
            #expect(liveSteps.contains { $0.str("reason") == "fin_wait_2_orphaned" }, "live: \(liveSteps)")
            #expect(block.contains("FIN_WAIT_2    -> CLOSED        closed (inferred) fin_wait_2_orphaned"))
        }

        // --anomalies-only and --conn pick from the same replay.
        let only = try records(try run([Products.tcptrail, "replay", "--json", "--anomalies-only", path]).stdout)
        #expect(only.filter { $0.str("type") != "header" && $0.str("type") != "summary" }.allSatisfy { $0.str("type") == "anomaly" })
        #expect(anomalyKeys(only) == anomalyKeys(live))
        let one = try records(try run([Products.tcptrail, "replay", "--json", "--conn", client.str("conn"), path]).stdout)
        #expect(Set(one.compactMap { $0["conn"] as? String }) == [client.str("conn")])

        // The same log compressed reads the same.
        try run(["gzip", "-k", path])
        #expect(try run([Products.tcptrail, "replay", "--json", path + ".gz"]).stdout == replayed.stdout)
    }

    @Test func aLogCutBySigkillReplaysWithAWarning() throws {
        let dir = try EventLogTests.PrivateDirectory()
        let (path, _, _) = try EventLogTests().traceChurnAndStop(with: SIGKILL, in: dir)
        let r = try run([Products.tcptrail, "replay", "--json", path], check: false)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        if text.hasSuffix("\n") {
            #expect(r.status == 0 && !r.stderr.contains("cut off"), "\(r.stderr)")
        } else {
            #expect(r.status == 0 && r.stderr.contains("cut off"), "\(r.stderr)")
        }
        #expect(r.stderr.contains("no summary record"))
        // Cut it mid-record by hand too: the last line is reported and skipped.
        let cut = dir.path + "/cut.jsonl"
        let complete = text.hasSuffix("\n") ? text : String(text[..<(text.lastIndex(of: "\n") ?? text.startIndex)]) + "\n"
        try String(complete.dropLast(40)).write(toFile: cut, atomically: false, encoding: .utf8)
        let lines = complete.split(separator: "\n").count
        let c = try run([Products.tcptrail, "replay", cut], check: false)
        #expect(c.status == 0)
        #expect(c.stderr.contains("cut.jsonl:\(lines): the last line is cut off"), "\(c.stderr)")
    }

    @Test func badInputGetsOneLineAndItsOwnExitStatus() throws {
        let dir = try EventLogTests.PrivateDirectory()
        let missing = try run([Products.tcptrail, "replay", dir.path + "/none.jsonl"], check: false)
        #expect(missing.status == 66 && missing.stderr.split(separator: "\n").count == 1 && missing.stdout.isEmpty)
        let bad = dir.path + "/bad.jsonl"
        try "{\"v\":1,\"seq\":1}\n".write(toFile: bad, atomically: false, encoding: .utf8)
        let r = try run([Products.tcptrail, "replay", bad], check: false)
        #expect(r.status == 65 && r.stderr.contains("bad.jsonl:1: no \"type\" string; line skipped"))
        let flag = try run([Products.tcptrail, "replay", "--since", "yesterday", bad], check: false)
        #expect(flag.status == 64 && flag.stderr.contains("--since"))
    }
}
