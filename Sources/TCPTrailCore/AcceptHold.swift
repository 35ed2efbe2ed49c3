import CTCPTrailEvent

/// Holds an accepted socket's first events (LISTEN -> SYN_RECEIVED,
/// SYN_RECEIVED -> ESTABLISHED, and whatever comes before accept()) until the
/// kernel side's accept event names the process that accepted it, then lets
/// them go with that process as owner. Every record of the connection then
/// carries its holder (an nginx worker), not the process that called
/// listen() (the master, perhaps long gone after daemonizing).
///
/// A socket nobody accepts within `window` (a full backlog, a server that
/// stopped accepting, a listener closed with connections queued) goes out
/// as it is, its owner marked unknown: the listener's process may not hold it.
/// Live tracing only: a log's records already carry the acceptor.
public struct AcceptHold: Sendable {
    /// How long a socket's events wait for accept().
    public static let window: UInt64 = 1_000_000_000
    /// Sockets held at once; beyond, events pass as they are.
    public static let capacity = 65_536
    /// Events held per socket; beyond, its events pass as they are.
    public static let eventsPerSocket = 16

    /// A socket's held events: two inline (the usual LISTEN -> SYN_RECV,
    /// SYN_RECV -> ESTABLISHED), more in an array (no allocation for the two).
    struct Held: Sendable {
        var first: KernelEvent
        var second: KernelEvent?
        var more: [KernelEvent] = []
        var count: Int { 1 + (second == nil ? 0 : 1) + more.count }

        mutating func append(_ e: KernelEvent) {
            if second == nil { second = e } else { more.append(e) }
        }

        func each(_ body: (KernelEvent) -> Void) {
            body(first)
            if let second { body(second) }
            for e in more { body(e) }
        }
    }

    private var held: [ConnectionID: Held] = [:]
    /// Sockets in the order they were first held, for the window; ids already
    /// let go are skipped. Compacted as it is consumed (no steady growth).
    private var queue: [(id: ConnectionID, since: UInt64)] = []
    private var head = 0

    public init() {}

    /// Sockets waiting for accept() now.
    public var count: Int { held.count }
    /// Accepted sockets whose listener's owner was unknown, named by accept().
    public private(set) var namedWithoutListener: UInt64 = 0

    /// Takes one event from the kernel side: holds it, or lets it (and what
    /// an accept event names) go through `release`, in order.
    public mutating func take(_ e: KernelEvent, release: (KernelEvent) -> Void) {
        let id = e.connectionID
        if e.kind == .accept {
            guard let h = held.removeValue(forKey: id) else { return }
            if !h.first.ownerKnown { namedWithoutListener += 1 }
            h.each { x in
                var named = x
                named.pid = e.pid
                named.comm = e.comm
                named.thread = e.thread
                named.cgroupID = e.cgroupID
                named.cgroup = e.cgroup
                named.flags = (named.flags | UInt8(TT_FLAG_OWNER_KNOWN.rawValue)) & ~UInt8(TT_FLAG_AWAITING_ACCEPT.rawValue)
                release(named)
            }
            return
        }
        if !held.isEmpty, var h = held[id] {
            guard h.count < Self.eventsPerSocket else {
                held[id] = nil
                h.each { release(Self.unnamed($0)) }
                release(Self.unnamed(e))
                return
            }
            h.append(e)
            held[id] = h
            return
        }
        if e.awaitingAccept, e.kind == .transition, e.oldState == .listen, held.count < Self.capacity {
            held[id] = Held(first: e)
            queue.append((id, e.monoNanoseconds))
            return
        }
        release(e.awaitingAccept ? Self.unnamed(e) : e)
    }

    /// Lets go of the sockets that waited `window` by `now`, owner unknown.
    public mutating func expire(now: UInt64, release: (KernelEvent) -> Void) {
        while head < queue.count, queue[head].since.addingSaturating(Self.window) <= now {
            let id = queue[head].id
            head += 1
            if let h = held.removeValue(forKey: id) { h.each { release(Self.unnamed($0)) } }
        }
        compact()
    }

    /// Lets go of everything, at the end of a run.
    public mutating func releaseAll(release: (KernelEvent) -> Void) {
        expire(now: .max, release: release)
    }

    private mutating func compact() {
        if head == queue.count {
            queue.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 4096, head * 2 > queue.count {
            queue.removeFirst(head)
            head = 0
        }
    }

    /// An event whose listener's process may not hold the socket.
    static func unnamed(_ e: KernelEvent) -> KernelEvent {
        var x = e
        x.flags &= ~UInt8(TT_FLAG_OWNER_KNOWN.rawValue | TT_FLAG_AWAITING_ACCEPT.rawValue)
        return x
    }
}
