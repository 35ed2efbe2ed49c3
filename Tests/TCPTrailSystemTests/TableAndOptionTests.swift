import Foundation
import Testing

/// Issue 14: a full kernel table is a gap the summary, the `untracked`
/// records and replay name; an accepted socket whose listener did not fit
/// still gets its owner. Ground truth: what the workload itself says it
/// opened (its own count and pid).
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct FullTableTests {
    /// A python workload in `ns` that prints `pid P`, then `open N` once its
    /// sockets are up, holds them, closes them and prints `done`.
    func workload(_ ns: NetworkNamespace, _ script: String, _ args: [String]) throws -> Background {
        try Background(ns.command(["bash", "-c", "ulimit -n 65536; exec python3 -c \"$0\" \"$@\"", script] + args))
    }

    static let heldSockets = """
    import os, socket, sys, time
    n, port, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    print("pid", os.getpid(), flush=True)
    ls = socket.socket(); ls.bind(("127.0.0.1", port)); ls.listen(4096)
    held = []
    for i in range(n):
        held.append(socket.create_connection(("127.0.0.1", port))); held.append(ls.accept()[0])
    print("open", len(held) + 1, flush=True)
    time.sleep(hold)
    for s in held: s.close()
    ls.close()
    print("done", flush=True)
    """

    static let manyListeners = """
    import os, socket, sys, time
    n, base, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    print("pid", os.getpid(), flush=True)
    ls = []
    for i in range(n):
        s = socket.socket(); s.bind(("127.0.0.1", base + i)); s.listen(8); ls.append(s)
    held = []
    for i in range(n):
        held.append(socket.create_connection(("127.0.0.1", base + i))); held.append(ls[i].accept()[0])
    print("open", n, flush=True)
    time.sleep(hold)
    for s in held + ls: s.close()
    print("done", flush=True)
    """

    func number(_ text: String, after word: String) -> Int? {
        text.split(separator: "\n").first { $0.hasPrefix(word + " ") }.flatMap { Int($0.split(separator: " ")[1]) }
    }

    func logRecords(_ path: String) throws -> [[String: Any]] {
        try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
    }

    @Test func aFullConnectionTableIsACountedGapNamedBySummaryAndReplay() throws {
        let ns = try NetworkNamespace(prefix: "ttfull")
        let dir = try EventLogTests.PrivateDirectory()
        let log = dir.path + "/full.jsonl"
        let table = 64, pairs = 150
        let tracer = try Tracer(["--output", log, "--netns", "\(try ns.inode)", "--max-connections", "\(table)"])
        let w = try workload(ns, Self.heldSockets, ["\(pairs)", "\(Unique.port())", "1"])
        try w.waitFor("done", timeout: 60)
        let opened = try #require(number(w.stdout, after: "open"))
        #expect(opened == 2 * pairs + 1)
        let (_, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")

        let records = try logRecords(log)
        let header = try #require(records.first { $0["type"] as? String == "header" })
        #expect((header["tables"] as? [String: Any])?["connections"] as? Int == table)
        let summary = try #require(records.last { $0["type"] as? String == "summary" })
        let untracked = try #require(summary["untracked"] as? [String: Any], "\(summary)")
        // At least every socket beyond the table (other sockets of the host can take slots too).
        let sockets = try #require(untracked["sockets"] as? Int)
        // On Linux 6.1 an accepted socket left without an id of its own (child_ids,
        // sized as the table) is counted there instead: it shares its listener's.
        let childIDs = untracked["child_ids"] as? Int ?? 0
        #expect(sockets + childIDs >= opened - table, "\(untracked)")
        #expect(sockets <= opened, "counts are of the record (--netns), not the host: \(untracked)")
        // Each untracked socket's records say so, and they are the workload's.
        let marked = records.filter { $0["type"] as? String == "transition" && $0["untracked"] as? Bool == true }
        #expect(Set(marked.compactMap { $0["conn"] as? String }).count + childIDs >= opened - table)
        // Without a table entry the kernel side knows no owner; user space names
        // the accepted ones from their listener, and only with the workload's pid.
        let pid = try #require(number(w.stdout, after: "pid"))
        let named = marked.filter { $0["owner_known"] as? Bool == true }
        #expect(named.allSatisfy { $0["pid"] as? Int == pid }, "\(named.prefix(2))")
        #expect(marked.contains { $0["owner_known"] as? Bool == false })
        #expect(records.contains { $0["type"] as? String == "untracked" }, "an untracked record as soon as it was counted")
        #expect(stderr.contains("sockets untracked (connection table full; raise --max-connections)"), "\(stderr)")

        // Every record, the untracked ones and the summary's object too, is in the contract.
        // (Where python has jsonschema: the emulated guest's PATH may not reach it.)
        if (try? run(["python3", "-c", "import jsonschema"], check: false))?.status == 0 {
            let schema = try run([EventLogTests.validator, log], check: false)
            #expect(schema.status == 0 && schema.stderr.contains(" 0 problems"), "\(schema.stdout.prefix(1000)) \(schema.stderr.prefix(500))")
        }

        let replay = try run([Products.tcptrail, "replay", log], check: false)
        let gaps = replay.stdout.split(separator: "\n").first { $0.hasPrefix("gaps:") || $0.hasPrefix("complete") } ?? ""
        #expect(gaps.hasPrefix("gaps:") && gaps.contains("\(sockets) sockets untracked"), "\(replay.stdout.suffix(400))")
    }

    @Test func acceptedSocketsOfListenersBeyondTheTableStillNameTheirOwner() throws {
        let ns = try NetworkNamespace(prefix: "ttlsn")
        let dir = try EventLogTests.PrivateDirectory()
        let log = dir.path + "/listeners.jsonl"
        let table = 16, listeners = 100
        let base = Int(Unique.port()) % 50_000 + 10_000
        let tracer = try Tracer(["--output", log, "--netns", "\(try ns.inode)", "--max-listeners", "\(table)"])
        let w = try workload(ns, Self.manyListeners, ["\(listeners)", "\(base)", "1"])
        try w.waitFor("done", timeout: 60)
        let pid = try #require(number(w.stdout, after: "pid"))
        let (_, status, stderr) = try tracer.stop()
        #expect(status == 0, "\(stderr)")

        let records = try logRecords(log)
        let accepted = records.filter { $0["kernel_from"] as? String == "LISTEN" && $0["kernel_to"] as? String == "SYN_RECV" }
        #expect(accepted.count == listeners)
        // The truth is the workload's own pid: every accepted socket carries it.
        let wrong = accepted.filter { $0["pid"] as? Int != pid || $0["owner_known"] as? Bool != true }
        #expect(wrong.isEmpty, "\(wrong.prefix(3))")
        let untracked = try #require(records.last { $0["type"] as? String == "summary" }?["untracked"] as? [String: Any])
        let notInTable = try #require(untracked["listeners"] as? Int)
        #expect(notInTable >= listeners - table, "\(untracked)")
        #expect(untracked["accepted_named"] as? Int == untracked["accepted_without_owner"] as? Int)
        #expect((untracked["accepted_named"] as? Int ?? 0) >= listeners - table)
        #expect(stderr.contains("listeners not in the listener table"), "\(stderr)")
    }
}

/// Values that are not numbers, or not in range, are usage errors: status 64
/// with one line, before anything is attached or written.
@Suite struct OptionValueTests {
    @Test(arguments: [
        ["trace", "--duration", "inf"], ["trace", "--duration", "nan"], ["trace", "--duration", "1e300"], ["trace", "--duration", "-1"],
        ["trace", "--close-wait-threshold", "nan"], ["trace", "--fin-wait-2-threshold", "inf"],
        ["trace", "--close-wait-threshold", "1e300"], ["trace", "--max-connections", "1"], ["trace", "--max-listeners", "99999999"],
        ["top", "--close-wait-threshold", "nan"], ["serve", "--fin-wait-2-threshold", "nan"],
        ["replay", "--close-wait-threshold", "nan", "x.jsonl"], ["replay", "--fin-wait-2-threshold", "-inf", "x.jsonl"],
        ["replay", "--until", "2300-01-01T00:00:00Z", "x.jsonl"], ["replay", "--since", "0001-01-01T00:00:00Z", "x.jsonl"],
        ["replay", "--since", "1600-01-01T00:00:00Z", "x.jsonl"], ["replay", "--until", "9999-12-31T23:59:59Z", "x.jsonl"],
    ])
    func aBadValueIsOneUsageLine(_ args: [String]) throws {
        let dir = try EventLogTests.PrivateDirectory()
        let out = dir.path + "/never.jsonl"
        let extra = args[0] == "trace" ? ["--output", out] : []
        let r = try run([Products.tcptrail] + args + extra, check: false, timeout: 30)
        #expect(r.status == 64, "\(args): \(r.stderr)")
        let first = r.stderr.split(separator: "\n").first ?? ""
        #expect(first.hasPrefix("Error: ") && first.contains(args[1]), "\(args): \(r.stderr)")
        #expect(!r.stderr.contains("Swift runtime failure") && !r.stderr.contains("tracing TCP events"))
        #expect(!FileManager.default.fileExists(atPath: out), "nothing written")
    }
}

/// `trace --json > FILE` on a full filesystem: whole lines only, the loss on
/// stderr and status 79, not a cut line and status 0.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct StandardOutputTests {
    @Test func aFullDiskUnderStandardOutputIsReportedNotSilent() throws {
        let dir = try EventLogTests.PrivateDirectory()
        let mount = dir.path + "/small"
        try FileManager.default.createDirectory(atPath: mount, withIntermediateDirectories: false)
        try run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", mount])
        defer { _ = try? run(["umount", "-l", mount], check: false) }
        let ns = try NetworkNamespace(prefix: "ttenospc")
        let out = mount + "/trace.jsonl"
        let tracer = try Background(["bash", "-c", "exec \"$0\" trace --json --netns \"$1\" > \"$2\"", Products.tcptrail, "\(try ns.inode)", out])
        try tracer.waitFor("tracing TCP events", inStderr: true)
        let port = Unique.port()
        let server = try Peer(ns, ["server", "127.0.0.1", "\(port)", "300"])
        try server.background.waitFor("listening")
        let client = try Peer(ns, ["client", "127.0.0.1", "\(port)", "300"])
        _ = try client.background.wait(timeout: 60)
        _ = try server.background.wait(timeout: 60)
        usleep(500_000)
        tracer.signal(SIGINT)
        let status = try tracer.wait()
        #expect(status == 79, "\(tracer.stderr)")
        #expect(tracer.stderr.contains("cannot write to standard output: No space left on device"), "\(tracer.stderr)")
        #expect(tracer.stderr.contains("records not written to standard output"), "\(tracer.stderr)")
        // What reached the file is whole records: 600 connections' worth did not fit in 64 KiB.
        let bytes = try Data(contentsOf: URL(fileURLWithPath: out))
        #expect(bytes.count > 32_000 && bytes.last == UInt8(ascii: "\n"))
        for line in bytes.split(separator: UInt8(ascii: "\n")) {
            #expect((try? JSONSerialization.jsonObject(with: Data(line))) != nil, "a cut line: \(String(decoding: line, as: UTF8.self).suffix(80))")
        }
    }
}

