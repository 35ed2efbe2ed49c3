import Foundation
import Testing

/// Issue 15, part 2: the owner of an accepted socket is the process that
/// accepted it, from its first record on. nginx from Debian (a master that
/// daemonizes after listen(), two workers, keepalive_timeout 0) serves curl;
/// each worker's own access log (`$pid $remote_port`) is the truth.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct AcceptorTests {
    @Test func nginxWorkersOwnTheSocketsTheyAccept() throws {
        let net = try VethPair()
        let port = Unique.port()
        let dir = try EventLogTests.PrivateDirectory()
        let conf = dir.path + "/nginx.conf"
        try """
        user root;
        worker_processes 2;
        pid \(dir.path)/nginx.pid;
        error_log \(dir.path)/error.log;
        events { worker_connections 64; }
        http {
            log_format t '$pid $remote_port';
            access_log \(dir.path)/access.log t;
            keepalive_timeout 0;
            client_body_temp_path \(dir.path)/body;
            proxy_temp_path \(dir.path)/proxy;
            fastcgi_temp_path \(dir.path)/fastcgi;
            server {
                listen \(net.serverV4):\(port);
                location / { return 200 "ok\\n"; }
            }
        }
        """.write(toFile: conf, atomically: true, encoding: .utf8)
        let tracer = try Tracer(["--port", "\(port)", "--close-wait-threshold", "5"])
        // nginx daemonizes: the process that called listen() exits, the
        // master it forked lives on (its pid file says which).
        let starter = try Background(net.server.command(["nginx", "-c", conf]))
        defer { _ = try? run(net.server.command(["nginx", "-c", conf, "-s", "stop"]), check: false) }
        var pidText = ""
        for _ in 0..<Int(200 * Timing.scale) where pidText.isEmpty {
            pidText = ((try? String(contentsOfFile: dir.path + "/nginx.pid", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
            usleep(50_000)
        }
        let master = try #require(Int(pidText), "nginx wrote no pid file: \(starter.stderr)")
        var workers: [Int] = []
        for _ in 0..<100 where workers.count < 2 {
            workers = try run(["pgrep", "-P", "\(master)"], check: false).stdout.split(separator: "\n").compactMap { Int($0) }
            usleep(50_000)
        }
        #expect(workers.count == 2, "nginx workers: \(workers)")
        let worker = try #require(workers.first)
        let byWorker = try Tracer(["--port", "\(port)", "--pid", "\(worker)"], started: false)
        let byMaster = try Tracer(["--port", "\(port)", "--pid", "\(master)"], started: false)
        try byWorker.waitUntilTracing()
        try byMaster.waitUntilTracing()
        // Which of nginx's sockets held TIME_WAIT (nginx closed first; with
        // keepalive_timeout 0 curl sometimes closes first, or both at once):
        // ss after every request, since a slow run (the emulated guest) can
        // take longer than a TIME_WAIT's 60 s over the twenty.
        func timeWaitPorts() throws -> Set<Int> {
            Set(try run(net.server.command(["ss", "-tanH", "state", "time-wait"])).stdout.split(separator: "\n").compactMap { line -> Int? in
                let f = line.split(separator: " ", omittingEmptySubsequences: true)
                guard f.count >= 4, f[2].hasSuffix(":\(port)") else { return nil }
                return f[3].split(separator: ":").last.flatMap { Int($0) }
            })
        }
        var inTimeWait = Set<Int>()
        for _ in 0..<20 {
            try run(net.client.command(["curl", "-s", "-o", "/dev/null", "--max-time", "10", "http://\(net.serverV4):\(port)/"]))
            inTimeWait.formUnion(try timeWaitPorts())
        }
        usleep(1_500_000)
        inTimeWait.formUnion(try timeWaitPorts())
        let (records, status, stderr) = try tracer.stop()
        let (workerRecords, _, _) = try byWorker.stop()
        let (masterRecords, _, _) = try byMaster.stop()
        #expect(status == 0, "\(stderr)")

        // The workers' own account, in order: which pid served which client
        // port. A port can serve twice: a client's new SYN may take the
        // 4-tuple of nginx's socket in TIME_WAIT (the kernel accepts it and
        // ends that TIME_WAIT; seen in the 6.1 guest), so a request is its
        // port and which use of that port it was.
        struct PortUse: Hashable { var rport: Int; var nth: Int }
        var uses: [Int: Int] = [:]
        let served: [PortUse: Int] = try String(contentsOfFile: dir.path + "/access.log", encoding: .utf8).split(separator: "\n")
            .reduce(into: [:]) { m, line in
                let f = line.split(separator: " ")
                guard f.count == 2, let pid = Int(f[0]), let rport = Int(f[1]) else { return }
                m[PortUse(rport: rport, nth: uses[rport, default: 0])] = pid
                uses[rport, default: 0] += 1
            }
        #expect(served.count == 20, "access log: \(served)")
        #expect(Set(served.values).isSubset(of: Set(workers)))

        /// Accepted sockets' transition records, by connection id.
        func accepted(_ rs: [[String: Any]]) -> [String: [[String: Any]]] {
            rs.filter { $0.str("type") == "transition" && $0.int("lport") == Int(port) && $0.int("rport") != 0 }
                .reduce(into: [:]) { $0[$1.str("conn"), default: []].append($1) }
        }
        // A child the kernel made and dropped before it was established
        // (two ACKs of one request on two CPUs: the loser's child is closed
        // at once; seen once in the 6.1 guest) is a socket of its own, in no
        // access log line; it must have ended, from SYN_RECEIVED.
        let traced = accepted(records)
        let dropped = traced.filter { !$0.value.contains { $0["step"] as? String == "established" } }
        for (conn, rs) in dropped {
            #expect(rs.first?.str("kernel_to") == "SYN_RECV" && rs.last?.str("kernel_to") == "CLOSE",
                    "\(conn) never established and did not end: \(rs.map { "\($0.str("kernel_from"))>\($0.str("kernel_to"))" })")
        }
        let all = traced.filter { dropped[$0.key] == nil }
        // Each traced connection as the access log names it: its port, and the how-many-th on that port by first record.
        var use: [String: PortUse] = [:]
        for (rport, conns) in Dictionary(grouping: all, by: { $0.value.first?.int("rport") ?? -1 }) {
            for (nth, c) in conns.sorted(by: { ($0.value.first?.int("mono_ns") ?? 0) < ($1.value.first?.int("mono_ns") ?? 0) }).enumerated() {
                use[c.key] = PortUse(rport: rport, nth: nth)
            }
        }
        #expect(Set(use.values) == Set(served.keys), "accepted sockets traced vs the access log")
        for (conn, rs) in all {
            let steps = rs.compactMap { $0["step"] as? String }
            let by = use[conn].flatMap { served[$0] }
            #expect(steps.first == "syn_received" && steps.contains("established"), "\(conn): \(steps)")
            #expect(rs.allSatisfy { $0.int("pid") == by && $0["owner_known"] as? Bool == true && $0.str("comm") == "nginx" },
                    "\(conn) (\(use[conn].map { "port \($0.rport), use \($0.nth)" } ?? "?")), served by \(by ?? -1): \(rs.map { "\($0.str("kernel_from"))>\($0.str("kernel_to")) \($0.int("pid"))" })")
        }
        let timeWaits = records.filter { $0.str("anomaly") == "server_time_wait" }
        #expect(!inTimeWait.isEmpty, "ss shows no TIME-WAIT on nginx's side; the scenario proves nothing")
        // One per connection that held TIME_WAIT, on the ports ss saw in TIME-WAIT.
        #expect(Set(timeWaits.map { $0.int("rport") }) == inTimeWait && Set(timeWaits.map { $0.str("conn") }).count == timeWaits.count,
                "server_time_wait for \(timeWaits.map { $0.int("rport") }.sorted()), ss TIME-WAIT \(inTimeWait.sorted())")
        #expect(timeWaits.allSatisfy { t in use[t.str("conn")].flatMap { served[$0] } == t.int("pid") })
        #expect(!records.contains { $0.str("anomaly") == "close_wait_stall" })

        // --pid WORKER: all of that worker's sockets, each from its first record;
        // --pid MASTER: none of them.
        // Its own tracer names connections its own way (a child id where it saw no listener), so
        // they are compared by client port: how many of the worker's connections each port had.
        let mine = served.filter { $0.value == worker }.reduce(into: [Int: Int]()) { $0[$1.key.rport, default: 0] += 1 }
        let seen = accepted(workerRecords).filter { $0.value.contains { $0["step"] as? String == "established" } }
        let seenPorts = seen.values.reduce(into: [Int: Int]()) { $0[$1.first?.int("rport") ?? -1, default: 0] += 1 }
        #expect(seenPorts == mine, "--pid \(worker): \(seenPorts.sorted { $0.key < $1.key }) vs served \(mine.sorted { $0.key < $1.key })")
        #expect(seen.values.allSatisfy { $0.first?.str("step") == "syn_received" })
        #expect(accepted(masterRecords).isEmpty, "--pid \(master) (the master): \(accepted(masterRecords).keys.sorted())")
        let byWorkerCount = Dictionary(grouping: served.values) { $0 }.mapValues(\.count)
        let reused = served.keys.filter { $0.nth > 0 }.count
        print("NGINX-FIGURES access log: \(served.count) requests (\(reused) on a client port used before), by worker \(byWorkerCount.sorted { $0.key < $1.key }); traced accepted sockets \(all.count) (and \(dropped.count) dropped before established), records with the access log's worker \(all.flatMap { c in c.value.filter { $0.int("pid") == use[c.key].flatMap { served[$0] } } }.count) of \(all.values.joined().count); ss TIME-WAIT on nginx's side \(inTimeWait.count), server_time_wait \(timeWaits.count); --pid \(worker): \(seen.count) sockets (served \(mine.values.reduce(0, +))); --pid master: \(accepted(masterRecords).count)")
    }
}

