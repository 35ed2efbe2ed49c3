/// An address family as tcptrail's records write it: 4 or 6 (the kernel's
/// AF_INET and AF_INET6 are 2 and 10; the decoder and sock_diag map them).
public enum AddressFamily: UInt8, Sendable, Hashable {
    case ipv4 = 4
    case ipv6 = 6

    /// From the kernel's `sa_family` (AF_INET 2, AF_INET6 10).
    public init?(kernel af: UInt16) {
        switch af {
        case 2: self = .ipv4
        case 10: self = .ipv6
        default: return nil
        }
    }

    /// The kernel's `sa_family` value.
    public var kernel: UInt16 { self == .ipv4 ? 2 : 10 }

    /// Bits in an address of this family.
    public var addressBits: Int { self == .ipv4 ? 32 : 128 }
}

/// One end of a connection: an address and a port.
public struct Endpoint: Sendable, Hashable {
    public var address: RawAddress
    public var port: UInt16

    public init(address: RawAddress = RawAddress(), port: UInt16 = 0) {
        self.address = address
        self.port = port
    }
}

/// The process that holds a socket, as `ss -p` names it.
public struct Owner: Sendable, Equatable {
    public var pid: UInt32
    /// Its thread group leader's name.
    public var comm: ProcessName
    /// The cgroup of the task that took the socket (or the process's, read from /proc).
    public var cgroup: CgroupRef

    public init(pid: UInt32 = 0, comm: ProcessName = ProcessName(), cgroup: CgroupRef = .unknown) {
        self.pid = pid
        self.comm = comm
        self.cgroup = cgroup
    }
}
