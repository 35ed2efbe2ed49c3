import Foundation
import Testing

/// Whether the privileged tests can run here, and whether they must.
enum Privileged {
    /// Set by .ci/run: a skipped privileged test is a failure there.
    static let required = ProcessInfo.processInfo.environment["TCPTRAIL_REQUIRE_PRIVILEGED"] == "1"
    static let isRoot = geteuid() == 0
    static let hasBTF = access("/sys/kernel/btf/vmlinux", R_OK) == 0
    /// Root with kernel BTF: the real BPF object can load.
    static let available = isRoot && hasBTF
    static let reason = "needs root and /sys/kernel/btf/vmlinux (run scripts/test with sudo)"
}

/// Where `swift build` put the executables (beside the test bundle).
enum Products {
    static let directory: URL = {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var dir = exe.deletingLastPathComponent()
        // XCTest bundles on Linux are files; Swift Testing may run from inside .xctest.
        if dir.pathExtension == "xctest" { dir = dir.deletingLastPathComponent() }
        return dir
    }()
    static var tcptrail: String { directory.appendingPathComponent("tcptrail").path }
    static var peer: String { directory.appendingPathComponent("tt-peer").path }
}

struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a command to completion and captures its output.
@discardableResult
func run(_ args: [String], check: Bool = true, timeout: Double = 120) throws -> CommandResult {
    let b = try Background(args)
    let status = try b.wait(timeout: timeout)
    let result = CommandResult(status: status, stdout: b.stdout, stderr: b.stderr)
    if check && result.status != 0 {
        throw TestFailure("\(args.joined(separator: " ")) exited \(result.status): \(result.stderr)")
    }
    return result
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A unique small number per test run and call: names and ports that
/// parallel runs do not share.
enum Unique {
    nonisolated(unsafe) private static var counter = 0
    private static let lock = NSLock()
    static func next() -> Int {
        lock.lock(); defer { lock.unlock() }
        counter += 1
        return counter
    }

    /// A TCP port no socket in the root namespace uses now, outside the ephemeral range.
    static func port() -> UInt16 {
        while true {
            // Below the ephemeral range (32768-60999), so no client of a test running
            // in parallel in another namespace can hold the same port.
            let candidate = UInt16.random(in: 20000...32767)
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = candidate.bigEndian
            let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            close(fd)
            if rc == 0 { return candidate }
        }
    }
}

/// A process started in the background, output to files (no pipe deadlocks).
final class Background {
    let process = Process()
    let stdoutURL: URL
    let stderrURL: URL

    init(_ args: [String]) throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("tt-\(getpid())-\(Unique.next())")
        stdoutURL = base.appendingPathExtension("out")
        stderrURL = base.appendingPathExtension("err")
        FileManager.default.createFile(atPath: stdoutURL.path, contents: nil)
        FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = args
        let out = try FileHandle(forWritingTo: stdoutURL), err = try FileHandle(forWritingTo: stderrURL)
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        // The child has its own copies: ours would stay open for the whole
        // test run (one suite opens hundreds of these; the 6.1 guest's limit is 1024).
        defer {
            try? out.close()
            try? err.close()
        }
        // Children inherit this thread's signal mask, and test threads block
        // most signals: unblock them so SIGINT and SIGTERM reach the child.
        var all = sigset_t(), saved = sigset_t()
        sigfillset(&all)
        pthread_sigmask(SIG_UNBLOCK, &all, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        try process.run()
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            for _ in 0..<250 where process.isRunning { usleep(20_000) }
        }
        try? FileManager.default.removeItem(at: stdoutURL)
        try? FileManager.default.removeItem(at: stderrURL)
    }

    var pid: Int32 { process.processIdentifier }
    var stdout: String { (try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "" }

    /// Waits until `text` shows in stdout or stderr.
    func waitFor(_ text: String, inStderr: Bool = false, timeout: Double = Timing.waitSeconds) throws {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if (inStderr ? stderr : stdout).contains(text) { return }
            if !process.isRunning {
                throw TestFailure("\(process.arguments ?? []) exited \(process.terminationStatus) before printing '\(text)': \(stderr)")
            }
            usleep(20_000)
        }
        throw TestFailure("timed out waiting for '\(text)' from \(process.arguments ?? [])")
    }

    /// Waits for exit; fails the test on timeout.
    @discardableResult
    func wait(timeout: Double = 60) throws -> Int32 {
        let end = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < end { usleep(20_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            throw TestFailure("\(process.arguments ?? []) still running after \(timeout) s")
        }
        return process.terminationStatus
    }

    func signal(_ sig: Int32) { kill(pid, sig) }
}

/// bpftrace running `program`, the ground truth some tests count against.
/// Its classic tracepoints need tracefs, which a fresh host does not mount
/// and the tracer must not be given: bpftrace gets a private mount namespace
/// with tracefs mounted, and execs there (signals reach it directly).
func bpftrace(_ program: String) -> [String] {
    ["unshare", "--mount", "--propagation", "private", "sh", "-c",
     "[ -e /sys/kernel/tracing/events ] || mount -t tracefs nodev /sys/kernel/tracing; exec bpftrace -e \"$0\"", program]
}

/// How much slower than this project's VMs the test host is. scripts/test-kernels
/// sets TCPTRAIL_TEST_TIME_SCALE for its software-emulated guest, where loading
/// the BPF object alone takes about 30 s: a connection that must still be open
/// once a tracer has started holds for `hold(seconds)`.
enum Timing {
    static let scale: Double = ProcessInfo.processInfo.environment["TCPTRAIL_TEST_TIME_SCALE"].flatMap(Double.init) ?? 1
    static func hold(_ seconds: Double) -> String { "\(seconds * scale)" }
    /// How long to wait for a line (a tracer's start): 30 s, longer where
    /// time is scaled (loading takes 30 s or more under emulation, more on a busy host).
    static let waitSeconds = 30 * max(1, scale / 5)
}

/// A running `tcptrail trace --json`, stopped by SIGINT.
final class Tracer {
    let background: Background

    /// `prefix` runs the tracer under another command that execs it (so
    /// SIGINT still reaches the tracer), e.g. `unshare -m`.
    /// `started: false` returns before the tracer has attached (loading takes
    /// tens of seconds in the emulated guest): start several, then `waitUntilTracing()`.
    init(_ extra: [String], prefix: [String] = [], started: Bool = true) throws {
        background = try Background(prefix + [Products.tcptrail, "trace", "--json"] + extra)
        if started { try waitUntilTracing() }
    }

    func waitUntilTracing() throws {
        try background.waitFor("tracing TCP events", inStderr: true)
    }

    /// Runs `body` with the tracer stopped (SIGSTOP), so nothing drains its
    /// ring, then lets it go on (SIGCONT) 300 ms after: with a small
    /// --buffer-size the kernel side loses events, and counts them.
    func paused(during body: () throws -> Void) rethrows {
        background.signal(SIGSTOP)
        defer { background.signal(SIGCONT) }
        try body()
        usleep(300_000)
    }

    /// Stops the tracer (SIGINT) and returns every record it wrote.
    func stop() throws -> (records: [[String: Any]], status: Int32, stderr: String) {
        background.signal(SIGINT)
        let status = try background.wait()
        var records: [[String: Any]] = []
        for line in background.stdout.split(separator: "\n") {
            guard let obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw TestFailure("not a JSON object: \(line)")
            }
            records.append(obj)
        }
        return (records, status, background.stderr)
    }
}

