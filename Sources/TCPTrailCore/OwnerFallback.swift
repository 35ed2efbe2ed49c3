import CTCPTrailEvent

/// Names the owner of accepted sockets the kernel side could not: its
/// listener table was full, or the listener is one it never learnt.
///
/// User space sees every listen() (each `-> LISTEN` transition with its
/// owner) and the listeners open at start, in a table that does not evict;
/// an accepted child's first event (`LISTEN -> SYN_RECV`) without an owner
/// takes its listener's from here, then from `lookup` (a fresh /proc scan,
/// done by the caller), and the connection's later events keep it.
public struct OwnerFallback {
    /// Owner and listening sockets per key (SO_REUSEPORT shares one).
    private var listeners: [ListenerKey: (owner: Owner, refs: Int)] = [:]
    /// Accepted connections named here, until they close.
    private var children: [ConnectionID: Owner] = [:]
    /// Accepted sockets whose owner came from here.
    public private(set) var named: UInt64 = 0
    /// Accepted sockets whose owner nobody knew.
    public private(set) var unnamed: UInt64 = 0
    /// Most listeners held (a listen() storm must not grow it without bound).
    public let capacity: Int

    public init(capacity: Int = 1 << 20) { self.capacity = capacity }

    /// The listeners open at start (ListenerScan).
    public mutating func learn(_ owners: [ListenerOwner]) {
        for o in owners { add(o) }
    }

    private mutating func add(_ o: ListenerOwner) {
        if let had = listeners[o.key] {
            listeners[o.key] = (o.owner, had.refs + 1)
        } else if listeners.count < capacity {
            listeners[o.key] = (o.owner, 1)
        }
    }

    /// Fills `e`'s owner if the kernel side left it out and it is known
    /// here; `rescan` is asked for the listeners open now when this table
    /// does not hold the one an accepted socket came through.
    public mutating func fill(_ e: inout KernelEvent, rescan: () -> [ListenerOwner] = { [] }) {
        guard e.kind == .transition, let from = e.oldState, let to = e.newState else {
            if !e.ownerKnown, !children.isEmpty, let o = children[e.connectionID] { apply(o, to: &e) }
            return
        }
        let key = ListenerKey(netns: e.netns, family: e.family, port: e.localPort)
        if to == .listen, from != .listen, e.ownerKnown {
            add(ListenerOwner(key: key, owner: e.owner))
        } else if from == .listen, to == .close, let had = listeners[key] {
            listeners[key] = had.refs > 1 ? (had.owner, had.refs - 1) : nil
        }
        if !e.ownerKnown {
            if from == .listen, to == .synRecv {
                // An IPv4 child may come from a dual-stack listener on ::.
                let dual = ListenerKey(netns: key.netns, family: .ipv6, port: key.port)
                if listeners[key] == nil && (key.family == .ipv6 || listeners[dual] == nil) { learnRescan(rescan(), key) }
                if let o = listeners[key]?.owner ?? (key.family == .ipv4 ? listeners[dual]?.owner : nil) {
                    children[e.connectionID] = o
                    named += 1
                    apply(o, to: &e)
                } else {
                    unnamed += 1
                }
            } else if !children.isEmpty, let o = children[e.connectionID] {
                apply(o, to: &e)
            }
        }
        if to == .close, !children.isEmpty { children[e.connectionID] = nil }
    }

    /// A rescan replaces what it finds: it is newer than anything held.
    private mutating func learnRescan(_ owners: [ListenerOwner], _ key: ListenerKey) {
        for o in owners {
            if let had = listeners[o.key] { listeners[o.key] = (o.owner, had.refs) } else if listeners.count < capacity { listeners[o.key] = (o.owner, 1) }
        }
    }

    private func apply(_ o: Owner, to e: inout KernelEvent) {
        e.pid = o.pid
        e.comm = o.comm
        e.cgroup = o.cgroup
        e.cgroupID = o.cgroup.info?.id ?? 0
        e.thread = ProcessName()  // /proc names the process only
        e.flags |= UInt8(TT_FLAG_OWNER_KNOWN.rawValue)
    }
}
