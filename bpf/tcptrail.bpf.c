// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tcptrail's kernel side: every TCP state change, plus the retransmits,
 * resets and socket errors that explain it, streamed through one ring buffer.
 *
 * The traps this program works around (docs/kernel-notes.md):
 *  - pid/comm at a tracepoint is whoever is on the CPU; we report the owner,
 *    learnt at the transitions that run in the owner's context (connect,
 *    listen, close) and inherited by accepted children from their listener;
 *  - socket addresses are reused: the connection id is the socket cookie
 *    plus a generation bumped each time one socket leaves CLOSE again;
 *  - CLOSE -> SYN_SENT has no local port yet and LISTEN -> SYN_RECV has no
 *    remote endpoint yet: those events are held in the socket's tracking
 *    entry and sent, with their own timestamp, once the socket is complete;
 *  - the ring buffer reports no losses: failed reserves are counted per CPU;
 *  - the kernel skips a tp_btf program hit while the same program already
 *    runs on that CPU (a softirq interrupting a process-context run) and only
 *    counts it in the program's recursion_misses: every tp_btf program comes
 *    in two copies, the second handling what the kernel skipped the first
 *    for (see "Two copies of each program" in handover.bpf.h).
 *
 * One compilation unit: the shared logic is in the headers below (each
 * uses those included before it), the programs here, one section per hook.
 */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#define TCPTRAIL_BPF
#include "tcptrail_event.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#include "maps.bpf.h"
#include "core_fixes.bpf.h"
#include "handover.bpf.h"
#include "emit.bpf.h"
#include "conn.bpf.h"
#include "timewait.bpf.h"

/* --- sock:inet_sock_set_state: every transition -------------------------- */

static __always_inline int on_set_state(const void *ctx, enum tt_copy copy, struct sock *sk, int oldstate, int newstate)
{
	if (!take(ctx, copy, TT_HOOK_SET_STATE, (__u64)sk, (__u64)oldstate << 32 | (__u32)newstate) ||
	    BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;

	__u64 now = bpf_ktime_get_ns();
	__u64 cookie = first_event_cookie(sk, oldstate, newstate);
	struct conn_info *ci = conn_lookup(cookie);
	if (!ci) {
		struct conn_info fresh = {};
		struct tcptrail_owner *seed = bpf_map_lookup_elem(&owner_seeds, &cookie);
		if (seed) {
			fresh.owner = *seed;
			fresh.owner_known = 1;
		}
		/* A full table: the event goes out marked TT_FLAG_UNTRACKED,
		 * and emit() counts it if the filters keep it. */
		bpf_map_update_elem(&conns, &cookie, &fresh, BPF_NOEXIST);
		ci = conn_lookup(cookie);
	}

	if (ci) {
		flush_pending(sk, cookie, ci);
		if (oldstate == TCP_CLOSE && ci->state == TCP_CLOSE && ci->last_ns) {
			ci->generation++; /* the same socket opens a new connection */
			ci->sport = ci->dport = 0;
		}
		if (in_owner_context(oldstate, newstate))
			take_owner(ci);
		/* An accepted child: its listener's owner until accept() names its own. */
		if (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV)
			ci->awaiting = 1;
		/* Accepted children, and listeners older than the trace. */
		if (oldstate == TCP_LISTEN && !ci->owner_known) {
			struct tcptrail_listener *l = listener_of(sk);
			if (l) {
				ci->owner = l->owner;
				ci->owner_known = 1;
			}
		}
		/* Listed here, or older than the trace (seeded from /proc; this is
		 * the first event we see of it). */
		if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE && (ci->listed || !ci->prev_known))
			unlist_listener(sk, ci);
	}

	struct tcptrail_event e = {};
	fill_common(&e, sk, cookie, ci, now);
	e.type = TT_EVENT_TRANSITION;
	e.old_state = oldstate;
	e.new_state = newstate;
	if (!ci) {
		e.flags |= TT_FLAG_UNTRACKED;
		/* Untracked, but its listener may be known. */
		if (oldstate == TCP_LISTEN) {
			struct tcptrail_listener *l = listener_of(sk);
			if (l)
				owner_to_event(&e, &l->owner);
		}
	}
	if (BPF_CORE_READ(sk, __sk_common.skc_flags) & (1UL << SOCK_DONE))
		e.flags |= TT_FLAG_PEER_FIN;
	if (ci && ci->prev_known) {
		e.prev_state_ns = now - ci->last_ns;
		e.flags |= TT_FLAG_PREV_KNOWN;
	}

	if (ci) {
		ci->last_ns = now;
		ci->prev_known = 1;
		ci->state = newstate;
	}

	/* Incomplete endpoints: hold the event until the socket is complete. */
	bool hold = (newstate == TCP_SYN_SENT && e.sport == 0) ||
		    (newstate == TCP_LISTEN && e.sport == 0) ||
		    (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV);
	if (ci && hold) {
		ci->pending_ns = now;
		ci->pending_old = oldstate;
		ci->pending_new = newstate;
		if (newstate != TCP_SYN_RECV) {
			struct stash st = { .cookie = cookie, .sk = (__u64)sk };
			__u64 id = bpf_get_current_pid_tgid();
			bpf_map_update_elem(&in_syscall, &id, &st, BPF_ANY);
		}
		return 0;
	}

	if (newstate == TCP_LISTEN && ci && ci->owner_known)
		list_listener(sk, ci);
	if (newstate == TCP_CLOSE && (oldstate == TCP_FIN_WAIT2 || oldstate == TCP_CLOSING))
		tw_handoff(&e, ci, now);
	emit(&e);
	return 0;
}