/// One test host: a network namespace, deleted on deinit.
final class NetworkNamespace {
    let name: String

    init(prefix: String = "tt") throws {
        name = "\(prefix)\(getpid() % 100000)-\(Unique.next())"
        try run(["ip", "netns", "add", name])
        try run(["ip", "-n", name, "link", "set", "lo", "up"])
    }

    deinit { _ = try? run(["ip", "netns", "del", name], check: false) }

    /// The namespace's inode, as the kernel side reports it.
    var inode: UInt64 {
        get throws {
            let attrs = try FileManager.default.attributesOfItem(atPath: "/run/netns/\(name)")
            return (attrs[.systemFileNumber] as? UInt64) ?? 0
        }
    }

    func command(_ args: [String]) -> [String] { ["ip", "netns", "exec", name] + args }

    /// Absolute values of kernel counters in this namespace, via nstat.
    func nstat(_ names: [String]) throws -> [String: Int] {
        let out = try run(command(["nstat", "-asz"] + names)).stdout
        var values: [String: Int] = [:]
        for line in out.split(separator: "\n") {
            let f = line.split(separator: " ", omittingEmptySubsequences: true)
            if f.count >= 2, let v = Int(f[1]) { values[String(f[0])] = v }
        }
        return values
    }
}

/// Two namespaces joined by a veth pair: client at .1, server at .2.
final class VethPair {
    let client: NetworkNamespace
    let server: NetworkNamespace
    let clientV4: String, serverV4: String
    let clientV6: String, serverV6: String
    /// The veth ends: clientLink in `client`, serverLink in `server`.
    let clientLink: String, serverLink: String

