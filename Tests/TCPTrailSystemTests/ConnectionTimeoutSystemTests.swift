import Foundation
import Testing

/// Issue 15, part 5: a peer that vanishes after the handshake (nftables
/// drops everything it would receive); the client's data goes unanswered
/// until tcp_retries2 (lowered in its namespace) runs out.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct ConnectionTimeoutSystemTests {
    static let client = """
    import errno, os, socket, sys, time
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
    print("conn", s.getsockname()[1], flush=True)
    while not os.path.exists(sys.argv[3]):  # the test has made the peer vanish
        time.sleep(0.05)
    s.sendall(b"x" * 1000)
    try:
        s.recv(1)
        print("no error", flush=True)
    except OSError as e:
        print("error", errno.errorcode.get(e.errno), flush=True)
    """

    @Test func aPeerThatVanishesTimesOutTheConnection() throws {
        let net = try VethPair()
        try run(net.client.command(["sysctl", "-q", "-w", "net.ipv4.tcp_retries2=3"]))
        let port = Unique.port()
        let capture = try Capture(net.server, interface: net.serverLink, port: port)
        let tracer = try Tracer(["--port", "\(port)"])
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "1", "--name", "tt-server", "--close-first", "--hold", "60"])
        try server.background.waitFor("listening")
        let dir = try EventLogTests.PrivateDirectory()
        let go = dir.path + "/dropped"
        let client = try Background(net.client.command(["python3", "-c", Self.client, net.serverV4, "\(port)", go]))
        try client.waitFor("conn ")
        try run(net.server.command(["nft", "add table inet tttimeout; add chain inet tttimeout in { type filter hook input priority 0; }; add rule inet tttimeout in tcp dport \(port) drop"]))
        #expect(FileManager.default.createFile(atPath: go, contents: nil))
        try client.waitFor("error ", timeout: 60)
        _ = try client.wait(timeout: 10)
        usleep(300_000)
        let packets = try capture.stop()
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")

        // Truth: the client's own errno, and its data segments on the wire.
        #expect(client.stdout.contains("error ETIMEDOUT"), "\(client.stdout)")
        let clientWire = "\(net.clientV4)."
        let dataSegments = packets.filter { $0.source.hasPrefix(clientWire) && $0.flags.contains("P") }.count
        #expect(dataSegments >= 3, "capture: \(packets.map { "\($0.source) \($0.flags)" })")

        let clientSide = records.filter { $0.str("type") == "transition" && $0.int("rport") == Int(port) && $0["step"] != nil }
        #expect(clientSide.map { $0.str("step") } == ["syn_sent", "established", "aborted"])
        #expect(clientSide.last?.str("reason") == "ETIMEDOUT")
        let conn = clientSide.first?.str("conn") ?? ""
        let timeouts = records.filter { $0.str("type") == "anomaly" && $0.str("anomaly") == "connection_timeout" }
        #expect(timeouts.count == 1 && timeouts.first?.str("conn") == conn && timeouts.first?.str("severity") == "critical")
        #expect(timeouts.first?.int("count") == dataSegments - 1, "retransmissions: the wire's data segments but the first")
        #expect(timeouts.first?.str("detail").contains("went unanswered") == true)
        let retransmits = records.filter { $0.str("type") == "retransmit" && $0.str("conn") == conn && $0.str("what") == "data" }
        #expect(retransmits.count == dataSegments - 1)
        print("TIMEOUT-FIGURES client: \(client.stdout.split(separator: "\n").last ?? ""); tcpdump data segments \(dataSegments); tcptrail: \(clientSide.map { $0.str("step") }.joined(separator: " > ")) (\(clientSide.last?.str("reason") ?? "")), retransmits \(retransmits.count), connection_timeout count \(timeouts.first?.int("count") ?? -1): \(timeouts.first?.str("detail") ?? "")")
    }
}
