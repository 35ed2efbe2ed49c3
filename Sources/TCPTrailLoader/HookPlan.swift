import CTCPTrailEvent
import TCPTrailCore

/// What tracing can show on a kernel, one line each in `doctor` and one key
/// each in the log header's `features`.
public enum KernelFeature: String, CaseIterable, Sendable {
    /// Every TCP state change (sock:inet_sock_set_state). Without it there is nothing to trace.
    case transitions
    /// Held CLOSE -> SYN_SENT and CLOSE -> LISTEN events sent when connect()
    /// or listen() returns (raw_syscalls:sys_exit); without it they wait for
    /// the socket's next event.
    case syscallReturns = "syscall_returns"
    /// Data and SYN retransmits (tcp:tcp_retransmit_skb).
    case retransmits
    /// SYN-ACK retransmits of request socks (tcp:tcp_retransmit_synack).
    case synackRetransmits = "synack_retransmits"
    /// Resets sent (tcp:tcp_send_reset).
    case resetsSent = "resets_sent"
    /// Why the kernel sent a reset (tcp_send_reset's `reason`, Linux 6.10).
    case resetReason = "reset_reason"
    /// Resets received (tcp:tcp_receive_reset).
    case resetsReceived = "resets_received"
    /// Socket errors: refused, timed out, reset (sock:inet_sk_error_report).
    case socketErrors = "socket_errors"
    /// The kernel's per-socket table freed when a socket is destroyed
    /// (tcp:tcp_destroy_sock); without it entries wait for the table's limit.
    case socketDestroy = "socket_destroy"
    /// Each segment a full listen queue dropped (skb:kfree_skb with reason
    /// TCP_LISTEN_OVERFLOW). The kernel's overflow counters are read once a
    /// second either way.
    case listenDrops = "listen_drops"
    /// The listener socket of each such drop (kfree_skb's `rx_sk`, Linux 6.11).
    case listenDropSocket = "listen_drop_socket"
    /// Connections handed to a timewait socket followed to their end: its
    /// timer's start, cancel and expiry (timer:timer_*, for the timer whose
    /// function is tw_timer_handler, found in /proc/kallsyms).
    case timewaitSockets = "timewait_sockets"
    /// A socket passed to another process (fork, SCM_RIGHTS) names the one
    /// that reads it (tcp:tcp_rcv_space_adjust, in recvmsg()).
    case holderChanges = "holder_changes"
    /// The peer's FIN and resets reaching a timewait socket as they happen
    /// (skb:kfree_skb with reason NOT_SPECIFIED); without it FIN_WAIT_2 ->
    /// TIME_WAIT shows when the timer is moved to another bucket or runs out.
    case timewaitSegments = "timewait_segments"

    /// Whether tracing cannot work without it.
    public var isRequired: Bool { self == .transitions }

    /// What an operator loses without it, for `doctor` and the start-up note.
    public var withoutIt: String {
        switch self {
        case .transitions: return "nothing can be traced"
        case .syscallReturns: return "a connect's or listen's first event waits for the socket's next one"
        case .retransmits: return "no retransmit events"
        case .synackRetransmits: return "no SYN-ACK retransmit events"
        case .resetsSent: return "no events for resets sent"
        case .resetReason: return "resets sent carry no reason"
        case .resetsReceived: return "no events for resets received"
        case .socketErrors: return "no socket errors (refused, timed out)"
        case .socketDestroy: return "the kernel's socket table is freed only when it fills"
        case .listenDrops: return "listen overflows come from the kernel's counters only (once a second, per listener)"
        case .listenDropSocket: return "listen drops name the listener by namespace and port only"
        case .holderChanges: return "a socket passed to another process keeps the owner that accepted, connected or last closed it"
        case .timewaitSockets: return "after close() a connection's FIN_WAIT_2 and TIME_WAIT are inferred (TIME_WAIT ends 60 s later, an orphan's FIN_WAIT_2 is not followed)"
        case .timewaitSegments: return "FIN_WAIT_2 -> TIME_WAIT of a closed socket shows when its timer moves or runs out, and a reset into TIME_WAIT as a kill"
        }
    }
}

