/// The connection filters `trace` applies (in the kernel, and --addr in user
/// space) and `replay` applies to recorded events, in one place.
public struct EventFilter: Sendable, Equatable {
    public var pids: [UInt32] = []
    /// Local or remote port.
    public var ports: [UInt16] = []
    public var localPorts: [UInt16] = []
    public var remotePorts: [UInt16] = []
    /// 4 or 6; nil for both.
    public var family: UInt8?
    public var netns: UInt32?
    /// Either end of the connection in one of these blocks.
    public var addresses: [AddressPrefix] = []

    public init() {}

    public var isEmpty: Bool {
        pids.isEmpty && ports.isEmpty && localPorts.isEmpty && remotePorts.isEmpty && family == nil && netns == nil && addresses.isEmpty
    }

    public func keeps(pid: UInt32, family f: UInt8, netns n: UInt32, local: RawAddress, localPort: UInt16,
                      remote: RawAddress, remotePort: UInt16) -> Bool {
        if let family, f != family { return false }
        if let netns, n != netns { return false }
        if !pids.isEmpty && !pids.contains(pid) { return false }
        if !ports.isEmpty && !ports.contains(localPort) && !ports.contains(remotePort) { return false }
        if !localPorts.isEmpty && !localPorts.contains(localPort) { return false }
        if !remotePorts.isEmpty && !remotePorts.contains(remotePort) { return false }
        return keepsAddresses(family: f, local: local, remote: remote)
    }

    /// The --addr part alone (the others already ran in the kernel for live events).
    @inline(__always)
    public func keepsAddresses(family f: UInt8, local: RawAddress, remote: RawAddress) -> Bool {
        addresses.isEmpty || addresses.contains { $0.contains(local, family: f) || $0.contains(remote, family: f) }
    }

    public func keeps(_ e: KernelEvent) -> Bool {
        keeps(pid: e.pid, family: e.family, netns: e.netns, local: e.localAddress, localPort: e.localPort,
              remote: e.remoteAddress, remotePort: e.remotePort)
    }

    public func keeps(_ s: SocketSnapshot) -> Bool {
        keeps(pid: s.pid, family: s.family, netns: s.netns, local: s.localAddress, localPort: s.localPort,
              remote: s.remoteAddress, remotePort: s.remotePort)
    }
}
