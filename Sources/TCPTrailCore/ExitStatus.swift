/// The process's exit status: one meaning per code, as the README's "Exit
/// status" table lists them (sysexits.h values where one fits).
public enum ExitStatus: Int32, CaseIterable, Sendable {
    /// Done: a signal, --duration, --count, or standard output closed.
    case success = 0
    /// A bad flag or value, or a terminal `top` cannot use (EX_USAGE).
    case usage = 64
    /// `replay`: malformed lines were skipped, or --strict stopped at one (EX_DATAERR).
    case malformedInput = 65
    /// `replay`: a file cannot be opened or read (EX_NOINPUT).
    case inputUnreadable = 66
    /// The kernel has no BPF ring buffer (EX_UNAVAILABLE).
    case noRingBuffer = 69
    /// The embedded BPF object or page is damaged (EX_SOFTWARE).
    case damagedBuild = 70
    /// The kernel rejected the program (EX_OSERR).
    case programRejected = 71
    /// The kernel has no `sock:inet_sock_set_state` tracepoint (EX_OSFILE).
    case stateTracepointMissing = 72
    /// The log or the report cannot be created, or is not safe to append to (EX_CANTCREAT).
    case cannotCreate = 73
    /// The ring buffer could not be read (EX_IOERR).
    case ringBufferUnreadable = 74
    /// A program could not attach (EX_TEMPFAIL).
    case attachFailed = 75
    /// `replay`: a record of a format version this tcptrail does not read (EX_PROTOCOL).
    case unknownFormatVersion = 76
    /// Not root and no CAP_BPF + CAP_PERFMON (EX_NOPERM).
    case notPrivileged = 77
    /// The kernel has no BTF (EX_CONFIG).
    case noKernelBTF = 78
    /// An output could not take every record (disk full, I/O error); whole records were dropped and counted.
    case outputIncomplete = 79
    /// `serve`: the address cannot be listened on (in use, or not this host's).
    case addressUnavailable = 80
    /// A --cgroup path that is not a cgroup v2 directory on this host.
    case notACgroup = 81
}

/// A failure that ends a command: one line naming the problem and the fix,
/// and its exit status. Thrown up to the command's `run()`.
public struct CommandFailure: Error, Sendable {
    public var message: String
    public var status: ExitStatus

    public init(_ message: String, status: ExitStatus) {
        self.message = message
        self.status = status
    }
}
