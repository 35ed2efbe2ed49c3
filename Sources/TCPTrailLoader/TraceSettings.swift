import CTCPTrailEvent

/// What the kernel side filters on and how it buffers, fixed before load.
public struct TraceSettings: Sendable, Equatable {
    /// Owning processes to keep (empty: all). At most `maxFilterValues`.
    public var pids: [UInt32] = []
    /// Ports to keep, local or remote.
    public var ports: [UInt16] = []
    public var localPorts: [UInt16] = []
    public var remotePorts: [UInt16] = []
    /// 4 or 6, or nil for both.
    public var family: UInt8?
    /// Network namespace inode to keep, or nil for every namespace.
    public var netns: UInt32?
    /// Ring buffer size in bytes: a power of two, at least one page.
    public var ringBufferBytes: UInt32 = 16 << 20
    /// Wake the reader once this much is queued (it also drains on a timer).
    public var wakeupBytes: UInt64?
    /// Optional features the operator turned off, with the reason to show:
    /// their programs are not loaded.
    public var turnedOff: [KernelFeature: String] = [:]

    /// How many values each filter list takes.
    public static let maxFilterValues = Int(TT_MAX_FILTER)

    public init() {}

    /// The `.rodata` block the BPF program reads as `tt_config`.
    func kernelConfig() -> tcptrail_config {
        var c = tcptrail_config()
        withUnsafeMutableBytes(of: &c.pids) { raw in
            for (i, p) in pids.prefix(Self.maxFilterValues).enumerated() { raw.storeBytes(of: p, toByteOffset: i * 4, as: UInt32.self) }
        }
        func fill(_ tuple: inout (UInt16, UInt16, UInt16, UInt16, UInt16, UInt16, UInt16, UInt16), _ values: [UInt16]) {
            withUnsafeMutableBytes(of: &tuple) { raw in
                for (i, p) in values.prefix(Self.maxFilterValues).enumerated() { raw.storeBytes(of: p, toByteOffset: i * 2, as: UInt16.self) }
            }
        }
        fill(&c.ports, ports)
        fill(&c.lports, localPorts)
        fill(&c.rports, remotePorts)
        c.n_pids = UInt32(min(pids.count, Self.maxFilterValues))
        c.n_ports = UInt32(min(ports.count, Self.maxFilterValues))
        c.n_lports = UInt32(min(localPorts.count, Self.maxFilterValues))
        c.n_rports = UInt32(min(remotePorts.count, Self.maxFilterValues))
        c.netns = netns ?? 0
        c.family = family == 4 ? 2 : family == 6 ? 10 : 0
        c.wakeup_bytes = wakeupBytes ?? UInt64(ringBufferBytes / 4)
        return c
    }
}
