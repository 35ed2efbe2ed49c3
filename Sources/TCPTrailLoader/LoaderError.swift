#if canImport(Glibc)
import Glibc
#endif
import TCPTrailCore

/// What went wrong while bringing the BPF side up, with enough to act on.
///
/// Each case maps to its own exit status (see `exitStatus`) and one-line
/// message that names the cause and the fix.
public enum LoaderError: Error, Equatable, Sendable {
    /// Neither root nor CAP_BPF with CAP_PERFMON.
    case notPrivileged
    /// The kernel exposes no BTF at /sys/kernel/btf/vmlinux, so CO-RE cannot relocate.
    case noKernelBTF
    /// The kernel has no BPF ring buffer (needs Linux 5.8 or later).
    case noRingBuffer
    /// A tracepoint the program attaches to does not exist on this kernel.
    case tracepointMissing(program: String, errno: Int32)
    /// The embedded object could not be parsed.
    case openFailed(errno: Int32)
    /// The settings could not be written into the object before load.
    case configureFailed(String)
    /// The kernel refused the object as a whole (memlock limits, maps).
    case loadFailed(errno: Int32, verifierLog: String)
    /// The verifier refused one program, with the line that says why.
    case programRejected(program: String, errno: Int32, verifierLine: String, verifierLog: String)
    /// A program loaded but could not be attached.
    case attachFailed(program: String, errno: Int32)
    /// The ring buffer could not be set up for reading.
    case ringBufferFailed(errno: Int32)

    /// Distinct exit status per cause.
    public var status: ExitStatus {
        switch self {
        case .notPrivileged: .notPrivileged
        case .noKernelBTF: .noKernelBTF
        case .noRingBuffer: .noRingBuffer
        case .tracepointMissing: .stateTracepointMissing
        case .openFailed, .configureFailed: .damagedBuild
        case .loadFailed, .programRejected: .programRejected
        case .attachFailed: .attachFailed
        case .ringBufferFailed: .ringBufferUnreadable
        }
    }

    public var exitStatus: Int32 { status.rawValue }

    /// The failure that ends the command.
    public var failure: CommandFailure { CommandFailure(message, status: status) }

    /// One line: the cause, then the fix.
    public var message: String {
        switch self {
        case .notPrivileged:
            return "tracing needs root (or CAP_BPF and CAP_PERFMON): run it with sudo"
        case .noKernelBTF:
            return "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): use a kernel built with CONFIG_DEBUG_INFO_BTF=y"
        case .noRingBuffer:
            return "this kernel has no BPF ring buffer: tcptrail needs Linux 5.8 or later"
        case .tracepointMissing(let program, let err):
            return "tracepoint for \(program) is missing on this kernel (\(errnoText(err))): run 'tcptrail doctor' to see which tracepoints exist"
        case .openFailed(let err):
            return "the embedded BPF object could not be opened (\(errnoText(err))): this binary is damaged; rebuild tcptrail"
        case .configureFailed(let what):
            return "the BPF object could not be configured: \(what); rebuild tcptrail"
        case .loadFailed(let err, _):
            if err == EPERM {
                return "the kernel refused to load the BPF program (EPERM): run as root, and check 'ulimit -l' and kernel.unprivileged_bpf_disabled; see 'tcptrail doctor'"
            }
            return "the kernel rejected the BPF program (\(errnoText(err))): rerun with --verbose to see the verifier log, and report it with 'uname -r'"
        case .programRejected(let program, let err, let line, _):
            let why = line.isEmpty ? errnoText(err) : line
            return "the kernel rejected BPF program \(program) (\(why)): report it with 'uname -r' and 'tcptrail doctor --verbose'"
        case .attachFailed(let program, let err):
            return "cannot attach \(program) (\(errnoText(err))): run 'tcptrail doctor' to check the tracepoints"
        case .ringBufferFailed(let err):
            return "cannot read the BPF ring buffer (\(errnoText(err))): check memlock limits with 'tcptrail doctor'"
        }
    }
}

func errnoText(_ err: Int32) -> String {
    guard let s = strerror(err) else { return "errno \(err)" }
    return String(cString: s)
}