    init() throws {
        client = try NetworkNamespace(prefix: "ttc")
        server = try NetworkNamespace(prefix: "tts")
        let n = (Int(getpid()) * 7 + Unique.next()) % 16000
        // 198.18.0.0/15 in /30s, and fd00:7474::/32 in /64s.
        let third = n / 64, fourth = (n % 64) * 4
        clientV4 = "198.\(18 + third / 256).\(third % 256).\(fourth + 1)"
        serverV4 = "198.\(18 + third / 256).\(third % 256).\(fourth + 2)"
        clientV6 = "fd00:7474:\(String(n, radix: 16))::1"
        serverV6 = "fd00:7474:\(String(n, radix: 16))::2"
        let a = "ttv\(n)a", b = "ttv\(n)b"
        clientLink = a
        serverLink = b
        try run(["ip", "link", "add", a, "netns", client.name, "type", "veth", "peer", "name", b, "netns", server.name])
        try run(["ip", "-n", client.name, "addr", "add", "\(clientV4)/30", "dev", a])
        try run(["ip", "-n", server.name, "addr", "add", "\(serverV4)/30", "dev", b])
        try run(["ip", "-n", client.name, "-6", "addr", "add", "\(clientV6)/64", "dev", a, "nodad"])
        try run(["ip", "-n", server.name, "-6", "addr", "add", "\(serverV6)/64", "dev", b, "nodad"])
        try run(["ip", "-n", client.name, "link", "set", a, "up"])
        try run(["ip", "-n", server.name, "link", "set", b, "up"])
        // Wait until both families cross the link (carrier, neighbours), so the
        // scenarios' first SYN is not lost to set-up.
        for target in [serverV4, serverV6] {
            var ok = false
            for _ in 0..<50 where !ok {
                ok = (try? run(client.command(["ping", "-c", "1", "-W", "1", target]), check: false))?.status == 0
                if !ok { usleep(100_000) }
            }
        }
    }
}

/// A tt-peer process and what it reported.
final class Peer {
    let background: Background

    /// `prefix` runs it under a command that execs it (the pid stays tt-peer's).
    init(_ ns: NetworkNamespace?, _ args: [String], prefix: [String] = []) throws {
        let cmd = prefix + [Products.peer] + args
        background = try Background(ns.map { $0.command(cmd) } ?? cmd)
    }

    var pid: Int {
        get throws {
            try background.waitFor("pid ")
            for line in background.stdout.split(separator: "\n") where line.hasPrefix("pid ") {
                if let p = Int(line.dropFirst(4)) { return p }
            }
            throw TestFailure("tt-peer printed no pid")
        }
    }

    /// The connections as the process saw them: (laddr, lport, raddr, rport).
    var connections: [(String, Int, String, Int)] {
        background.stdout.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count == 5, f[0] == "conn", let lp = Int(f[2]), let rp = Int(f[4]) else { return nil }
            return (String(f[1]), lp, String(f[3]), rp)
        }
    }
}

extension Dictionary where Key == String, Value == Any {
    func int(_ key: String) -> Int { (self[key] as? Int) ?? -1 }
    func str(_ key: String) -> String { (self[key] as? String) ?? "" }
    /// "FROM->TO" of a transition record.
    var transition: String { "\(str("kernel_from"))->\(str("kernel_to"))" }
    /// A transition sock:inet_sock_set_state reported, not a connection's
    /// timewait socket: how many there are does not depend on whether the
    /// peer's FIN beat the application's close().
    var isSetState: Bool { str("type") == "transition" && (str("timewait").isEmpty || str("timewait") == "handoff") }
}

/// The transitions of each connection id, in record order.
/// Each connection's sock:inet_sock_set_state transitions (with `timewait`
/// true: those of its timewait socket instead).
func transitionsByConnection(_ records: [[String: Any]], timewait: Bool = false) -> [String: [[String: Any]]] {
    var out: [String: [[String: Any]]] = [:]
    for r in records where r.str("type") == "transition" {
        let fromTimewaitSocket = !r.str("timewait").isEmpty && r.str("timewait") != "handoff"
        if fromTimewaitSocket == timewait { out[r.str("conn"), default: []].append(r) }
    }
    return out
}

