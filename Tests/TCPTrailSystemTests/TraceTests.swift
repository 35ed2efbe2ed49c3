import Foundation
import Testing

/// CI sets TCPTRAIL_REQUIRE_PRIVILEGED=1: there a privileged test that
/// would skip is a failure instead.
@Test func privilegedTestsCanRunWhereRequired() {
    if Privileged.required {
        #expect(Privileged.available, "privileged tests are required here but cannot run: \(Privileged.reason)")
    }
}

@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct TraceTests {
    // Test 2: loopback, exact transitions per socket, no loss, nstat agrees.
    @Test func loopbackGivesExactTransitionsPerSocket() throws {
        let ns = try NetworkNamespace(prefix: "ttlo")
        let port = Unique.port()
        let n = 40
        let before = try ns.nstat(["TcpActiveOpens", "TcpPassiveOpens"])
        let tracer = try Tracer(["--port", "\(port)", "--netns", "\(try ns.inode)"])
        try Peer.exchange(ns, port: port, n: n)
        usleep(300_000)
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0)
        #expect(stderr.contains("\(records.count) events, 0 lost"), "summary: \(stderr)")
        #expect(!records.contains { $0.str("type") == "lost" })

        let after = try ns.nstat(["TcpActiveOpens", "TcpPassiveOpens"])
        let active = (after["TcpActiveOpens"] ?? 0) - (before["TcpActiveOpens"] ?? 0)
        let passive = (after["TcpPassiveOpens"] ?? 0) - (before["TcpPassiveOpens"] ?? 0)
        #expect(active == n && passive == n, "nstat: \(active) active, \(passive) passive opens")

        let byConn = transitionsByConnection(records)
        let clients = byConn.values.filter { $0.first?.int("rport") == Int(port) }
        let children = byConn.values.filter { $0.first?.int("lport") == Int(port) && $0.first?.str("kernel_from") == "LISTEN" && $0.first?.str("kernel_to") == "SYN_RECV" }
        #expect(clients.count == active, "client sockets traced vs TcpActiveOpens")
        #expect(children.count == passive, "accepted sockets traced vs TcpPassiveOpens")
        for c in clients { #expect(c.map(\.transition) == activeOpenAndClose) }
        // A client that closed before the server's FIN came hands FIN_WAIT_2
        // to a timewait socket, which then takes that FIN; loopback's
        // tcp_tw_reuse=2 lets a later connect() reuse its pair.
        let timewaits = transitionsByConnection(records, timewait: true)
        for (conn, tail) in timewaits {
            #expect(timewaitTails.contains(tail.map(\.transition)), "\(conn): \(tail.map(\.transition))")
            #expect(byConn[conn]?.last?.str("timewait") == "handoff", "\(conn): its timewait socket's events follow a handoff")
        }
        for c in children { #expect(c.map(\.transition) == passiveOpenAndClose) }
        // The listener: CLOSE -> LISTEN -> CLOSE.
        let listener = byConn.values.filter { $0.first?.transition == "CLOSE->LISTEN" }
        #expect(listener.map { $0.map(\.transition) } == [["CLOSE->LISTEN", "LISTEN->CLOSE"]])
        // seq is contiguous from 1.
        #expect(records.map { $0.int("seq") } == Array(1...records.count))
    }

    /// A fresh host mounts neither tracefs nor debugfs. The tracer runs in a
    /// private mount namespace with both unmounted and sees a connection
    /// whole. A listen() without bind() fires CLOSE -> LISTEN before the
    /// kernel picks the port: the program holds it and sends it when listen()
    /// returns (tp_btf/sys_exit), so it comes out, with the port the process
    /// reads from getsockname(), while the listener is still open.
    @Test func tracesWithoutTracefsOrDebugfs() throws {
        let ns = try NetworkNamespace(prefix: "ttnt")
        let port = Unique.port()
        let hide = "for m in /sys/kernel/debug /sys/kernel/tracing; do umount -l $m 2>/dev/null; done; " +
            "if [ -e /sys/kernel/tracing/events ] || [ -e /sys/kernel/debug/tracing/events ]; then echo 'tracefs still mounted' >&2; exit 99; fi; " +
            "exec \"$@\""
        let tracer = try Tracer(["--netns", "\(try ns.inode)"],
                                prefix: ["unshare", "--mount", "--propagation", "private", "sh", "-c", hide, "sh"])
        let autobound = try Background(ns.command(["python3", "-c",
            "import socket, time\ns = socket.socket()\ns.listen()\nprint('port', s.getsockname()[1], flush=True)\ntime.sleep(60)"]))
        try autobound.waitFor("port ")
        let autoPort = Int(autobound.stdout.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? -1
        try tracer.background.waitFor("\"lport\":\(autoPort),", timeout: 10)
        #expect(tracer.background.stdout.contains("\"kernel_to\":\"LISTEN\""))
        autobound.signal(SIGKILL)

        try Peer.exchange(ns, port: port, n: 1)
        usleep(300_000)
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")
        #expect(stderr.contains("\(records.count) events, 0 lost"), "summary: \(stderr)")
        let byConn = transitionsByConnection(records)
        let listeners = byConn.values.filter { $0.first?.transition == "CLOSE->LISTEN" }
        #expect(Set(listeners.compactMap { $0.first?.int("lport") }) == [autoPort, Int(port)])
        #expect(listeners.allSatisfy { $0.map(\.transition) == ["CLOSE->LISTEN", "LISTEN->CLOSE"] })
        let clients = byConn.values.filter { $0.first?.int("rport") == Int(port) }
        #expect(clients.map { $0.map(\.transition) } == [activeOpenAndClose])
        #expect(clients.first?.first?.int("lport") ?? 0 > 0, "CLOSE->SYN_SENT carries its local port")
    }

    // Test 3: two namespaces over veth, separate processes: owners, endpoints.
    @Test(arguments: [4, 6])
    func vethPairReportsOwnersAndEndpoints(family: Int) throws {
        let net = try VethPair()
        let port = Unique.port()
        let serverAddr = family == 4 ? net.serverV4 : net.serverV6
        let clientAddr = family == 4 ? net.clientV4 : net.clientV6
        let tracer = try Tracer(["--port", "\(port)"])
        let server = try Peer(net.server, ["server", serverAddr, "\(port)", "3", "--name", "tt-server"])
        try server.background.waitFor("listening")
        let client = try Peer(net.client, ["client", serverAddr, "\(port)", "3", "--name", "tt-client"])
        #expect(try client.background.wait() == 0)
        #expect(try server.background.wait() == 0)
        usleep(300_000)
        let (records, status, _) = try tracer.stop()
        #expect(status == 0)
        let serverPid = try server.pid, clientPid = try client.pid
        let clientNetns = try net.client.inode, serverNetns = try net.server.inode

        // Truth from the processes themselves: getsockname/getpeername.
        let clientConns = client.connections, serverConns = server.connections
        #expect(clientConns.count == 3 && serverConns.count == 3)
        let byConn = transitionsByConnection(records)
        var clientSeen = 0, childSeen = 0
        for (conn, events) in byConn {
            let first = events[0]
            if first.str("kernel_from") == "CLOSE" && first.str("kernel_to") == "LISTEN" { continue }
            let isClient = first.int("rport") == Int(port)
            if isClient { clientSeen += 1 } else { childSeen += 1 }
            #expect(events.map(\.transition) == (isClient ? activeOpenAndClose : passiveOpenAndClose), "conn \(conn)")
            for e in events {
                #expect(e.int("family") == family)
                #expect(e.int("pid") == (isClient ? clientPid : serverPid), "pid on \(e.transition) of \(conn)")
                #expect(e.str("comm") == (isClient ? "tt-client" : "tt-server"), "comm on \(e.transition)")
                #expect(e.int("netns") == Int(isClient ? clientNetns : serverNetns))
                #expect(e.int("lport") > 0 && e.int("rport") > 0, "ports on \(e.transition) of \(conn)")
                #expect(e.str("laddr") == (isClient ? clientAddr : serverAddr), "laddr on \(e.transition)")
                #expect(e.str("raddr") == (isClient ? serverAddr : clientAddr), "raddr on \(e.transition)")
            }
            let tuple = (events[0].str("laddr"), events[0].int("lport"), events[0].str("raddr"), events[0].int("rport"))
            let truth = isClient ? clientConns : serverConns
            #expect(truth.contains { $0 == tuple }, "\(tuple) not among what the process saw: \(truth)")
        }
        #expect(clientSeen == 3 && childSeen == 3)
    }

    // Test 5: what the filters exclude never appears; what they include always does.
    @Test func kernelFiltersKeepExactlyWhatTheyName() throws {
        let ns = try NetworkNamespace(prefix: "ttf")
        let p4 = Unique.port(), p6 = Unique.port()
        let n = 5
        let server4 = try Peer(ns, ["server", "127.0.0.1", "\(p4)", "\(n)", "--name", "tt-srv4"])
        let server6 = try Peer(ns, ["server", "::1", "\(p6)", "\(n)", "--name", "tt-srv6"])
        try server4.background.waitFor("listening")
        try server6.background.waitFor("listening")
        let pid4 = try server4.pid
        let inode = try ns.inode
        let byPort = try Tracer(["--port", "\(p4)"])
        let byRemotePort = try Tracer(["--rport", "\(p4)"])
        let byPid = try Tracer(["--pid", "\(pid4)"])
        let v6InNamespace = try Tracer(["-6", "--netns", "\(inode)"])
        let byAddress = try Tracer(["--addr", "::1/128", "--netns", "\(inode)"])
        #expect(try Peer(ns, ["client", "127.0.0.1", "\(p4)", "\(n)"]).background.wait() == 0)
        #expect(try Peer(ns, ["client", "::1", "\(p6)", "\(n)"]).background.wait() == 0)
        #expect(try server4.background.wait() == 0)
        #expect(try server6.background.wait() == 0)
        usleep(300_000)

        let port = try byPort.stop().records
        #expect(port.allSatisfy { $0.int("lport") == Int(p4) || $0.int("rport") == Int(p4) })
        // sock:inet_sock_set_state's: not those of the clients' timewait sockets.
        #expect(port.filter(\.isSetState).count == 10 * n + 1)  // + the listener's close

        let rport = try byRemotePort.stop().records
        #expect(rport.allSatisfy { $0.int("rport") == Int(p4) })
        #expect(rport.filter(\.isSetState).count == 5 * n)

        let pid = try byPid.stop().records
        #expect(pid.allSatisfy { $0.int("pid") == pid4 && $0.str("comm") == "tt-srv4" })
        #expect(pid.filter { $0.str("type") == "transition" }.count == 5 * n + 1)

        let v6 = try v6InNamespace.stop().records
        #expect(v6.allSatisfy { $0.int("family") == 6 && $0.int("netns") == Int(inode) })
        #expect(v6.filter(\.isSetState).count == 10 * n + 1)

        let addr = try byAddress.stop().records
        #expect(addr.allSatisfy { $0.str("laddr") == "::1" || $0.str("raddr") == "::1" })
        #expect(addr.filter(\.isSetState).count == 10 * n + 1)
    }

    /// A connect to a port nobody listens on is answered by a reset that no
    /// socket sends: `--netns` keeps it for the namespace the segment came
    /// in on (it used to drop it, its namespace unread), and only there.
    /// The refused socket has one error record: ECONNREFUSED.
    @Test func namespaceFilterKeepsResetsSentWithoutASocket() throws {
        let ns = try NetworkNamespace(prefix: "ttrs"), other = try NetworkNamespace(prefix: "ttro")
        let closed = Unique.port()
        let inode = try ns.inode
        let here = try Tracer(["--netns", "\(inode)"])
        let elsewhere = try Tracer(["--netns", "\(try other.inode)"])
        let refused = try run(ns.command(["python3", "-c",
            "import socket\ns = socket.socket()\ntry:\n s.connect(('127.0.0.1', \(closed)))\nexcept ConnectionRefusedError:\n print('refused', s.getsockname()[1])"]))
        let clientPort = Int(refused.stdout.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? -1
        #expect(refused.stdout.hasPrefix("refused"), "the connect was not refused: \(refused.stdout) \(refused.stderr)")
        usleep(300_000)
        let kept = try here.stop().records
        let resets = kept.filter { $0.str("type") == "reset" && $0.str("direction") == "sent" && ($0["no_socket"] as? Bool) == true }
        #expect(resets.count == 1, "socket-less resets in \(kept.count) records: \(resets)")
        if let r = resets.first {
            // The segment's destination is the closed port: the reset's local side.
            #expect(r.int("lport") == Int(closed) && r.int("rport") == clientPort && r.int("netns") == Int(inode), "\(r)")
        }
        // One error, the one connect() returned (ECONNREFUSED, 111): tcp_disconnect()'s
        // later report of sk_err 0 is no error and no record.
        let errors = kept.filter { $0.str("type") == "error" && $0.int("lport") == clientPort }.map { $0.int("errno") }
        #expect(errors == [111], "error records of the refused socket: \(errors)")
        let dropped = try elsewhere.stop().records
        #expect(!dropped.contains { $0.str("type") == "reset" }, "another namespace's filter kept \(dropped)")
    }

    // Test 6: a stopped consumer and a tiny buffer: lost + delivered = tracepoint hits.
    @Test func lossIsCountedExactly() throws {
        let ns = try NetworkNamespace(prefix: "ttl")
        let port = Unique.port()
        let n = 150
        let counter = try Background(bpftrace(
            "tracepoint:sock:inet_sock_set_state /args->protocol == 6 && (args->sport == \(port) || args->dport == \(port))/ { @hits = count(); }"
        ))
        try counter.waitFor("Attaching")
        usleep(500_000)
        // The timewait sockets' transitions are not inet_sock_set_state's: leave them out.
        let tracer = try Tracer(["--port", "\(port)", "--buffer-size", "4096", "--no-timer-hooks"])
        try tracer.paused { try Peer.exchange(ns, port: port, n: n) }
        usleep(300_000)
        let (records, status, stderr) = try tracer.stop()
        counter.signal(SIGINT)
        try counter.wait()
        #expect(status == 0)
        let hitsLine = counter.stdout.split(separator: "\n").first { $0.hasPrefix("@hits:") }
        let hits = try #require(hitsLine.flatMap { Int($0.split(separator: " ").last ?? "") })
        #expect(hits == 10 * n + 2)  // 5 per end per connection, and the listener's two
        // The kernel's transitions (not the changes the socket table settled after the loss).
        let delivered = records.filter { $0.str("type") == "transition" && $0["kernel_from"] != nil }.count
        let lostRecords = records.filter { $0.str("type") == "lost" }
        #expect(!lostRecords.isEmpty)
        let lostTotal = lostRecords.last?.int("total") ?? 0
        #expect(lostRecords.map { $0.int("count") }.reduce(0, +) == lostTotal)
        // Resets can happen too (the listener closes under the last clients): compare transitions.
        let lostTransitions = (lostRecords.last?["total_by_type"] as? [String: Any])?["transition"] as? Int ?? -1
        let lostByType = (lostRecords.last?["total_by_type"] as? [String: Int] ?? [:]).values.reduce(0, +)
        #expect(lostByType == lostTotal, "\(lostRecords.last ?? [:])")
        #expect(delivered + lostTransitions == hits, "delivered \(delivered) + lost \(lostTransitions) transitions vs \(hits) tracepoint hits")
        #expect(stderr.contains("\(lostTotal) lost"))
    }

    // Test 7: reused socket addresses keep distinct connection ids.
    @Test func reusedSocketAddressesKeepDistinctIDs() throws {
        let ns = try NetworkNamespace(prefix: "ttr")
        let port = Unique.port(), closed = Unique.port()
        let n = 60
        let addresses = try Background(bpftrace(
            "tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->dport == \(port) && args->newstate == 2/ { printf(\"sk %p\\n\", args->skaddr); }"
        ))
        try addresses.waitFor("Attaching")
        usleep(500_000)
        let tracer = try Tracer(["--port", "\(port)", "--port", "\(closed)"])
        let server = try Peer(ns, ["server", "127.0.0.1", "\(port)", "\(n + 1)"])
        try server.background.waitFor("listening")
        for _ in 0..<n {
            #expect(try Peer(ns, ["client", "127.0.0.1", "\(port)", "1"]).background.wait() == 0)
        }
        // One socket, two connections: refused, then connected.
        let again = try Peer(ns, ["reconnect", "127.0.0.1", "\(port)", "\(closed)"])
        #expect(try again.background.wait() == 0)
        #expect(try server.background.wait() == 0)
        usleep(300_000)
        let (records, _, _) = try tracer.stop()
        addresses.signal(SIGINT)
        try addresses.wait()

        let skaddrs = addresses.stdout.split(separator: "\n").filter { $0.hasPrefix("sk ") }
        #expect(skaddrs.count == n + 1)
        #expect(Set(skaddrs).count < skaddrs.count, "the kernel reused no socket address; the test proves nothing")
        let synSent = records.filter { $0.transition == "CLOSE->SYN_SENT" && $0.int("rport") == Int(port) }
        #expect(synSent.count == n + 1)
        #expect(Set(synSent.map { $0.str("conn") }).count == synSent.count, "connection ids repeat")

        // The reconnecting socket: same cookie, next generation.
        let refused = try #require(records.first { $0.transition == "CLOSE->SYN_SENT" && $0.int("rport") == Int(closed) })
        let cookie = refused.str("conn")
        #expect(!cookie.contains("."))
        #expect(synSent.contains { $0.str("conn") == cookie + ".1" }, "second connect of one socket should be \(cookie).1")
        #expect(records.contains { $0.str("type") == "error" && $0.str("conn") == cookie && $0.str("error") == "ECONNREFUSED" })
        #expect(records.contains { $0.str("type") == "reset" && $0.str("conn") == cookie && $0.str("direction") == "received" })
    }

    // Test 8: not root gives one line and its own status; bad flags give usage.
    @Test func unprivilegedRunFailsWithOneLine() throws {
        let r = try run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                         Products.tcptrail, "trace"], check: false)
        #expect(r.status == 77)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1, "stderr: \(r.stderr)")
        #expect(r.stderr.contains("root") && r.stderr.contains("sudo"))
        #expect(r.stdout.isEmpty)

        let doctor = try run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                              Products.tcptrail, "doctor"], check: false)
        #expect(doctor.status == 77)
        #expect(doctor.stdout.contains("[fail] privileges"))
    }

    @Test func badFlagsGiveUsageErrors() throws {
        for args in [["trace", "--bogus"], ["trace", "--buffer-size", "1000"], ["trace", "-4", "-6"], ["trace", "--addr", "nonsense"], ["trace", "--pid", "x"]] {
            let r = try run([Products.tcptrail] + args, check: false)
            #expect(r.status == 64, "\(args): status \(r.status)")
            #expect(r.stderr.contains("Error:") && r.stderr.contains("Usage:"), "\(args): \(r.stderr)")
        }
    }

    @Test func verboseShowsLibbpfLog() throws {
        let r = try run([Products.tcptrail, "trace", "--verbose", "--duration", "0.5", "--port", "\(Unique.port())"])
        #expect(r.stderr.contains("libbpf: "), "stderr: \(r.stderr.prefix(500))")
        #expect(r.stderr.contains("tcptrail: 0 events, 0 lost"))
        let quiet = try run([Products.tcptrail, "trace", "--duration", "0.5", "--port", "\(Unique.port())"])
        #expect(!quiet.stderr.contains("libbpf: "))
    }

    /// doctor loads and attaches the real object, and says a feature is
    /// there exactly when bpftool's reading of the kernel's BTF has what it
    /// needs; a missing optional feature warns and still exits 0 (the 6.1
    /// guest of scripts/test-kernels runs this too).
    @Test func doctorAgreesWithTheKernelsBTF() throws {
        let r = try run([Products.tcptrail, "doctor"], check: false)
        #expect(r.status == 0, "\(r.stdout)")
        #expect(r.stdout.contains("[ok]   load and attach"), "\(r.stdout)")
        #expect(r.stdout.contains("[ok]   feature transitions"))
        #expect(!r.stdout.contains("[fail]"))
        let c = try run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"]).stdout
        /// The tracepoint's arguments, ctx excluded, from `typedef void (*btf_trace_X)(void *, ...);`.
        func arguments(_ event: String) -> Int {
            guard let line = c.split(separator: "\n").first(where: { $0.contains("(*btf_trace_\(event))(") }) else { return -1 }
            return line.split(separator: ",").count - 1
        }
        let overflow = c.contains("SKB_DROP_REASON_TCP_LISTEN_OVERFLOW")
        let expected: [(String, Bool)] = [
            ("reset_reason", arguments("tcp_send_reset") >= 3),
            ("listen_drops", overflow && arguments("kfree_skb") >= 3),
            ("listen_drop_socket", overflow && arguments("kfree_skb") >= 4),
            ("syscall_returns", arguments("sys_exit") >= 2),
            ("socket_errors", arguments("inet_sk_error_report") >= 1),
        ]
        for (feature, there) in expected {
            let line = r.stdout.split(separator: "\n").first { $0.contains("feature \(feature) ") } ?? ""
            #expect(line.hasPrefix(there ? "[ok]" : "[warn]"), "\(feature): bpftool says \(there ? "present" : "absent"); doctor: \(line)")
            if !there { #expect(line.contains("unavailable: "), "\(line)") }
        }
    }

    @Test func countAndDurationEndTheRunAndHeadClosesQuietly() throws {
        let start = Date()
        let r = try run([Products.tcptrail, "trace", "--duration", "1", "--port", "\(Unique.port())"])
        #expect(Date().timeIntervalSince(start) < 10)
        #expect(r.stderr.contains("0 events, 0 lost"))
        #expect(r.stdout.hasPrefix("TIME(UTC)"))

        let ns = try NetworkNamespace(prefix: "tth")
        let port = Unique.port()
        let piped = try Background(["sh", "-c", "\(Products.tcptrail) trace --json --port \(port) | head -n 3"])
        usleep(1_500_000)
        let server = try Peer(ns, ["server", "127.0.0.1", "\(port)", "20"])
        try server.background.waitFor("listening")
        _ = try Peer(ns, ["client", "127.0.0.1", "\(port)", "20"]).background.wait()
        // head exits after 3 lines; the next write sees EPIPE and tcptrail ends quietly.
        #expect(try piped.wait(timeout: 20) == 0)
        #expect(piped.stdout.split(separator: "\n").count == 3)
        #expect(!piped.stderr.contains("rror"), "stderr: \(piped.stderr)")
        _ = try server.background.wait()

        let counted = try Tracer(["--port", "\(port)", "--count", "4"])
        let server2 = try Peer(ns, ["server", "127.0.0.1", "\(port)", "5"])
        try server2.background.waitFor("listening")
        _ = try Peer(ns, ["client", "127.0.0.1", "\(port)", "5"]).background.wait()
        #expect(try counted.background.wait(timeout: 20) == 0)
        let (records, _, _) = try counted.stop()
        // --count counts events; the snapshot (the first run's 20 TIME_WAITs in
        // the namespace, read through /run/netns) is not one.
        #expect(records.filter { $0.str("type") != "snapshot" }.count == 4)
    }
}
