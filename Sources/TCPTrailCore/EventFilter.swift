/// The connection filters `trace` applies (in the kernel, and --addr in user
/// space) and `replay` applies to recorded events, in one place.
public struct EventFilter: Sendable, Equatable {
    public var pids: [UInt32] = []
    /// Local or remote port.
    public var ports: [UInt16] = []
    public var localPorts: [UInt16] = []
    public var remotePorts: [UInt16] = []
    /// nil for both.
    public var family: AddressFamily?
    public var netns: UInt32?
    /// Either end of the connection in one of these blocks.
    public var addresses: [AddressPrefix] = []
    /// The owner's cgroup is one of these paths (relative to the cgroup2
    /// mount, `CgroupInfo.normalized`) or below one.
    public var cgroups: [String] = []

    public init() {}

    public var isEmpty: Bool {
        pids.isEmpty && ports.isEmpty && localPorts.isEmpty && remotePorts.isEmpty && family == nil && netns == nil && addresses.isEmpty
            && cgroups.isEmpty
    }

    public func keeps(pid: UInt32, cgroup: CgroupRef = .unknown, family f: AddressFamily, netns n: UInt32, local: Endpoint, remote: Endpoint) -> Bool {
        if let family, f != family { return false }
        if let netns, n != netns { return false }
        if !pids.isEmpty && !pids.contains(pid) { return false }
        if !keepsCgroup(cgroup) { return false }
        if !ports.isEmpty && !ports.contains(local.port) && !ports.contains(remote.port) { return false }
        if !localPorts.isEmpty && !localPorts.contains(local.port) { return false }
        if !remotePorts.isEmpty && !remotePorts.contains(remote.port) { return false }
        return keepsAddresses(family: f, local: local.address, remote: remote.address)
    }

    /// The --addr part alone (the others already ran in the kernel for live events).
    @inline(__always)
    public func keepsAddresses(family f: AddressFamily, local: RawAddress, remote: RawAddress) -> Bool {
        addresses.isEmpty || addresses.contains { $0.contains(local, family: f) || $0.contains(remote, family: f) }
    }

    /// The --cgroup part alone (live, the kernel ran it but for accepted sockets before accept()).
    public func keepsCgroup(_ cgroup: CgroupRef) -> Bool {
        guard !cgroups.isEmpty else { return true }
        guard let info = cgroup.info else { return false }
        return cgroups.contains { info.isWithin($0) }
    }

    public func keeps(_ e: KernelEvent) -> Bool {
        keeps(pid: e.pid, cgroup: e.cgroup, family: e.family, netns: e.netns, local: e.local, remote: e.remote)
    }

    public func keeps(_ s: SocketSnapshot) -> Bool {
        keeps(pid: s.owner.pid, cgroup: s.owner.cgroup, family: s.family, netns: s.netns, local: s.local, remote: s.remote)
    }
}