/// One program, or pair of copies, for one tracepoint, and what it needs
/// from the kernel. A tracepoint can have several variants, newest first;
/// the plan takes the first the running kernel fits.
public struct HookVariant: Sendable, Equatable {
    /// Which of a tracepoint's programs a program is. Every tp_btf
    /// tracepoint except sys_exit has two copies of its program, because the
    /// kernel skips a program hit while that same program runs on the CPU (a
    /// softirq interrupting it): the tracepoint runs the first copy then the
    /// second for every event, the first handles what it is run for, the
    /// second what the kernel skipped the first for (see "Two copies of each
    /// program" in bpf/handover.bpf.h).
    public enum Copy: Sendable, Equatable {
        /// The only program on its tracepoint (sys_exit: task context only, never nested).
        case only
        /// Handles every event it runs for. Its recursion misses are the
        /// second copy's to handle: those it did not ("rescued") are lost.
        case first
        /// Handles the events the first copy was skipped for. Its recursion
        /// misses are events the first copy handled.
        case second
    }

    /// "group:event", as tracefs and the documents name it.
    public var tracepoint: String
    /// Programs with their copy, in attach order (names generated from
    /// the object's symbols by bpf-embed).
    public var programs: [(name: BPFProgramName, copy: Copy)]
    /// Index into the kernel side's "rescued" counters (nil: one copy only).
    public var hook: UInt32?
    /// What kind of event a lost run would have reported (nil: none, or not known).
    public var kind: KernelEventKind?
    /// Tracepoint arguments the programs read; the kernel's prototype must have at least these.
    public var arguments: Int
    /// An enumerator the programs relocate, as (enum type, enumerator); it must exist.
    public var enumerator: (type: String, name: String)?
    /// The features this variant provides.
    public var provides: [KernelFeature]
    /// Why a kernel may lack what this variant needs (where it came from).
    public var since: String
    /// A kernel function whose address the programs compare with (from
    /// /proc/kallsyms, which shows addresses to root or CAP_SYSLOG only).
    public var symbol: String? = nil

    /// The tracepoint's event name ("tcp_send_reset"), as BTF's `btf_trace_<event>` spells it.
    public var event: String { String(tracepoint.split(separator: ":").last ?? "") }

    public static func == (a: HookVariant, b: HookVariant) -> Bool {
        a.tracepoint == b.tracepoint && a.programs.map(\.name) == b.programs.map(\.name)
    }

    private static func pair(_ tracepoint: String, _ a: BPFProgramName, _ b: BPFProgramName, hook: tcptrail_hook, kind: KernelEventKind?,
                             arguments: Int, enumerator: (String, String)? = nil, provides: [KernelFeature], since: String) -> HookVariant {
        HookVariant(tracepoint: tracepoint, programs: [(a, .first), (b, .second)], hook: hook.rawValue, kind: kind,
                    arguments: arguments, enumerator: enumerator, provides: provides, since: since)
    }