TT_TWO_COPIES(tt_state, "tp_btf/inet_sock_set_state", on_set_state,
	      (struct sock *sk, int oldstate, int newstate),
	      (sk, oldstate, newstate))

/* --- raw_syscalls:sys_exit: connect(), listen() and accept() returning --- */

/* connect() or listen() returned: the held-back event now has its local port. */
static __always_inline int flush_after_syscall(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct stash *st = bpf_map_lookup_elem(&in_syscall, &id);
	if (!st)
		return 0;
	__u64 cookie = st->cookie;
	const struct sock *sk = (const struct sock *)st->sk;
	bpf_map_delete_elem(&in_syscall, &id);

	struct conn_info *ci = conn_lookup(cookie);
	if (!ci || !ci->pending_new)
		return 0;
	__u32 held = ci->pending_new;
	flush_pending(sk, cookie, ci);
	if (held == TCP_LISTEN && ci->owner_known)
		list_listener(sk, ci);
	return 0;
}

/*
 * Every syscall's return, filtered first by its number. A classic
 * tracepoint/syscalls/sys_exit_connect would need tracefs to find its id,
 * and many hosts do not mount it; tp_btf/sys_exit is found through BTF.
 * It runs on every syscall of the host (bench/syscall-cost measures it), so
 * the test comes before anything else. On arm64 the number is in
 * regs->syscallno, on x86-64 in regs->orig_ax (32-bit compat syscalls have
 * other numbers: their held events wait for the socket's next event).
 */
/*
 * accept() or accept4() returned a descriptor: the socket behind it now
 * belongs to the process that accepted it (an nginx worker, not the master
 * that called listen()), and every later event says so. The descriptor is
 * looked up in the caller's table; a file whose private_data is a socket
 * pointing back at that file is a socket.
 */
