import Foundation
import Testing

/// `serve`'s /metrics, read by a real Prometheus (Debian's) and promtool,
/// against traffic whose counts come from the processes themselves and `ss`.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct MetricsTests {
    /// A Prometheus of the test's own: loopback, a 1 s scrape of `target`,
    /// its own directory and port; stopped and removed on deinit.
    final class Prometheus {
        let dir: String
        let port: UInt16
        let background: Background

        init(target: String) throws {
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("ttprom-\(getpid())-\(Unique.next())").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false)
            let config = """
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: tcptrail
                static_configs:
                  - targets: ['\(target)']
            """
            try config.write(toFile: dir + "/prometheus.yml", atomically: true, encoding: .utf8)
            port = Unique.port()
            background = try Background(["prometheus", "--config.file=\(dir)/prometheus.yml", "--storage.tsdb.path=\(dir)/data",
                                         "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn"])
            let end = Date().addingTimeInterval(Timing.waitSeconds)
            while try run(["curl", "-sf", "-o", "/dev/null", "http://127.0.0.1:\(port)/-/ready"], check: false, timeout: 10).status != 0 {
                guard Date() < end, background.process.isRunning else { throw TestFailure("prometheus did not become ready: \(background.stderr)") }
                usleep(200_000)
            }
        }

        deinit {
            background.signal(SIGTERM)
            _ = try? background.wait(timeout: 20)
            try? FileManager.default.removeItem(atPath: dir)
        }

        /// An instant PromQL query's single value; nil when it has no sample.
        func value(_ query: String) throws -> Double? {
            let r = try run(["curl", "-sS", "http://127.0.0.1:\(port)/api/v1/query", "--data-urlencode", "query=\(query)"], timeout: 20)
            guard let top = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
                  top["status"] as? String == "success", let data = top["data"] as? [String: Any],
                  let result = data["result"] as? [[String: Any]] else { throw TestFailure("bad answer to \(query): \(r.stdout)") }
            guard let first = result.first, let pair = first["value"] as? [Any], let text = pair.last as? String else { return nil }
            return Double(text)
        }
    }

    /// `serve` with `args`, once it serves; its page and /metrics on `port`.
    static func serve(port: UInt16, _ args: [String]) throws -> Background {
        let serve = try Background([Products.tcptrail, "serve", "--listen", "127.0.0.1:\(port)"] + args)
        try serve.waitFor("serving live timelines", inStderr: true)
        return serve
    }

    /// N refused connects, M connections the server closes first and K held
    /// open, in a veth pair: Prometheus' sums are exactly N, M and the
    /// ESTABLISHED sockets ss counts (both ends of the K); after the run the
    /// last scrape's counters equal the log's records.
    @Test func prometheusScrapesExactCountsThatEqualTheLog() throws {
        let n = Int.random(in: 3...9), m = Int.random(in: 4...12), k = Int.random(in: 2...6)
        let net = try VethPair()
        let dir = try EventLogTests.PrivateDirectory()
        let webPort = Unique.port(), port = Unique.port(), closedPort = Unique.port(), heldPort = Unique.port()
        let serve = try Self.serve(port: webPort, ["--addr", "\(net.clientV4)/32", "--output", dir.path + "/trace.jsonl"])
        defer { serve.signal(SIGKILL) }
        let prometheus = try Prometheus(target: "127.0.0.1:\(webPort)")

        // N refused connects: bash says each one failed.
        let refused = try run(net.client.command(["bash", "-c",
            "r=0; for i in $(seq \(n)); do (exec 3<>/dev/tcp/\(net.serverV4)/\(closedPort)) 2>/dev/null || r=$((r+1)); done; echo $r"]))
        #expect(Int(refused.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) == n)
        // M connections the server closes first.
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "\(m)", "--close-first"])
        try server.background.waitFor("listening")
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "\(m)", "--hold", "0.002"])
        #expect(try client.background.wait() == 0)
        #expect(try server.background.wait() == 0)
        // K held open, each by a client of its own.
        let holder = try Peer(net.server, ["server", net.serverV4, "\(heldPort)", "\(k)", "--hold", "1"])
        try holder.background.waitFor("listening")
        var held: [Peer] = []
        defer { for p in held { p.background.signal(SIGKILL) } }
        for _ in 0..<k {
            let p = try Peer(net.client, ["client", net.serverV4, "\(heldPort)", "1", "--hold", Timing.hold(120)])
            try p.background.waitFor("conn ")
            held.append(p)
        }
        func established(_ ns: NetworkNamespace) throws -> Int {
            try run(ns.command(["ss", "-tnH", "state", "established"])).stdout.split(separator: "\n").count
        }
        let openNow = try established(net.client) + established(net.server)
        #expect(openNow == 2 * k, "ss shows \(openNow) ESTABLISHED sockets for \(k) connections")

        // Until Prometheus has scraped it all (accepted sockets' records wait up to 1 s for accept()).
        let queries = ["sum(tcptrail_anomalies_total{anomaly=\"connection_refused\"})": Double(n),
                       "sum(tcptrail_anomalies_total{anomaly=\"server_time_wait\"})": Double(m),
                       "tcptrail_connections{state=\"ESTABLISHED\"}": Double(openNow)]
        var seen: [String: Double?] = [:]
        let end = Date().addingTimeInterval(Timing.waitSeconds)
        repeat {
            sleep(1)
            for q in queries.keys { seen[q] = try prometheus.value(q) }
        } while Date() < end && queries.contains { seen[$0.key] != $0.value }
        // Two more scrapes: still exact, not passing through on the way up.
        sleep(2)
        for (q, want) in queries {
            let got = try prometheus.value(q)
            #expect(got == want, "\(q): \(got.map { "\($0)" } ?? "no sample") (earlier \(String(describing: seen[q]))), want \(want)")
        }
        #expect(try prometheus.value("sum(tcptrail_handshake_duration_seconds_count{side=\"client\"})") == Double(m + k))

        // The last exposition against the log of the same run.
        let exposition = try run(["curl", "-sS", "http://127.0.0.1:\(webPort)/metrics"]).stdout
        serve.signal(SIGINT)
        #expect(try serve.wait() == 0)
        let samples = Self.samples(exposition)
        let records = try EventLogTests().lines(dir.path + "/trace.jsonl")
        var transitions: [String: Double] = [:], anomalies: [String: Double] = [:]
        for r in records {
            if r.str("type") == "transition", !r.str("from").isEmpty {
                transitions["tcptrail_transitions_total{from=\"\(r.str("from"))\",to=\"\(r.str("to"))\"}", default: 0] += 1
            }
            if r.str("type") == "anomaly" {
                anomalies["tcptrail_anomalies_total{anomaly=\"\(r.str("anomaly"))\",severity=\"\(r.str("severity"))\"}", default: 0] += 1
            }
        }
        #expect(!transitions.isEmpty && anomalies.count >= 2)
        #expect(samples.filter { $0.key.hasPrefix("tcptrail_transitions_total{") } == transitions)
        #expect(samples.filter { $0.key.hasPrefix("tcptrail_anomalies_total{") } == anomalies)
        let summary = try #require(records.last { $0.str("type") == "summary" })
        let lost = samples.filter { $0.key.hasPrefix("tcptrail_events_lost_total{") }.values.reduce(0, +)
        #expect(lost == Double(summary.int("lost")), "lost: \(lost), the summary's \(summary.int("lost"))")
        #expect(samples["tcptrail_log_records_dropped_total"] == Double(summary.int("export_errors")))
        let events = serve.stderr.split(separator: "\n").last { $0.hasSuffix(" lost") }.flatMap { $0.split(separator: " ").dropFirst().first }
        #expect(samples["tcptrail_events_total"] == events.flatMap { Double($0) }, "\(serve.stderr)")
    }

    /// promtool, Prometheus' own checker, accepts the exposition with every
    /// kind of series in it (histograms, listener labels, lost counters).
    @Test func promtoolAcceptsTheExposition() throws {
        let ns = try NetworkNamespace(prefix: "ttm")
        let webPort = Unique.port(), port = Unique.port()
        let serve = try Self.serve(port: webPort, ["--netns", "\(try ns.inode)"])
        defer { serve.signal(SIGKILL) }
        try Peer.exchange(ns, port: port, n: 3)
        _ = try run(ns.command(["bash", "-c", "(exec 3<>/dev/tcp/127.0.0.1/\(Unique.port())) 2>/dev/null; true"]))
        // A listener that never accepts, and eight connects at once: its queue overflows.
        let overflowPort = Unique.port()
        let listener = try Peer(ns, ["server", "127.0.0.1", "\(overflowPort)", "1", "--backlog", "0", "--no-accept", "--hold", "600"])
        try listener.background.waitFor("listening")
        let clients = try Background(ns.command(["python3", "-c", ListenOverflowTests.connects, "127.0.0.1", "\(overflowPort)", "8", "3"]))
        try clients.waitFor("sent")
        sleep(3)
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("ttmetrics-\(getpid())-\(Unique.next()).txt").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let fetched = try run(["curl", "-sS", "-o", file, "-w", "%{http_code} %{content_type}", "http://127.0.0.1:\(webPort)/metrics"])
        #expect(fetched.stdout == "200 text/plain; version=0.0.4; charset=utf-8")
        let text = try String(contentsOfFile: file, encoding: .utf8)
        for name in ["tcptrail_handshake_duration_seconds_bucket{", "tcptrail_transitions_total{", "tcptrail_anomalies_total{",
                     "tcptrail_events_lost_total{", "tcptrail_connections{", "tcptrail_build_info{", "tcptrail_ring_buffer_size_bytes "] {
            #expect(text.contains(name), "\(name) missing")
        }
        // Reported once a second per listener: at most what the kernel counted, and some.
        let overflows = try ns.nstat(["TcpExtListenOverflows"])["TcpExtListenOverflows"] ?? 0
        let reported = Self.samples(text)["tcptrail_listen_overflows_total{laddr=\"127.0.0.1\",lport=\"\(overflowPort)\"}"] ?? 0
        #expect(overflows > 0 && reported > 0 && reported <= Double(overflows), "metrics \(reported), nstat \(overflows)")
        let check = try run(["sh", "-c", "promtool check metrics < \"$0\"", file], check: false)
        #expect(check.status == 0 && check.stdout.isEmpty && check.stderr.isEmpty, "promtool: \(check.stdout) \(check.stderr)")
        // Every name is tcptrail's, and no label names a connection or an ephemeral port.
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            #expect(line.hasPrefix("tcptrail_"), "\(line)")
            #expect(!line.contains("conn=") && !line.contains("rport=") && !line.contains("pid="), "\(line)")
        }
    }

    /// A 4 KiB ring buffer drained once a second under churn loses events:
    /// tcptrail_events_lost_total by type is the log's last `lost` record's
    /// total_by_type, and its sum the summary's `lost`.
    @Test func lostEventsByTypeAreTheLogs() throws {
        let ns = try NetworkNamespace(prefix: "ttl")
        let dir = try EventLogTests.PrivateDirectory()
        let webPort = Unique.port(), port = Unique.port()
        let serve = try Self.serve(port: webPort, ["--netns", "\(try ns.inode)", "--buffer-size", "4K", "--poll-interval", "1000",
                                                   "--output", dir.path + "/trace.jsonl"])
        defer { serve.signal(SIGKILL) }
        let churn = dir.path + "/churn"
        try run(["gcc", "-O2", "-pthread", "-o", churn, InstallTests.root.appendingPathComponent("bench/churn.c").path])
        try run(ns.command([churn, "-t", "2", "-d", "2", "-p", "\(port)"]))
        sleep(2)
        let samples = Self.samples(try run(["curl", "-sS", "http://127.0.0.1:\(webPort)/metrics"]).stdout)
        serve.signal(SIGINT)
        #expect(try serve.wait() == 0)
        let records = try EventLogTests().lines(dir.path + "/trace.jsonl")
        let last = try #require(records.last { $0.str("type") == "lost" }, "nothing was lost; the scenario proves nothing")
        let byType = try #require(last["total_by_type"] as? [String: Int])
        let metrics = samples.filter { $0.key.hasPrefix("tcptrail_events_lost_total{") && $0.value > 0 }
        #expect(metrics == Dictionary(uniqueKeysWithValues: byType.map { ("tcptrail_events_lost_total{type=\"\($0.key)\"}", Double($0.value)) }))
        let summary = try #require(records.last { $0.str("type") == "summary" })
        #expect(metrics.values.reduce(0, +) == Double(summary.int("lost")) && summary.int("lost") == last.int("total"))
    }

    /// "name{labels}" -> value, from the text exposition (no histograms' buckets needed).
    static func samples(_ text: String) -> [String: Double] {
        var out: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let v = Double(line[line.index(after: space)...]) else { continue }
            out[String(line[..<space])] = v
        }
        return out
    }
}
