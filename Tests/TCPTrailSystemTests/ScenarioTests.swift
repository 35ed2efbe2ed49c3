import Foundation
import Testing

/// Issue 3's scenarios: real processes in two namespaces joined by veth,
/// tcpdump on the wire as the truth, tcptrail's steps and anomalies checked
/// against it.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct HandshakeScenarioTests {
    struct Outcome {
        var records: [[String: Any]]
        var packets: [Capture.Packet]
        var net: VethPair
        var port: UInt16
        var clientAddress: String
        var serverAddress: String

        func transitions(client: Bool) -> [[String: Any]] {
            records.filter { $0.str("type") == "transition" && ($0.int("rport") == Int(port)) == client && !($0.str("step") == "listen" || $0.str("step") == "unlisten") }
        }
        func steps(client: Bool) -> [String] { transitions(client: client).map { $0.str("step") } }
        func anomalies(_ name: String) -> [[String: Any]] { records.filter { $0.str("type") == "anomaly" && $0.str("anomaly") == name } }
        var anomalyNames: [String] { records.filter { $0.str("type") == "anomaly" }.map { $0.str("anomaly") } }
        /// The wire address.port of a side, as tcpdump prints it.
        func wire(client: Bool, port p: Int) -> String { "\(client ? clientAddress : serverAddress).\(p)" }
    }

    /// Runs a server and a client with the given tt-peer flags under tcpdump and tcptrail.
    func scenario(v6: Bool = false, server: [String]?, client: [String], trace: [String] = [],
                  setup: (VethPair, UInt16) throws -> Void = { _, _ in }) throws -> Outcome {
        let net = try VethPair()
        let port = Unique.port()
        try setup(net, port)
        let serverAddress = v6 ? net.serverV6 : net.serverV4
        let clientAddress = v6 ? net.clientV6 : net.clientV4
        let capture = try Capture(net.server, interface: net.serverLink, port: port)
        let tracer = try Tracer(["--port", "\(port)"] + trace)
        var serverPeer: Peer?
        if let server {
            serverPeer = try Peer(net.server, ["server", serverAddress, "\(port)", "1", "--name", "tt-server"] + server)
            try serverPeer?.background.waitFor("listening")
        }
        let clientPeer = try Peer(net.client, ["client", serverAddress, "\(port)", "1", "--name", "tt-client"] + client)
        _ = try clientPeer.background.wait(timeout: 60)
        if let serverPeer { _ = try serverPeer.background.wait(timeout: 60) }
        usleep(300_000)
        let packets = try capture.stop()
        let (records, status, _) = try tracer.stop()
        #expect(status == 0)
        return Outcome(records: records, packets: packets, net: net, port: port, clientAddress: clientAddress, serverAddress: serverAddress)
    }

    @Test(arguments: [false, true])
    func clientClosesFirst(v6: Bool) throws {
        let o = try scenario(v6: v6, server: [], client: ["--half-close", "--hold", "0.3"])
        // Truth: the first FIN on the wire is the client's.
        let firstFin = try #require(o.packets.first(with: "F"))
        #expect(firstFin.source.hasPrefix(o.clientAddress + "."))
        #expect(o.packets.first(with: "R") == nil)
        #expect(o.steps(client: true) == ["syn_sent", "established", "fin_sent", "fin_acked", "time_wait"])
        #expect(o.steps(client: false) == ["syn_received", "established", "fin_received", "fin_sent", "fin_acked"])
        #expect(o.transitions(client: true).last?.str("to") == "TIME_WAIT")
        #expect(o.anomalies("syn_retransmit").count == o.packets.count(with: "S") - 1)
        #expect(o.anomalyNames.allSatisfy { $0 == "syn_retransmit" }, "\(o.anomalyNames)")
        // The documents' 3-way open: SYN from the client, SYN-ACK from the server.
        #expect(o.packets.first?.flags == "S" && o.packets.first?.source.hasPrefix(o.clientAddress + ".") == true)
        #expect(o.packets.contains { $0.flags == "S." && $0.source == o.wire(client: false, port: Int(o.port)) })
    }

    @Test func serverClosesFirst() throws {
        let o = try scenario(server: ["--close-first", "--half-close", "--hold", "0.3"], client: ["--close-first"])
        let firstFin = try #require(o.packets.first(with: "F"))
        #expect(firstFin.source == o.wire(client: false, port: Int(o.port)))
        #expect(o.steps(client: false) == ["syn_received", "established", "fin_sent", "fin_acked", "time_wait"])
        #expect(o.steps(client: true) == ["syn_sent", "established", "fin_received", "fin_sent", "fin_acked"])
        #expect(o.anomalyNames == ["server_time_wait"])
        #expect(o.anomalies("server_time_wait").first?.str("comm") == "tt-server")
    }

    @Test func connectToClosedPort() throws {
        let o = try scenario(server: nil, client: [])
        // Truth: SYN out, RST back from the server's address.
        #expect(o.packets.first?.flags == "S")
        let rst = try #require(o.packets.first(with: "R"))
        #expect(rst.source == o.wire(client: false, port: Int(o.port)))
        #expect(o.steps(client: true) == ["syn_sent", "reset"])
        #expect(o.anomalyNames == ["connection_refused"])
        #expect(o.records.contains { $0.str("type") == "error" && $0.str("error") == "ECONNREFUSED" })
    }

    @Test func synDroppedUntilTheHandshakeTimesOut() throws {
        let o = try scenario(server: nil, client: []) { net, port in
            try run(net.client.command(["sysctl", "-q", "-w", "net.ipv4.tcp_syn_retries=2"]))
            try run(net.server.command(["nft", "add table inet tt; add chain inet tt in { type filter hook input priority 0; }; add rule inet tt in tcp dport \(port) drop"]))
        }
        // Linux retries SYNs linearly first (tcp_syn_linear_timeouts), so take the
        // count from the wire, not from tcp_syn_retries.
        let syns = o.packets.count(with: "S")
        #expect(syns >= 3, "capture: \(o.packets.map(\.flags))")
        #expect(o.packets.first(with: "R") == nil)
        let retransmits = o.anomalies("syn_retransmit")
        #expect(retransmits.count == syns - 1)
        #expect(retransmits.map { $0.int("count") } == Array(1...max(1, syns - 1)))
        #expect(o.anomalies("handshake_timeout").count == 1)
        #expect(o.steps(client: true) == ["syn_sent", "aborted"])
        #expect(o.transitions(client: true).last?.str("reason") == "ETIMEDOUT")
    }

    @Test func lingerZeroAbort() throws {
        let o = try scenario(server: ["--hold", "0.3"], client: ["--linger0"])
        let rst = try #require(o.packets.first(with: "R"))
        #expect(rst.source.hasPrefix(o.clientAddress + "."))
        #expect(o.packets.first(with: "F") == nil, "an abort sends no FIN")
        #expect(o.steps(client: true) == ["syn_sent", "established", "reset"])
        #expect(o.steps(client: false) == ["syn_received", "established", "reset"])
        let sent = o.anomalies("reset_sent"), received = o.anomalies("reset_received")
        #expect(sent.count == 1 && sent.first?.int("rport") == Int(o.port))
        #expect(received.count == 1 && received.first?.int("lport") == Int(o.port))
    }

    @Test func peerClosesAndApplicationDoesNot() throws {
        // The client closes its side and keeps the socket; the server never closes
        // for 2.5 s: CLOSE_WAIT stalls on the server, FIN_WAIT_2 on the client.
        let o = try scenario(server: ["--hold", "2.5"], client: ["--half-close", "--no-drain", "--hold", "2.5"],
                             trace: ["--close-wait-threshold", "1", "--fin-wait-2-threshold", "1"])
        let fins = o.packets.filter { $0.flags.contains("F") }
        #expect(fins.first?.source.hasPrefix(o.clientAddress + ".") == true)
        #expect(o.anomalies("close_wait_stall").count == 1)
        #expect(o.anomalies("close_wait_stall").first?.str("comm") == "tt-server")
        let clientLife = o.transitions(client: true).map { "\($0.str("from"))->\($0.str("to")) \($0.str("reason")) @\($0.int("mono_ns"))" }
        #expect(o.anomalies("fin_wait_2_stall").count == 1, "the client's transitions: \(clientLife)")
        #expect(o.anomalies("fin_wait_2_stall").first?.str("comm") == "tt-client")
    }
}


