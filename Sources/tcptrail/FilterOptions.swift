import Foundation
import ArgumentParser
import TCPTrailCore
import TCPTrailLoader
import TCPTrailHost
import TCPTrailLog
import TCPTrailLive

/// The connection filters `trace` and `replay` share.
struct FilterOptions: ParsableArguments {
    @Option(name: .customLong("pid"), parsing: .unconditionalSingleValue, help: "Only sockets owned by this process (repeatable; default: every process).", transform: OptionCheck.positiveWhole)
    var pids: [UInt32] = []

    @Option(name: .customLong("port"), parsing: .unconditionalSingleValue, help: "Only connections with this local or remote port (repeatable; default: every port).", transform: OptionCheck.positiveWhole)
    var ports: [UInt16] = []

    @Option(name: .customLong("lport"), parsing: .unconditionalSingleValue, help: "Only connections with this local port (repeatable; default: every port).", transform: OptionCheck.positiveWhole)
    var localPorts: [UInt16] = []

    @Option(name: .customLong("rport"), parsing: .unconditionalSingleValue, help: "Only connections with this remote port (repeatable; default: every port).", transform: OptionCheck.positiveWhole)
    var remotePorts: [UInt16] = []

    @Flag(name: .customShort("4"), help: "Only IPv4.")
    var ipv4Only = false

    @Flag(name: .customShort("6"), help: "Only IPv6.")
    var ipv6Only = false

    @Option(parsing: .unconditional, help: ArgumentHelp("Only this network namespace (its inode, as in 'ls -L -i /proc/PID/ns/net'; default: every namespace).", valueName: "inode"), transform: OptionCheck.positiveWhole)
    var netns: UInt32?

    @Option(name: .customLong("addr"), help: ArgumentHelp("Only connections whose local or remote address is in this CIDR block (repeatable; default: every address).", valueName: "cidr"))
    var addresses: [String] = []

    @Option(name: .customLong("cgroup"), help: ArgumentHelp("Only sockets whose owner is in this cgroup v2 or below it (repeatable, up to \(TraceSettings.maxFilterValues); default: every cgroup): a path as the records' cgroup field shows it (/system.slice/nginx.service), relative to the cgroup2 mount, or a path under the mount. Live, it runs in the kernel on the ids of the path and its descendants at start; a cgroup made below it later joins the set when one of its processes first takes a socket. A path that is not a cgroup ends the run with status 81.", valueName: "path"))
    var cgroups: [String] = []

    func validate() throws {
        if ipv4Only && ipv6Only { throw ValidationError("-4 and -6 exclude each other; give at most one") }
        for (name, n) in [("--pid", pids.count), ("--port", ports.count), ("--lport", localPorts.count), ("--rport", remotePorts.count),
                          ("--cgroup", cgroups.count)]
        where n > TraceSettings.maxFilterValues {
            throw ValidationError("\(name) takes at most \(TraceSettings.maxFilterValues) values, got \(n)")
        }
        for c in cgroups where CgroupInfo.normalized(c) == nil {
            throw ValidationError("--cgroup '\(c)' has a '..' part; give the cgroup's path, such as /system.slice/nginx.service")
        }
        for a in addresses where AddressPrefix(a) == nil {
            throw ValidationError("--addr '\(a)' is not an address or CIDR block such as 198.18.0.0/15 or fd00::/8")
        }
    }

    /// The filters as one value (all of them, --addr included).
    var eventFilter: EventFilter {
        var f = EventFilter()
        f.pids = pids
        f.ports = ports
        f.localPorts = localPorts
        f.remotePorts = remotePorts
        f.family = ipv4Only ? .ipv4 : ipv6Only ? .ipv6 : nil
        f.netns = netns
        f.addresses = addresses.compactMap(AddressPrefix.init)
        f.cgroups = cgroups.compactMap(Self.cgroupPath)
        return f
    }

    /// The filters in force, for the log header.
    var json: String {
        var f: [String: Any] = [:]
        if !pids.isEmpty { f["pid"] = pids }
        if !ports.isEmpty { f["port"] = ports }
        if !localPorts.isEmpty { f["lport"] = localPorts }
        if !remotePorts.isEmpty { f["rport"] = remotePorts }
        if ipv4Only { f["family"] = 4 }
        if ipv6Only { f["family"] = 6 }
        if let netns = netns { f["netns"] = netns }
        if !addresses.isEmpty { f["addr"] = addresses }
        if !cgroups.isEmpty { f["cgroup"] = eventFilter.cgroups }
        let data = (try? JSONSerialization.data(withJSONObject: f, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// A --cgroup path relative to the cgroup2 mount: one under this host's
    /// mount point is cut to that (so is one under /sys/fs/cgroup, for replay).
    static func cgroupPath(_ given: String) -> String? {
        for mount in [CgroupResolver.shared.mount, "/sys/fs/cgroup/unified", "/sys/fs/cgroup"].compactMap({ $0 })
        where given == mount || given.hasPrefix(mount + "/") {
            return CgroupInfo.normalized(String(given.dropFirst(mount.count)))
        }
        return CgroupInfo.normalized(given)
    }
}
