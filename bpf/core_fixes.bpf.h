/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Kernel-version differences the programs work around, each with the
 * version and commit that brought it (as libbpf-tools' core_fixes.bpf.h
 * does). Where a tracepoint's prototype changed, the object has a program
 * for each prototype and the loader picks one by the prototype in the
 * kernel's BTF (HookVariant.all in Sources/TCPTrailLoader/HookPlan.swift).
 */
#ifndef __TT_CORE_FIXES_BPF_H__
#define __TT_CORE_FIXES_BPF_H__

/* tcp_send_reset: Linux 6.10 added the reason ("tcp: rstreason: fully
 * support in tcp_send_reset tracepoint", with enum sk_rst_reason); before,
 * the tracepoint is (sk, skb) and reading a third argument is "invalid
 * bpf_context access". */
#define TT_SEND_RESET_PARAMS (struct sock *sk, struct sk_buff *skb, int reason)
#define TT_SEND_RESET_PARAMS_OLD (struct sock *sk, struct sk_buff *skb)

/* kfree_skb: rx_sk, the socket that received the segment, came with Linux
 * 6.11 ("net: add rx_sk to trace_kfree_skb"); before, the namespace comes
 * from the device the segment arrived on and the listener's cookie is not
 * known. */
#define TT_KFREE_SKB_PARAMS \
	(struct sk_buff *skb, void *location, enum skb_drop_reason reason, struct sock *rx_sk)
#define TT_KFREE_SKB_PARAMS_OLD (struct sk_buff *skb, void *location, enum skb_drop_reason reason)

/* kfree_skb's reason and enum skb_drop_reason came with Linux 5.17 ("net:
 * skb: introduce kfree_skb_reason()"); TCP_LISTEN_OVERFLOW only with 6.15
 * ("tcp: add four drop reasons to tcp_check_req()"): Debian 12's 6.1 has
 * drop reasons but not that one. Relocated, so a kernel without the
 * enumerator fails to load the programs that use it, not to trace. */
#define TT_DROP_NOT_SPECIFIED bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED)
#define TT_DROP_LISTEN_OVERFLOW bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_TCP_LISTEN_OVERFLOW)

/* An accepted child's LISTEN -> SYN_RECV before it has its own cookie and
 * ports. Before Linux 6.15 ("inet: consolidate inet_csk_clone_lock()"),
 * inet_csk_clone_lock() fires it right after sk_clone_lock(), which copies
 * sock_common whole, and only then copies the request's ports, addresses
 * and ir_cookie into the child: the child still reads its listener's
 * cookie, or 0 if the listener had none, and a cookie made then is
 * overwritten a moment later (seen on 6.1, Debian 12). Since 6.15 it fires
 * last, with the ports set (6.18 here). The remote port, still the
 * listener's 0, tells the two apart. */
static __always_inline bool child_cookie_not_own(struct sock *sk, int oldstate, int newstate)
{
	return oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV &&
	       (BPF_CORE_READ(sk, __sk_common.skc_cookie.counter) != 0 || BPF_CORE_READ(sk, __sk_common.skc_dport) == 0);
}

#endif /* __TT_CORE_FIXES_BPF_H__ */