extension HandshakeScenarioTests {
    /// ss's state names for the documented ones.
    static let ssStates = ["ESTAB": "ESTABLISHED", "TIME-WAIT": "TIME_WAIT", "LISTEN": "LISTEN", "CLOSE-WAIT": "CLOSE_WAIT",
                           "FIN-WAIT-2": "FIN_WAIT_2", "FIN-WAIT-1": "FIN_WAIT_1", "LAST-ACK": "LAST_ACK", "SYN-SENT": "SYN_SENT"]

    @Test func snapshotOfConnectionsOpenBeforeTheTrace() throws {
        let net = try VethPair()
        let p1 = Unique.port(), p2 = Unique.port()
        // A connection already closed by the client (TIME_WAIT), and one held open.
        let s1 = try Peer(net.server, ["server", net.serverV4, "\(p1)", "1"])
        try s1.background.waitFor("listening")
        _ = try Peer(net.client, ["client", net.serverV4, "\(p1)", "1", "--half-close", "--hold", "0.2"]).background.wait()
        _ = try s1.background.wait()
        let s2 = try Peer(net.server, ["server", net.serverV4, "\(p2)", "1", "--name", "tt-server", "--close-first", "--hold", Timing.hold(2)])
        try s2.background.waitFor("listening")
        let c2 = try Peer(net.client, ["client", net.serverV4, "\(p2)", "1", "--name", "tt-client", "--close-first"])
        try c2.background.waitFor("conn ")
        try s2.background.waitFor("conn ")

        // Truth: ss in each namespace, just before the trace starts.
        var truth: [(state: String, local: String, peer: String)] = []
        for ns in [net.client, net.server] {
            for line in try run(ns.command(["ss", "-tanH"])).stdout.split(separator: "\n") {
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                guard f.count >= 5, let state = Self.ssStates[String(f[0])] else { continue }
                let local = String(f[3]), peer = f[4].hasSuffix(":*") ? f[4].dropLast() + "0" : String(f[4])
                if [p1, p2].contains(where: { local.hasSuffix(":\($0)") || peer.hasSuffix(":\($0)") }) {
                    truth.append((state, local, peer))
                }
            }
        }
        #expect(truth.contains { $0.state == "TIME_WAIT" } && truth.filter { $0.state == "ESTABLISHED" }.count == 2, "ss: \(truth)")

        let tracer = try Tracer(["--port", "\(p1)", "--port", "\(p2)"])
        _ = try s2.background.wait()
        _ = try c2.background.wait()
        usleep(300_000)
        let (records, _, _) = try tracer.stop()
        let snapshots = records.filter { $0.str("type") == "snapshot" }
        for t in truth {
            #expect(snapshots.contains { "\($0.str("laddr")):\($0.int("lport"))" == t.local && "\($0.str("raddr")):\($0.int("rport"))" == t.peer && $0.str("state") == t.state },
                    "ss shows \(t) but tcptrail's snapshot does not")
        }
        #expect(snapshots.count == truth.count, "snapshots: \(snapshots.map { "\($0.str("state")) \($0.str("laddr")):\($0.int("lport"))" })")

