/// Symbolic names of the errno values a TCP socket reports.
public enum ErrnoName {
    private static let names: [Int32: StaticString] = [
        1: "EPERM", 2: "ENOENT", 4: "EINTR", 5: "EIO", 9: "EBADF", 11: "EAGAIN", 12: "ENOMEM",
        13: "EACCES", 14: "EFAULT", 16: "EBUSY", 22: "EINVAL", 24: "EMFILE", 28: "ENOSPC",
        32: "EPIPE", 71: "EPROTO", 90: "EMSGSIZE", 92: "ENOPROTOOPT", 95: "EOPNOTSUPP",
        97: "EAFNOSUPPORT", 98: "EADDRINUSE", 99: "EADDRNOTAVAIL", 100: "ENETDOWN",
        101: "ENETUNREACH", 102: "ENETRESET", 103: "ECONNABORTED", 104: "ECONNRESET",
        105: "ENOBUFS", 106: "EISCONN", 107: "ENOTCONN", 108: "ESHUTDOWN", 110: "ETIMEDOUT",
        111: "ECONNREFUSED", 112: "EHOSTDOWN", 113: "EHOSTUNREACH", 114: "EALREADY",
        115: "EINPROGRESS", 125: "ECANCELED",
    ]

    /// `ECONNREFUSED` for 111; `E<n>` for a value without a name here.
    public static func name(_ errno: Int32) -> String {
        if let s = names[errno] { return s.description }
        return "E\(errno)"
    }

    /// Appends the name without building a String for known values.
    public static func append(_ errno: Int32, to out: inout OutputBuffer) {
        if let s = names[errno] {
            out.append(s)
        } else {
            out.append(UInt8(ascii: "E"))
            out.append(decimal: Int64(errno))
        }
    }
}
