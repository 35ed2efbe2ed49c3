import Foundation
import Testing

/// Issue 15, part 4: listen overflows in a namespace made after the trace
/// started, by a listener that lives 3 s: nstat's TcpExtListenOverflows in
/// that namespace is the truth, and tcptrail's listen_overflow counts sum to it.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct ListenOverflowTests {
    @Test(arguments: [0, 1])
    func overflowsInANamespaceMadeDuringTheTraceAreAllCounted(backlog: Int) throws {
        let port = Unique.port()
        let tracer = try Tracer(["--port", "\(port)"])
        // Made now, after the tracer's start and its /proc walk.
        let net = try VethPair()
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "1", "--name", "tt-server", "--backlog", "\(backlog)",
                                           "--no-accept", "--hold", Timing.hold(3)])
        try server.background.waitFor("listening")
        var clients: [Peer] = []
        for _ in 0..<8 {
            clients.append(try Peer(net.client, ["client", net.serverV4, "\(port)", "1", "--half-close", "--no-drain", "--hold", "2"]))
        }
        // (3 s here; scaled where starting the clients takes seconds, as in the emulated guest.)
        _ = try server.background.wait(timeout: 30 * Timing.scale)
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
    }
}