extension AcceptorTests {
    /// Two processes share a port with SO_REUSEPORT; the kernel spreads the
    /// connections over them. Each server's own list of what it accepted is
    /// the truth: every record of a socket carries the server that accepted it.
    @Test func soReuseportServersEachOwnWhatTheyAccept() throws {
        let net = try VethPair()
        let port = Unique.port()
        let tracer = try Tracer(["--port", "\(port)"])
        let servers = try (0..<2).map { i in
            try Peer(net.server, ["server", net.serverV4, "\(port)", "1000", "--name", "tt-server\(i)", "--reuseport"])
        }
        for s in servers { try s.background.waitFor("listening") }
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "24", "--name", "tt-client"])
        #expect(try client.background.wait(timeout: 60) == 0)
        usleep(1_500_000)
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")
        var acceptedBy: [Int: Int] = [:]
        for s in servers {
            let pid = try s.pid
            for c in s.connections { acceptedBy[c.3] = pid }
        }
        #expect(acceptedBy.count == 24, "the servers accepted \(acceptedBy.count)")
        #expect(Set(acceptedBy.values).count == 2, "SO_REUSEPORT gave every connection to one server: \(acceptedBy)")
        let accepted = records.filter { $0.str("type") == "transition" && $0.int("lport") == Int(port) && $0.int("rport") != 0 }
        #expect(Set(accepted.map { $0.int("rport") }) == Set(acceptedBy.keys))
        let wrong = accepted.filter { $0.int("pid") != acceptedBy[$0.int("rport")] || $0["owner_known"] as? Bool != true }
        #expect(wrong.isEmpty, "\(wrong.count) records name another process: \(wrong.prefix(4).map { "\($0.int("rport")) \($0.str("kernel_from"))>\($0.str("kernel_to")) pid \($0.int("pid"))" })")
        print("REUSEPORT-FIGURES accepted by the two servers: \(Dictionary(grouping: acceptedBy.values) { $0 }.mapValues(\.count).values.sorted()); records \(accepted.count), naming another process \(wrong.count)")
    }

    /// A server that accepts, forks, and leaves the socket to its child,
    /// which reads the client's data and closes: the records before the fork
    /// carry the parent (it held the socket then), those after the child.
    @Test func aSocketHandedToAChildAfterForkFollowsTheChild() throws {
        let net = try VethPair()
        let port = Unique.port()
        let tracer = try Tracer(["--port", "\(port)"])
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "4", "--name", "tt-server", "--fork"])
        try server.background.waitFor("listening")
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "4", "--name", "tt-client", "--send", "100", "--hold", "0.5"])
        #expect(try client.background.wait(timeout: 60) == 0)
        _ = try server.background.wait(timeout: 60)
        usleep(1_000_000)
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")
        let parent = try server.pid
        // "child PID RADDR RPORT": each child's own account.
        let children = server.background.stdout.split(separator: "\n").reduce(into: [Int: Int]()) { m, line in
            let f = line.split(separator: " ")
            if f.count == 4, f[0] == "child", let pid = Int(f[1]), let rport = Int(f[3]) { m[rport] = pid }
        }
        #expect(children.count == 4, "\(server.background.stdout)")
        for (rport, child) in children {
            let rs = records.filter { $0.str("type") == "transition" && $0.int("lport") == Int(port) && $0.int("rport") == rport && $0["step"] != nil }
            let owners = rs.map { "\($0.str("step"))=\($0.int("pid"))" }
            #expect(rs.map { $0.str("step") } == ["syn_received", "established", "fin_received", "fin_sent", "fin_acked"], "\(rport): \(owners)")
            #expect(rs.prefix(2).allSatisfy { $0.int("pid") == parent }, "before the fork, the acceptor: \(owners)")
            #expect(rs.dropFirst(2).allSatisfy { $0.int("pid") == child && $0["owner_known"] as? Bool == true }, "after, the child \(child): \(owners)")
        }
    }
}