/// The README's claim: root, or CAP_BPF + CAP_PERFMON as any user, traces;
/// what the capabilities leave out is said, not silently wrong.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct CapabilityTests {
    /// Traces a conversation in a namespace of its own as user nobody with
    /// `caps`, the server's listener older than the trace.
    func traceAsNobody(caps: String) throws -> (records: [[String: Any]], status: Int32, stderr: String, server: Int, client: Int) {
        let ns = try NetworkNamespace(prefix: "ttcap")
        let port = Unique.port()
        let server = try Peer(ns, ["server", "127.0.0.1", "\(port)", "1", "--name", "tt-capsrv"])
        try server.background.waitFor("listening")
        // The binary as nobody can reach it: a copy in a directory it may read.
        let dir = try EventLogTests.PrivateDirectory()
        chmod(dir.path, 0o755)
        let binary = dir.path + "/tcptrail"
        try FileManager.default.copyItem(atPath: Products.tcptrail, toPath: binary)
        let tracer = try Background(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                     "--inh-caps=\(caps)", "--ambient-caps=\(caps)",
                                     binary, "trace", "--json", "--nice", "0", "--netns", "\(try ns.inode)"])
        try tracer.waitFor("tracing TCP events", inStderr: true)
        let client = try Peer(ns, ["client", "127.0.0.1", "\(port)", "1", "--name", "tt-capcli"])
        _ = try client.background.wait(timeout: 30)
        _ = try server.background.wait(timeout: 30)
        usleep(300_000)
        tracer.signal(SIGINT)
        let status = try tracer.wait()
        let records = try tracer.stdout.split(separator: "\n").map {
            try #require(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
        }
        return (records, status, tracer.stderr, try server.pid, try client.pid)
    }

    @Test func capBPFAndCapPerfmonTraceAndSayWhatTheyCannotSee() throws {
        let run = try traceAsNobody(caps: "+bpf,+perfmon")
        #expect(run.status == 0, "\(run.stderr)")
        let transitions = run.records.filter { $0["type"] as? String == "transition" }
        // The client's owner comes from the kernel side at connect(): right without /proc.
        let connect = try #require(transitions.first { $0["kernel_to"] as? String == "SYN_SENT" })
        #expect(connect["pid"] as? Int == run.client)
        #expect(transitions.contains { $0["kernel_from"] as? String == "CLOSE_WAIT" && $0["pid"] as? Int == run.server })
        // The listener predates the trace and nobody cannot read root's
        // /proc/PID/fd, but accept() names the server: from its first record.
        let steps = transitions.map { "\($0["kernel_from"] ?? "-")>\($0["kernel_to"] ?? "-") \($0["conn"] ?? "") \($0["pid"] ?? "")" }
        let accepted = try #require(transitions.first { $0["kernel_to"] as? String == "SYN_RECV" }, "\(steps) \(run.stderr)")
        #expect(accepted["owner_known"] as? Bool == true && accepted["pid"] as? Int == run.server, "\(steps)")
        #expect(!run.stderr.contains("accepted sockets without owner"), "\(run.stderr)")
    }

    @Test func withCapSysPtraceAndDacReadSearchOlderListenersAreKnownToo() throws {
        let run = try traceAsNobody(caps: "+bpf,+perfmon,+sys_ptrace,+dac_read_search")
        #expect(run.status == 0, "\(run.stderr)")
        let accepted = try #require(run.records.first { $0["type"] as? String == "transition" && $0["kernel_to"] as? String == "SYN_RECV" })
        #expect(accepted["pid"] as? Int == run.server, "\(accepted)")
        #expect(!run.stderr.contains("without owner"), "\(run.stderr)")
    }
}

