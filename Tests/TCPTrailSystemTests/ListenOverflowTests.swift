import Foundation
import Testing

/// Issue 15, part 4: listen overflows in a namespace made after the trace
/// started, by a listener that lives 3 s: nstat's TcpExtListenOverflows in
/// that namespace is the truth, and tcptrail's listen_overflow counts sum to it.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct ListenOverflowTests {
    /// Opens N non-blocking connects at once, says "sent", holds them S seconds.
    static let connects = """
import socket, sys, time
addr, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
socks = []
for _ in range(n):
    s = socket.socket(); s.setblocking(False); s.connect_ex((addr, port)); socks.append(s)
print("sent", flush=True)
time.sleep(hold)
"""

    @Test(arguments: [0, 1])
    func overflowsInANamespaceMadeDuringTheTraceAreAllCounted(backlog: Int) throws {
        let port = Unique.port()
        let tracer = try Tracer(["--port", "\(port)"])
        // Made now, after the tracer's start and its /proc walk.
        let net = try VethPair()
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "1", "--name", "tt-server", "--backlog", "\(backlog)",
                                           "--no-accept", "--hold", "600"])
        try server.background.waitFor("listening")
        // Eight connects at once from one process (starting eight processes
        // takes seconds in the emulated guest); their SYN retransmissions
        // overflow the queue again while the listener lives.
        let clients = try Background(net.client.command(["python3", "-c", Self.connects, net.serverV4, "\(port)", "8", "5"]))
        try clients.waitFor("sent")
        // The listener lives 3 s from the clients' first SYNs, then its process is killed.
        usleep(3_000_000)
        server.background.signal(SIGKILL)
        _ = try? server.background.wait(timeout: 30)
        // The listener is gone; the monitor's next check (once a second) still counts it.
        usleep(2_500_000)
        let overflows = try net.server.nstat(["TcpExtListenOverflows"])["TcpExtListenOverflows"] ?? 0
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")
        #expect(overflows > 0, "the kernel counted no listen overflow; the scenario proves nothing")
        let anomalies = records.filter { $0.str("anomaly") == "listen_overflow" }
        #expect(anomalies.map { $0.int("count") }.reduce(0, +) == overflows,
                "tcptrail reported \(anomalies.map { $0.int("count") }), nstat counted \(overflows)")
        #expect(anomalies.allSatisfy { $0.int("lport") == Int(port) && $0.str("comm") == "tt-server" && $0.str("severity") == "critical" },
                "\(anomalies)")
        print("OVERFLOW-FIGURES backlog \(backlog): nstat TcpExtListenOverflows \(overflows), tcptrail listen_overflow counts \(anomalies.map { $0.int("count") }) = \(anomalies.map { $0.int("count") }.reduce(0, +))")
    }
}