extension AcceptorTests {
    /// A threaded server and client (Python, as operators run them): the
    /// process's name is its leader's, as /proc/PID/comm and `ss -p` show;
    /// the thread that listened, accepted or connected is `thread`, as
    /// /proc/PID/task/TID/comm shows. A single-threaded peer gets no `thread`.
    static let threaded = #"""
import ctypes, os, socket, sys, threading, time
libc = ctypes.CDLL(None, use_errno=True)
def rename(n): libc.prctl(15, n.encode(), 0, 0, 0)
mode, addr, port, count, leader, worker = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6]
rename(leader)
def proc(path): return open(path).read().strip()
def serve():
    rename(worker)
    tid = threading.get_native_id()
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(16)
    print("names", proc("/proc/self/comm"), proc(f"/proc/self/task/{tid}/comm"), os.getpid(), flush=True)
    print("listening", flush=True)
    for _ in range(count):
        c, peer = s.accept()
        print("conn", peer[1], flush=True)
        while c.recv(100): pass
        c.close()
    s.close()
def dial():
    rename(worker)
    tid = threading.get_native_id()
    print("names", proc("/proc/self/comm"), proc(f"/proc/self/task/{tid}/comm"), os.getpid(), flush=True)
    for _ in range(count):
        c = socket.create_connection((addr, port))
        print("conn", c.getsockname()[1], flush=True)
        c.sendall(b"x"); c.shutdown(socket.SHUT_WR)
        while c.recv(100): pass
        time.sleep(0.05)
        c.close()
