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
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "1", "--name", "tt-client", "--close-first", "--hold", "4"])
        try client.background.waitFor("conn ")
        let clientPort = try #require(Self.localPort(client))
        usleep(2_500_000)
        let t1 = Self.monoNow()
        let serverAt1 = try Self.ssState(net.server, local: Int(port), remote: clientPort)
        let clientAt1 = try Self.ssState(net.client, local: clientPort, remote: Int(port))
        _ = try client.background.wait(timeout: 60)
        _ = try server.background.wait(timeout: 60)
        usleep(500_000)
        let t2 = Self.monoNow()
        let serverAt2 = try Self.ssState(net.server, local: Int(port), remote: clientPort)
        // 2MSL is 60 s from the client's FIN.
        var serverAt3: String? = "?"
        var t3: UInt64 = 0
        for _ in 0..<140 {
            usleep(500_000)
            t3 = Self.monoNow()
            serverAt3 = try Self.ssState(net.server, local: Int(port), remote: clientPort)
            if serverAt3 == nil { break }
        }
        usleep(300_000)
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")

        #expect(serverAt1 == "FIN_WAIT_2" && clientAt1 == "CLOSE_WAIT", "ss at t1: server \(serverAt1 ?? "none"), client \(clientAt1 ?? "none")")
        #expect(serverAt2 == "TIME_WAIT", "ss at t2: \(serverAt2 ?? "none")")
        #expect(serverAt3 == nil, "ss still shows \(serverAt3 ?? "")")
        let serverConn = try #require(Self.conn(records, step: "syn_received", port: port, local: true))
        let clientConn = try #require(Self.conn(records, step: "syn_sent", port: port, local: false))
        #expect(Self.state(of: serverConn, at: t1, in: records) == serverAt1)
        #expect(Self.state(of: clientConn, at: t1, in: records) == clientAt1)
        #expect(Self.state(of: serverConn, at: t2, in: records) == serverAt2)
        #expect(Self.state(of: serverConn, at: t3, in: records) == "CLOSED")

        let serverChanges = records.filter { $0.str("conn") == serverConn && $0.str("type") == "transition" && $0["to"] != nil }
        #expect(serverChanges.map { $0.str("step") } == ["syn_received", "established", "fin_sent", "fin_acked", "time_wait", "closed"])
        let handoff = records.filter { $0.str("conn") == serverConn && $0.str("timewait") == "handoff" }
        #expect(handoff.count == 1 && handoff.first?["to"] == nil, "the full socket's FIN_WAIT2 -> CLOSE is a handoff, not a change")
        let timeWait = try #require(serverChanges.first { $0.str("to") == "TIME_WAIT" })
        #expect(timeWait["inferred"] as? Bool == false && timeWait.str("timewait") == "time_wait", "\(timeWait)")
        let end = try #require(serverChanges.last)
        #expect(end.str("reason") == "2msl_expired" && end["inferred"] as? Bool == false && end.str("timewait") == "expired", "\(end)")
        let lived = UInt64(end.int("mono_ns") - timeWait.int("mono_ns"))
        #expect(lived >= 59_000_000_000 && lived <= 62_000_000_000, "TIME_WAIT lasted \(lived) ns")
        #expect(end.str("comm") == "tt-server", "the timewait socket's records keep the owner")

        func anomalies(_ name: String, _ conn: String) -> Int {
            records.filter { $0.str("type") == "anomaly" && $0.str("anomaly") == name && $0.str("conn") == conn }.count
        }
        #expect(anomalies("fin_wait_2_stall", serverConn) == 1)
        #expect(anomalies("server_time_wait", serverConn) == 1)
        #expect(anomalies("close_wait_stall", clientConn) == 1)
    }

    /// tcp_fin_timeout lowered in the server's namespace: the orphan's
    /// FIN_WAIT_2 ends by the kernel's timer, with no TIME_WAIT.
    @Test func theFinWait2TimeoutEndsAnOrphanWithoutTimeWait() throws {
        let net = try VethPair()
        try run(net.server.command(["sysctl", "-q", "-w", "net.ipv4.tcp_fin_timeout=2"]))
        let port = Unique.port()
        let tracer = try Tracer(["--port", "\(port)"])
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "1", "--name", "tt-server", "--close-first", "--hold", "0.3"])
        try server.background.waitFor("listening")
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "1", "--name", "tt-client", "--close-first", "--hold", "6"])
        try client.background.waitFor("conn ")
        let clientPort = try #require(Self.localPort(client))
        _ = try server.background.wait(timeout: 60)
        usleep(1_000_000)
        let t1 = Self.monoNow()
        let at1 = try Self.ssState(net.server, local: Int(port), remote: clientPort)
        usleep(3_000_000)
        let t2 = Self.monoNow()
        let at2 = try Self.ssState(net.server, local: Int(port), remote: clientPort)
        _ = try client.background.wait(timeout: 60)
        usleep(300_000)
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")

        #expect(at1 == "FIN_WAIT_2" && at2 == nil, "ss: \(at1 ?? "none") then \(at2 ?? "none")")
        let serverConn = try #require(Self.conn(records, step: "syn_received", port: port, local: true))
        #expect(Self.state(of: serverConn, at: t1, in: records) == "FIN_WAIT_2")
        #expect(Self.state(of: serverConn, at: t2, in: records) == "CLOSED")
        let changes = records.filter { $0.str("conn") == serverConn && $0.str("type") == "transition" && $0["to"] != nil }
        #expect(!changes.contains { $0.str("to") == "TIME_WAIT" })
        let end = try #require(changes.last)
        #expect(end.str("from") == "FIN_WAIT_2" && end.str("to") == "CLOSED" && end.str("reason") == "fin_wait_2_timeout" && end["inferred"] as? Bool == false, "\(end)")
        // The kernel's tcp_fin_time(): at least tcp_fin_timeout after the FIN was acked.
        let acked = try #require(changes.first { $0.str("step") == "fin_acked" })
        let waited = UInt64(end.int("mono_ns") - acked.int("mono_ns"))
        #expect(waited >= 1_900_000_000 && waited <= 4_000_000_000, "FIN_WAIT_2 lasted \(waited) ns")
    }
}
