import Foundation
import Testing

/// Issue 15, dual-stack: an IPv4 client of a listener bound to `::` talks to
/// an AF_INET6 socket with v4-mapped addresses; tcptrail reports that
/// conversation as IPv4 on both sides, so `-4` and `--addr` keep it and `-6`
/// does not. Truth: the peers' own getsockname()/getpeername().
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct DualStackTests {
    @Test func anIPv4ClientOfAListenerOnAnyIsIPv4Everywhere() throws {
        let net = try VethPair()
        let port = Unique.port()
        let inode = try net.server.inode
        let v4 = try Tracer(["-4", "--netns", "\(inode)"], started: false)
        let addr = try Tracer(["--addr", "198.18.0.0/15", "--netns", "\(inode)"], started: false)
        let v6 = try Tracer(["-6", "--netns", "\(inode)"], started: false)
        for t in [v4, addr, v6] { try t.waitUntilTracing() }
        let server = try Peer(net.server, ["server", "::", "\(port)", "1"])
        try server.background.waitFor("listening")
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "1"])
        _ = try client.background.wait(timeout: 30)
        _ = try server.background.wait(timeout: 30)
        // The server's own view: its accepted socket is AF_INET6 with mapped addresses.
        let (sl, slp, sr, srp) = try #require(server.connections.first)
        #expect(sl == "::ffff:\(net.serverV4)" && sr == "::ffff:\(net.clientV4)", "\(server.background.stdout)")
        usleep(500_000)
        for (name, tracer) in [("-4", v4), ("--addr", addr)] {
            let records = try tracer.stop().records.filter { $0["type"] as? String == "transition" }
            let accepted = records.filter { $0["lport"] as? Int == slp && $0["rport"] as? Int == srp }
            let steps = accepted.map { "\($0["kernel_from"] ?? "")>\($0["kernel_to"] ?? "")" }
            #expect(steps.contains("LISTEN>SYN_RECV") && steps.contains("SYN_RECV>ESTABLISHED") && steps.contains { $0.hasSuffix(">CLOSE") },
                    "\(name): the server side's transitions: \(steps)")
            #expect(!accepted.isEmpty && accepted.allSatisfy {
                $0["family"] as? Int == 4 && $0["laddr"] as? String == net.serverV4 && $0["raddr"] as? String == net.clientV4
            }, "\(name): \(accepted.prefix(2))")
        }
        let only6 = try v6.stop().records.filter { $0["type"] as? String == "transition" && $0["lport"] as? Int == slp && $0["rport"] as? Int == srp }
        #expect(only6.isEmpty, "-6 keeps the IPv4 conversation: \(only6.prefix(2))")
    }
}
