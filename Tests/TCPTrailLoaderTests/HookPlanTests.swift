import Testing
@testable import TCPTrailLoader

/// Facts read off real kernels' BTF with bpftool (`btf dump file
/// /sys/kernel/btf/vmlinux format c`, the `btf_trace_<event>` typedefs with
/// ctx dropped, and `enum skb_drop_reason`'s enumerators), not computed
/// from tcptrail's own tables.
enum RecordedKernels {
    /// This project's VM: Linux 6.18.44.
    static let linux618 = KernelFacts(
        release: "6.18.44-fc-v1045",
        tracepointArguments: [
            "inet_sock_set_state": 3, // (sk, oldstate, newstate)
            "tcp_retransmit_skb": 3,  // (sk, skb, err): err came in 6.17
            "tcp_retransmit_synack": 2,
            "tcp_send_reset": 3,      // (sk, skb, reason)
            "tcp_receive_reset": 1,
            "inet_sk_error_report": 1,
            "tcp_destroy_sock": 1,
            "sys_exit": 2,            // (regs, ret)
            "kfree_skb": 4,           // (skb, location, reason, rx_sk)
            "tcp_rcv_space_adjust": 1,
            "timer_start": 2,         // (timer, bucket_expiry)
            "timer_cancel": 1,
            "timer_expire_entry": 2,  // (timer, baseclk)
        ],
        enumerators: ["skb_drop_reason.SKB_DROP_REASON_NOT_SPECIFIED", "skb_drop_reason.SKB_DROP_REASON_TCP_LISTEN_OVERFLOW"],
        symbols: ["tw_timer_handler": 0xffff_ffff_8206_4f30] // /proc/kallsyms, as root
    )

    /// Debian 12's stock kernel, 6.1.0-57-amd64, booted under qemu by scripts/test-kernels.
    static let debian12 = KernelFacts(
        release: "6.1.0-57-amd64",
        tracepointArguments: [
            "inet_sock_set_state": 3,
            "tcp_retransmit_skb": 2,  // (sk, skb)
            "tcp_retransmit_synack": 2,
            "tcp_send_reset": 2,      // (sk, skb): no reason before 6.10
            "tcp_receive_reset": 1,
            "inet_sk_error_report": 1,
            "tcp_destroy_sock": 1,
            "sys_exit": 2,
            "kfree_skb": 3,           // (skb, location, reason): no rx_sk before 6.11
            "tcp_rcv_space_adjust": 1,
            "timer_start": 3,         // (timer, expires, flags)
            "timer_cancel": 1,
            "timer_expire_entry": 2,
        ],
        enumerators: ["skb_drop_reason.SKB_DROP_REASON_NOT_SPECIFIED"],
        symbols: ["tw_timer_handler": 0xffff_ffff_a068_4330]
    )
}

