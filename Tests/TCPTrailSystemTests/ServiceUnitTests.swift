import Foundation
import Testing

/// packaging/tcptrail.service: systemd-analyze accepts it, and its command
/// line, run as the unit runs it (its flags from the EnvironmentFile, its
/// capabilities only, an unprivileged user, no new privileges), tells a
/// NOTIFY_SOCKET the test listens on READY=1 and WATCHDOG=1.
@Suite(.serialized) struct ServiceUnitTests {
    static let unitPath = InstallTests.root.appendingPathComponent("packaging/tcptrail.service").path
    static let envPath = InstallTests.root.appendingPathComponent("packaging/tcptrail.env").path

    /// The unit's `KEY=value` lines, in order.
    static func settings() throws -> [(key: String, value: String)] {
        try String(contentsOfFile: unitPath, encoding: .utf8).split(separator: "\n").compactMap { line in
            guard !line.hasPrefix("#"), !line.hasPrefix("["), let eq = line.firstIndex(of: "=") else { return nil }
            return (String(line[..<eq]), String(line[line.index(after: eq)...]))
        }
    }

    static func setting(_ key: String) throws -> String {
        guard let value = try settings().first(where: { $0.key == key })?.value else { throw TestFailure("the unit has no \(key)=") }
        return value
    }

