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
import TCPTrailHost
import TCPTrailLog
import TCPTrailLive

/// `tcptrail serve`: the live timeline page and a JSON API over HTTP.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve live connection timelines to a browser, with a JSON API.",
        discussion: """
        Open http://127.0.0.1:8080/ for a Gantt-style timeline per connection, coloured by \
        state, with anomalies marked; it updates live by server-sent events. The API: \
        /api/board (what the page shows), /api/connections, /api/events (recent state changes \
        and anomalies), /api/stream (server-sent events, one 'board' event every 500 ms). \
        /metrics is for Prometheus (docs/metrics.md; --no-metrics leaves it out). With --output \
        it also keeps the JSON Lines log, as trace does; under systemd it tells $NOTIFY_SOCKET \
        READY=1 and WATCHDOG=1 (packaging/tcptrail.service). \
        A query parameter the API does not take, or a value it cannot read (?state=bogus, \
        ?limit=abc), is answered 400 with one line naming it and what it accepts. \
        It binds to loopback unless --allow-remote: the data names processes and endpoints \
        and the server has no authentication. Its own connections (to and from the --listen \
        address and port: the page's and the API's) are left out unless --include-self.

        Limits, so idle or half-sent requests cannot starve it: a connection must send a \
        complete request head within --header-timeout seconds of connecting (or of its first \
        byte after a keep-alive pause), and one with no request in progress is closed after \
        --idle-timeout seconds. Beyond --max-clients open connections a new one is answered \
        503 and closed; beyond those plus \(ServeLimits.refusalAllowance) it waits in the \
        kernel's listen queue until one closes. Beyond --max-streams open /api/stream \
        clients a new one is answered 503. If the fd limit (ulimit -n) leaves room for fewer \
        connections, serve says so at start and stops accepting there, keeping \
        \(ServeLimits.reservedDescriptors) fds for the tracer; should accept still fail for \
        lack of fds, it pauses 1 s instead of retrying in a busy loop.
        """
    )

    @Option(help: ArgumentHelp("Address and port to listen on (IPv6 in brackets: [::1]:8080).", valueName: "address:port"))
    var listen: String = "127.0.0.1:8080"

    @Flag(help: "Allow --listen on an address other than loopback (no authentication: anyone who can reach it sees every connection).")
    var allowRemote = false

    @Flag(help: "Also show serve's own connections (its listener and every client of the page and the API, to or from the --listen address and port), which are left out by default.")
    var includeSelf = false

    @Option(parsing: .unconditional, help: ArgumentHelp("Seconds of history the page shows (5 to 3600).", valueName: "seconds"))
    var window: Int = 60

    @Option(parsing: .unconditional, help: ArgumentHelp("Seconds a client has to send a complete request head, from connecting or from its first byte after a keep-alive pause; then it is closed (0.1 to 3600).", valueName: "seconds"))
    var headerTimeout: Double = ServeLimits.defaults.headerTimeout

    @Option(parsing: .unconditional, help: ArgumentHelp("Seconds a connection may sit with no request in progress (before its first one, too) before it is closed (0.1 to 86400).", valueName: "seconds"))
    var idleTimeout: Double = ServeLimits.defaults.idleTimeout

    @Option(parsing: .unconditional, help: ArgumentHelp("Open connections at most (1 to 1000000); a new one beyond this is answered 503 and closed.", valueName: "connections"))
    var maxClients: Int = ServeLimits.defaults.maxClients

    @Option(parsing: .unconditional, help: ArgumentHelp("Open /api/stream clients at most (and no more than --max-clients); a new one beyond this is answered 503.", valueName: "clients"))
    var maxStreams: Int = ServeLimits.defaults.maxStreams

    @Flag(help: "Leave /metrics out (answered 404) and count nothing for it.")
    var noMetrics = false

    @OptionGroup var filters: FilterOptions

    @OptionGroup var live: LiveOptions

    @OptionGroup var logFile: LogFileOptions

    mutating func validate() throws {
        if logFile.output == "-" { throw ValidationError("--output - would be standard output, which serve does not write; give a FILE such as /var/log/tcptrail/trace.jsonl") }
        guard let address = ServeAddress(listen) else {
            throw ValidationError("--listen '\(listen)' is not ADDRESS:PORT such as 127.0.0.1:8080 or [::1]:8080")
        }
        if !address.isLoopback && !allowRemote {
            throw ValidationError("--listen \(listen) is not a loopback address; the server has no authentication, so add --allow-remote to serve connection data to the network")
        }
        try OptionCheck.count(window, "--window", in: 5...3600, unit: "seconds")
        try OptionCheck.seconds(headerTimeout, "--header-timeout", in: 0.1...3600)
        try OptionCheck.seconds(idleTimeout, "--idle-timeout", in: 0.1...86400)
        try OptionCheck.count(maxClients, "--max-clients", in: 1...1_000_000)
        if !(1...maxClients).contains(maxStreams) { throw ValidationError("--max-streams must be \(maxStreams < 1 ? "positive: " : "")1 to --max-clients (\(maxClients)), got \(maxStreams)") }
    }

    var limits: ServeLimits {
        ServeLimits(headerTimeout: headerTimeout, idleTimeout: idleTimeout, maxClients: maxClients, maxStreams: maxStreams)
    }

    func run() throws {
        try Diagnostics.running(serve)
    }

    private func serve() throws {
        guard let address = ServeAddress(listen) else { throw ExitCode.validationFailure }
        let (host, port) = (address.host, address.port)
        // The log's path is checked before the seconds of loading, created after.
        let log = try logFile.log()
        // One filter value: the kernel's config and the user-space check are made from it.
        let filter = filters.eventFilter
        let session = try TraceSession(options: live.session(filter))
        try LogFileOptions.open(log)
        tt_install_stop_handlers()
        if !address.isLoopback {
            Diagnostics.note("tcptrail: warning: serving on \(listen), not loopback: anyone who can reach it sees every connection on this host (no authentication)")
        }
        let thresholds = live.anomalies.thresholds
        let sink = LivePipeline(format: .none, filter: filter, limit: nil, engine: HandshakeEngine(thresholds: thresholds), log: log)
        sink.writeLogHeader(version: TCPTrail.version, filters: filters.json, thresholds: thresholds.json,
                            features: session.program.plan.headerJSON, tables: session.program.tables.headerJSON)
        if !noMetrics { sink.metrics = MetricsTally() }
        let metrics = noMetrics ? nil : ServeMetrics(version: TCPTrail.version, tables: session.program.tables)
        // The engine's records are applied to the shared board once per turn, under one lock.
        nonisolated(unsafe) var pending: [EngineOutput] = []
        sink.observer = { pending.append($0) }
        let own = includeSelf ? nil : HiddenEndpoint(listen: address, netns: Self.ownNetworkNamespace())
        let state = LiveBoard(host: ProcessInfo.processInfo.hostName, windowSeconds: window, hidden: own)
        try session.begin(sink: sink)
        state.apply(pending, lost: session.lost, now: WallClock.monotonicNow())
        pending.removeAll()
        metrics?.publish(sink, session, now: WallClock.monotonicNow(), force: true)

        var limits = self.limits
        if let warning = limits.fitToDescriptorLimit() { Diagnostics.note(warning) }
        let server = WebServer(state: state, metrics: metrics, host: host, port: port, limits: limits, streams: Admission(limit: limits.maxStreams))
        let started = server.start()
        switch started {
        case .failure(let message):
            session.stop()
            sink.finishLog(lost: session.lost, untracked: session.gaps(session.latestStats))
            throw CommandFailure(message, status: .addressUnavailable)
        case .success(let address):
            Diagnostics.note("tcptrail: serving live timelines on http://\(address)/\(metrics == nil ? "" : " and metrics on http://\(address)/metrics") ; Ctrl-C to stop")
        }
        // Under systemd (Type=notify): ready once it traces and listens; the
        // watchdog is fed by the tracing loop, so a stuck tracer is restarted.
        let notify = SystemdNotify(environment: ProcessInfo.processInfo.environment)
        notify.send("READY=1\nSTATUS=tracing; serving on \(listen)")
        var nextWatchdog = WallClock.monotonicNow()

        while tt_stop_signal() == 0 {
            session.step()
            let now = WallClock.monotonicNow()
            state.apply(pending, lost: session.lost, now: now)
            pending.removeAll(keepingCapacity: true)
            metrics?.publish(sink, session, now: now)
            if let interval = notify.watchdogInterval, now >= nextWatchdog {
                notify.send("WATCHDOG=1")
                nextWatchdog = now + interval
            }
        }
        notify.send("STOPPING=1")
        let stats = session.stop()
        state.apply(pending, lost: stats.lost, now: WallClock.monotonicNow())
        sink.finishLog(lost: stats.lost, untracked: session.gaps(stats))
        metrics?.publish(sink, session, now: WallClock.monotonicNow(), force: true)
        var summary = "tcptrail: \(sink.events) events, \(stats.lost) lost"
        if sink.exportErrors > 0 { summary += ", \(sink.exportErrors) records not written to \(logFile.output ?? "the log")" }
        Diagnostics.note(summary)
    }

    /// The inode of this process's network namespace, as the records' `netns`.
    static func ownNetworkNamespace() -> UInt32? {
        var st = stat()
        guard stat("/proc/self/ns/net", &st) == 0 else { return nil }
        return UInt32(exactly: st.st_ino)
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
    init(host: String, windowSeconds: Int, hidden: HiddenEndpoint?) {
        self.host = host
        self.windowSeconds = windowSeconds
        var b = ConnectionBoard(retention: UInt64(windowSeconds) * 1_000_000_000, maxEndedRows: 5000)
        b.hidden = hidden
        board = Mutex(b)
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

/// The HTTP server's bounds: how long a client may take, how many may be open.
struct ServeLimits: Sendable {
    var headerTimeout: Double
    var idleTimeout: Double
    var maxClients: Int
    var maxStreams: Int
    /// Connections the fd limit leaves room for, once `fitToDescriptorLimit` found it short.
    var descriptorRoom: Int? = nil

    /// Open connections past which accepting pauses (refusals included).
    var acceptCeiling: Int { min(maxClients + Self.refusalAllowance, descriptorRoom ?? .max) }

    static let defaults = ServeLimits(headerTimeout: 10, idleTimeout: 60, maxClients: 256, maxStreams: 16)

    /// Connections beyond `maxClients` that may be open at once while they are
    /// answered 503; past that, accepting pauses and the kernel queues them.
    static let refusalAllowance = 64

    /// Descriptors kept free of clients, for the tracer (/proc, sock_diag) and the event loops.
    static let reservedDescriptors = 32

    /// Lowers `acceptCeiling` to what the fd limit leaves room for, so clients
    /// never take the tracer's descriptors; says so when that is below the caps.
    mutating func fitToDescriptorLimit() -> String? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur != rlim_t.max else { return nil }
        let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count) ?? 0
        let room = max(Int(clamping: limit.rlim_cur) - open - Self.reservedDescriptors, 1)
        guard room < acceptCeiling else { return nil }
        descriptorRoom = room
        return "tcptrail: warning: the fd limit (\(limit.rlim_cur), ulimit -n) leaves room for \(room) connections, fewer than --max-clients \(maxClients) plus \(Self.refusalAllowance) being refused: past \(room) new connections wait in the listen queue; raise the limit or lower --max-clients"
    }
}

/// Admits at most `limit` holders at once (connections, event streams).
final class Admission: Sendable {
    let limit: Int
    private let count = Atomic<Int>(0)

    init(limit: Int) { self.limit = limit }

    /// A place, or nil when all `limit` are taken.
    func enter() -> Ticket? {
        if count.wrappingAdd(1, ordering: .relaxed).newValue > limit {
            count.wrappingSubtract(1, ordering: .relaxed)
            return nil
        }
        return Ticket(admission: self)
    }

    /// One admitted holder's place; given back by `release()` or, failing that, on deinit.
    final class Ticket: Sendable {
        private let admission: Admission
        private let released = Atomic<Bool>(false)

        fileprivate init(admission: Admission) { self.admission = admission }

        func release() {
            if !released.exchange(true, ordering: .relaxed) {
                admission.count.wrappingSubtract(1, ordering: .relaxed)
            }
        }

        deinit { release() }
    }
}

/// Hummingbird's HTTP/1 child channel with tcptrail's bounds around it: a
/// connection beyond `maxClients` gets a 503 instead of the HTTP pipeline,
/// and every head must arrive within the header timeout.
struct BoundedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value

    let http1: HTTP1Channel
    let connections: Admission

    init(responder: @escaping HTTPChannelHandler.Responder, limits: ServeLimits, connections: Admission) {
        let headerTimeout = TimeAmount.nanoseconds(Int64(limits.headerTimeout * 1e9))
        http1 = HTTP1Channel(responder: responder, configuration: .init(
            additionalChannelHandlers: [RequestHeadDeadline(timeout: headerTimeout)],
            idleTimeout: .nanoseconds(Int64(limits.idleTimeout * 1e9))
        ))
        self.connections = connections
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        guard let ticket = connections.enter() else {
            return channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(OverCapacityRefusal())
                return try Value(wrappingChannelSynchronously: channel)
            }
        }
        channel.closeFuture.whenComplete { _ in ticket.release() }
        do {
            // First in the pipeline, before the decoder: it sees a head still incomplete.
            try channel.pipeline.syncOperations.addHandler(RequestBytesMarker())
        } catch {
            return channel.eventLoop.makeFailedFuture(error)
        }
        return http1.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await http1.handle(value: value, logger: logger)
    }
}

