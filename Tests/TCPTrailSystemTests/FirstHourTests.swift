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

    @Test func snapshotFlagsThatDisagreeAreAUsageError() throws {
        let r = try run([Products.tcptrail, "trace", "--no-snapshot", "--snapshot", "full"], check: false)
        #expect(r.status == 64, "status \(r.status): \(r.stderr)")
        #expect(r.stderr.contains("--no-snapshot and --snapshot full disagree"), "\(r.stderr)")
    }
}
