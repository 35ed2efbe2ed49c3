import Foundation
import Testing

/// Issue 18, test 4: a process moved into a cgroup the test makes
/// (`tt-test.slice/tt-test-N.service` under the cgroup2 mount) gets `cgroup`
/// and `unit` on every event of its sockets, and `--cgroup` keeps exactly
/// that cgroup's sockets, checked against the processes' own pids and
/// endpoints and `ss -tanp`.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct CgroupTests {
    /// A cgroup under `tt-test.slice`, removed on deinit (its processes are
    /// moved back to the root first), so a failing test leaves nothing behind.
    final class TestCgroup {
        let mount: String
        /// Relative to the mount, as the records write it.
        let path: String
        let unit: String
        var directory: String { mount + path }
        var slice: String { mount + "/tt-test.slice" }

        init() throws {
            // Read independently of tcptrail: the first cgroup2 line of /proc/mounts.
            let mounts = try String(contentsOfFile: "/proc/mounts", encoding: .utf8)
            guard let line = mounts.split(separator: "\n").first(where: { $0.split(separator: " ").dropFirst(2).first == "cgroup2" }) else {
                throw TestFailure("no cgroup2 mount in /proc/mounts")
            }
            mount = String(line.split(separator: " ")[1])
            unit = "tt-test-\(getpid())-\(Unique.next()).service"
            path = "/tt-test.slice/" + unit
            try FileManager.default.createDirectory(atPath: mount + path, withIntermediateDirectories: true)
        }

        /// Runs `args` inside this cgroup: a shell joins it, then execs them.
        var prefix: [String] { ["sh", "-c", "echo $$ > '\(directory)/cgroup.procs' && exec \"$0\" \"$@\""] }

        deinit {
            let root = mount + "/cgroup.procs"
            for _ in 0..<50 {
                let procs = (try? String(contentsOfFile: directory + "/cgroup.procs", encoding: .utf8)) ?? ""
                for pid in procs.split(separator: "\n") { try? "\(pid)\n".write(toFile: root, atomically: false, encoding: .utf8) }
                if rmdir(directory) == 0 || errno == ENOENT { break }
                usleep(20_000)
            }
            rmdir(slice)  // fails while another test's cgroup is in it: that one removes it
        }
    }

    /// The records of connections on `port`, by connection id.
    static func onPort(_ records: [[String: Any]], _ port: Int) -> [[String: Any]] {
        records.filter { ($0.int("lport") == port || $0.int("rport") == port) && $0["conn"] != nil }
    }

    /// `ss -tanpH`'s sockets on `port` held by `pid`: (lport, rport).
    static func ssSockets(port: Int, pid: Int) throws -> Set<[Int]> {
        var out: Set<[Int]> = []
        for line in try run(["ss", "-tanpH", "state", "all"]).stdout.split(separator: "\n") where line.contains("pid=\(pid),") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            guard f.count >= 5, let l = f[3].split(separator: ":").last.flatMap({ Int($0) }),
                  let r = f[4].split(separator: ":").last.flatMap({ $0 == "*" ? 0 : Int($0) }), l == port || r == port else { continue }
            out.insert([l, r])
        }
        return out
    }

    @Test func everyEventOfTheProcessesSocketsCarriesItsCgroupAndUnit() throws {
        let cgroup = try TestCgroup()
        let port = Int(Unique.port())
        // Listening before the tracer starts: its owner, and the cgroup, come from /proc.
        let server = try Peer(nil, ["server", "127.0.0.1", "\(port)", "3", "--name", "tt-cgsrv"], prefix: cgroup.prefix)
        try server.background.waitFor("listening")
        let tracer = try Tracer(["--port", "\(port)"])
        let client = try Peer(nil, ["client", "127.0.0.1", "\(port)", "3", "--name", "tt-cgcli"])
        #expect(try client.background.wait() == 0)
        #expect(try server.background.wait() == 0)
        usleep(300_000)
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")

        let serverPid = try server.pid, clientPid = try client.pid
        let all = Self.onPort(records, port)
        // The server's sockets: its listener and the accepted ones (local port = the port).
        let serverSide = all.filter { $0.int("lport") == port }
        let clientSide = all.filter { $0.int("rport") == port }
        #expect(serverSide.contains { $0.str("type") == "snapshot" }, "the listener open at start")
        #expect(Set(serverSide.filter { $0.str("type") == "transition" && $0.int("rport") != 0 }.map { $0.int("rport") }) == Set(server.connections.map(\.3)))
        #expect(serverSide.count >= 3 * 4, "\(serverSide.count) server records")
        for r in serverSide {
            #expect(r.int("pid") == serverPid && r.str("cgroup") == cgroup.path && r.str("unit") == cgroup.unit, "\(r)")
        }
        // The client stayed where the test runs: not this cgroup.
        #expect(clientSide.count >= 3 * 4)
        for r in clientSide {
            #expect(r.int("pid") == clientPid && r["cgroup"] != nil && r.str("cgroup") != cgroup.path, "\(r)")
        }
    }

    @Test func theCgroupFilterKeepsExactlyThatCgroupsSockets() throws {
        let cgroup = try TestCgroup()
        let port = Int(Unique.port())
        let tracer = try Tracer(["--cgroup", cgroup.path])
        // The client is in the cgroup, the server outside: only the client's sockets.
        let server = try Peer(nil, ["server", "127.0.0.1", "\(port)", "3", "--name", "tt-cgsrv", "--hold", Timing.hold(2)])
        try server.background.waitFor("listening")
        let client = try Peer(nil, ["client", "127.0.0.1", "\(port)", "3", "--name", "tt-cgcli", "--hold", Timing.hold(2)], prefix: cgroup.prefix)
        let clientPid = try client.pid, serverPid = try server.pid
        try client.background.waitFor("conn ")
        // While they are open, ss names the holder of each end.
        usleep(500_000)
        let clientBySS = try Self.ssSockets(port: port, pid: clientPid)
        let serverBySS = try Self.ssSockets(port: port, pid: serverPid)
        #expect(try client.background.wait() == 0)
        #expect(try server.background.wait() == 0)
        usleep(300_000)
        let (records, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")

        let kept = records.filter { $0["conn"] != nil && $0.str("type") != "header" }
        #expect(!kept.isEmpty)
        for r in kept {
            #expect(r.int("pid") == clientPid && r.str("cgroup") == cgroup.path && r.str("unit") == cgroup.unit, "\(r)")
        }
        let endpoints = Set(kept.filter { $0.str("type") == "transition" }.map { [$0.int("lport"), $0.int("rport")] })
        let own = Set(client.connections.map { [$0.1, $0.3] })
        #expect(endpoints == own, "records \(endpoints), the client's own \(own)")
        #expect(clientBySS.isSubset(of: own) && !clientBySS.isEmpty, "ss: \(clientBySS)")
        // The server's ends (outside the cgroup) are on the host, and not in the records.
        #expect(!serverBySS.isEmpty && serverBySS.isDisjoint(with: endpoints), "ss: \(serverBySS)")
    }

    @Test func aPathThatIsNotACgroupIsOneLineAndItsOwnStatus() throws {
        let r = try run([Products.tcptrail, "trace", "--cgroup", "/tt-test.slice/no-such-\(getpid()).service", "--duration", "1"], check: false)
        #expect(r.status == 81)
        let lines = r.stderr.split(separator: "\n")
        #expect(lines.count == 1 && lines[0].contains("is not a cgroup"), "\(r.stderr)")
    }
}