/// Tells `RequestHeadDeadline`, which sits after the decoder, that request
/// bytes arrived: a head still incomplete produces nothing it could see.
final class RequestBytesMarker: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// The user event it sends ahead of each read.
    struct BytesArrived {}

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireUserInboundEventTriggered(BytesArrived())
        context.fireChannelRead(data)
    }
}

/// Closes a connection whose request head does not arrive within `timeout`
/// of connecting, or of the first byte of a request after the previous one
/// was answered. (Between requests Hummingbird's idle timeout applies.)
final class RequestHeadDeadline: ChannelDuplexHandler, RemovableChannelHandler {
    // The HTTP parts, named through a Hummingbird handler that carries them
    // (their module, NIOHTTPTypes, is not a dependency of this target).
    typealias InboundIn = HTTPConnectionStateHandler.InboundIn
    typealias InboundOut = HTTPConnectionStateHandler.InboundOut
    typealias OutboundIn = HTTPConnectionStateHandler.OutboundIn
    typealias OutboundOut = HTTPConnectionStateHandler.OutboundOut

    let timeout: TimeAmount
    /// Requests whose head came and whose response has not ended.
    private var inProgress = 0
    private var deadline: Scheduled<Void>?

    init(timeout: TimeAmount) { self.timeout = timeout }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { arm(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) { disarm() }

    func channelActive(context: ChannelHandlerContext) {
        arm(context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        disarm()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is RequestBytesMarker.BytesArrived {
            if inProgress == 0 { arm(context) }
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) {
            inProgress += 1
            disarm()
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { inProgress = max(inProgress - 1, 0) }
        context.write(data, promise: promise)
    }

    private func arm(_ context: ChannelHandlerContext) {
        guard deadline == nil else { return }
        deadline = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            context.close(promise: nil)
        }
    }

    private func disarm() {
        deadline?.cancel()
        deadline = nil
    }
}

/// Answers a connection beyond --max-clients with 503 and closes it. Our
/// side is half-closed first and what the client still sends is read and
/// dropped for a moment: closing with its request unread would send a reset,
/// which can destroy the answer before the client reads it.
final class OverCapacityRefusal: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let body = "tcptrail: too many clients (--max-clients); try again shortly\n"
    static let response = "HTTP/1.1 503 Service Unavailable\r\nServer: tcptrail\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nRetry-After: 5\r\nConnection: close\r\n\r\n\(body)"
    /// How long the client's leftover bytes are read before the close.
    static let linger = TimeAmount.seconds(1)

    private var answered = false

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { answer(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        answer(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case ChannelEvent.inputClosed = event { context.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        context.close(promise: nil)
    }

    private func answer(_ context: ChannelHandlerContext) {
        guard !answered else { return }
        answered = true
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: Self.response))).assumeIsolated().whenComplete { _ in
            context.close(mode: .output, promise: nil)
        }
        context.eventLoop.assumeIsolated().scheduleTask(in: Self.linger) { context.close(promise: nil) }
    }
}

/// Pauses accepting for a second when accept fails for want of descriptors
/// or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM). The AcceptBackoffHandler the
/// bootstrap adds cannot: a failed accept leaves the channel's read pending,
/// so the listening socket, still readable, wakes the loop again at once
/// (measured without this: about 6000 failed accepts a second, half a core). Turning autoRead off
/// takes the socket out of the poll set until the pause ends.
final class AcceptPause: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    static let pause = TimeAmount.seconds(1)
    private var paused = false