static __always_inline int owner_at_accept(long fd)
{
	if (fd < 0)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return 0;
	struct socket *so = BPF_CORE_READ(f, private_data);
	if (!so || BPF_CORE_READ(so, file) != f)
		return 0;
	struct sock *sk = BPF_CORE_READ(so, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	/* A pointer read from memory, not one the verifier trusts: no
	 * bpf_get_socket_cookie(). The socket's first event made its cookie. */
	__u64 cookie = 0;
	if (tt_inherited_cookies) {
		__u64 key = (__u64)sk;
		__u64 *id = bpf_map_lookup_elem(&child_ids, &key);
		if (id)
			cookie = *id;
	}
	if (!cookie)
		cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	struct conn_info *ci = conn_lookup(cookie);
	if (!ci)
		return 0;
	bool awaited = ci->awaiting;
	take_owner(ci);
	/* User space holds the socket's first events until this names the holder. */
	if (awaited) {
		struct tcptrail_event e = {};
		fill_common(&e, sk, cookie, ci, bpf_ktime_get_ns());
		e.type = TT_EVENT_ACCEPT;
		e.new_state = e.old_state = BPF_CORE_READ(sk, __sk_common.skc_state);
		emit(&e);
	}
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(tt_sys_exit, struct pt_regs *regs, long ret)
{
#if defined(__TARGET_ARCH_arm64)
	long nr = regs->syscallno;
#else
	long nr = regs->orig_ax;
#endif
	if (nr == TT_NR_ACCEPT || nr == TT_NR_ACCEPT4)
		return owner_at_accept(ret);
	if (nr != TT_NR_CONNECT && nr != TT_NR_LISTEN)
		return 0;
	return flush_after_syscall();
}

/* --- tcp:tcp_rcv_space_adjust: the process reading a socket -------------- */

/*
 * A process reading the socket (tcp_recvmsg() runs tcp_rcv_space_adjust() in
 * the reader's context): a socket handed to another process (fork, then the
 * parent closes its copy; SCM_RIGHTS) follows the one that reads it. Every
 * recvmsg() on the host comes here, so the same socket read again by the
 * same process returns at the per-CPU memo, before any table lookup.
 */
struct reader_memo {
	__u64 sk;
	__u32 tgid;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct reader_memo);
} readers SEC(".maps");

SEC("tp_btf/tcp_rcv_space_adjust")
int BPF_PROG(tt_reader, struct sock *sk)
{
	__u32 zero = 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct reader_memo *m = bpf_map_lookup_elem(&readers, &zero);
	if (!m || (m->sk == (__u64)sk && m->tgid == tgid))
		return 0;
	m->sk = (__u64)sk;
	m->tgid = tgid;
	__u64 cookie = cookie_of(sk);
	struct conn_info *ci = conn_lookup(cookie);
	if (ci && ci->owner_known && !ci->awaiting && ci->owner.pid != tgid)
		take_owner(ci);
	return 0;
}

/* --- tcp:tcp_retransmit_skb ---------------------------------------------- */

static __always_inline int on_retransmit_skb(const void *ctx, enum tt_copy copy, struct sock *sk, struct sk_buff *skb)
{
	if (!take(ctx, copy, TT_HOOK_RETRANSMIT_SKB, (__u64)sk, (__u64)skb))
		return 0;
	struct tcptrail_event e = {};
	prepare_sock_event(&e, sk, TT_EVENT_RETRANSMIT);
	e.detail = e.new_state == TCP_SYN_SENT ? TT_RETRANSMIT_SYN : TT_RETRANSMIT_DATA;
	emit(&e);
	return 0;
}

TT_TWO_COPIES(tt_retrans, "tp_btf/tcp_retransmit_skb", on_retransmit_skb,
	      (struct sock *sk, struct sk_buff *skb),
	      (sk, skb))

/* --- tcp:tcp_retransmit_synack ------------------------------------------- */

static __always_inline int on_retransmit_synack(const void *ctx, enum tt_copy copy, struct sock *listener, struct request_sock *req)
{
	if (!take(ctx, copy, TT_HOOK_RETRANSMIT_SYNACK, (__u64)listener, (__u64)req))
		return 0;
	struct tcptrail_event e = {};
	e.mono_ns = bpf_ktime_get_ns();
	e.cookie = bpf_get_socket_cookie(listener);
	e.cpu = bpf_get_smp_processor_id();
	e.type = TT_EVENT_RETRANSMIT;
	e.detail = TT_RETRANSMIT_SYNACK;
	e.flags = TT_FLAG_REQUEST_SOCK;
	e.old_state = e.new_state = TCP_SYN_RECV;
	fill_endpoints(&e, &req->__req_common);
	fill_owner(&e, conn_lookup(e.cookie));
	emit(&e);
	return 0;
}

TT_TWO_COPIES(tt_synack, "tp_btf/tcp_retransmit_synack", on_retransmit_synack,
	      (struct sock *listener, struct request_sock *req),
	      (listener, req))

/* --- tcp:tcp_send_reset -------------------------------------------------- */

static __always_inline int on_send_reset(const void *ctx, enum tt_copy copy, struct sock *sk, struct sk_buff *skb, int reason)
{
	if (!take(ctx, copy, TT_HOOK_SEND_RESET, (__u64)sk, (__u64)skb))
		return 0;
	struct tcptrail_event e = {};
	if (sk) {
		prepare_sock_event(&e, sk, TT_EVENT_RESET);
	} else if (skb) {
		/* No socket: a reset answering a segment nobody owns. */
		e.mono_ns = bpf_ktime_get_ns();
		e.cpu = bpf_get_smp_processor_id();
		e.type = TT_EVENT_RESET;
		e.flags = TT_FLAG_NO_SOCKET;
		e.old_state = e.new_state = TCP_CLOSE;
		if (!fill_from_segment(&e, skb))
			return 0;
		/* Without it --netns dropped every socket-less reset. */
		e.netns = netns_of_segment(skb);
	} else {
		return 0;
	}
	e.detail = TT_RESET_SENT;
	e.reason = reason;
	emit(&e);
	return 0;
}

/* With the reason (6.10) and without: see core_fixes.bpf.h. */
TT_TWO_COPIES(tt_rst_out, "tp_btf/tcp_send_reset", on_send_reset,
	      TT_SEND_RESET_PARAMS,
	      (sk, skb, reason))

TT_TWO_COPIES(tt_rst_out_old, "tp_btf/tcp_send_reset", on_send_reset,
	      TT_SEND_RESET_PARAMS_OLD,
	      (sk, skb, 0))

/* --- tcp:tcp_receive_reset ----------------------------------------------- */

static __always_inline int on_receive_reset(const void *ctx, enum tt_copy copy, struct sock *sk)
{
	if (!take(ctx, copy, TT_HOOK_RECEIVE_RESET, (__u64)sk, 0))
		return 0;
	struct tcptrail_event e = {};
	prepare_sock_event(&e, sk, TT_EVENT_RESET);
	e.detail = TT_RESET_RECEIVED;
	emit(&e);
	return 0;
}

TT_TWO_COPIES(tt_rst_in, "tp_btf/tcp_receive_reset", on_receive_reset,
	      (struct sock *sk),
	      (sk))

/* --- sock:inet_sk_error_report ------------------------------------------- */

static __always_inline int on_error_report(const void *ctx, enum tt_copy copy, struct sock *sk)
{
	if (!take(ctx, copy, TT_HOOK_ERROR_REPORT, (__u64)sk, 0) || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	/* tcp_disconnect() reports too, with sk_err already taken by the
	 * failed connect() (sock_error() clears it): a report of no error. */
	int err = BPF_CORE_READ(sk, sk_err);
	if (!err)
		return 0;
	struct tcptrail_event e = {};
	prepare_sock_event(&e, sk, TT_EVENT_ERROR);
	e.error = err;
	emit(&e);
	return 0;
}

TT_TWO_COPIES(tt_error, "tp_btf/inet_sk_error_report", on_error_report,
	      (struct sock *sk),
	      (sk))

/* --- tcp:tcp_destroy_sock ------------------------------------------------ */

static __always_inline int on_destroy_sock(const void *ctx, enum tt_copy copy, struct sock *sk)
{
	if (!take(ctx, copy, TT_HOOK_DESTROY_SOCK, (__u64)sk, 0))
		return 0;
	__u64 cookie = cookie_of(sk);
	if (cookie & TT_CHILD_ID_BIT) {
		__u64 key = (__u64)sk;
		bpf_map_delete_elem(&child_ids, &key);
	}
	struct conn_info *ci = conn_lookup(cookie);
	if (!ci)
		return 0;
	flush_pending(sk, cookie, ci);
	bpf_map_delete_elem(&conns, &cookie);
	return 0;
}

TT_TWO_COPIES(tt_destroy, "tp_btf/tcp_destroy_sock", on_destroy_sock,
	      (struct sock *sk),
	      (sk))

/* --- skb:kfree_skb: listen overflows, segments into timewait sockets ----- */

/* A segment dropped because a listener's queue was full. The reason is
 * tested before the copies' hand-over: nearly every hit is another drop.
 * rx_sk, the socket that received it, came with Linux 6.11 ("net: add rx_sk
 * to trace_kfree_skb"); before, the namespace comes from the device the
 * segment arrived on, and the listener's cookie is not known. */
static __always_inline int on_kfree_skb(const void *ctx, enum tt_copy copy, struct sk_buff *skb, void *location,
					enum skb_drop_reason reason, struct sock *rx_sk, bool has_rx_sk)
{
	if (reason == TT_DROP_NOT_SPECIFIED) {
		if (tt_config.tw_timer_fn && skb && copy == TT_COPY_A)
			tw_segment(skb, rx_sk, has_rx_sk);
		return 0;
	}
	if (reason != TT_DROP_LISTEN_OVERFLOW ||
	    !take(ctx, copy, TT_HOOK_KFREE_SKB, (__u64)skb, (__u64)location))
		return 0;
	struct tcptrail_event e = {};
	e.mono_ns = bpf_ktime_get_ns();
	e.cpu = bpf_get_smp_processor_id();
	e.type = TT_EVENT_LISTEN_DROP;
	e.old_state = e.new_state = TCP_LISTEN;
	if (!skb || !fill_from_segment(&e, skb))
		return 0;
	if (rx_sk) {
		e.cookie = bpf_get_socket_cookie(rx_sk);
		e.netns = netns_of(&rx_sk->__sk_common);
	} else {
		e.netns = netns_of_segment(skb);
	}
	if (e.netns) {
		struct tcptrail_listener_key lk = { .netns = e.netns, .family = e.family, .port = e.sport };
		struct tcptrail_owner *o = bpf_map_lookup_elem(&listeners, &lk);
		if (o)
			owner_to_event(&e, o);
	}
	emit(&e);
	return 0;
}

/* With rx_sk (6.11) and without: see core_fixes.bpf.h. */
TT_TWO_COPIES(tt_kfree, "tp_btf/kfree_skb", on_kfree_skb,
	      TT_KFREE_SKB_PARAMS,
	      (skb, location, reason, rx_sk, true))

TT_TWO_COPIES(tt_kfree_old, "tp_btf/kfree_skb", on_kfree_skb,
	      TT_KFREE_SKB_PARAMS_OLD,
	      (skb, location, reason, 0, false))

/* --- timer:timer_start, timer_cancel, timer_expire_entry: the timewait socket's timer --- */

/*
 * The timewait socket's timer (tw_timer_handler, found in /proc/kallsyms by
 * the loader; every other timer returns at the first test). timer_start at
 * creation (and at a reschedule into another wheel bucket: one that stays
 * in its bucket fires nothing), timer_cancel when it is detached (expiry,
 * reschedule or kill), timer_expire_entry when it runs out. They fire under
 * the timer base's lock with interrupts off, or in the timer softirq, so a
 * program never nests in itself: one copy each.
 */
SEC("tp_btf/timer_start")
int BPF_PROG(tt_tw_start, struct timer_list *timer)
{
	bool resched = false;
	if (tt_tw_cancels) {
		__u32 zero = 0;
		struct tw_cancel *c = bpf_map_lookup_elem(&tw_cancels, &zero);
		if (c && c->tw) {
			resched = (__u64)tw_of_timer(timer) == c->tw;
			tw_settle_cancel(c, timer);
		}
	}
	if (!is_tw_timer(timer))
		return 0;
	struct inet_timewait_sock *tw = tw_of_timer(timer);
	struct tcptrail_tw_key k = tw_key(tw);
	struct tcptrail_tw *t = bpf_map_lookup_elem(&timewaits, &k);
	__u64 now = bpf_ktime_get_ns();
	/* The same timewait socket restarted: a reschedule, also when its
	 * cancel was not stashed (a timer past its expiry that the wheel had
	 * not run yet: the peer's FIN within a bucket's lateness, up to 2 s at
	 * HZ=250 for the 60 s FIN_WAIT2 timer, looks like a run-out there). */
	if (t && t->tw == (__u64)tw)
		resched = true;
	if (t && resched && (!t->tw || t->tw == (__u64)tw)) {
		t->tw = (__u64)tw;
		tw_substate_check(t, &k, tw, TT_TW_TIME_WAIT, now);
		return 0;
	}
	/* A new timewait socket: the full socket's -> CLOSE right after names it. */
	struct tcptrail_tw fresh = { .tw = (__u64)tw, .since_ns = now };
	fresh.substate = BPF_CORE_READ(tw, tw_substate);
	bpf_map_update_elem(&timewaits, &k, &fresh, BPF_ANY);
	return 0;
}

SEC("tp_btf/timer_cancel")
int BPF_PROG(tt_tw_cancel, struct timer_list *timer)
{
	if (!is_tw_timer(timer))
		return 0;
	/* Run out: timer_expire_entry follows (interrupts may come between). */
	unsigned long expires = BPF_CORE_READ(timer, expires);
	if ((long)(bpf_jiffies64() - expires) >= 0)
		return 0;
	__u32 zero = 0;
	struct tw_cancel *c = bpf_map_lookup_elem(&tw_cancels, &zero);
	if (!c)
		return 0;
	tw_settle_cancel(c, 0);
	struct inet_timewait_sock *tw = tw_of_timer(timer);
	c->key = tw_key(tw);
	c->at = bpf_ktime_get_ns();
	c->tw = (__u64)tw;
	__sync_fetch_and_add(&tt_tw_cancels, 1);
	return 0;
}

/*
 * The timer ran out: 2MSL in TIME_WAIT, tcp_fin_timeout in FIN_WAIT2. A
 * FIN_WAIT2 socket that reads TIME_WAIT here took the peer's FIN unseen: a
 * reschedule in the same bucket fires no timer_start, and before Linux
 * 6.11 kfree_skb has no rx_sk (then the segment's endpoints must find it).
 */
SEC("tp_btf/timer_expire_entry")
int BPF_PROG(tt_tw_expire, struct timer_list *timer)
{
	if (!is_tw_timer(timer))
		return 0;
	struct inet_timewait_sock *tw = tw_of_timer(timer);
	struct tcptrail_tw_key k = tw_key(tw);
	struct tcptrail_tw *t = bpf_map_lookup_elem(&timewaits, &k);
	if (!t || (t->tw && t->tw != (__u64)tw))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (t->linked) {
		tw_substate_check(t, &k, tw, TT_TW_LATE, now);
		emit_tw(t, &k, t->substate, TCP_CLOSE, TT_TW_EXPIRED, 0, now);
	}
	bpf_map_delete_elem(&timewaits, &k);
	return 0;
}

/* --- skb:kfree_skb without TCP_LISTEN_OVERFLOW: segments into timewait sockets --- */

/* Before TCP_LISTEN_OVERFLOW was an enumerator (Debian 12's 6.1 has drop
 * reasons but not that one), kfree_skb still shows the segments timewait
 * sockets consume: this program does only that. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tt_kfree_tw, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	if (reason == TT_DROP_NOT_SPECIFIED &&
	    tt_config.tw_timer_fn && skb)
		tw_segment(skb, 0, false);
	return 0;
}