/// What a timewait socket can add after its connection's handoff.
let timewaitTails: Set<[String]> = [[], ["FIN_WAIT2->TIME_WAIT"], ["TIME_WAIT->CLOSE"], ["FIN_WAIT2->CLOSE"], ["FIN_WAIT2->TIME_WAIT", "TIME_WAIT->CLOSE"]]

let activeOpenAndClose = ["CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED", "ESTABLISHED->FIN_WAIT1", "FIN_WAIT1->FIN_WAIT2", "FIN_WAIT2->CLOSE"]
let passiveOpenAndClose = ["LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED", "ESTABLISHED->CLOSE_WAIT", "CLOSE_WAIT->LAST_ACK", "LAST_ACK->CLOSE"]

/// A packet capture (tcpdump) inside a namespace: the ground truth.
final class Capture {
    let background: Background

    struct Packet {
        var source: String   // "198.18.0.1.40000"
        var flags: String    // "S", "S.", "F.", "R", "R.", "."
    }

    init(_ ns: NetworkNamespace, interface: String, port: UInt16) throws {
        background = try Background(ns.command(["tcpdump", "-i", interface, "-n", "-l", "-tt", "-U", "tcp port \(port)"]))
        try background.waitFor("listening on", inStderr: true)
    }

    /// Stops the capture and parses every TCP segment it saw.
    func stop() throws -> [Packet] {
        usleep(200_000)
        background.signal(SIGINT)
        try background.wait()
        return background.stdout.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            guard f.count > 5, f[1] == "IP" || f[1] == "IP6",
                  let flagsAt = f.firstIndex(of: "Flags") , flagsAt + 1 < f.count else { return nil }
            let flags = f[flagsAt + 1].trimmingCharacters(in: CharacterSet(charactersIn: "[],"))
            return Packet(source: String(f[2]), flags: flags)
        }
    }
}

extension Array where Element == Capture.Packet {
    /// The first segment with this flag (e.g. "F" for any FIN, "R" for any RST).
    func first(with flag: Character) -> Capture.Packet? { first { $0.flags.contains(flag) } }
    func count(with flag: String) -> Int { filter { $0.flags == flag }.count }
}

/// The log tests' tracer and traffic: `trace --output` on a port of its own.
enum LogRun {
    /// A private directory, a namespace for traffic, a fresh port and a
    /// tracer writing `dir/trace.jsonl` with `args`.
    static func start(_ prefix: String, _ args: [String] = []) throws
        -> (dir: EventLogTests.PrivateDirectory, ns: NetworkNamespace, port: UInt16, path: String, tracer: Background) {
        let dir = try EventLogTests.PrivateDirectory()
        let ns = try NetworkNamespace(prefix: prefix)
        let port = Unique.port()
        let path = dir.path + "/trace.jsonl"
        return (dir, ns, port, path, try tracer(path, port: port, args))
    }

    /// `trace --output path`, `args` and `--port port`, once it is tracing.
    static func tracer(_ path: String, port: UInt16, _ args: [String] = []) throws -> Background {
        let tracer = try Background([Products.tcptrail, "trace", "--output", path] + args + ["--port", "\(port)"])
        try tracer.waitFor("tracing TCP events", inStderr: true)
        return tracer
    }

    /// SIGHUP, then `n` connections once the tracer has had time to reopen its path.
    static func hangUp(_ tracer: Background, then ns: NetworkNamespace, port: UInt16, n: Int) throws {
        tracer.signal(SIGHUP)
        usleep(300_000)
        try Peer.exchange(ns, port: port, n: n)
        usleep(300_000)
    }
}

extension Peer {
    /// `n` loopback connections on `port` in `ns`: a server taking them and a
    /// client making them, both exiting 0 (10 transitions each, 2 more for the listener).
    static func exchange(_ ns: NetworkNamespace, port: UInt16, n: Int) throws {
        let server = try Peer(ns, ["server", "127.0.0.1", "\(port)", "\(n)"])
        try server.background.waitFor("listening")
        let client = try Peer(ns, ["client", "127.0.0.1", "\(port)", "\(n)"])
        #expect(try client.background.wait() == 0)
        #expect(try server.background.wait() == 0)
    }
}
