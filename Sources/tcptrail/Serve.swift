import ArgumentParser
import CTCPTrailSys
import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import Synchronization
import TCPTrailCore
import TCPTrailLoader

/// `tcptrail serve`: the live timeline page and a JSON API over HTTP.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve live connection timelines to a browser, with a JSON API.",
        discussion: """
        Open http://127.0.0.1:8080/ for a Gantt-style timeline per connection, coloured by \
        state, with anomalies marked; it updates live by server-sent events. The API: \
        /api/board (what the page shows), /api/connections, /api/events (recent state changes \
        and anomalies), /api/stream (server-sent events, one 'board' event every 500 ms). \
        It binds to loopback unless --allow-remote: the data names processes and endpoints \
        and the server has no authentication.
        """
    )

    @Option(help: "Address and port to listen on (IPv6 in brackets: [::1]:8080).")
    var listen: String = "127.0.0.1:8080"

    @Flag(help: "Allow --listen on an address other than loopback (no authentication: anyone who can reach it sees every connection).")
    var allowRemote = false

    @Option(help: "Seconds of history the page shows.")
    var window: Int = 60

    @OptionGroup var filters: FilterOptions

    @OptionGroup var live: LiveOptions

    mutating func validate() throws {
        guard let (host, _) = Self.parseListen(listen) else {
            throw ValidationError("--listen '\(listen)' is not ADDRESS:PORT such as 127.0.0.1:8080 or [::1]:8080")
        }
        if !Self.isLoopback(host) && !allowRemote {
            throw ValidationError("--listen \(listen) is not a loopback address; the server has no authentication, so add --allow-remote to serve connection data to the network")
        }
        if window < 5 || window > 3600 { throw ValidationError("--window must be 5 to 3600 seconds") }
    }

    /// "127.0.0.1:8080", "[::1]:8080", "localhost:8080".
    static func parseListen(_ text: String) -> (host: String, port: Int)? {
        var host: Substring
        var portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let port = Int(portText), (1...65535).contains(port), !host.isEmpty else { return nil }
        if host == "localhost" { host = "127.0.0.1" }
        var v4 = in_addr(), v6 = in6_addr()
        guard inet_pton(AF_INET, String(host), &v4) == 1 || inet_pton(AF_INET6, String(host), &v6) == 1 else { return nil }
        return (String(host), port)
    }

    static func isLoopback(_ host: String) -> Bool {
        host.hasPrefix("127.") || host == "::1"
    }

    func run() throws {
        guard let (host, port) = Self.parseListen(listen) else { throw ExitCode.validationFailure }
        let session = TraceSession(options: live, filters: filters)
        tt_install_stop_handlers()
        if !Self.isLoopback(host) {
            Diagnostics.note("tcptrail: warning: serving on \(listen), not loopback: anyone who can reach it sees every connection on this host (no authentication)")
        }
        let sink = EventPrinter(format: .none, filter: filters.eventFilter, limit: nil, wideAddresses: false,
                                engine: HandshakeEngine(thresholds: live.thresholds()), log: nil)
        // The engine's records are applied to the shared board once per turn, under one lock.
        nonisolated(unsafe) var pending: [EngineOutput] = []
        sink.observer = { pending.append($0) }
        let state = LiveBoard(host: ProcessInfo.processInfo.hostName, windowSeconds: window)
        session.begin(sink: sink)
        state.apply(pending, lost: session.lost, now: WallClock.monotonicNow())
        pending.removeAll()

        let server = WebServer(state: state, host: host, port: port)
        let started = server.start()
        switch started {
        case .failure(let message):
            session.stop()
            Diagnostics.fail(message, status: 69)
        case .success(let address):
            Diagnostics.note("tcptrail: serving live timelines on http://\(address)/ ; Ctrl-C to stop")
        }

        while tt_stop_signal() == 0 {
            session.step()
            state.apply(pending, lost: session.lost, now: WallClock.monotonicNow())
            pending.removeAll(keepingCapacity: true)
        }
        let stats = session.stop()
        state.apply(pending, lost: stats.lost, now: WallClock.monotonicNow())
        Diagnostics.note("tcptrail: \(sink.events) events, \(stats.lost) lost")
    }
}