t = threading.Thread(target=serve if mode == "server" else dial); t.start(); t.join()
"""#

    @Test func theThreadThatTookASocketIsNamedBesideItsProcess() throws {
        let net = try VethPair()
        let port = Unique.port(), plainPort = Unique.port()
        let tracer = try Tracer(["--port", "\(port)", "--port", "\(plainPort)"])
        let server = try Background(net.server.command(["python3", "-c", Self.threaded, "server", net.serverV4, "\(port)", "5", "tt-pyserve", "tt-acceptor"]))
        try server.waitFor("listening")
        let client = try Background(net.client.command(["python3", "-c", Self.threaded, "client", net.serverV4, "\(port)", "5", "tt-pyclient", "tt-dialer"]))
        #expect(try client.wait(timeout: 60) == 0, "\(client.stderr)")
        #expect(try server.wait(timeout: 60) == 0, "\(server.stderr)")
        // A single-threaded peer: the thread is the process.
        let plainServer = try Peer(net.server, ["server", net.serverV4, "\(plainPort)", "2", "--name", "tt-plain"])
        try plainServer.background.waitFor("listening")
        #expect(try Peer(net.client, ["client", net.serverV4, "\(plainPort)", "2", "--name", "tt-plaincli"]).background.wait(timeout: 60) == 0)
        _ = try plainServer.background.wait(timeout: 60)
        usleep(1_000_000)
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")

        // What /proc said, from inside each process.
        func names(_ b: Background) -> [Substring] { b.stdout.split(separator: "\n").first { $0.hasPrefix("names ") }?.split(separator: " ").dropFirst().map { $0 } ?? [] }
        let serverNames = names(server), clientNames = names(client)
        #expect(serverNames.prefix(2) == ["tt-pyserve", "tt-acceptor"] && clientNames.prefix(2) == ["tt-pyclient", "tt-dialer"], "\(server.stdout) \(client.stdout)")
        let serverPid = try #require(serverNames.last.flatMap { Int($0) }), clientPid = try #require(clientNames.last.flatMap { Int($0) })
        let transitions = records.filter { $0.str("type") == "transition" }
        let ours = transitions.filter { $0.int("lport") == Int(port) || $0.int("rport") == Int(port) }
        let atServer = ours.filter { $0.int("lport") == Int(port) }, atClient = ours.filter { $0.int("rport") == Int(port) }
        #expect(atServer.count >= 5 * 5 + 2 && atClient.count >= 5 * 5, "\(ours.count) records")
        let wrongServer = atServer.filter { $0.int("pid") != serverPid || $0.str("comm") != "tt-pyserve" || $0.str("thread") != "tt-acceptor" }
        #expect(wrongServer.isEmpty, "\(wrongServer.prefix(3))")
        let wrongClient = atClient.filter { $0.int("pid") != clientPid || $0.str("comm") != "tt-pyclient" || $0.str("thread") != "tt-dialer" }
        #expect(wrongClient.isEmpty, "\(wrongClient.prefix(3))")
        let plain = transitions.filter { $0.int("lport") == Int(plainPort) || $0.int("rport") == Int(plainPort) }
        #expect(plain.count >= 2 * 10 && plain.allSatisfy { $0["thread"] == nil && $0["owner_known"] as? Bool == true }, "\(plain.filter { $0["thread"] != nil }.prefix(2))")
        print("THREAD-FIGURES server \(atServer.count) records (tt-pyserve/tt-acceptor), client \(atClient.count) (tt-pyclient/tt-dialer), single-threaded \(plain.count) without thread")
    }
}