    /// The EnvironmentFile's variables (KEY="value" or KEY=value).
    static func environment() throws -> [String: String] {
        var out: [String: String] = [:]
        for line in try String(contentsOfFile: envPath, encoding: .utf8).split(separator: "\n") where !line.hasPrefix("#") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            var value = String(line[line.index(after: eq)...])
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") { value = String(value.dropFirst().dropLast()) }
            out[String(line[..<eq])] = value
        }
        return out
    }

    /// ExecStart as systemd expands it: `$NAME` is split into words, `${NAME}` is one.
    static func commandLine() throws -> [String] {
        let env = try environment()
        return try setting("ExecStart").split(separator: " ").flatMap { word -> [String] in
            if word.hasPrefix("${"), word.hasSuffix("}") { return [env[String(word.dropFirst(2).dropLast())] ?? ""] }
            if word.hasPrefix("$") { return (env[String(word.dropFirst())] ?? "").split(separator: " ").map(String.init) }
            return [String(word)]
        }
    }

    /// The unit with ExecStart's binary where this build put it (verify checks it is executable).
    static func unitForThisBuild(_ dir: String, extra: String = "") throws -> String {
        var text = try String(contentsOfFile: unitPath, encoding: .utf8)
        text = text.replacingOccurrences(of: "ExecStart=/usr/local/bin/tcptrail", with: "ExecStart=\(Products.tcptrail)")
        text = text.replacingOccurrences(of: "NoNewPrivileges=yes", with: "NoNewPrivileges=yes" + extra)
        let path = dir + "/tcptrail.service"
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func systemdAnalyzeVerifyAcceptsTheUnit() throws {
        let dir = try EventLogTests.PrivateDirectory()
        // --man=no: the page is man:tcptrail(1) once scripts/install put it there.
        let verify = try run(["systemd-analyze", "verify", "--man=no", try Self.unitForThisBuild(dir.path)], check: false, timeout: 60)
        #expect(verify.status == 0 && verify.stderr.isEmpty && verify.stdout.isEmpty, "\(verify.stdout) \(verify.stderr)")
        // verify exits 0 on a key it does not know, saying so: the empty stderr is the check.
        let bad = try run(["systemd-analyze", "verify", "--man=no", try Self.unitForThisBuild(dir.path, extra: "\nProtectEverything=yes")], check: false, timeout: 60)
        #expect(bad.stderr.contains("ProtectEverything"), "\(bad.stderr)")
        // What the unit promises.
        #expect(try Self.setting("Type") == "notify" && Self.setting("Restart") == "on-failure")
        #expect(try Self.setting("LogsDirectoryMode") == "0700" && Self.setting("NoNewPrivileges") == "yes")
        #expect(try Self.setting("CapabilityBoundingSet") == Self.setting("AmbientCapabilities"))
        #expect(try Self.setting("EnvironmentFile") == "-/etc/default/tcptrail")
    }

    /// serve's log flags are trace's, less standard output (serve writes none).
    @Test func serveRefusesALogOnStandardOutputAndRotationWithoutALog() throws {
        let dash = try run([Products.tcptrail, "serve", "--output", "-"], check: false, timeout: 30)
        #expect(dash.status == 64 && dash.stderr.contains("--output - would be standard output"), "\(dash.stderr)")
        let rotate = try run([Products.tcptrail, "serve", "--rotate-size", "1M"], check: false, timeout: 30)
        #expect(rotate.status == 64 && rotate.stderr.contains("--rotate-size needs --output FILE"), "\(rotate.stderr)")
    }

    /// An abstract unix datagram socket, as systemd's own NOTIFY_SOCKET can be.
    final class NotifySocket {
        let fd: Int32
        let name = "@tt-notify-\(getpid())-\(Unique.next())"

        init() throws {
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(name.utf8)
            withUnsafeMutableBytes(of: &address.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = i == 0 ? 0 : b } }
            let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count)
            let rc = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
            guard rc == 0 else { throw TestFailure("bind \(name): \(String(cString: strerror(errno)))") }
            var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        }

        deinit { close(fd) }

        /// Messages received until `done` says enough or `timeout` passes.
        func receive(timeout: Double, until done: ([String]) -> Bool) -> [String] {
            var messages: [String] = []
            let end = Date().addingTimeInterval(timeout)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while Date() < end && !done(messages) {
                let n = recv(fd, &buffer, buffer.count, 0)
                if n > 0 { messages.append(String(decoding: buffer.prefix(n), as: UTF8.self)) }
            }
            return messages
        }
    }

    @Test(.enabled(if: Privileged.available, "\(Privileged.reason)"))
    func theUnitsCommandLineNotifiesReadyAndWatchdogWithOnlyItsCapabilities() throws {
        // The binary where nobody can run it; the log directory as LogsDirectory= makes it.
        let bin = try EventLogTests.PrivateDirectory()
        chmod(bin.path, 0o755)
        let binary = bin.path + "/tcptrail"
        try FileManager.default.copyItem(atPath: Products.tcptrail, toPath: binary)
        let logs = try EventLogTests.PrivateDirectory()
        #expect(chown(logs.path, 65534, 65534) == 0)
        let webPort = Unique.port()

        var command = try Self.commandLine()
        #expect(command.first == "/usr/local/bin/tcptrail" && command.dropFirst().first == "serve", "\(command)")
        command[0] = binary
        // The env file's flags, with this test's port and directory in place of 8080 and /var/log/tcptrail.
        for (flag, value) in [("--listen", "127.0.0.1:\(webPort)"), ("--output", logs.path + "/trace.jsonl")] {
            let at = try #require(command.firstIndex(of: flag), "the env file sets no \(flag)")
            command[at + 1] = value
        }
        // AmbientCapabilities= and CapabilityBoundingSet=, as setpriv names them; DynamicUser= as nobody.
        let caps = try Self.setting("AmbientCapabilities").split(separator: " ").map { "+" + $0.dropFirst(4).lowercased() }
        let notify = try NotifySocket()
        let service = try Background(["NOTIFY_SOCKET=\(notify.name)", "WATCHDOG_USEC=1000000",
                                      "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs",
                                      "--inh-caps=-all," + caps.joined(separator: ","), "--ambient-caps=" + caps.joined(separator: ","),
                                      "--bounding-set=-all," + caps.joined(separator: ",")] + command)
        defer { service.signal(SIGKILL) }

        let messages = notify.receive(timeout: Timing.waitSeconds) { m in
            m.contains { $0.hasPrefix("READY=1") } && m.filter { $0 == "WATCHDOG=1" }.count >= 2
        }
        #expect(messages.first?.hasPrefix("READY=1") == true, "\(messages) \(service.stderr)")
        #expect(messages.filter { $0 == "WATCHDOG=1" }.count >= 2, "\(messages)")
        // Ready means serving: /metrics answers at once.
        let metrics = try run(["curl", "-sS", "http://127.0.0.1:\(webPort)/metrics"], check: false, timeout: 20)
        #expect(metrics.stdout.contains("tcptrail_build_info"), "\(metrics.stderr)")

        // It runs with exactly the unit's capabilities, and traces with them.
        let status = try String(contentsOfFile: "/proc/\(service.pid)/status", encoding: .utf8)
        let effective = status.split(separator: "\n").first { $0.hasPrefix("CapEff:") }.flatMap { UInt64($0.split(separator: "\t").last ?? "", radix: 16) }
        let numbers = ["bpf": 39, "perfmon": 38, "sys_ptrace": 19, "dac_read_search": 2, "sys_admin": 21, "syslog": 34]
        let want = caps.reduce(UInt64(0)) { $0 | (1 << UInt64(numbers[String($1.dropFirst())] ?? 63)) }
        #expect(effective == want, "CapEff \(String(effective ?? 0, radix: 16)), the unit's \(String(want, radix: 16))")
        let ns = try NetworkNamespace(prefix: "ttu")
        let closedPort = Unique.port()
        _ = try run(ns.command(["bash", "-c", "(exec 3<>/dev/tcp/127.0.0.1/\(closedPort)) 2>/dev/null; true"]))
        usleep(1_500_000)

        service.signal(SIGTERM)
        let stopping = notify.receive(timeout: 10) { $0.contains("STOPPING=1") }
        #expect(stopping.contains("STOPPING=1"), "\(stopping)")
        #expect(try service.wait() == 0, "\(service.stderr)")
        let records = try EventLogTests().lines(logs.path + "/trace.jsonl")
        #expect(records.contains { $0.str("anomaly") == "connection_refused" && $0.int("rport") == Int(closedPort) },
                "no refusal of port \(closedPort) in the log written by nobody: \(service.stderr)")
        #expect(records.last?.str("type") == "summary")
    }
}