    func errorCaught(context: ChannelHandlerContext, error: Error) {
        if let io = error as? IOError, [EMFILE, ENFILE, ENOBUFS, ENOMEM].contains(io.errnoCode) {
            let options = context.channel.syncOptions
            // Off even if already off: a read asked for since (a client closing, say)
            // put the socket back in the poll set, and only turning it off takes it out.
            if paused { try? options?.setOption(ChannelOptions.autoRead, value: true) }
            try? options?.setOption(ChannelOptions.autoRead, value: false)
            if !paused {
                paused = true
                context.eventLoop.assumeIsolated().scheduleTask(in: Self.pause) {
                    self.paused = false
                    try? context.channel.syncOptions?.setOption(ChannelOptions.autoRead, value: true)
                }
            }
        }
        context.fireErrorCaught(error)
    }
}

/// The HTTP side: routes, the Host check, the event stream.
struct WebServer: Sendable {
    let state: LiveBoard
    /// Nil with --no-metrics.
    let metrics: ServeMetrics?
    let host: String
    let port: Int
    let limits: ServeLimits
    /// Event streams open now, at most `limits.maxStreams`.
    let streams: Admission

    enum Started { case success(String), failure(String) }

    /// Starts listening on a background task; waits until it listens or fails.
    func start() -> Started {
        let outcome = Mutex<Started?>(nil)
        let ready = DispatchSemaphore(value: 0)
        let router = makeRouter()
        let limits = self.limits
        let connections = Admission(limit: limits.maxClients)
        let app = Application(
            router: router,
            server: HTTPServerBuilder { responder in
                BoundedHTTP1Channel(responder: responder, limits: limits, connections: connections)
            },
            configuration: .init(
                address: .hostname(host, port: port), serverName: "tcptrail",
                // Past the refusals too, stop accepting: the kernel's listen queue holds the rest.
                availableConnectionsDelegate: MaximumAvailableConnections(limits.acceptCeiling)
            ),
            onServerRunning: { channel in
                try? await channel.eventLoop.submit {
                    try channel.pipeline.syncOperations.addHandler(AcceptPause(), position: .first)
                }.get()
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
        guard ServeAddress.isLoopback(host) else { return true }
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
        if let metrics = self.metrics { router.get("/metrics") { _, _ -> Response in
            var headers = HTTPFields()
            headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition())))
        } }
        router.get("/api/board") { request, _ -> Response in
            let parsed = Self.request(request, Self.boardParameters)
            guard case .success(let asked) = parsed else { return Self.refusal(parsed) }
            return Self.json(state.read { board, json in
                var j = json
                j.limit = asked.limit
                var out = OutputBuffer(capacity: 1 << 16)
                j.append(board, query: asked.query, to: &out)
                return out
            })
        }
        router.get("/api/connections") { request, _ -> Response in
            let parsed = Self.request(request, .init(path: "/api/connections", filters: true, limits: 1...100_000, defaultLimit: 5000))
            guard case .success(let asked) = parsed else { return Self.refusal(parsed) }
            return Self.json(state.read { board, json in
                var out = OutputBuffer(capacity: 1 << 16)
                let rows = board.rows(matching: asked.query)
                out.append("{\"total\":", decimal: Int64(rows.count))
                out.append(",\"connections\":[" as StaticString)
                for (i, row) in rows.prefix(asked.limit).enumerated() {
                    if i > 0 { out.append(UInt8(ascii: ",")) }
                    json.appendRow(row, to: &out)
                }
                out.append("]}" as StaticString)
                return out
            })
        }
        router.get("/api/events") { request, _ -> Response in
            let parsed = Self.request(request, .init(path: "/api/events", filters: false, limits: 1...500, defaultLimit: 100))
            guard case .success(let asked) = parsed else { return Self.refusal(parsed) }
            let limit = asked.limit
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
        let streams = self.streams
        router.get("/api/stream") { request, _ -> Response in
            var streamParameters = Self.boardParameters
            streamParameters.path = "/api/stream"
            let parsed = Self.request(request, streamParameters)
            guard case .success(let asked) = parsed else { return Self.refusal(parsed) }
            guard let ticket = streams.enter() else {
                var headers = HTTPFields()
                headers[.contentType] = "text/plain"
                headers[.retryAfter] = "5"
                let text = "tcptrail: too many event streams (--max-streams \(streams.limit)); try again shortly\n"
                return Response(status: .serviceUnavailable, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
            }
            var headers = HTTPFields()
            headers[.contentType] = "text/event-stream"
            headers[.cacheControl] = "no-store"
            return Response(status: .ok, headers: headers, body: ResponseBody { writer in
                // Also given back if the body never runs: the ticket's deinit.
                defer { ticket.release() }
                try await writer.write(ByteBuffer(string: "retry: 2000\n\n"))
                while !Task.isCancelled {
                    let out = state.read { board, json in
                        var o = OutputBuffer(capacity: 1 << 16)
                        var j = json
                        j.limit = asked.limit
                        o.append("event: board\ndata: " as StaticString)
                        j.append(board, query: asked.query, to: &o)
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

    /// `/api/board`'s parameters (and the stream's: its events are boards).
    static let boardParameters = ConnectionBoard.Request.Accepted(path: "/api/board", filters: true, limits: 1...5000, defaultLimit: 400)

    /// `?process=&port=&state=&anomaly=&anomalies_only=1&order=&limit=`, each checked.
    static func request(_ request: Request, _ accepted: ConnectionBoard.Request.Accepted) -> Result<ConnectionBoard.Request, ConnectionBoard.Request.Refusal> {
        let pairs = request.uri.queryParameters.map { (name: String($0.key), value: String($0.value)) }
        return Result { () throws(ConnectionBoard.Request.Refusal) in try ConnectionBoard.Request(pairs, accepted: accepted) }
    }

    /// 400, with the one line that says which parameter and what it takes.
    static func refusal(_ parsed: Result<ConnectionBoard.Request, ConnectionBoard.Request.Refusal>) -> Response {
        guard case .failure(let refusal) = parsed else { return Response(status: .internalServerError) }
        let message = refusal.message
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        headers[.cacheControl] = "no-store"
        return Response(status: .badRequest, headers: headers, body: .init(byteBuffer: ByteBuffer(string: "tcptrail: \(message)\n")))
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
