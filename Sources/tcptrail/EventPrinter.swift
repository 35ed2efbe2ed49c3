import TCPTrailCore
import TCPTrailLoader
#if canImport(Glibc)
import Glibc
#endif

/// The hot path: decodes each ring-buffer record and writes it to stdout as
/// text or JSON, through one reused buffer flushed in large writes.
final class EventPrinter: RingBufferConsumer {
    enum Format { case text, json }

    private let format: Format
    private let addressFilter: [AddressPrefix]
    private let limit: UInt64?
    private var json: JSONLinesWriter
    private var text: TextLinesWriter
    /// The handshake engine; nil with --raw (kernel transitions only).
    private(set) var engine: HandshakeEngine?
    private var out = OutputBuffer(capacity: 1 << 20)
    private(set) var events: UInt64 = 0
    private(set) var undecodable: UInt64 = 0
    /// stdout's reader went away (EPIPE): end quietly.
    private(set) var outputClosed = false
    /// The run should end: --count reached or stdout closed.
    var finished: Bool { outputClosed || (limit.map { events >= $0 } ?? false) }

    init(format: Format, addressFilter: [AddressPrefix], limit: UInt64?, wideAddresses: Bool, engine: HandshakeEngine?) {
        self.format = format
        self.addressFilter = addressFilter
        self.limit = limit
        self.engine = engine
        let clock = WallClock.current()
        json = JSONLinesWriter(clock: clock)
        text = TextLinesWriter(clock: clock, addressWidth: wideAddresses ? 39 : 15, documented: engine != nil)
        if format == .text { text.appendHeader(to: &out) }
    }

    func consume(_ record: UnsafeRawBufferPointer) -> Bool {
        if finished { return false }
        guard case .success(let event) = EventDecoder.decode(record) else {
            undecodable += 1
            return true
        }
        if !addressFilter.isEmpty && !addressFilter.contains(where: {
            $0.contains(event.localAddress, family: event.family) || $0.contains(event.remoteAddress, family: event.family)
        }) {
            return true
        }
        if engine != nil {
            engine!.process(event) { write($0) }
        } else {
            switch format {
            case .json: json.append(event, to: &out)
            case .text: text.append(event, to: &out)
            }
        }
        events += 1
        if out.count >= 1 << 19 { flush() }
        return !finished
    }

    private func write(_ output: EngineOutput) {
        switch format {
        case .json: json.append(output, to: &out)
        case .text: text.append(output, to: &out)
        }
    }

    /// Reports and tracks the sockets open at start (those the filters keep).
    func seed(_ sockets: [SocketSnapshot], keep: (SocketSnapshot) -> Bool) {
        guard engine != nil else { return }
        let kept = sockets.filter { s in
            keep(s) && (addressFilter.isEmpty || addressFilter.contains {
                $0.contains(s.localAddress, family: s.family) || $0.contains(s.remoteAddress, family: s.family)
            })
        }
        engine!.seed(kept, at: WallClock.monotonicNow()) { write($0) }
        flush()
    }

    /// Reports listeners that overflowed since the last check.
    func listenOverflows(_ overflows: [ListenQueueMonitor.Overflow], keep: (SocketSnapshot) -> Bool) {
        guard engine != nil else { return }
        let now = WallClock.monotonicNow()
        for o in overflows where keep(o.listener) {
            engine!.listenOverflow(o, at: now) { write($0) }
        }
    }

    /// Runs the engine's timers up to `mono` (TIME_WAIT expiry, stalls).
    func tick(to mono: UInt64) {
        guard engine != nil else { return }
        engine!.advance(to: mono) { write($0) }
    }

    /// Settles what the engine still holds at the end of the run.
    func finish() {
        guard engine != nil else { return }
        engine!.finish { write($0) }
    }

    /// Reports events the kernel could not queue, as soon as they are counted.
    func lost(count: UInt64, total: UInt64, byKind: [KernelEventKind: UInt64]) {
        let now = WallClock.monotonicNow()
        switch format {
        case .json: json.appendLost(count: count, total: total, byKind: byKind, mono: now, to: &out)
        case .text: text.appendLost(count: count, total: total, mono: now, to: &out)
        }
    }

    /// Notices a reader that went away even when there is nothing to write
    /// (`tcptrail trace | head` on a quiet host).
    func checkOutputClosed() {
        var pfd = pollfd(fd: STDOUT_FILENO, events: Int16(POLLOUT), revents: 0)
        if poll(&pfd, 1, 0) == 1 && pfd.revents & Int16(POLLERR | POLLHUP) != 0 {
            outputClosed = true
        }
    }

    func flush() {
        guard !out.isEmpty, !outputClosed else { return }
        let err = out.flush(to: STDOUT_FILENO)
        if err == EPIPE { outputClosed = true }
    }
}
