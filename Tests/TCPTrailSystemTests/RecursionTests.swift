import Foundation
import Testing

/// Issue 6: under loopback churn a softirq often interrupts a tcptrail
/// program on its CPU, and the kernel skips the program for the softirq's
/// event (recursion_misses). tcptrail attaches two copies of each program,
/// the second handling what the first was skipped for; these tests check
/// that every transition the load made arrives, and that the kernel's misses
/// of the first copy are exactly the events the second handled.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct RecursionTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test func loopbackChurnLosesNoTransition() throws {
        let churn = try Churn.build()
        defer { try? FileManager.default.removeItem(atPath: churn) }
        let ns = try NetworkNamespace(prefix: "ttrc")
        let port = Unique.port()
        let counters = ["TcpActiveOpens", "TcpPassiveOpens", "TcpAttemptFails", "TcpEstabResets"]
        // 64 MiB holds every event of the run even if nothing were read
        // meanwhile: ring-buffer losses are not what this test is about.
        let tracer = try Background([Products.tcptrail, "trace", "--json", "--raw", "--buffer-size", "64M",
                                     "--netns", "\(try ns.inode)", "--port", "\(port)"])
        try tracer.waitFor("tracing TCP events", inStderr: true)
        let untraced = try UntracedByThisKernel(port: port)
        let before = try ns.nstat(counters)
        let load = try run(ns.command([churn, "-t", "2", "-d", "2", "-p", "\(port)"]), timeout: 30)
        usleep(500_000)
        let after = try ns.nstat(counters)
        let bpf = try BPFObjects(pid: tracer.pid)
        let pid1 = untraced.stop()
        tracer.signal(SIGINT)
        #expect(try tracer.wait(timeout: 60) == 0)

        let delta = Dictionary(uniqueKeysWithValues: counters.map { ($0, (after[$0] ?? 0) - (before[$0] ?? 0)) })
        #expect(delta["TcpAttemptFails"] == 0 && delta["TcpEstabResets"] == 0,
                "failed connects or resets make the expected count approximate: \(delta)")
        // 5 transitions at each end of a connection, 2 for the listener.
        let expected = 5 * (delta["TcpActiveOpens"]! + delta["TcpPassiveOpens"]!) + 2
        // sock:inet_sock_set_state's transitions: not those of timewait sockets.
        let delivered = try countOccurrences(of: "\"kernel_from\"", in: tracer.stdoutURL)
            - countOccurrences(of: "\"timewait\":\"", in: tracer.stdoutURL) + countOccurrences(of: "\"timewait\":\"handoff\"", in: tracer.stdoutURL)
        let summary = tracer.stderr
        let lost = summary.firstMatch(of: /events, (\d+) lost/).flatMap { Int($0.1) }
        #expect(lost == 0, "tcptrail's summary: \(summary)")
        // Exact, but for what this machine's kernel never runs BPF programs
        // for (see UntracedByThisKernel): at most those may be missing.
        #expect(delivered <= expected && delivered >= expected - pid1,
                "\(delivered) transitions delivered, \(expected) expected from nstat (\(load.stdout.trimmingCharacters(in: .whitespacesAndNewlines))), \(pid1) raised under PID 1 (\(untraced.pid1AtStart) at the start, \(UntracedByThisKernel.describePID1()) at the end)")

        // The kernel's misses of the first copy are all handled by the second.
        let missesA = bpf.recursionMisses["tt_state_a"]
        let rescued = bpf.rescued[0] // TT_HOOK_SET_STATE
        #expect(missesA != nil && missesA == rescued,
                "tt_state_a skipped \(missesA ?? 0) times, tt_state_b handled \(rescued ?? 0) of those; misses: \(bpf.recursionMisses)")
        print("RecursionTests: \(delivered) of \(expected) transitions; recursion misses \(bpf.recursionMisses.filter { $0.value > 0 }), rescued \(rescued ?? 0), raised under PID 1: \(pid1)")
    }
}

/// bench/churn.c, built for a test (the caller removes it).
enum Churn {
    static func build() throws -> String {
        let source = RecursionTests.root.appendingPathComponent("bench/churn.c").path
        let binary = FileManager.default.temporaryDirectory.appendingPathComponent("tt-churn-\(getpid())-\(Unique.next())").path
        try run(["cc", "-O2", "-pthread", "-o", binary, source])
        return binary
    }
}

/// Occurrences of `needle` in a file, without decoding it (a churn trace
/// is a few hundred MB of JSON).
func countOccurrences(of needle: String, in url: URL) throws -> Int {
    let data = try Data(contentsOf: url, options: .alwaysMapped)
    let pattern = Array(needle.utf8)
    return data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) -> Int in
        let bytes = raw.bindMemory(to: UInt8.self)
        guard let first = pattern.first, bytes.count >= pattern.count else { return 0 }
        var n = 0
        var i = 0
        let last = bytes.count - pattern.count
        while i <= last {
            // memchr to the next candidate, then compare the rest.
            guard let hit = memchr(bytes.baseAddress! + i, Int32(first), last - i + 1) else { break }
            i = bytes.baseAddress!.distance(to: hit.assumingMemoryBound(to: UInt8.self))
            if memcmp(bytes.baseAddress! + i, pattern, pattern.count) == 0 {
                n += 1
                i += pattern.count
            } else {
                i += 1
            }
        }
        return n
    }
}

/// What the BPF programs and maps a process holds (its fds) count now, read
/// through /proc/PID/fdinfo and bpftool.
struct BPFObjects {
    /// recursion_misses by program name.
    var recursionMisses: [String: Int] = [:]
    /// The "rescued" map: events each hook's second copy handled, summed over CPUs.
    var rescued: [Int: Int] = [:]

