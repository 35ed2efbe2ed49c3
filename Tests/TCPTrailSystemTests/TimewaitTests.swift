import Foundation
import Testing

/// Issue 15, part 1: a connection the application closed lives on in the
/// kernel's timewait socket (FIN_WAIT_2, then TIME_WAIT); tcptrail follows it
/// there, and `ss` in each namespace, sampled while it happens, is the truth.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct TimewaitTests {
    /// CLOCK_MONOTONIC, the clock of the records' `mono_ns`.
    static func monoNow() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    /// `ss`'s state of the socket from `local` to `remote` port in a namespace
    /// ("FIN_WAIT_2" for ss's FIN-WAIT-2), or nil if it has none.
    static func ssState(_ ns: NetworkNamespace, local: Int, remote: Int) throws -> String? {
        let out = try run(ns.command(["ss", "-tanH", "state", "all"])).stdout
        for line in out.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 5, f[3].hasSuffix(":\(local)"), f[4].hasSuffix(":\(remote)") else { continue }
            return documented(String(f[0]))
        }
        return nil
    }

    /// ss's state names in the documents' words.
    static func documented(_ ss: String) -> String {
        switch ss {
        case "ESTAB": "ESTABLISHED"
        case "SYN-RECV": "SYN_RECEIVED"
        default: ss.replacingOccurrences(of: "-", with: "_")
        }
    }

    /// One `ss` look at a socket, with the monotonic time just before and
    /// after it (`ip netns exec ss` takes a second or two in the emulated guest).
    struct Sample {
        var state: String?
        var before: UInt64
        var after: UInt64

        init(_ ns: NetworkNamespace, local: Int, remote: Int) throws {
            before = TimewaitTests.monoNow()
            state = try TimewaitTests.ssState(ns, local: local, remote: remote)
            after = TimewaitTests.monoNow()
        }

        /// tcptrail's state of `conn` across the look, if it held throughout.
        func tcptrail(_ conn: String, _ records: [[String: Any]]) -> String? {
            let a = TimewaitTests.state(of: conn, at: before, in: records), b = TimewaitTests.state(of: conn, at: after, in: records)
            return a == b ? a : "\(a ?? "none") then \(b ?? "none")"
        }
    }

    /// tcptrail's documented state of `conn` at `mono`, from its records
    /// (nil before its first change; CLOSED after its last).
    static func state(of conn: String, at mono: UInt64, in records: [[String: Any]]) -> String? {
        records.filter { $0.str("type") == "transition" && $0.str("conn") == conn && $0["to"] != nil && UInt64($0.int("mono_ns")) <= mono }
            .max { $0.int("mono_ns") < $1.int("mono_ns") }?.str("to")
    }

    /// The port a tt-peer's connection has on its side ("conn LADDR LPORT RADDR RPORT").
    static func localPort(_ peer: Peer) -> Int? {
        peer.background.stdout.split(separator: "\n").first { $0.hasPrefix("conn ") }
            .flatMap { line in let f = line.split(separator: " "); return f.count > 2 ? Int(f[2]) : nil }
    }

    static func conn(_ records: [[String: Any]], step: String, port: UInt16, local: Bool) -> String? {
        records.first { $0.str("type") == "transition" && $0.str("step") == step && $0.int(local ? "lport" : "rport") == Int(port) }?.str("conn")
    }

    /// The server closes an idle connection; the client closes 4 s later.
    /// The server's side: FIN_WAIT_2 in a timewait socket while the client
    /// holds, TIME_WAIT after, CLOSED when 2MSL runs out, each as ss shows it.
    @Test func aServerThatClosesAnIdleConnectionHoldsFinWait2ThenTimeWait() throws {
        let net = try VethPair()
        let port = Unique.port()
        let tracer = try Tracer(["--port", "\(port)", "--fin-wait-2-threshold", "1", "--close-wait-threshold", "1"])
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "1", "--name", "tt-server", "--close-first", "--hold", "0.3"])
        try server.background.waitFor("listening")
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "1", "--name", "tt-client", "--close-first", "--hold", "8"])
        try client.background.waitFor("conn ")
        let clientPort = try #require(Self.localPort(client))
        usleep(2_000_000)
        let server1 = try Sample(net.server, local: Int(port), remote: clientPort)
        let client1 = try Sample(net.client, local: clientPort, remote: Int(port))
        _ = try client.background.wait(timeout: 60)
        _ = try server.background.wait(timeout: 60)
        usleep(500_000)
        let server2 = try Sample(net.server, local: Int(port), remote: clientPort)
        // 2MSL is 60 s from the client's FIN.
        var server3 = server2
        for _ in 0..<140 where server3.state != nil {
            usleep(500_000)
            server3 = try Sample(net.server, local: Int(port), remote: clientPort)
        }
        usleep(300_000)
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")

        #expect(server1.state == "FIN_WAIT_2" && client1.state == "CLOSE_WAIT", "ss: server \(server1.state ?? "none"), client \(client1.state ?? "none")")
        #expect(server2.state == "TIME_WAIT", "ss later: \(server2.state ?? "none")")
        #expect(server3.state == nil, "ss still shows \(server3.state ?? "")")
        let serverConn = try #require(Self.conn(records, step: "syn_received", port: port, local: true))
        let clientConn = try #require(Self.conn(records, step: "syn_sent", port: port, local: false))
        #expect(server1.tcptrail(serverConn, records) == server1.state)
        #expect(client1.tcptrail(clientConn, records) == client1.state)
        #expect(server2.tcptrail(serverConn, records) == server2.state)
        // ss found no socket during its look: tcptrail has it CLOSED by the look's end.
        #expect(Self.state(of: serverConn, at: server3.after, in: records) == "CLOSED")

        let serverChanges = records.filter { $0.str("conn") == serverConn && $0.str("type") == "transition" && $0["to"] != nil }
        #expect(serverChanges.map { $0.str("step") } == ["syn_received", "established", "fin_sent", "fin_acked", "time_wait", "closed"])
        let handoff = records.filter { $0.str("conn") == serverConn && $0.str("timewait") == "handoff" }
        #expect(handoff.count == 1 && handoff.first?["to"] == nil, "the full socket's FIN_WAIT2 -> CLOSE is a handoff, not a change")
        let timeWait = try #require(serverChanges.first { $0.str("to") == "TIME_WAIT" })
        #expect(timeWait["inferred"] as? Bool == false && timeWait.str("timewait") == "time_wait", "\(timeWait)")
        let end = try #require(serverChanges.last)
        #expect(end.str("reason") == "2msl_expired" && end["inferred"] as? Bool == false && end.str("timewait") == "expired", "\(end)")
        let lived = UInt64(end.int("mono_ns") - timeWait.int("mono_ns"))
        // TCP_TIMEWAIT_LEN is 60 s; the timer wheel fires a 60 s timer up to
        // one level-4 bucket late (4096 jiffies: 4.1 s at HZ=1000).
        #expect(lived >= 59_000_000_000 && lived <= 65_000_000_000, "TIME_WAIT lasted \(lived) ns")
        #expect(end.str("comm") == "tt-server", "the timewait socket's records keep the owner")

        func anomalies(_ name: String, _ conn: String) -> Int {
            records.filter { $0.str("type") == "anomaly" && $0.str("anomaly") == name && $0.str("conn") == conn }.count
        }
        #expect(anomalies("fin_wait_2_stall", serverConn) == 1)
        #expect(anomalies("server_time_wait", serverConn) == 1)
        #expect(anomalies("close_wait_stall", clientConn) == 1)
        print("TIMEWAIT-FIGURES ss: server \(server1.state ?? "-") (client \(client1.state ?? "-")), then \(server2.state ?? "-"), then gone; tcptrail: \(serverChanges.map { $0.str("to") }.joined(separator: " > ")); TIME_WAIT \(Double(lived) / 1e9) s (\(end.str("reason"))); fin_wait_2_stall \(anomalies("fin_wait_2_stall", serverConn)), server_time_wait \(anomalies("server_time_wait", serverConn)), close_wait_stall \(anomalies("close_wait_stall", clientConn))")
    }

    /// tcp_fin_timeout lowered in the server's namespace: the orphan's
    /// FIN_WAIT_2 ends by the kernel's timer, with no TIME_WAIT.
    @Test func theFinWait2TimeoutEndsAnOrphanWithoutTimeWait() throws {
        let net = try VethPair()
        try run(net.server.command(["sysctl", "-q", "-w", "net.ipv4.tcp_fin_timeout=5"]))
        let port = Unique.port()
        let tracer = try Tracer(["--port", "\(port)"])
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "1", "--name", "tt-server", "--close-first", "--hold", "0.3"])
        try server.background.waitFor("listening")
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "1", "--name", "tt-client", "--close-first", "--hold", "12"])
        try client.background.waitFor("conn ")
        let clientPort = try #require(Self.localPort(client))
        _ = try server.background.wait(timeout: 60)
        usleep(500_000)
        let at1 = try Sample(net.server, local: Int(port), remote: clientPort)
        usleep(UInt32(max(0, 7_000_000 - Int((at1.after - at1.before) / 1000))))
        let at2 = try Sample(net.server, local: Int(port), remote: clientPort)
        _ = try client.background.wait(timeout: 60)
        usleep(300_000)
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")

        #expect(at1.state == "FIN_WAIT_2" && at2.state == nil, "ss: \(at1.state ?? "none") then \(at2.state ?? "none")")
        let serverConn = try #require(Self.conn(records, step: "syn_received", port: port, local: true))
        #expect(at1.tcptrail(serverConn, records) == "FIN_WAIT_2")
        #expect(Self.state(of: serverConn, at: at2.after, in: records) == "CLOSED")
        let changes = records.filter { $0.str("conn") == serverConn && $0.str("type") == "transition" && $0["to"] != nil }
        #expect(!changes.contains { $0.str("to") == "TIME_WAIT" })
        let end = try #require(changes.last)
        #expect(end.str("from") == "FIN_WAIT_2" && end.str("to") == "CLOSED" && end.str("reason") == "fin_wait_2_timeout" && end["inferred"] as? Bool == false, "\(end)")
        // The kernel's tcp_fin_time(): at least tcp_fin_timeout after the FIN was acked.
        let acked = try #require(changes.first { $0.str("step") == "fin_acked" })
        let waited = UInt64(end.int("mono_ns") - acked.int("mono_ns"))
        #expect(waited >= 4_900_000_000 && waited <= 7_000_000_000, "FIN_WAIT_2 lasted \(waited) ns")
        print("FINTIMEOUT-FIGURES tcp_fin_timeout=5; ss: \(at1.state ?? "-") then \(at2.state ?? "none"); tcptrail: FIN_WAIT_2 \(Double(waited) / 1e9) s, then \(end.str("to")) (\(end.str("reason"))), TIME_WAIT records \(changes.filter { $0.str("to") == "TIME_WAIT" }.count)")
    }
}
