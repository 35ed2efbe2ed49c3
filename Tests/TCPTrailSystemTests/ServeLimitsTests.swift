import Foundation
import Testing

/// Issue 14: `tcptrail serve` cannot be starved. Idle half-sent requests are
/// closed after --header-timeout, accept backs off instead of spinning when the
/// fd limit runs out, and clients beyond --max-clients and --max-streams get 503.
/// The truth is what the clients see (EOF, status lines), `ss`, and /proc.
@Suite(.serialized, .enabled(if: Privileged.available, "\(Privileged.reason)"))
struct ServeLimitsTests {
    /// Opens N connections to 127.0.0.1:PORT, sends each a request head without
    /// its final blank line, and holds them for HOLD seconds. Prints "ready"
    /// 1.5 s in, then one JSON object: when each connection was begun (connect
    /// called, before the server can have started its clock) and closed by the
    /// server, in seconds from the start, and the status line it got, if any.
    static let halfRequests = #"""
    import json, select, socket, sys, time
    port, n, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    head = ("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port).encode()
    start = time.monotonic()
    ep = select.epoll()
    connecting, open_, closed, failed = {}, {}, [], 0
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        connecting[s.fileno()] = (s, time.monotonic() - start)
        ep.register(s.fileno(), select.EPOLLOUT)
    ready = False
    while time.monotonic() - start < hold:
        now = time.monotonic() - start
        if not ready and now > 1.5:
            print("ready connected=%d connecting=%d" % (len(open_), len(connecting)), flush=True)
            ready = True
        for fd, _ in ep.poll(0.05):
            now = time.monotonic() - start
            if fd in connecting:
                s, made = connecting.pop(fd)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    failed += 1; ep.unregister(fd); s.close(); continue
                s.send(head)
                open_[fd] = [s, made, b""]
                ep.modify(fd, select.EPOLLIN | select.EPOLLRDHUP)
                continue
            entry = open_[fd]
            try:
                chunk = entry[0].recv(4096)
            except OSError:
                chunk = b""
            if chunk:
                entry[2] += chunk
                continue
            ep.unregister(fd); entry[0].close(); del open_[fd]
            closed.append({"made": entry[1], "closed": now, "status": entry[2].split(b"\r\n", 1)[0].decode("latin-1")})
    print(json.dumps({"closed": closed, "open": len(open_), "connecting": len(connecting), "failed": failed}), flush=True)
    """#

    struct Flood {
        struct Closed { var made: Double, closed: Double, status: String }
        var closed: [Closed]
        var stillOpen: Int
        var neverConnected: Int
        var connected: Int { closed.count + stillOpen }

        init(_ background: Background) throws {
            let line = try #require(background.stdout.split(separator: "\n").last { $0.hasPrefix("{") }, "no summary from the flood: \(background.stderr)")
            let obj = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            closed = (obj["closed"] as? [[String: Any]] ?? []).map {
                Closed(made: $0["made"] as? Double ?? -1, closed: $0["closed"] as? Double ?? -1, status: $0["status"] as? String ?? "")
            }
            stillOpen = obj["open"] as? Int ?? -1
            neverConnected = (obj["connecting"] as? Int ?? 0) + (obj["failed"] as? Int ?? 0)
        }
    }

    /// CPU seconds (user + system) the process has used, from /proc/PID/stat.
    func cpuSeconds(_ pid: Int32) throws -> Double {
        let stat = try String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)
        // Fields after the ")" that ends the command name: utime and stime are the 12th and 13th.
        let close = try #require(stat.lastIndex(of: ")"))
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        let ticks = try #require(Double(fields[11])) + (try #require(Double(fields[12])))
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    func openDescriptors(_ pid: Int32) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    /// Established connections to the server's port, by `ss`.
    func established(_ port: UInt16) throws -> Int {
        try run(["ss", "-tnH", "state", "established", "( sport = :\(port) )"]).stdout.split(separator: "\n").count
    }

    /// Status code and seconds taken, from curl.
    func timedGet(_ url: String, extra: [String] = [], maxTime: Double = 30) throws -> (code: String, seconds: Double) {
        let started = Date()
        let r = try run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "\(maxTime)"] + extra + [url], check: false, timeout: maxTime + 10)
        return (r.stdout, Date().timeIntervalSince(started))
    }

    /// Serve under a low fd limit, with a short header timeout and --max-clients above what the limit allows.
    /// It traces one unused port only: the CPU measured is the HTTP side's, not other tests' TCP traffic.
    func lowLimitServe(port: UInt16, fdLimit: Int, headerTimeout: Double) throws -> Background {
        let serve = try Background(["prlimit", "--nofile=\(fdLimit):\(fdLimit)", Products.tcptrail, "serve",
                                    "--listen", "127.0.0.1:\(port)", "--header-timeout", "\(headerTimeout)",
                                    "--max-clients", "1000", "--max-streams", "2", "--port", "\(Unique.port())"])
        try serve.waitFor("serving live timelines", inStderr: true)
        return serve
    }

    /// CPU share of one core over `seconds`, and the fds open at its start and end.
    /// A normal request is answered within 3 s of the header timeout that
    /// frees the flood's places; then the flood's own account of its sockets.
    func servedAfter(_ flood: Background, startedAt floodStart: Date, webPort: UInt16, headerTimeout: Double) throws
        -> (flood: Flood, board: (code: String, seconds: Double), sinceFlood: Double) {
        let board = try timedGet("http://127.0.0.1:\(webPort)/api/board")
        let sinceFlood = Date().timeIntervalSince(floodStart)
        #expect(board.code == "200")
        #expect(sinceFlood < headerTimeout + 3, "answered \(sinceFlood) s after the flood began")
        _ = try flood.wait(timeout: 4 * headerTimeout + 30)
        return (try Flood(flood), board, sinceFlood)
    }

    func measureCPU(_ pid: Int32, seconds: Double) throws -> (share: Double, fds: (Int, Int)) {
        let cpu0 = try cpuSeconds(pid), wall0 = Date(), fds0 = openDescriptors(pid)
        usleep(UInt32(seconds * 1_000_000))
        let cpu1 = try cpuSeconds(pid), wall1 = Date()
        return ((cpu1 - cpu0) / wall1.timeIntervalSince(wall0), (fds0, openDescriptors(pid)))
    }

    func f(_ x: Double, _ digits: Int = 2) -> String { String(format: "%.\(digits)f", x) }

    @Test func halfRequestsAtTheFdLimitNeitherStarveNorSpinServe() throws {
        let webPort = Unique.port()
        let headerTimeout = 6.0
        // More than the fds allow, and few enough that those queued meanwhile fit in what
        // the first ones free (so the request under test gets in with them).
        let fdLimit = 256, flooders = 300
        let serve = try lowLimitServe(port: webPort, fdLimit: fdLimit, headerTimeout: headerTimeout)
        #expect(serve.stderr.contains("the fd limit (\(fdLimit)"), "serve warns that the fd limit is below --max-clients: \(serve.stderr)")
        let idleFDs = openDescriptors(serve.pid)

        let flood = try Background(["python3", "-c", Self.halfRequests, "\(webPort)", "\(flooders)", "\(3 * headerTimeout)"])
        try flood.waitFor("ready")
        let floodStart = Date().addingTimeInterval(-1.5)

        // (c) Held at what the fd limit leaves room for, short of it, and not spinning.
        let (cpuShare, fds) = try measureCPU(serve.pid, seconds: 3)
        #expect(fds.0 >= fdLimit - 40 && fds.1 >= fdLimit - 40, "the flood should fill what fds serve allows clients: \(fds) of \(fdLimit)")
        #expect(fds.0 <= fdLimit - 16 && fds.1 <= fdLimit - 16, "serve keeps fds for the tracer: \(fds) of \(fdLimit)")
        #expect(Date().timeIntervalSince(floodStart) < headerTimeout, "the CPU window must end before the header timeout frees fds")
        #expect(cpuShare < 0.2, "serve used \(cpuShare * 100)% of a core while full")

        // (a) A normal request is answered once the header timeout frees the half-requests' places.
        // (b) Every half-request was closed by the server after the header timeout, not before.
        let (result, board, sinceFlood) = try servedAfter(flood, startedAt: floodStart, webPort: webPort, headerTimeout: headerTimeout)
        let lifetimes = result.closed.map { $0.closed - $0.made }
        #expect(result.stillOpen == 0 && result.neverConnected == 0, "open \(result.stillOpen), never connected \(result.neverConnected)")
        #expect(result.closed.count == flooders)
        #expect(result.closed.allSatisfy { $0.status.isEmpty }, "no answer to a head never finished")
        #expect((lifetimes.min() ?? 0) >= headerTimeout - 0.5, "closed before the header timeout: \(lifetimes.min() ?? 0) s")
        // Those that held the places were closed on time.
        let firstWave = result.closed.filter { $0.closed < headerTimeout + 2 }.count
        #expect(firstWave >= fds.0 - idleFDs - 4, "\(firstWave) closed by \(headerTimeout + 2) s, \(fds.0 - idleFDs) were held")
        #expect(try established(webPort) == 0)
        #expect(openDescriptors(serve.pid) <= idleFDs + 8, "fds back to \(openDescriptors(serve.pid)) from \(idleFDs) at rest")

        print("""
        ServeLimitsTests.fdLimit: nofile \(fdLimit), --header-timeout \(headerTimeout), --max-clients 1000; \
        \(flooders) half-requests; serve at \(fds.0)-\(fds.1)/\(fdLimit) fds (\(idleFDs) at rest); \
        CPU \(f(cpuShare * 100, 1))% of a core over 3 s; \
        /api/board \(board.code) in \(f(board.seconds)) s (\(f(sinceFlood)) s after the flood began); \
        half-requests lived \(f(lifetimes.min() ?? -1))-\(f(lifetimes.max() ?? -1)) s, \(firstWave) closed in the first wave
        """)
        serve.signal(SIGINT)
        #expect(try serve.wait(timeout: 30) == 0)
    }

    @Test func acceptFailingForLackOfFdsPausesInsteadOfSpinning() throws {
        let webPort = Unique.port()
        let headerTimeout = 6.0
        let serve = try lowLimitServe(port: webPort, fdLimit: 256, headerTimeout: headerTimeout)
        // Now take fds away under it: the limit ends 40 above what is open, far below where serve would stop accepting.
        let idleFDs = openDescriptors(serve.pid)
        let lowered = idleFDs + 40
        try run(["prlimit", "--pid", "\(serve.pid)", "--nofile=\(lowered):\(lowered)"])
        let flooders = 60

        let flood = try Background(["python3", "-c", Self.halfRequests, "\(webPort)", "\(flooders)", "\(3 * headerTimeout)"])
        try flood.waitFor("ready")
        let floodStart = Date().addingTimeInterval(-1.5)

        // (c) accept fails with EMFILE now; it must not be retried in a busy loop.
        let (cpuShare, fds) = try measureCPU(serve.pid, seconds: 3)
        #expect(fds.0 >= lowered - 2 && fds.1 >= lowered - 2, "serve should be out of fds: \(fds) of \(lowered)")
        #expect(Date().timeIntervalSince(floodStart) < headerTimeout)
        #expect(cpuShare < 0.2, "serve used \(cpuShare * 100)% of a core while accept failed")

        // (a) Served once the header timeout frees fds (and the pause ends).
        let (result, board, sinceFlood) = try servedAfter(flood, startedAt: floodStart, webPort: webPort, headerTimeout: headerTimeout)
        #expect(result.stillOpen == 0 && result.neverConnected == 0 && result.closed.count == flooders)
        #expect(result.closed.allSatisfy { $0.closed - $0.made >= headerTimeout - 0.5 })
        print("""
        ServeLimitsTests.emfile: nofile lowered to \(lowered) (\(idleFDs) open), \(flooders) half-requests; \
        serve at \(fds.0)-\(fds.1) fds; CPU \(f(cpuShare * 100, 1))% of a core over 3 s of failing accepts; \
        /api/board \(board.code) in \(f(board.seconds)) s (\(f(sinceFlood)) s after the flood began)
        """)
        serve.signal(SIGINT)
        #expect(try serve.wait(timeout: 30) == 0)
    }

    @Test func beyondItsCapsServeAnswers503() throws {
        let webPort = Unique.port()
        let base = "http://127.0.0.1:\(webPort)"
        let maxClients = 40, maxStreams = 2, flooders = 60
        let serve = try Background([Products.tcptrail, "serve", "--listen", "127.0.0.1:\(webPort)", "--header-timeout", "8",
                                    "--max-clients", "\(maxClients)", "--max-streams", "\(maxStreams)"])
        try serve.waitFor("serving live timelines", inStderr: true)

        // (d) Streams up to the cap get events; the next one gets 503.
        var streams = try (0..<maxStreams).map { _ in try Background(["curl", "-sS", "-N", "--max-time", "60", "\(base)/api/stream"]) }
        for s in streams { try s.waitFor("event: board") }
        let extra = try timedGet("\(base)/api/stream", maxTime: 5)
        #expect(extra.code == "503", "stream \(maxStreams + 1) got \(extra.code)")
        // The Host check still stands in front.
        #expect(try timedGet("\(base)/api/board", extra: ["-H", "Host: attacker.example:\(webPort)"]).code == "403")

        // Places are given back: with the streams gone, as many new ones get events again.
        for s in streams { s.signal(SIGTERM) }
        for s in streams { _ = try s.wait(timeout: 10) }
        usleep(1_200_000)
        streams = try (0..<maxStreams).map { _ in try Background(["curl", "-sS", "-N", "--max-time", "60", "\(base)/api/stream"]) }
        for s in streams { try s.waitFor("event: board") }

        // Connections beyond --max-clients (the streams hold two) are answered 503 and closed at once.
        let flood = try Background(["python3", "-c", Self.halfRequests, "\(webPort)", "\(flooders)", "4"])
        try flood.waitFor("ready")
        let refused = try timedGet("\(base)/api/board", maxTime: 5)
        #expect(refused.code == "503", "a request beyond --max-clients got \(refused.code)")
        #expect(refused.seconds < 2)
        _ = try flood.wait(timeout: 30)
        let result = try Flood(flood)
        let answered = result.closed.filter { $0.status == "HTTP/1.1 503 Service Unavailable" }
        let held = result.stillOpen + result.closed.filter { $0.status.isEmpty }.count
        #expect(result.connected == flooders)
        #expect(held == maxClients - maxStreams, "held \(held), answered \(answered.count)")
        #expect(answered.count == flooders - held)
        #expect(answered.allSatisfy { $0.closed - $0.made < 2 }, "a refused connection stayed open")

        // The flood gone, requests are served again.
        usleep(500_000)
        #expect(try timedGet("\(base)/api/board").code == "200")
        print("ServeLimitsTests.caps: --max-clients \(maxClients), --max-streams \(maxStreams); stream \(maxStreams + 1) got \(extra.code); \(flooders) half-requests: \(held) held, \(answered.count) answered 503; a request beyond the cap got \(refused.code) in \(f(refused.seconds, 3)) s")
        for s in streams { s.signal(SIGTERM) }
        serve.signal(SIGINT)
        #expect(try serve.wait(timeout: 30) == 0)
    }
}

extension ServeLimitsTests {
    /// Makes two kept-alive connections to 127.0.0.1:PORT. The first sends a
    /// request, reads the answer and waits; the second does the same, pauses GAP
    /// seconds, then sends half a head. Prints when each was closed, in seconds
    /// from its last answer and from its half head.
    static let keepAlive = #"""
    import json, socket, sys, time
    port, gap = int(sys.argv[1]), float(sys.argv[2])
    request = ("GET /api/events?limit=1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port).encode()
    def answer(s):
        data = b""
        while b"\r\n\r\n" not in data:
            data += s.recv(65536)
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        length = int(next(l.split(":", 1)[1] for l in lines if l.lower().startswith("content-length:")))
        while len(body) < length:
            body += s.recv(65536)
        return lines[0]
    def closed_after(s):
        start = time.monotonic()
        s.settimeout(60)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
        return time.monotonic() - start
    a = socket.create_connection(("127.0.0.1", port)); a.sendall(request); status = answer(a)
    idle = closed_after(a)
    b = socket.create_connection(("127.0.0.1", port)); b.sendall(request); answer(b)
    time.sleep(gap)
    b.sendall(b"GET / HTTP/1.1\r\n")
    print(json.dumps({"status": status, "idle": idle, "half": closed_after(b)}), flush=True)
    """#

    @Test func keptAliveConnectionsMeetTheIdleAndHeaderTimeouts() throws {
        let webPort = Unique.port()
        let headerTimeout = 1.0, idleTimeout = 3.0
        let serve = try Background([Products.tcptrail, "serve", "--listen", "127.0.0.1:\(webPort)",
                                    "--header-timeout", "\(headerTimeout)", "--idle-timeout", "\(idleTimeout)"])
        try serve.waitFor("serving live timelines", inStderr: true)
        // An event stream outlives both timeouts: a response is in progress.
        let stream = try Background(["curl", "-sS", "-N", "--max-time", "\(idleTimeout + 3)", "http://127.0.0.1:\(webPort)/api/stream"])

        // The pause (1.5 s) is longer than the header timeout: that clock starts at the half head's first byte.
        let probe = try run(["python3", "-c", Self.keepAlive, "\(webPort)", "\(headerTimeout + 0.5)"], timeout: 60)
        let line = try #require(probe.stdout.split(separator: "\n").last)
        let obj = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        let idle = obj["idle"] as? Double ?? -1, half = obj["half"] as? Double ?? -1
        #expect(obj["status"] as? String == "HTTP/1.1 200 OK")
        #expect(idle >= idleTimeout - 0.3 && idle < idleTimeout + 1.5, "idle connection closed after \(idle) s")
        #expect(half >= headerTimeout - 0.3 && half < headerTimeout + 1.5, "half head closed after \(half) s")

        #expect(try stream.wait(timeout: 30) == 28, "curl stops at --max-time; the stream stays open")
        let events = stream.stdout.components(separatedBy: "event: board").count - 1
        #expect(events >= Int(2 * (idleTimeout + 3)) - 3, "\(events) events in \(idleTimeout + 3) s")
        print("ServeLimitsTests.keepAlive: --header-timeout \(headerTimeout), --idle-timeout \(idleTimeout); idle closed after \(f(idle)) s, half head after \(f(half)) s; a stream got \(events) events over \(idleTimeout + 3) s")
        serve.signal(SIGINT)
        #expect(try serve.wait(timeout: 30) == 0)
    }
}

/// The limits' values are checked before anything is loaded (no root needed).
struct ServeLimitOptionsTests {
    @Test(arguments: [
        ["--header-timeout", "0"], ["--header-timeout", "-1"], ["--header-timeout", "nan"], ["--header-timeout", "inf"],
        ["--header-timeout", "4000"], ["--idle-timeout", "0"], ["--idle-timeout", "1e9"], ["--max-clients", "0"],
        ["--max-clients", "2000000"], ["--max-streams", "0"], ["--max-clients", "10", "--max-streams", "11"],
        ["--header-timeout", "soon"],
    ])
    func serveRefusesBadLimits(_ args: [String]) throws {
        let r = try run([Products.tcptrail, "serve"] + args, check: false)
        #expect(r.status == 64, "\(args) exited \(r.status)")
        let option = args[args.count - 2]
        #expect(r.stderr.contains(option), "\(args): \(r.stderr)")
    }
}