/// The board the tracing loop writes and the HTTP handlers read.
final class LiveBoard: Sendable {
    private let board: Mutex<ConnectionBoard>
    let host: String
    let windowSeconds: Int
    let clock = WallClock.current()

    /// Ended connections stay for the page's window (its bars reach back that
    /// far), at most 5000 of them.
    init(host: String, windowSeconds: Int) {
        self.host = host
        self.windowSeconds = windowSeconds
        board = Mutex(ConnectionBoard(retention: UInt64(windowSeconds) * 1_000_000_000, maxEndedRows: 5000))
    }

    func apply(_ outputs: [EngineOutput], lost: UInt64, now: UInt64) {
        board.withLock { b in
            for o in outputs { b.apply(o) }
            b.setLost(lost)
            b.advance(to: now)
        }
    }

    /// Runs `body` on the board with the lock held (keep it short: the tracer waits).
    func read<R>(_ body: (borrowing ConnectionBoard, BoardJSON) -> R) -> R {
        let json = BoardJSON(clock: clock, source: "live", host: host, windowSeconds: windowSeconds, limit: 400)
        return board.withLock { body($0, json) }
    }
}

/// The HTTP side: routes, the Host check, the event stream.
struct WebServer: Sendable {
    let state: LiveBoard
    let host: String
    let port: Int

    enum Started { case success(String), failure(String) }

    /// Starts listening on a background task; waits until it listens or fails.
    func start() -> Started {
        let outcome = Mutex<Started?>(nil)
        let ready = DispatchSemaphore(value: 0)
        let router = makeRouter()
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(host, port: port), serverName: "tcptrail"),
            onServerRunning: { channel in
                outcome.withLock { $0 = .success(channel.localAddress.map { Self.describe($0) } ?? "\(host):\(port)") }
                ready.signal()
            },
            logger: {
                var l = Logger(label: "tcptrail.serve")
                l.logLevel = .critical
                return l
            }()
        )
        Task.detached {
            do {
                try await app.runService(gracefulShutdownSignals: [])
            } catch {
                let text = "\(error)"
                let why = text.contains("ddress already in use") ? "the address is in use (another server on that port?)" : text
                outcome.withLock { $0 = .failure("cannot listen on \(host):\(port): \(why); pick another with --listen ADDRESS:PORT") }
                ready.signal()
            }
        }
        if ready.wait(timeout: .now() + 15) == .timedOut {
            return .failure("the HTTP server did not start within 15 s")
        }
        return outcome.withLock { $0 } ?? .failure("the HTTP server did not start")
    }

    static func describe(_ a: SocketAddress) -> String {
        guard let ip = a.ipAddress, let port = a.port else { return "\(a)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }

    /// Host names a browser may use for this server. A page on another site
    /// that rebinds its name to 127.0.0.1 sends its own name: refused.
    func hostAllowed(_ header: String?) -> Bool {
        guard Serve.isLoopback(host) else { return true }
        guard let header else { return false }
        let allowed = ["127.0.0.1:\(port)", "localhost:\(port)", "[::1]:\(port)", "\(host):\(port)",
                       host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"]
        return allowed.contains(header.lowercased())
    }

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        let state = self.state
        let server = self
        router.middlewares.add(HostCheck(server: server))
        router.get("/") { _, _ -> Response in
            var headers = HTTPFields()
            headers[.contentType] = "text/html; charset=utf-8"
            headers[.contentSecurityPolicy] = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:"
            headers[.xContentTypeOptions] = "nosniff"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: TimelinePage.bytes)))
        }
        router.get("/api/board") { request, _ -> Response in
            let query = Self.query(request.uri.queryParameters)
            let limit = request.uri.queryParameters["limit"].flatMap { Int($0) }.map { min(max($0, 1), 5000) } ?? 400
            return Self.json(state.read { board, json in
                var j = json
                j.limit = limit
                var out = OutputBuffer(capacity: 1 << 16)
                j.append(board, query: query, to: &out)
                return out
            })
        }
        router.get("/api/connections") { request, _ -> Response in
            let query = Self.query(request.uri.queryParameters)
            let limit = request.uri.queryParameters["limit"].flatMap { Int($0) }.map { min(max($0, 1), 100_000) } ?? 5000
            return Self.json(state.read { board, json in
                var out = OutputBuffer(capacity: 1 << 16)
                let rows = board.rows(matching: query)
                out.append("{\"total\":" as StaticString)
                out.append(decimal: Int64(rows.count))
                out.append(",\"connections\":[" as StaticString)
                for (i, row) in rows.prefix(limit).enumerated() {
                    if i > 0 { out.append(UInt8(ascii: ",")) }
                    json.appendRow(row, to: &out)
                }
                out.append("]}" as StaticString)
                return out
            })
        }
        router.get("/api/events") { request, _ -> Response in
            let limit = request.uri.queryParameters["limit"].flatMap { Int($0) }.map { min(max($0, 1), 500) } ?? 100
            return Self.json(state.read { board, json in
                var out = OutputBuffer(capacity: 1 << 16)
                out.append("{\"stats\":" as StaticString)
                json.appendStats(board, to: &out)
                out.append(",\"changes\":" as StaticString)
                json.appendChanges(board.recentChanges(limit: limit), to: &out)
                out.append(",\"anomalies\":" as StaticString)
                json.appendFeed(board.recentAnomalies(limit: limit), to: &out)
                out.append(UInt8(ascii: "}"))
                return out
            })
        }
        router.get("/api/stream") { request, _ -> Response in
            let query = Self.query(request.uri.queryParameters)
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
                while !Task.isCancelled {
                    let out = state.read { board, json in
                        var o = OutputBuffer(capacity: 1 << 16)
                        o.append("event: board\ndata: " as StaticString)
                        json.append(board, query: query, to: &o)
                        o.append("\n\n" as StaticString)
                        return o
                    }
                    try await writer.write(out.withUnsafeBytes { ByteBuffer(bytes: $0) })
                    try await Task.sleep(for: .milliseconds(500))
                }
                try await writer.finish(nil)
            })
        }
        return router
    }

    static func json(_ out: OutputBuffer) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        headers[.cacheControl] = "no-store"
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: out.withUnsafeBytes { ByteBuffer(bytes: $0) }))
    }

    /// `?process=&port=&state=&anomaly=&anomalies_only=1&order=`.
    static func query(_ p: FlatDictionary<Substring, Substring>) -> ConnectionBoard.Query {
        var q = ConnectionBoard.Query()
        if let v = p["process"], !v.isEmpty { q.process = String(v) }
        if let v = p["port"] { q.port = UInt16(v) }
        if let v = p["state"] { q.state = TCPState(rawValue: v.uppercased()) }
        if let v = p["anomaly"] { q.anomaly = Anomaly.Kind(rawValue: String(v)) }
        if let v = p["anomalies_only"] { q.anomaliesOnly = v == "1" || v == "true" }
        if let v = p["order"], let o = ConnectionBoard.Query.Order(rawValue: String(v)) { q.order = o }
        return q
    }
}