    /// Every variant in the object, in attach order (a tracepoint calls its
    /// programs in the order they were attached, and each first copy must
    /// run before its second).
    public static let all: [HookVariant] = [
        pair("sock:inet_sock_set_state", .tt_state_a, .tt_state_b, hook: TT_HOOK_SET_STATE, kind: .transition,
             arguments: 3, provides: [.transitions], since: "Linux 4.16"),
        pair("tcp:tcp_retransmit_skb", .tt_retrans_a, .tt_retrans_b, hook: TT_HOOK_RETRANSMIT_SKB, kind: .retransmit,
             arguments: 2, provides: [.retransmits], since: "Linux 4.16"),
        pair("tcp:tcp_retransmit_synack", .tt_synack_a, .tt_synack_b, hook: TT_HOOK_RETRANSMIT_SYNACK, kind: .retransmit,
             arguments: 2, provides: [.synackRetransmits], since: "Linux 4.16"),
        pair("tcp:tcp_send_reset", .tt_rst_out_a, .tt_rst_out_b, hook: TT_HOOK_SEND_RESET, kind: .reset,
             arguments: 3, provides: [.resetsSent, .resetReason], since: "its reason argument came with Linux 6.10"),
        pair("tcp:tcp_send_reset", .tt_rst_out_old_a, .tt_rst_out_old_b, hook: TT_HOOK_SEND_RESET, kind: .reset,
             arguments: 2, provides: [.resetsSent], since: "Linux 4.16"),
        pair("tcp:tcp_receive_reset", .tt_rst_in_a, .tt_rst_in_b, hook: TT_HOOK_RECEIVE_RESET, kind: .reset,
             arguments: 1, provides: [.resetsReceived], since: "Linux 4.16"),
        pair("sock:inet_sk_error_report", .tt_error_a, .tt_error_b, hook: TT_HOOK_ERROR_REPORT, kind: .error,
             arguments: 1, provides: [.socketErrors], since: "Linux 5.13"),
        pair("tcp:tcp_destroy_sock", .tt_destroy_a, .tt_destroy_b, hook: TT_HOOK_DESTROY_SOCK, kind: nil,
             arguments: 1, provides: [.socketDestroy], since: "Linux 4.16"),
        // A skipped run delays a held event to the socket's next transition.
        HookVariant(tracepoint: "raw_syscalls:sys_exit", programs: [(.tt_sys_exit, .only)], hook: nil, kind: nil,
                    arguments: 2, enumerator: nil, provides: [.syscallReturns], since: "CONFIG_HAVE_SYSCALL_TRACEPOINTS"),
        // Only listen-overflow drops are events, and only those go through
        // the copies' hand-over (every other kfree_skb hit returns first):
        // the first copy's misses are mostly other drops, so they are not
        // counted as lost listen drops. (The listen queues' own counters are
        // read once a second besides.)
        pair("skb:kfree_skb", .tt_kfree_a, .tt_kfree_b, hook: TT_HOOK_KFREE_SKB, kind: nil,
             arguments: 4, enumerator: ("skb_drop_reason", "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW"),
             provides: [.listenDrops, .listenDropSocket, .timewaitSegments], since: "its rx_sk argument came with Linux 6.11"),
        pair("skb:kfree_skb", .tt_kfree_old_a, .tt_kfree_old_b, hook: TT_HOOK_KFREE_SKB, kind: nil,
             arguments: 3, enumerator: ("skb_drop_reason", "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW"),
             provides: [.listenDrops, .timewaitSegments], since: "drop reasons came with Linux 5.17, TCP_LISTEN_OVERFLOW later"),
        HookVariant(tracepoint: "skb:kfree_skb", programs: [(.tt_kfree_tw, .only)], hook: nil, kind: nil,
                    arguments: 3, enumerator: ("skb_drop_reason", "SKB_DROP_REASON_NOT_SPECIFIED"),
                    provides: [.timewaitSegments], since: "drop reasons came with Linux 5.17", symbol: twTimer),
        // One copy: recvmsg() runs in a task, never nested in itself.
        HookVariant(tracepoint: "tcp:tcp_rcv_space_adjust", programs: [(.tt_reader, .only)], hook: nil, kind: nil,
                    arguments: 1, enumerator: nil, provides: [.holderChanges], since: "Linux 4.16"),
        // The timewait socket's timer: never nested in itself (they fire
        // under the timer base's lock, or in the timer softirq), one copy each.
        HookVariant(tracepoint: "timer:timer_start", programs: [(.tt_tw_start, .only)], hook: nil, kind: nil,
                    arguments: 1, enumerator: nil, provides: [.timewaitSockets], since: "Linux 2.6.30", symbol: twTimer),
        HookVariant(tracepoint: "timer:timer_cancel", programs: [(.tt_tw_cancel, .only)], hook: nil, kind: nil,
                    arguments: 1, enumerator: nil, provides: [.timewaitSockets], since: "Linux 2.6.30", symbol: twTimer),
        HookVariant(tracepoint: "timer:timer_expire_entry", programs: [(.tt_tw_expire, .only)], hook: nil, kind: nil,
                    arguments: 1, enumerator: nil, provides: [.timewaitSockets], since: "Linux 2.6.30", symbol: twTimer),
    ]

    /// The timewait socket's timer function.
    public static let twTimer = "tw_timer_handler"

    /// The variant a program belongs to.
    public static func of(program name: String) -> HookVariant? {
        all.first { $0.programs.contains { $0.name.rawValue == name } }
    }
}

/// What the running kernel's BTF says about the hooks: read once per start
/// (`KernelFacts.read()`), or recorded, for tests.
public struct KernelFacts: Sendable, Equatable {
    /// `uname -r`.
    public var release: String
    /// Arguments of each tracepoint's prototype (`btf_trace_<event>`, ctx
    /// excluded), by event name; a tracepoint that is absent has no entry.
    public var tracepointArguments: [String: Int]
    /// Enumerators present, as "enum_type.ENUMERATOR", of the enums the variants relocate.
    public var enumerators: Set<String>
    /// Addresses of the kernel functions the variants compare with, by name
    /// (a name is absent when /proc/kallsyms hides or lacks it).
    public var symbols: [String: UInt64]

