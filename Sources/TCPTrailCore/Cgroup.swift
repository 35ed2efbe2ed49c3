import Synchronization

/// A socket owner's cgroup v2 and what its path says: the systemd unit, the
/// container, the Kubernetes pod. Immutable; one per cgroup, shared by every
/// record of its sockets through a `CgroupRef`.
public final class CgroupInfo: Sendable {
    /// The path relative to the cgroup2 mount, as /proc/PID/cgroup's `0::` line
    /// writes it: `/system.slice/nginx.service`, `/` for the root.
    public let path: String
    /// The kernel's id (the directory's inode); 0 when read from a log.
    public let id: UInt64
    /// The systemd unit: the deepest part of the path named like a unit a
    /// process runs in (`nginx.service`, `session-3.scope`, `docker-<id>.scope`).
    public let unit: String?
    /// The container's 64-hex id: from `docker-<id>.scope`,
    /// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`
    /// (systemd driver) or a bare `<id>` part (`/docker/<id>`, cgroupfs driver).
    public let container: String?
    /// The Kubernetes pod's UID (with dashes) from a kubepods path.
    public let pod: String?

    public init(path: String, id: UInt64 = 0) {
        self.path = path
        self.id = id
        let parts = path.split(separator: "/")
        unit = parts.last(where: Self.isUnitName).map(String.init)
        container = parts.lazy.reversed().compactMap(Self.containerID).first
        pod = parts.first.map { $0.hasPrefix("kubepods") } == true ? parts.lazy.reversed().compactMap(Self.podUID).first : nil
    }

    /// Unit types a process can run in (slices hold other units, not processes).
    private static let unitSuffixes = [".service", ".scope", ".socket", ".mount", ".swap"]

    private static func isUnitName(_ part: Substring) -> Bool {
        unitSuffixes.contains { part.hasSuffix($0) && part.count > $0.count }
    }

    /// Runtimes' scope (or cgroupfs directory) prefixes in front of a container id.
    private static let runtimePrefixes = ["docker-", "cri-containerd-", "crio-", "libpod-", "containerd-", "nerdctl-"]

    /// The 64-hex id a path part names, if it names one (a conmon's
    /// `crio-conmon-<id>.scope` does not: it is the monitor, not the container).
    static func containerID(_ part: Substring) -> String? {
        var name = part
        if name.hasSuffix(".scope") { name = name.dropLast(6) }
        if let prefix = runtimePrefixes.first(where: { name.hasPrefix($0) }) { name = name.dropFirst(prefix.count) }
        return isHex64(name) ? String(name) : nil
    }

    private static func isHex64(_ s: Substring) -> Bool {
        s.utf8.count == 64 && s.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// The pod UID of `kubepods-burstable-pod<uid with _>.slice`,
    /// `kubepods-pod<uid>.slice` (systemd driver) or `pod<uid>` (cgroupfs).
    static func podUID(_ part: Substring) -> String? {
        var name = part
        if name.hasSuffix(".slice") {
            name = name.dropLast(6)
            // The UID's own dashes are underscores here: the last part is pod<uid>.
            guard name.hasPrefix("kubepods-"), let last = name.split(separator: "-").last else { return nil }
            name = last
        }
        guard name.hasPrefix("pod") else { return nil }
        name = name.dropFirst(3)
        let uid = String(name.map { $0 == "_" ? "-" : $0 })
        let hex = uid.utf8.filter { $0 != UInt8(ascii: "-") }
        guard uid.utf8.count == 36, hex.count == 32,
              hex.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else { return nil }
        return uid
    }

    /// This cgroup is `ancestor` or below it (both relative to the mount).
    public func isWithin(_ ancestor: String) -> Bool {
        ancestor == "/" || path == ancestor || (path.hasPrefix(ancestor) && path.utf8.dropFirst(ancestor.utf8.count).first == UInt8(ascii: "/"))
    }

    /// The cgroup v2 path in /proc/PID/cgroup text (its `0::` line); nil on a host without cgroup2.
    public static func unifiedPath(procCgroup text: String) -> String? {
        for line in text.split(separator: "\n") where line.hasPrefix("0::") {
            var p = String(line.dropFirst(3))
            if p.hasSuffix(" (deleted)") { p = String(p.dropLast(10)) }
            return normalized(p)
        }
        return nil
    }

    /// A path as the filter and the records take it: one leading `/`, no
    /// trailing one, no empty, `.` or `..` parts; nil when it has `..`.
    public static func normalized(_ path: String) -> String? {
        let parts = path.split(separator: "/").filter { $0 != "." }
        if parts.contains("..") { return nil }
        return "/" + parts.joined(separator: "/")
    }
}

/// A record's cgroup: an index into `CgroupNames`, 0 when unknown. Two
/// bytes' worth of integer in every event instead of a reference to count.
public struct CgroupRef: Sendable, Hashable {
    public var index: UInt32

    public init(index: UInt32) { self.index = index }

    public static let unknown = CgroupRef(index: 0)
    public var isKnown: Bool { index != 0 }
    /// What the cgroup is, when known.
    public var info: CgroupInfo? { index == 0 ? nil : CgroupNames.info(self) }
}

/// Every cgroup the run has named, for the records that carry a `CgroupRef`:
/// the live resolver adds one per kernel id, replay one per path it reads.
public enum CgroupNames {
    private struct Table {
        var infos: [CgroupInfo] = []
        var byPath: [String: UInt32] = [:]
    }

    private static let table = Mutex(Table())

    /// Adds a cgroup the kernel named (a new id for a path is a new cgroup:
    /// a restarted service gets a new directory).
    public static func add(_ info: CgroupInfo) -> CgroupRef {
        table.withLock { t in
            t.infos.append(info)
            return CgroupRef(index: UInt32(t.infos.count))
        }
    }

    /// The cgroup of a path read from a log: one entry per path.
    public static func intern(path: String) -> CgroupRef {
        table.withLock { t in
            if let i = t.byPath[path] { return CgroupRef(index: i) }
            t.infos.append(CgroupInfo(path: path))
            let i = UInt32(t.infos.count)
            t.byPath[path] = i
            return CgroupRef(index: i)
        }
    }

    public static func info(_ ref: CgroupRef) -> CgroupInfo? {
        table.withLock { t in ref.index >= 1 && Int(ref.index) <= t.infos.count ? t.infos[Int(ref.index) - 1] : nil }
    }
}

extension OutputBuffer {
    /// `,"cgroup":…` and, where the path names them, `,"unit":…`,
    /// `,"container":…`, `,"pod":…`: the log's records and the board alike.
    public mutating func appendCgroupMembers(_ c: CgroupInfo) {
        append(",\"cgroup\":", jsonString: c.path)
        if let unit = c.unit { append(",\"unit\":", jsonString: unit) }
        if let container = c.container { append(",\"container\":", jsonString: container) }
        if let pod = c.pod { append(",\"pod\":", jsonString: pod) }
    }
}