@Suite struct HookPlanTests {
    @Test func linux618TakesTheNewestVariantOfEveryHook() {
        let plan = HookPlan.choose(for: RecordedKernels.linux618)
        #expect(plan.programNames == [
            "tt_state_a", "tt_state_b", "tt_retrans_a", "tt_retrans_b", "tt_synack_a", "tt_synack_b",
            "tt_rst_out_a", "tt_rst_out_b", "tt_rst_in_a", "tt_rst_in_b", "tt_error_a", "tt_error_b",
            "tt_destroy_a", "tt_destroy_b", "tt_sys_exit", "tt_kfree_a", "tt_kfree_b",
            "tt_reader", "tt_tw_start", "tt_tw_cancel", "tt_tw_expire",
        ])
        #expect(plan.missing.isEmpty, "\(plan.missing)")
        #expect(plan.features.allSatisfy { $0.available })
    }

    @Test func debian12LosesTheResetReasonAndTheListenDrops() {
        let plan = HookPlan.choose(for: RecordedKernels.debian12)
        #expect(plan.programNames.contains("tt_rst_out_old_a") && plan.programNames.contains("tt_rst_out_old_b"))
        #expect(!plan.programNames.contains("tt_rst_out_a"))
        #expect(plan.programNames.filter { $0.hasPrefix("tt_kfree") } == ["tt_kfree_tw"], "the timewait segments without listen drops")
        #expect(plan.programNames.contains("tt_sys_exit"))
        #expect(plan.programNames.suffix(3) == ["tt_tw_start", "tt_tw_cancel", "tt_tw_expire"])
        #expect(Set(plan.missing.keys) == [.resetReason, .listenDrops, .listenDropSocket])
        #expect(plan.missing[.resetReason]?.contains("tcp:tcp_send_reset has 2 arguments on this kernel, 3 needed") == true)
        #expect(plan.missing[.listenDrops]?.contains("SKB_DROP_REASON_TCP_LISTEN_OVERFLOW") == true)
        #expect(plan.features.first { $0.feature == .transitions }?.available == true)
    }

    /// A kernel between 6.10 and 6.11 with the enumerator: the reason, and
    /// listen drops without the listener socket.
    @Test func aKernelWithoutRxSkTakesTheOlderDropProgram() {
        var facts = RecordedKernels.linux618
        facts.tracepointArguments["kfree_skb"] = 3
        let plan = HookPlan.choose(for: facts)
        #expect(plan.programNames.filter { $0.hasPrefix("tt_kfree") } == ["tt_kfree_old_a", "tt_kfree_old_b"])
        #expect(Set(plan.missing.keys) == [.listenDropSocket])
        #expect(plan.missing[.listenDropSocket]?.contains("rx_sk") == true)
    }

    @Test func aVariantTheVerifierRefusedFallsBackToTheNextOne() {
        let why = "the verifier refused tt_rst_out_a: invalid bpf_context access off=16 size=8"
        let plan = HookPlan.choose(for: RecordedKernels.linux618, refused: ["tt_rst_out_a": why])
        #expect(plan.programNames.contains("tt_rst_out_old_a"))
        #expect(plan.missing == [.resetReason: why])
    }

    /// /proc/kallsyms hides tw_timer_handler (a reader without CAP_SYSLOG):
    /// the timewait features are missing and their programs, which would run
    /// for every timer on the host, are not loaded.
    @Test(arguments: [RecordedKernels.linux618, RecordedKernels.debian12])
    func withoutTheTimerFunctionNoTimerProgramLoads(kernel: KernelFacts) {
        var facts = kernel
        facts.symbols = [:]
        let plan = HookPlan.choose(for: facts)
        #expect(plan.missing[.timewaitSockets]?.contains("/proc/kallsyms shows no address for tw_timer_handler") == true)
        #expect(plan.missing[.timewaitSegments] != nil)
        #expect(!plan.programNames.contains { $0.hasPrefix("tt_tw_") || $0 == "tt_kfree_tw" })
        #expect(plan.missing[.transitions] == nil)
    }

    /// One of the three timer tracepoints missing takes the whole feature.
    @Test func theTimewaitFeatureNeedsAllThreeTimerHooks() {
        var facts = RecordedKernels.linux618
        facts.tracepointArguments["timer_cancel"] = nil
        let plan = HookPlan.choose(for: facts)
        #expect(plan.missing[.timewaitSockets] == "this kernel has no timer:timer_cancel tracepoint (Linux 2.6.30)")
        #expect(!plan.programNames.contains { $0.hasPrefix("tt_tw_") })
        #expect(plan.programNames.contains("tt_kfree_a"), "listen drops stay")
    }

    @Test func aMissingTracepointTakesOnlyItsFeatures() {
        var facts = RecordedKernels.debian12
        facts.tracepointArguments["inet_sk_error_report"] = nil
        facts.tracepointArguments["sys_exit"] = nil
        let plan = HookPlan.choose(for: facts)
        #expect(plan.missing[.socketErrors] == "this kernel has no sock:inet_sk_error_report tracepoint (Linux 5.13)")
        #expect(plan.missing[.syscallReturns] != nil)
        #expect(plan.missing[.transitions] == nil)
        #expect(!plan.programNames.contains("tt_sys_exit"))
    }

    @Test func theHeaderListsEveryFeature() {
        let json = HookPlan.choose(for: RecordedKernels.debian12).headerJSON
        #expect(json.hasPrefix("{\"transitions\":true,\"syscall_returns\":true,"))
        #expect(json.contains("\"reset_reason\":false"))
        #expect(json.split(separator: ",").count == KernelFeature.allCases.count)
    }

    /// Every program in the embedded object belongs to one variant, and every
    /// variant's programs are in the object.
    @Test func theVariantTableNamesTheObjectsPrograms() throws {
        let program = try TraceProgram.open()
        defer { program.close() }
        let inObject = Set(program.programNamesInObject())
        let inTable = Set(HookVariant.all.flatMap { $0.programs.map(\.name.rawValue) })
        #expect(inObject == inTable)
    }

    /// The names bpf-embed read from the object's symbols: each program is
    /// in exactly one variant, each variant's programs are in the object and
    /// in the section of the variant's tracepoint.
    @Test func everyProgramInTheObjectHasExactlyOneVariant() throws {
        for name in BPFProgramName.allCases {
            let owners = HookVariant.all.filter { $0.programs.contains { $0.name == name } }
            #expect(owners.count == 1, "\(name.rawValue) is in \(owners.count) variants")
        }
        let program = try TraceProgram.open()
        defer { program.close() }
        let inObject = Set(program.programNamesInObject())
        #expect(inObject == Set(BPFProgramName.allCases.map(\.rawValue)))
        for v in HookVariant.all {
            for (name, _) in v.programs {
                #expect(inObject.contains(name.rawValue), "\(name.rawValue) of \(v.tracepoint) is not in the object")
                #expect(name.section == "tp_btf/\(v.event)", "\(name.rawValue) is in \(name.section), its variant is \(v.tracepoint)")
            }
        }
    }

    @Test func theVerifiersLastWordIsFound() {
        let log = """
        libbpf: prog 'tt_rst_out_a': BPF program load failed: Permission denied
        libbpf: prog 'tt_rst_out_a': -- BEGIN PROG LOAD LOG --
        reg type unsupported for arg#0 function tt_rst_out_a#37
        0: R1=ctx(off=0,imm=0) R10=fp0
        ; int BPF_PROG(tt_rst_out_a, struct sock *sk, struct sk_buff *skb, int reason)
        0: (79) r3 = *(u64 *)(r1 +16)
        invalid bpf_context access off=16 size=8
        processed 1 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
        -- END PROG LOAD LOG --
        libbpf: prog 'tt_rst_out_a': failed to load: -13
        libbpf: failed to load object 'tcptrail'

        """
        let found = LibBPFLog.rejectedProgram(in: log)
        #expect(found?.program == "tt_rst_out_a")
        #expect(found?.line == "invalid bpf_context access off=16 size=8")
    }
}