    public init(release: String, tracepointArguments: [String: Int], enumerators: Set<String>, symbols: [String: UInt64] = [:]) {
        self.release = release
        self.tracepointArguments = tracepointArguments
        self.enumerators = enumerators
        self.symbols = symbols
    }
}

/// Whether a feature is in force, and if not, why.
public struct FeatureStatus: Sendable, Equatable {
    public var feature: KernelFeature
    /// nil when available; otherwise the reason, one clause.
    public var missing: String?
    public var available: Bool { missing == nil }
}

/// Which program variants load on a kernel, and so which features are in force.
public struct HookPlan: Sendable, Equatable {
    /// The chosen variants, in attach order.
    public var variants: [HookVariant]
    /// Reasons for the features the kernel lacks.
    public var missing: [KernelFeature: String]

    /// Every feature, in `KernelFeature` order, with its status.
    public var features: [FeatureStatus] {
        KernelFeature.allCases.map { FeatureStatus(feature: $0, missing: missing[$0]) }
    }

    /// The chosen programs' names, in attach order.
    public var programNames: [String] { variants.flatMap { $0.programs.map(\.name.rawValue) } }

    /// Takes, per tracepoint, the first variant the kernel fits and has not
    /// `refused` (by its first program's name: the verifier or an attach
    /// turned it down, with why); a feature no chosen variant provides is
    /// missing, with the reason of the last (most lenient) variant that would have.
    public static func choose(for facts: KernelFacts, refused: [String: String] = [:],
                              from all: [HookVariant] = HookVariant.all) -> HookPlan {
        var chosen: [HookVariant] = []
        var rejected: [(HookVariant, String)] = []
        for v in all {
            if chosen.contains(where: { $0.tracepoint == v.tracepoint }) { continue }
            if let why = refused[v.programs[0].name.rawValue] ?? misfit(v, facts) { rejected.append((v, why)) } else { chosen.append(v) }
        }
        // A feature is in force when every tracepoint that can provide it has
        // a chosen variant that does (the timewait timer needs all three).
        var missing: [KernelFeature: String] = [:]
        for f in KernelFeature.allCases {
            let needed = Set(all.filter { $0.provides.contains(f) }.map(\.tracepoint))
            let have = Set(chosen.filter { $0.provides.contains(f) }.map(\.tracepoint))
            guard needed.isEmpty || !needed.isSubset(of: have) else { continue }
            missing[f] = rejected.last { $0.0.provides.contains(f) && !have.contains($0.0.tracepoint) }?.1 ?? "no program provides it"
        }
        // Segments into timewait sockets mean nothing without their entries.
        if let why = missing[.timewaitSockets], missing[.timewaitSegments] == nil {
            missing[.timewaitSegments] = "timewait_sockets is unavailable: \(why)"
        }
        // Programs whose feature is missing anyway would only cost: the
        // timer hooks run for every timer on the host.
        chosen.removeAll { v in !v.provides.isEmpty && v.provides.allSatisfy { missing[$0] != nil } }
        return HookPlan(variants: chosen, missing: missing)
    }

    /// Why the kernel cannot run this variant, or nil if it can.
    static func misfit(_ v: HookVariant, _ facts: KernelFacts) -> String? {
        guard let n = facts.tracepointArguments[v.event] else {
            return "this kernel has no \(v.tracepoint) tracepoint (\(v.since))"
        }
        if n < v.arguments {
            return "\(v.tracepoint) has \(n) argument\(n == 1 ? "" : "s") on this kernel, \(v.arguments) needed (\(v.since))"
        }
        if let e = v.enumerator, !facts.enumerators.contains("\(e.type).\(e.name)") {
            return "enum \(e.type) has no \(e.name) on this kernel (\(v.since))"
        }
        if let symbol = v.symbol, facts.symbols[symbol] == nil {
            return "/proc/kallsyms shows no address for \(symbol) (it does to root or CAP_SYSLOG, with kernel.kptr_restrict below 2)"
        }
        return nil
    }

    /// The log header's `features` object: every feature, true or false.
    public var headerJSON: String {
        "{" + features.map { "\"\($0.feature.rawValue)\":\($0.available)" }.joined(separator: ",") + "}"
    }
}
