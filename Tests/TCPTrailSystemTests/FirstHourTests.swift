import Foundation
import Testing

/// Issue 17: what an operator meets in the first hour, on a host where other
/// work left thousands of TIME_WAIT sockets.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct FirstHourTests {
    /// A namespace holding `n` TIME_WAIT sockets (the clients closed first)
    /// on `port`, with `ss`'s count of them.
    static func timeWaitFlood(_ n: Int, prefix: String) throws -> (ns: NetworkNamespace, port: UInt16, timeWaits: Int) {
        let ns = try NetworkNamespace(prefix: prefix)
        let port = Unique.port()
        let server = try Peer(ns, ["server", "127.0.0.1", "\(port)", "\(n)"])
        try server.background.waitFor("listening")
        let client = try Peer(ns, ["client", "127.0.0.1", "\(port)", "\(n)"])  // the client closes first
        #expect(try client.background.wait(timeout: 120) == 0)
        #expect(try server.background.wait(timeout: 120) == 0)
        return (ns, port, try Self.timeWaits(in: ns))
    }

    /// `ss`'s TIME_WAIT sockets in a namespace.
    static func timeWaits(in ns: NetworkNamespace) throws -> Int {
        try run(ns.command(["ss", "-Htan", "state", "time-wait"])).stdout.split(separator: "\n").count
    }

    /// `trace` (text) on the namespace while three connections run on a second port.
    /// Also `ss`'s counts of TIME_WAITs before and after its snapshot (each run's
    /// own connections add three; the flood's last FIN_WAIT_2s may still turn).
    static func trace(_ ns: NetworkNamespace, _ args: [String]) throws -> (stdout: String, stderr: String, timeWaits: ClosedRange<Int>) {
        let port = Unique.port()
        let before = try Self.timeWaits(in: ns)
        let tracer = try Background([Products.tcptrail, "trace", "--netns", "\(try ns.inode)"] + args)
        try tracer.waitFor("tracing TCP events", inStderr: true)
        let timeWaits = before...max(before, try Self.timeWaits(in: ns))
        try Peer.exchange(ns, port: port, n: 3)
        usleep(300_000)
        tracer.signal(SIGINT)
        #expect(try tracer.wait() == 0)
        return (tracer.stdout, tracer.stderr, timeWaits)
    }

    @Test func aTimeWaitFloodIsCountedNotListed() throws {
        let (ns, floodPort, flood) = try Self.timeWaitFlood(3000, prefix: "ttfh")
        #expect(flood >= 2900, "ss shows \(flood) TIME_WAIT sockets after 3000 client-first closes")

        // Default: the flood is one line per state, the connections that matter follow at once.
        let compact = try Self.trace(ns, [])
        let ssSaw = compact.timeWaits
        let lines = compact.stdout.split(separator: "\n")
        let report = "stdout's first lines:\n" + lines.prefix(12).joined(separator: "\n") + "\nstderr: " + compact.stderr
        #expect(lines.count < 50, "\(lines.count) lines; \(report)")
        #expect(lines.count > 1 && lines[1].contains("open at start: "), "\(report)")
        // The TIME_WAIT line counts exactly what ss saw (all toward the flood's port): the
        // flood's sockets are the only TIME_WAITs in the namespace, and none expires in the test's seconds.
        let tw = lines.first { $0.contains("  TIME_WAIT ") && $0.contains("open at start") == false }
        let count = tw.flatMap { $0.firstMatch(of: /TIME_WAIT\s+([\d,]+)\s/) }.map { Int($0.1.replacing(",", with: "")) ?? -1 } ?? -1
        #expect(ssSaw.contains(count), "TIME_WAIT line \(tw ?? "none"), ss \(ssSaw); \(report)")
        #expect(tw?.contains("to 127.0.0.1:\(floodPort) ×") == true, "\(report)")
        // The three connections' own lines: 10 transitions each, 2 for their listener.
        let engineLines = lines.filter { $0.contains(" -> ") && !$0.contains("open at start") }
        #expect(engineLines.count >= 32, "\(report)")
        // The summary tells the run's connections from the flood.
        #expect(compact.stderr.contains("open at start with no event since: TIME_WAIT \(count)"), "\(report)")
        #expect(compact.stderr.firstMatch(of: /connections by final state: ([^\n]*)/).map { !$0.1.contains("\(count)") } == true, "\(report)")

        // --snapshot full lists each, --no-snapshot none.
        let full = try Self.trace(ns, ["--snapshot", "full"])
        let listed = full.stdout.split(separator: "\n").filter { $0.contains("(open at start) TIME_WAIT") }.count
        #expect(full.timeWaits.contains(listed), "full listed \(listed), ss \(full.timeWaits)")
        let none = try Self.trace(ns, ["--no-snapshot"])
        #expect(!none.stdout.contains("open at start"), "stdout: \(none.stdout.prefix(600))")
        #expect(none.stdout.split(separator: "\n").count < 50)

        // JSON keeps one snapshot record per socket by default, none with --no-snapshot.
        let json = try Self.trace(ns, ["--json"])
        let records = json.stdout.split(separator: "\n").filter { $0.contains("\"type\":\"snapshot\"") && $0.contains("\"kernel_state\":\"TIME_WAIT\"") }
        #expect(json.timeWaits.contains(records.count), "\(records.count) snapshot records of TIME_WAIT sockets, ss \(json.timeWaits)")
        let jsonNone = try Self.trace(ns, ["--json", "--no-snapshot"])
        #expect(!jsonNone.stdout.contains("\"type\":\"snapshot\""))
        #expect(jsonNone.stdout.contains("\"type\":\"transition\""))
    }

    /// A server that closes first makes one server_time_wait per TIME_WAIT it holds:
    /// the text shows a few a second one by one and counts the rest a line a
    /// second; the log keeps each. Checked against ss's count of them.
    @Test func anAnomalyFloodIsCountedInTextAndKeptWholeInTheLog() throws {
        let ns = try NetworkNamespace(prefix: "ttaf")
        let port = Unique.port()
        let n = 1000
        let dir = try EventLogTests.PrivateDirectory()
        let log = dir.path + "/flood.jsonl"
        let inode = try ns.inode
        let limited = try Background([Products.tcptrail, "trace", "--netns", "\(inode)", "--output", log])
        let every = try Background([Products.tcptrail, "trace", "--netns", "\(inode)", "--anomaly-lines", "0"])
        try limited.waitFor("tracing TCP events", inStderr: true)
        try every.waitFor("tracing TCP events", inStderr: true)
        let server = try Peer(ns, ["server", "127.0.0.1", "\(port)", "\(n)", "--close-first", "--name", "tt-flood"])
        try server.background.waitFor("listening")
        let serverPid = try server.pid
        // The client waits 2 ms before its close(), so the server's FIN comes first.
        let client = try Peer(ns, ["client", "127.0.0.1", "\(port)", "\(n)", "--hold", "0.002"])
        #expect(try client.background.wait(timeout: 120) == 0)
        #expect(try server.background.wait(timeout: 120) == 0)
        #expect(server.connections.count == n, "the server served \(server.connections.count)")
        // ss counts the server's TIME_WAITs (none ends in the test's seconds).
        let served = try run(ns.command(["ss", "-Htan", "state", "time-wait", "sport", "= :\(port)"])).stdout.split(separator: "\n").count
        #expect(served > n / 2, "ss: \(served) server-side TIME_WAITs")
        usleep(300_000)
        for t in [limited, every] { t.signal(SIGINT) }
        #expect(try limited.wait() == 0 && every.wait() == 0)

        let lines = limited.stdout.split(separator: "\n")
        let single = lines.filter { $0.contains("!! server_time_wait: ") }
        let bursts = lines.compactMap { $0.firstMatch(of: /!! server_time_wait ×([\d,]+) more in 1 s (on \S+) (\S+) \((\d+)\) \((\d+) shown singly/) }
        let counted = bursts.reduce(0) { $0 + (Int($1.1.replacing(",", with: "")) ?? 0) }
        let report = "\(single.count) lines, \(bursts.count) bursts counting \(counted); " + lines.filter { $0.contains("×") }.prefix(5).joined(separator: "\n")
        print("FLOOD-FIGURES ss \(served) server TIME_WAITs; text: \(report)")
        // The log keeps each: the text's lines and counts add up to it.
        let records = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        let logged = records.filter { $0.contains(#""anomaly":"server_time_wait""#) }.count
        #expect(single.count + counted == logged, "log \(logged); \(report)")
        // ss counts what is still in TIME_WAIT (a client port used again recycles
        // one): at most one per connection. One transition in 10,400 was once
        // missing from one of the two tracers (0 lost): 1% is allowed below ss.
        #expect(logged >= served - served / 100 && logged <= n, "log \(logged), ss \(served); \(limited.stderr)")
        #expect(!bursts.isEmpty && single.count < served / 4, "\(report)")
        for b in bursts {
            #expect(b.2 == "on 127.0.0.1:\(port)" && b.3 == "tt-flood" && Int(b.4) == serverPid && Int(b.5) == 5, "\(b.0)")
        }
        // At most 5 lines of their own per 1 s window: 10 in any second of the clock.
        let perSecond = Dictionary(grouping: single) { $0.prefix(8) }.mapValues(\.count)
        #expect(perSecond.values.allSatisfy { $0 <= 10 }, "\(perSecond)")
        // --anomaly-lines 0 prints each.
        let unlimited = every.stdout.split(separator: "\n").filter { $0.contains("!! server_time_wait: ") }.count
        #expect(every.stderr.contains("anomalies: server_time_wait \(unlimited)\n") && !every.stdout.contains("more in 1 s"),
                "--anomaly-lines 0: \(unlimited) lines; \(every.stderr)")
        #expect(unlimited >= served - served / 100 && unlimited <= n, "--anomaly-lines 0: \(unlimited) lines, ss \(served)")
    }

    /// The page's and top's feed under the same flood: `serve`'s board holds 5
    /// items a second and one counting item per second; their counts add up
    /// to the board's anomaly count, which ss bounds.
    @Test func serveFeedCountsAFlood() throws {
        let ns = try NetworkNamespace(prefix: "ttsf")
        let port = Unique.port(), webPort = Unique.port()
        let n = 1000
        let serve = try Background([Products.tcptrail, "serve", "--listen", "127.0.0.1:\(webPort)", "--netns", "\(try ns.inode)"])
        try serve.waitFor("serving live timelines", inStderr: true)
        let server = try Peer(ns, ["server", "127.0.0.1", "\(port)", "\(n)", "--close-first", "--name", "tt-flood"])
        try server.background.waitFor("listening")
        let client = try Peer(ns, ["client", "127.0.0.1", "\(port)", "\(n)", "--hold", "0.002"])
        #expect(try client.background.wait(timeout: 120) == 0)
        #expect(try server.background.wait(timeout: 120) == 0)
        let timeWaits = try run(ns.command(["ss", "-Htan", "state", "time-wait", "sport", "= :\(port)"])).stdout.split(separator: "\n").count
        usleep(500_000)
        let body = try run(["curl", "-sS", "http://127.0.0.1:\(webPort)/api/board"]).stdout
        serve.signal(SIGINT)
        _ = try serve.wait()
        let board = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
        let feed = (board["feed"] as? [[String: Any]] ?? []).filter { $0.str("kind") == "server_time_wait" }
        let total = feed.reduce(0) { $0 + (($1["count"] as? Int) ?? 1) }
        let bursts = feed.filter { $0["count"] != nil }
        #expect(!bursts.isEmpty && feed.count < 100, "\(feed.count) feed items, \(bursts.count) counting")
        #expect(bursts.allSatisfy { $0.str("detail").contains("more in 1 s on 127.0.0.1:\(port) tt-flood") }, "\(bursts.prefix(2))")
        // Every anomaly is in the feed once (it keeps 200 items: the flood fits), and ss bounds them.
        #expect(total >= timeWaits - timeWaits / 100 && total <= n, "feed counts \(total), ss \(timeWaits)")
        print("FEED-FIGURES ss \(timeWaits); feed \(feed.count) items, \(bursts.count) counting, \(total) in all")
    }

    /// `--csv -T iso` live: Python's csv module reads every line back with all
    /// its fields, each time is an RFC 3339 time inside the run, and the three
    /// connections' transitions are there.
    @Test func liveCSVWithDatesReadsBack() throws {
        let ns = try NetworkNamespace(prefix: "ttcs")
        let started = Date()
        let r = try Self.trace(ns, ["--csv", "-T", "iso"])
        let ended = Date()
        let file = try EventLogTests.PrivateDirectory()
        try r.stdout.write(toFile: file.path + "/t.csv", atomically: false, encoding: .utf8)
        let json = try run(["python3", "-c", "import csv, json, sys\nr = list(csv.reader(open(sys.argv[1])))\nprint(json.dumps(r))", file.path + "/t.csv"]).stdout
        let rows = try JSONDecoder().decode([[String]].self, from: Data(json.utf8))
        #expect(rows.first == ["time", "event", "pid", "comm", "unit", "laddr", "lport", "raddr", "rport", "old", "new", "ms", "step"], "\(rows.first ?? [])")
        #expect(rows.dropFirst().allSatisfy { $0.count == 13 }, "\(r.stdout.prefix(800))")
        let iso = ISO8601DateFormatter()
        iso.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for row in rows.dropFirst() {
            let t = iso.date(from: row[0])
            #expect(t.map { $0 >= started.addingTimeInterval(-1) && $0 <= ended.addingTimeInterval(1) } == true, "\(row)")
        }
        let established = rows.filter { $0[1] == "transition" && $0[10] == "ESTABLISHED" }
        #expect(established.count == 6, "both ends of 3 connections: \(established)")
    }

    @Test func snapshotFlagsThatDisagreeAreAUsageError() throws {
        let r = try run([Products.tcptrail, "trace", "--no-snapshot", "--snapshot", "full"], check: false)
        #expect(r.status == 64, "status \(r.status): \(r.stderr)")
        #expect(r.stderr.contains("--no-snapshot and --snapshot full disagree"), "\(r.stderr)")
        for (args, words) in [(["--csv", "--tsv"], "--csv and --tsv are two formats"), (["--columns", "time,bogus"], "'bogus' is not a column"),
                              (["--csv", "--json"], "--json writes JSON Lines"), (["-T", "mars"], "mars"), (["--anomaly-lines", "-1"], "--anomaly-lines")] {
            let bad = try run([Products.tcptrail, "trace"] + args, check: false)
            #expect(bad.status == 64 && bad.stderr.contains(words), "\(args): \(bad.status) \(bad.stderr)")
        }
    }
}
