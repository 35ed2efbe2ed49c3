#if canImport(Glibc)
import Glibc
#endif

/// systemd's readiness protocol without libsystemd: one datagram per message
/// ("READY=1", "WATCHDOG=1", "STOPPING=1") to the unix socket named by
/// $NOTIFY_SOCKET, a path or, with a leading '@', an abstract address.
/// Without $NOTIFY_SOCKET (not started by systemd) every call does nothing.
public struct SystemdNotify {
    private var address = sockaddr_un()
    private var length: socklen_t = 0
    private var fd: Int32 = -1
    /// Half of $WATCHDOG_USEC (what sd_watchdog_enabled advises), in ns; nil without a watchdog.
    public let watchdogInterval: UInt64?

    public init(environment: [String: String]) {
        let usec = environment["WATCHDOG_USEC"].flatMap(UInt64.init) ?? 0
        // WATCHDOG_PID, when set, names the process the watchdog is for.
        let forUs = environment["WATCHDOG_PID"].map { $0 == String(getpid()) } ?? true
        watchdogInterval = usec > 0 && forUs ? usec * 1000 / 2 : nil
        guard let path = environment["NOTIFY_SOCKET"], !path.isEmpty,
              path.utf8.count < MemoryLayout.size(ofValue: address.sun_path),
              path.hasPrefix("/") || path.hasPrefix("@") else { return }
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, b) in bytes.enumerated() { raw[i] = b }
            if bytes[0] == UInt8(ascii: "@") { raw[0] = 0 }
        }
        // An abstract name is exactly its bytes; a path ends at its NUL.
        let abstract = bytes[0] == UInt8(ascii: "@")
        length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (abstract ? 0 : 1))
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    }

    /// Whether $NOTIFY_SOCKET named a socket we can send to.
    public var enabled: Bool { fd >= 0 }

    /// Sends `message` ("READY=1", ...); returns whether it went.
    @discardableResult
    public func send(_ message: String) -> Bool {
        guard fd >= 0 else { return false }
        var to = address
        let sent = message.utf8CString.withUnsafeBufferPointer { text in
            withUnsafePointer(to: &to) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, text.baseAddress, text.count - 1, Int32(MSG_NOSIGNAL), $0, length)
                }
            }
        }
        return sent >= 0
    }
}
