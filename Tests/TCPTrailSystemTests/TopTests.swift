import Foundation
import Testing

/// Whether tmux is here (scripts/install-deps --test installs it).
enum Tmux {
    static let available = ["/usr/bin/tmux", "/usr/local/bin/tmux", "/bin/tmux"].contains { (path: String) in access(path, X_OK) == 0 }
    static let reason = "needs tmux (scripts/install-deps --test)"
}

/// A tmux server of its own (-L, no config file) with one detached session:
/// its settings and sizes touch no other tmux on the host.
final class TmuxPane {
    let name: String

    init(command: String, width: Int, height: Int) throws {
        name = "tt-top-\(getpid())-\(Unique.next())"
        try Self.spawnAndWait(["tmux", "-L", name, "-f", "/dev/null", "new-session", "-d", "-s", name,
                               "-x", "\(width)", "-y", "\(height)", command])
    }

    /// Runs a command that starts a daemon (the tmux server) and waits for it.
    /// Not through Foundation's Process: the daemon would inherit the descriptor
    /// Process watches for the child's exit, and the exit would never be seen.
    static func spawnAndWait(_ args: [String]) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        let errors = FileManager.default.temporaryDirectory.appendingPathComponent("tt-tmux-\(getpid())-\(Unique.next()).err").path
        defer { unlink(errors) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, errors, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        // Test threads block most signals: the child starts with none blocked, all at their defaults.
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setsigdefault(&attr, &all)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
        let envp: [UnsafeMutablePointer<CChar>?] = ProcessInfo.processInfo.environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, args[0], &actions, &attr, argv, envp)
        guard rc == 0 else { throw TestFailure("\(args[0]): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        // Exited normally with 0 (the wait status's low 7 bits: no signal; the next 8: the code).
        guard status & 0x7f == 0 && (status >> 8) & 0xff == 0 else {
            let text = (try? String(contentsOfFile: errors, encoding: .utf8)) ?? ""
            throw TestFailure("\(args.joined(separator: " ")) failed (wait status \(status)): \(text)")
        }
    }

    /// Ends the session and its server (and so the command in it).
    func kill() { _ = try? run(["tmux", "-L", name, "kill-server"], check: false, timeout: 10) }

    @discardableResult
    func tmux(_ args: [String]) throws -> String { try run(["tmux", "-L", name] + args, timeout: 10).stdout }

    /// The pane's text; with `escapes`, its colours and attributes too (trailing blanks kept: the bars).
    func capture(escapes: Bool = false) throws -> String {
        try tmux(["capture-pane", "-p"] + (escapes ? ["-e", "-N"] : []) + ["-t", name])
    }

    func send(_ keys: String...) throws { try tmux(["send-keys", "-t", name] + keys) }

    func resize(width: Int, height: Int) throws {
        try tmux(["resize-window", "-t", name, "-x", "\(width)", "-y", "\(height)"])
    }

    func format(_ f: String) throws -> String {
        try tmux(["display-message", "-p", "-t", name, f]).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Polls the pane until `ok` holds; fails with the last capture.
    @discardableResult
    func waitFor(_ what: String, timeout: Double = 15, _ ok: (String) -> Bool) throws -> String {
        let end = Date().addingTimeInterval(timeout)
        var last = ""
        while Date() < end {
            last = try capture()
            if ok(last) { return last }
            usleep(100_000)
        }
        throw TestFailure("timed out waiting for \(what); the pane shows:\n\(last)")
    }
}

/// The table's lines of a `top` screen: between the column titles and the anomaly feed.
func topTableLines(_ screen: String) -> [String] {
    let lines = screen.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    guard let head = lines.firstIndex(where: { $0.contains("PROCESS PID") || $0.contains("BY PROCESS") || $0.contains("BY UNIT") || $0.contains("BY REMOTE") }),
          let feed = lines.firstIndex(where: { $0.hasPrefix("ANOMALIES (newest first)") }), feed > head else { return [] }
    return Array(lines[(head + 1)..<feed]).filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
}

/// The anomaly feed's lines (below the table).
func topFeedLines(_ screen: String) -> [String] {
    let lines = screen.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    guard let feed = lines.firstIndex(where: { $0.hasPrefix("ANOMALIES (newest first)") }) else { return [] }
    return Array(lines[(feed + 1)...].dropLast())
}

/// Issue 5: `tcptrail top` in a terminal (tmux), with real connections.
@Suite(.serialized)
struct TopTests {
    @Test func privilegedAndTmuxWhereRequired() {
        if Privileged.required {
            #expect(Privileged.available, "privileged tests are required here but cannot run: \(Privileged.reason)")
            #expect(Tmux.available, "TopTests are required here but cannot run: \(Tmux.reason)")
        }
    }

    @Test(.enabled(if: Privileged.available, "\(Privileged.reason)"), .enabled(if: Tmux.available, "\(Tmux.reason)"))
    func topUnderTmux() throws {
        let net = try VethPair()
        let port = Unique.port(), closed = Unique.port()
        // Colours on (swift test sets NO_COLOR), so the ANSI capture shows them.
        let pane = try TmuxPane(command: "env -u NO_COLOR \(Products.tcptrail) top --refresh 100 --port \(port) --port \(closed); echo EXITED $?; sleep 60",
                                width: 160, height: 40)
        defer { pane.kill() }
        try pane.waitFor("the header", timeout: 30) { $0.contains("tcptrail top") && $0.contains("events/s") }

        // A server, a client holding its connection, a client with a hostile name, a refused connect.
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "2", "--name", "tt-topsrv"])
        try server.background.waitFor("listening")
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "1", "--name", "tt-topcli", "--hold", "20"])
        let evil = try Peer(net.client, ["client", net.serverV4, "\(port)", "1", "--name", "\u{1b}[31mEVIL\u{7}", "--hold", "20"])
        try client.background.waitFor("conn ")
        try evil.background.waitFor("conn ")
        let refused = try Peer(net.client, ["client", net.serverV4, "\(closed)", "1", "--name", "tt-topref"])
        _ = try refused.background.wait()
        let clientPid = try client.pid
        let (laddr, lport, raddr, rport) = try #require(client.connections.first)

        // 160x40: the rows with their processes, endpoints and states; the anomaly in header and feed.
        let screen = try pane.waitFor("the connections and the refused one") { s in
            let table = topTableLines(s)
            return table.contains { $0.contains("tt-topcli") && $0.contains("ESTABLISHED") }
                && table.contains { $0.contains("tt-topref") } && table.contains { $0.contains("EVIL") }
                && topFeedLines(s).contains { $0.contains("connection_refused") }
        }
        try screen.write(toFile: "/tmp/tcptrail-top-capture.txt", atomically: true, encoding: .utf8)
        let ansi = try pane.capture(escapes: true)
        try ansi.write(toFile: "/tmp/tcptrail-top-capture.ansi", atomically: true, encoding: .utf8)
        // The ended (refused) row is dimmed; open rows are not.
        let dim = "\u{1b}[2m"
        #expect(ansi.split(separator: "\n").first { $0.contains("tt-topref") }?.contains(dim) == true, "\(ansi)")
        #expect(ansi.split(separator: "\n").first { $0.contains("tt-topcli") }?.contains(dim) == false, "\(ansi)")
        let table = topTableLines(screen)
        let cli = try #require(table.first { $0.contains("tt-topcli") })
        #expect(cli.contains("tt-topcli \(clientPid)"), "\(cli)")
        // The local endpoint is padded to its column: compare words, not spaces.
        let words = cli.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        #expect(words.contains("\(laddr):\(lport) -> \(raddr):\(rport)"), "\(cli)")
        #expect(cli.contains("ESTABLISHED"))
        #expect(table.contains { $0.contains("tt-topsrv") && $0.contains("LISTEN") }, "\(screen)")
        let ref = try #require(table.first { $0.contains("tt-topref") })
        #expect(ref.hasPrefix("!"), "the refused row is marked: \(ref)")
        #expect(ref.contains("\(net.serverV4):\(closed)") && ref.contains("CLOSED"), "\(ref)")
        let header = screen.split(separator: "\n").prefix(2).joined(separator: "\n")
        #expect(header.contains("connection_refused 1"), "\(header)")
        #expect(topFeedLines(screen).contains { $0.contains("connection_refused") && $0.contains("tt-topref") && $0.contains("\(net.serverV4):\(closed)") })
        // The hostile name, escaped: never raw (tmux would have taken ESC [31m as a colour).
        #expect(screen.contains("\\x1b[31mEVIL\\x07"), "\(screen)")
        #expect(!screen.contains("\u{1b}") && !screen.contains("\u{7}"))
        #expect(screen.components(separatedBy: "EVIL").count == screen.components(separatedBy: "\\x1b[31mEVIL").count)
        // Every line fits the pane.
        #expect(screen.split(separator: "\n").allSatisfy { $0.utf8.count <= 160 })

        // a: anomalies only — the established rows go, the refused one stays.
        try pane.send("a")
        let only = try pane.waitFor("anomalies only") { s in
            s.contains("[a]nomalies-only on") && !topTableLines(s).contains { $0.contains("tt-topcli") }
        }
        #expect(topTableLines(only).contains { $0.contains("tt-topref") }, "\(only)")
        #expect(!topTableLines(only).contains { $0.contains("ESTABLISHED") }, "\(only)")
        try pane.send("a")
        try pane.waitFor("all rows again") { s in topTableLines(s).contains { $0.contains("tt-topcli") } }

        // 80x24: the header and the rows still there, within 80 columns.
        try pane.resize(width: 80, height: 24)
        let small = try pane.waitFor("the 80x24 screen") { s in
            let lines = s.split(separator: "\n", omittingEmptySubsequences: false)
            return lines.count >= 24 && lines.allSatisfy { $0.utf8.count <= 80 }
                && s.hasPrefix("tcptrail top") && s.contains("events/s")
                && topTableLines(s).contains { $0.contains("tt-topcli") && $0.contains("ESTABLISHED") }
        }
        #expect(topTableLines(small).contains { $0.contains("\(raddr):\(rport)") }, "\(small)")
        #expect(small.contains("q:quit") || small.contains("[q]uit"), "the footer: \(small)")
        // Every column keeps its title at 80 columns (the local one as its port), the bar's too.
        let titles = try #require(small.split(separator: "\n").first { $0.contains("PROCESS PID") }, "\(small)")
        let titleWords = titles.split(whereSeparator: \.isWhitespace).map(String.init)
        for title in ["REMOTE", "STATE", "AGE", "FOR"] {
            #expect(titleWords.contains(title), "no \(title) column at 80x24: \(titles)")
        }
        #expect(titleWords.contains("LOCAL") || titleWords.contains("LPORT"), "\(titles)")
        #expect(titleWords.last == "now" || titles.contains("last 30s") || titleWords.last == "30s", "the bar's title: \(titles)")
        // The listener's remote end whole, not cut to "~stening)".
        #expect(topTableLines(small).contains { $0.contains("tt-topsrv") && $0.contains("(listening)") }, "\(small)")
        #expect(!small.contains("~stening)"), "\(small)")

        // A process filter nothing matches: the table says so, and how to clear it.
        try pane.send("/")
        try pane.send("-l", "tt-nosuch")
        try pane.send("Enter")
        let none = try pane.waitFor("the no-match line") { s in topTableLines(s).contains { $0.contains("no match for process \"tt-nosuch\"") } }
        #expect(topTableLines(none).count == 1, "only the no-match line: \(none)")
        #expect(topTableLines(none).first?.contains("(key / changes it)") == true, "\(none)")
        // "/" starts from the filter in force: delete it, and Enter clears the filter.
        try pane.send("/")
        try pane.send("End", "BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "BSpace", "Enter")
        try pane.waitFor("the rows again") { s in topTableLines(s).contains { $0.contains("tt-topcli") } }

        // g: grouped by process, by systemd unit, by remote endpoint, then back.
        try pane.send("g")
        let byProcess = try pane.waitFor("the view by process") { $0.contains("BY PROCESS") }
        #expect(topTableLines(byProcess).contains { $0.contains("tt-topcli (\(clientPid))") }, "\(byProcess)")
        try pane.send("g")
        // The test's processes sit in whatever cgroup runs the tests: a unit, or none.
        let byUnit = try pane.waitFor("the view by unit") { $0.contains("BY UNIT") }
        #expect(!topTableLines(byUnit).isEmpty, "\(byUnit)")
        try pane.send("g")
        let byRemote = try pane.waitFor("the view by remote endpoint") { $0.contains("BY REMOTE ENDPOINT") }
        #expect(topTableLines(byRemote).contains { $0.contains("\(raddr):\(rport)") }, "\(byRemote)")
        try pane.send("g")
        try pane.waitFor("the table again") { $0.contains("PROCESS PID") }

        // q: exits 0, the terminal restored (the alternate screen left, the UI gone).
        try pane.send("q")
        let after = try pane.waitFor("the exit") { $0.contains("EXITED") }
        #expect(after.contains("EXITED 0"), "\(after)")
        #expect(!after.contains("events/s") && !after.contains("PROCESS PID"), "\(after)")
        #expect(after.contains("tcptrail: ") && after.contains(" events, 0 lost"), "\(after)")
        #expect(try pane.format("#{alternate_on}") == "0")
        _ = server
    }

    /// More connections end within top's 5 s than the 5,000 rows it keeps: the
    /// header counts every one, as many as the client's sockets the kernel holds
    /// in TIME_WAIT (ss; only the client's sockets are traced, --rport).
    @Test(.enabled(if: Privileged.available, "\(Privileged.reason)"), .enabled(if: Tmux.available, "\(Tmux.reason)"))
    func theEndedCountPastTheRowsKeptIsExact() throws {
        let net = try VethPair()
        let port = Unique.port(), n = 6000
        let pane = try TmuxPane(command: "\(Products.tcptrail) top --refresh 100 --rport \(port); sleep 60", width: 120, height: 30)
        defer { pane.kill() }
        try pane.waitFor("the header", timeout: 30) { $0.contains("tcptrail top") && $0.contains("events/s") }
        let server = try Peer(net.server, ["server", net.serverV4, "\(port)", "\(n)", "--name", "tt-endsrv"])
        try server.background.waitFor("listening")
        let start = Date()
        let client = try Peer(net.client, ["client", net.serverV4, "\(port)", "\(n)", "--name", "tt-endcli"])
        _ = try client.background.wait(timeout: 60)
        let took = Date().timeIntervalSince(start)
        let made = client.connections.count
        #expect(made == n, "the client made \(made) of \(n) connections: \(client.background.stderr)")
        // All ended within 5 s of the first: the count can reach every one.
        #expect(took < 4.5, "the client took \(took) s for \(made) connections: more than top's 5 s retention")

        // The most the header shows while they are all within the 5 s.
        var most = 0, screen = ""
        let end = Date().addingTimeInterval(6)
        while Date() < end && most < made {
            screen = try pane.capture()
            let header = screen.split(separator: "\n").first.map(String.init) ?? ""
            if let r = header.range(of: #"\+ (\d+) ended"#, options: .regularExpression),
               let k = Int(header[r].split(separator: " ")[1]) {
                most = max(most, k)
            }
            usleep(50_000)
        }
        // The kernel's count: the client's sockets to the port in TIME_WAIT (they stay 60 s).
        // Those not ended yet, as the kernel has them (a FIN_WAIT_1 whose FIN is retransmitted);
        // a TIME_WAIT a later connect reused has ended all the same.
        func ss(_ filter: [String]) throws -> Int {
            try run(net.client.command(["ss", "-Htan"] + filter + ["dport", "=", ":\(port)"]), timeout: 30).stdout.split(separator: "\n").count
        }
        let open = try ss(["state", "connected", "exclude", "time-wait"])
        let timeWaits = try ss(["state", "time-wait"])
        #expect(made - open > 5000, "\(open) of \(made) connections still open")
        #expect(screen.split(separator: "\n").first?.contains(" 0 lost") == true, "events were lost: \(screen)")
        #expect(most == made - open, "the header's ended count reached \(most); the client made \(made), ss shows \(open) still open and \(timeWaits) in TIME_WAIT (took \(took) s): \(screen)")
        _ = server
    }
}