    init(pid: Int32) throws {
        let dir = "/proc/\(pid)/fd"
        for fd in try FileManager.default.contentsOfDirectory(atPath: dir) {
            guard let link = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(dir)/\(fd)") else { continue }
            let info = (try? String(contentsOfFile: "/proc/\(pid)/fdinfo/\(fd)", encoding: .utf8)) ?? ""
            func field(_ name: String) -> Int? {
                info.split(separator: "\n").first { $0.hasPrefix(name + ":") }
                    .flatMap { Int($0.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)) }
            }
            if link == "anon_inode:bpf-prog", let id = field("prog_id") {
                let show = try run(["bpftool", "prog", "show", "id", "\(id)", "--json"]).stdout
                if let obj = try JSONSerialization.jsonObject(with: Data(show.utf8)) as? [String: Any], let name = obj["name"] as? String {
                    recursionMisses[name] = field("recursion_misses") ?? 0
                }
            } else if link == "anon_inode:bpf-map", let id = field("map_id") {
                let show = try run(["bpftool", "map", "show", "id", "\(id)", "--json"]).stdout
                if let obj = try JSONSerialization.jsonObject(with: Data(show.utf8)) as? [String: Any], obj["name"] as? String == "rescued" {
                    let dump = try run(["bpftool", "map", "dump", "id", "\(id)", "--json"]).stdout
                    for entry in (try JSONSerialization.jsonObject(with: Data(dump.utf8)) as? [[String: Any]]) ?? [] {
                        guard let formatted = entry["formatted"] as? [String: Any], let key = formatted["key"] as? Int,
                              let values = formatted["values"] as? [[String: Any]] else { continue }
                        rescued[key] = values.reduce(0) { $0 + (($1["value"] as? Int) ?? 0) }
                    }
                }
            }
        }
    }
}

/// Counts, with an ftrace instance, the port's state changes raised while a
/// thread of PID 1 was the current task. The kernel of the VMs this project
/// is developed and tested on (6.18 "fc") runs no BPF tracing program then,
/// and counts no recursion miss: bpf_trace_run*() returns at once when the
/// current task's tgid is 1 and the program is not PID 1's own (seen in its
/// code; ftrace counts exactly the transitions that tcptrail and bpftrace
/// both miss). So a softirq that happens to interrupt the VM's init process
/// goes untraced. On other kernels those events are traced and the count
/// only widens the test's bound; without tracefs it is 0 and the test exact.
///
/// As bench/run's Pid1Transitions: the instance follows PID 1's threads
/// (set_event_pid) and, with event-fork, every thread it starts during the
/// run; record-tgid names each hit's thread group and only group 1's count.
/// A filter on the thread ids listed at the start missed the threads a busy
/// PID 1 (a CI agent) starts meanwhile: 13 counted, 324 not delivered.
final class UntracedByThisKernel {
    private let instance: String?
    private static let tracefs = "/sys/kernel/tracing"
    /// Whether this count mounted tracefs, and so unmounts it: the tests
    /// after it must see the host as it was (the tracer needs no tracefs).
    private var mounted = false
    /// PID 1's command and thread count at the start, for a failure message.
    let pid1AtStart: String

    init(port: UInt16) throws {
        pid1AtStart = Self.describePID1()
        let tracefs = Self.tracefs
        if access("\(tracefs)/instances", F_OK) != 0 {
            mounted = (try? run(["mount", "-t", "tracefs", "nodev", tracefs], check: false))?.status == 0
        }
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/1/task")) ?? []
        let dir = "\(tracefs)/instances/tt-rec-\(getpid())-\(Unique.next())"
        guard !threads.isEmpty, mkdir(dir, 0o700) == 0 else {
            instance = nil
            if mounted { umount(tracefs) }
            mounted = false
            return
        }
        instance = dir
        let event = "\(dir)/events/sock/inet_sock_set_state"
        for (file, value) in [("\(dir)/buffer_size_kb", "1024"),
                              ("\(dir)/options/record-tgid", "1"),
                              ("\(dir)/options/event-fork", "1"),
                              ("\(dir)/set_event_pid", threads.joined(separator: " ")),
                              ("\(event)/filter", "sport == \(port) || dport == \(port)"),
                              ("\(event)/enable", "1")] {
            try value.write(toFile: file, atomically: false, encoding: .utf8)
        }
    }

    /// PID 1's command and how many threads it has now.
    static func describePID1() -> String {
        let comm = ((try? String(contentsOfFile: "/proc/1/comm", encoding: .utf8)) ?? "?")
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let threads = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/1/task").count) ?? 0
        return "\(comm), \(threads) threads"
    }

    /// Stops recording; the events recorded under thread group 1.
    func stop() -> Int {
        guard let dir = instance else { return 0 }
        try? "0".write(toFile: "\(dir)/events/sock/inet_sock_set_state/enable", atomically: false, encoding: .utf8)
        let trace = (try? String(contentsOfFile: "\(dir)/trace", encoding: .utf8)) ?? ""
        return trace.split(separator: "\n").filter { line in
            !line.hasPrefix("#") && line.contains("inet_sock_set_state") && Self.threadGroup(of: line) == "1"
        }.count
    }

    /// The thread group of a record-tgid trace line ("comm-TID (TGID) [CPU] ...";
    /// a comm may hold spaces and parentheses, so the first "-TID (" after it).
    static func threadGroup(of line: Substring) -> Substring? {
        line.firstMatch(of: /^\s*.*?-\d+\s+\(\s*([\d-]+)\)/).map { $0.1 }
    }

    deinit {
        if let dir = instance {
            try? "0".write(toFile: "\(dir)/events/sock/inet_sock_set_state/enable", atomically: false, encoding: .utf8)
            rmdir(dir)
        }
        if mounted { umount(Self.tracefs) }
    }
}