        // The held connection goes on under the same ids, with its owners.
        let serverSnap = try #require(snapshots.first { $0.int("lport") == Int(p2) && $0.str("state") == "ESTABLISHED" })
        let clientSnap = try #require(snapshots.first { $0.int("rport") == Int(p2) && $0.str("state") == "ESTABLISHED" })
        #expect(serverSnap.int("pid") == (try s2.pid) && serverSnap.str("comm") == "tt-server")
        #expect(clientSnap.int("pid") == (try c2.pid) && clientSnap.str("comm") == "tt-client")
        let serverSteps = records.filter { $0.str("type") == "transition" && $0.str("conn") == serverSnap.str("conn") }
        let clientSteps = records.filter { $0.str("type") == "transition" && $0.str("conn") == clientSnap.str("conn") }
        #expect(serverSteps.first?.str("step") == "fin_sent")
        #expect(clientSteps.map { $0.str("step") } == ["fin_received", "fin_sent", "fin_acked"])
        // Softirq transitions of a socket older than the trace still carry its owner.
        #expect(clientSteps.allSatisfy { $0.int("pid") == (try? c2.pid) && $0.str("comm") == "tt-client" })
        #expect(serverSteps.allSatisfy { $0.str("comm") == "tt-server" })
    }
}

extension HandshakeScenarioTests {
    @Test func listenerThatNeverAccepts() throws {
        let net = try VethPair()
        let port = Unique.port()
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "1", "--name", "tt-server", "--backlog", "1", "--no-accept",
                                           "--hold", Timing.hold(4)])
        try server.background.waitFor("listening")
        let before = try net.server.nstat(["TcpExtListenOverflows"])["TcpExtListenOverflows"] ?? 0
        let tracer = try Tracer(["--port", "\(port)"])
        var clients: [Peer] = []
        for _ in 0..<8 {
            clients.append(try Peer(net.client, ["client", net.serverV4, "\(port)", "1", "--half-close", "--no-drain", "--hold", "3"]))
        }
        _ = try server.background.wait(timeout: 30 * Timing.scale)
        let after = try net.server.nstat(["TcpExtListenOverflows"])["TcpExtListenOverflows"] ?? 0
        let (records, _, _) = try tracer.stop()
        let overflows = after - before
        let anomalies = records.filter { $0.str("anomaly") == "listen_overflow" }
        #expect(overflows > 0, "the kernel counted no listen overflow; the scenario proves nothing")
        #expect(anomalies.map { $0.int("count") }.reduce(0, +) == overflows, "tcptrail reported \(anomalies.map { $0.int("count") }), the kernel counted \(overflows)")
        #expect(anomalies.allSatisfy { $0.int("lport") == Int(port) && $0.str("laddr") == net.serverV4 && $0.str("comm") == "tt-server" && $0.str("severity") == "critical" })
    }
}