/// Refuses requests whose Host is not this server's (DNS rebinding).
struct HostCheck: RouterMiddleware {
    let server: WebServer
    func handle(_ request: Request, context: BasicRequestContext, next: (Request, BasicRequestContext) async throws -> Response) async throws -> Response {
        guard server.hostAllowed(request.head.authority) else {
            return Response(status: .forbidden, body: .init(byteBuffer: ByteBuffer(string: "tcptrail: Host not allowed\n")))
        }
        return try await next(request, context)
    }
}

/// The self-contained timeline page (Web/timeline.html), embedded in the binary.
enum TimelinePage {
    static let bytes: [UInt8] = PackageResources.timeline_html

    /// The page with `board` embedded as its data: one file that needs nothing else.
    static func report(boardJSON: OutputBuffer) -> [UInt8]? {
        let marker = Array(#"<script id="tcptrail-data" type="application/json">null</script>"#.utf8)
        guard let at = bytes.firstRange(of: marker) else { return nil }
        var out = Array(bytes[..<at.lowerBound])
        out.append(contentsOf: #"<script id="tcptrail-data" type="application/json">"#.utf8)
        // '<' as \u003c: nothing in the data can close the script element.
        boardJSON.withUnsafeBytes { raw in
            for b in raw {
                if b == UInt8(ascii: "<") { out.append(contentsOf: #"\u003c"#.utf8) } else { out.append(b) }
            }
        }
        out.append(contentsOf: "</script>".utf8)
        out.append(contentsOf: bytes[at.upperBound...])
        return out
    }
}