/// Strings from a log or the command line reach no terminal raw: the
/// header's hostname and kernel, a file name, in replay's report and on stderr.
@Suite struct TerminalEscapeTests {
    @Test func replayShowsHostileHeaderFieldsAndFileNamesEscaped() throws {
        let dir = try EventLogTests.PrivateDirectory()
        let evil = "\u{1b}]0;owned\u{7}\u{1b}[2J"
        let path = dir.path + "/log\(evil).jsonl"
        let header = #"{"v":1,"seq":1,"type":"header","time":"2026-11-21T06:30:00.000000000Z","mono_ns":1000,"format_version":1,"tcptrail_version":"t","hostname":"h\u001b[31mred","kernel":"6.1\u001b]0;x\u0007","started":"2026-11-21T06:30:00.000000000Z","boot_offset_ns":1795242600000000000,"filters":{},"thresholds":{"close_wait_s":60,"data_retransmits":3,"fin_wait_2_s":60,"time_wait_sockets":1000}}"#
        let summary = #"{"v":1,"seq":2,"type":"summary","time":"2026-11-21T06:30:00.000000000Z","mono_ns":2000,"records":{},"anomalies":{},"lost":0,"export_errors":0}"#
        try (header + "\n" + summary + "\n").write(toFile: path, atomically: false, encoding: .utf8)
        let r = try run([Products.tcptrail, "replay", path, dir.path + "/missing\(evil)"], check: false)
        #expect(r.status == 66, "\(r.stderr)")
        for (name, text) in [("stdout", r.stdout), ("stderr", r.stderr)] {
            #expect(!text.utf8.contains(0x1b) && !text.utf8.contains(0x07), "\(name) has a raw escape: \(text.debugDescription)")
        }
        #expect(r.stderr.contains(#"missing\x1b]0;owned\x07\x1b[2J"#), "\(r.stderr)")
        let good = try run([Products.tcptrail, "replay", path], check: false)
        #expect(good.stdout.contains(#"host h\x1b[31mred, kernel 6.1\x1b]0;x\x07"#), "\(good.stdout)")
        #expect(!good.stdout.utf8.contains(0x1b))
    }
}
