import CTCPTrailSys
import Synchronization
import TCPTrailCore
#if canImport(Glibc)
import Glibc
#endif

/// Names the cgroup v2 ids the kernel side records: the path relative to
/// the cgroup2 mount (found in /proc/mounts: `/sys/fs/cgroup` on unified
/// hosts, `/sys/fs/cgroup/unified` on hybrid ones).
///
/// A cgroup's id is its kernfs directory's inode. Each id is resolved once
/// and cached: through `open_by_handle_at` (exact and immediate; needs
/// CAP_DAC_READ_SEARCH), or without it by walking the hierarchy, at most
/// once a second, so a churn of short-lived cgroups costs one walk a second.
public final class CgroupResolver: Sendable {
    /// The one the live tracer and the /proc readers share.
    public static let shared = CgroupResolver()

    /// Where cgroup2 is mounted; nil when it is not.
    public let mount: String?
    private let mountFD: Int32
    /// The handle type the mount gives directories (FILEID_KERNFS), -1 if none.
    private let handleType: Int32

    private struct State {
        var byID: [UInt64: CgroupRef] = [:]
        var lastWalk: UInt64 = 0
        /// open_by_handle_at was refused (no CAP_DAC_READ_SEARCH): walk instead.
        var walkOnly = false
    }

    private let state = Mutex(State())

    public init(mounts: String = "/proc/mounts") {
        let m = ProcSockets.readText(mounts).flatMap(Self.cgroup2Mount(inMounts:))
        mount = m
        mountFD = m.map { open($0, O_RDONLY | O_DIRECTORY | O_CLOEXEC) } ?? -1
        handleType = mountFD >= 0 ? tt_handle_type(mountFD) : -1
    }

    deinit { if mountFD >= 0 { close(mountFD) } }

    /// The first cgroup2 mount point in /proc/mounts text (octal escapes undone).
    public static func cgroup2Mount(inMounts text: String) -> String? {
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count >= 3, fields[2] == "cgroup2" { return unescapeMountField(fields[1]) }
        }
        return nil
    }

    /// /proc/mounts writes space, tab, newline and backslash as `\040` and the like.
    static func unescapeMountField(_ field: Substring) -> String {
        var out: [UInt8] = []
        var bytes = Array(field.utf8)[...]
        while let b = bytes.popFirst() {
            if b == UInt8(ascii: "\\"), bytes.count >= 3, let v = UInt8(String(decoding: bytes.prefix(3), as: UTF8.self), radix: 8) {
                out.append(v)
                bytes = bytes.dropFirst(3)
            } else {
                out.append(b)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The cgroup of kernel id `id` (0, or one that is gone and was never seen: unknown).
    public func ref(_ id: UInt64) -> CgroupRef {
        guard id != 0, mountFD >= 0 else { return .unknown }
        if let r = state.withLock({ $0.byID[id] }) { return r }
        if !state.withLock({ $0.walkOnly }), let path = pathByHandle(id) {
            return state.withLock { s in
                if let r = s.byID[id] { return r }
                let r = CgroupNames.add(CgroupInfo(path: path, id: id))
                s.byID[id] = r
                return r
            }
        }
        let walked = walkIfDue()
        return state.withLock { s in
            if let r = s.byID[id] { return r }
            // Gone before a walk saw it: stays unknown (ids are not reused).
            if walked { s.byID[id] = .unknown }
            return .unknown
        }
    }

    private func pathByHandle(_ id: UInt64) -> String? {
        guard handleType >= 0, let mount else { return nil }
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = tt_kernfs_path(mountFD, handleType, id, &buf, Int32(buf.count))
        guard n > 0 else {
            if errno == EPERM || errno == EOPNOTSUPP || errno == EINVAL { state.withLock { $0.walkOnly = true } }
            return nil
        }
        let full = String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return relative(full, to: mount)
    }

    private func relative(_ full: String, to mount: String) -> String {
        guard full.hasPrefix(mount) else { return full }
        let rest = String(full.dropFirst(mount.count))
        return rest.isEmpty ? "/" : rest
    }

    /// Walks the hierarchy for the ids not yet known, at most once a second;
    /// whether it walked.
    private func walkIfDue() -> Bool {
        let now = WallClock.monotonicNow()
        guard state.withLock({ s in
            guard now &- s.lastWalk >= 1_000_000_000 else { return false }
            s.lastWalk = now
            return true
        }), let mount else { return false }
        let found = Self.subtree(mount, relative: "/")
        state.withLock { s in
            for (id, path) in found where s.byID[id] == nil || s.byID[id] == .unknown {
                s.byID[id] = CgroupNames.add(CgroupInfo(path: path, id: id))
            }
        }
        return true
    }

    /// Every cgroup at and below `relative` under `mount`: (id, relative path).
    static func subtree(_ mount: String, relative: String) -> [(UInt64, String)] {
        var out: [(UInt64, String)] = []
        var pending = [relative]
        while let rel = pending.popLast() {
            let full = rel == "/" ? mount : mount + rel
            var st = stat()
            guard stat(full, &st) == 0 else { continue }
            out.append((UInt64(st.st_ino), rel))
            guard let dir = opendir(full) else { continue }
            while let entry = readdir(dir) {
                guard entry.pointee.d_type == DT_DIR else { continue }
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
                if name == "." || name == ".." { continue }
                pending.append(rel == "/" ? "/" + name : rel + "/" + name)
            }
            closedir(dir)
        }
        return out
    }

    /// The cgroup of a process, from /proc/PID/cgroup's `0::` line.
    public func ofProcess(_ pid: UInt32, procRoot: String = "/proc") -> CgroupRef {
        guard let mount, let text = ProcSockets.readText("\(procRoot)/\(pid)/cgroup"),
              let path = CgroupInfo.unifiedPath(procCgroup: text) else { return .unknown }
        var st = stat()
        guard stat(path == "/" ? mount : mount + path, &st) == 0 else { return .unknown }
        let id = UInt64(st.st_ino)
        return state.withLock { s in
            if let r = s.byID[id], r.isKnown { return r }
            let r = CgroupNames.add(CgroupInfo(path: path, id: id))
            s.byID[id] = r
            return r
        }
    }

    /// Why a --cgroup path cannot be filtered on.
    public enum PathError: Error, Equatable {
        case noCgroup2
        case notACgroup(String, mount: String)
    }

    /// A --cgroup path as the filter takes it: relative to the mount (a path
    /// under the mount point is taken as it is and cut), normalized, and a
    /// cgroup2 directory now; with the ids of it and every cgroup below it.
    public func filterPath(_ given: String) -> Result<(path: String, ids: [UInt64]), PathError> {
        guard let mount else { return .failure(.noCgroup2) }
        var rel = given
        if given == mount || given.hasPrefix(mount + "/") { rel = String(given.dropFirst(mount.count)) }
        guard let path = CgroupInfo.normalized(rel) else { return .failure(.notACgroup(given, mount: mount)) }
        let full = path == "/" ? mount : mount + path
        guard tt_is_cgroup2_dir(full) == 1 else {
            return .failure(.notACgroup(given, mount: mount))
        }
        let ids = Self.subtree(mount, relative: path).map(\.0)
        return .success((path, ids))
    }
}
