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
 *    for (see "Two copies of each program" below).
 */
#include "kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#define TCPTRAIL_BPF
#include "tcptrail_event.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The only .rodata variable: the loader writes it before load. */
const volatile struct tcptrail_config tt_config = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TT_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* What we know about one socket, keyed by its cookie; freed at tcp_destroy_sock. */
struct conn_info {
	__u64 last_ns;         /* time of the last transition */
	__u64 pending_ns;      /* held-back transition, if pending_new != 0 */
	__u32 generation;
	struct tcptrail_owner owner;
	__u32 pending_new;     /* held-back transition's new state, 0 if none; taken with xchg */
	__u8 state;            /* the kernel state after the last transition */
	__u8 pending_old;
	__u8 owner_known;
	__u8 prev_known;
	__u8 listed;           /* counted in its key's listeners entry */
	__u8 awaiting;         /* an accepted socket not yet accept()ed: its owner is the listener's */
	__u8 pad[2];
	/* Last complete endpoints: the kernel clears the local port (and may
	 * clear addresses) before the -> CLOSE transition fires. */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn_info);
} conns SEC(".maps");

/*
 * Table sizes: the max_entries below are defaults; the loader sizes conns,
 * child_ids, listeners and owner_seeds from the host before load
 * (TraceSettings.tables). conns, listeners and child_ids are plain hashes,
 * not LRU, so a full table is a failed insert we count (TT_STAT_*), never a
 * silent eviction of a live entry.
 */

/* Listener owners by (netns, family, port): accepted children inherit them.
 * An entry lives while a listener on its key does (refs). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, struct tcptrail_listener_key);
	__type(value, struct tcptrail_listener);
} listeners SEC(".maps");

/* Owners of sockets that predate the trace, by cookie, from /proc at start. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tcptrail_owner);
} owner_seeds SEC(".maps");

/* Sockets whose held-back event waits for connect() or listen() to return. */
struct stash {
	__u64 cookie;
	__u64 sk;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct stash);
} in_syscall SEC(".maps");

/*
 * Accepted children whose cookie at their first event is not their own.
 * On Linux 6.1 (seen in the Debian 12 guest of scripts/test-kernels)
 * sk_clone_lock() copies sock_common whole, skc_cookie with it, and the
 * child's LISTEN -> SYN_RECV fires before the request's cookie replaces it
 * (see first_event_cookie()); 6.18 gives each child a cookie of its own
 * before that event. A child whose cookie is already set at its first event
 * (fired from the clone path before anything else can ask for one), or that
 * fires it before its ports are set, gets an id of its own here, by socket address, until the
 * socket is destroyed or the address starts a new socket. Ids have the top
 * bit set, which cookies (a counter from 1) never reach, and the time in the
 * rest, so they do not repeat across runs either.
 */
#define TT_CHILD_ID_BIT (1ULL << 63)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);   /* struct sock * */
	__type(value, __u64); /* the child's id */
} child_ids SEC(".maps");

/*
 * Connections the kernel handed to a timewait socket, by their endpoints.
 * An entry is made when the socket's timer starts (in tcp_time_wait(),
 * just before the full socket's -> CLOSE, which names the connection) and
 * removed when the timer runs out or a reset kills it. A timewait socket
 * descheduled without a trace we can see (a namespace going away) leaves its
 * entry behind: LRU, so such entries age out first, and the loader sizes it
 * from the host like conns.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct tcptrail_tw_key);
	__type(value, struct tcptrail_tw);
} timewaits SEC(".maps");

/* A timewait timer cancelled before its time, per CPU: a reschedule if the
 * same timer starts next on this CPU (mod_timer() detaches and re-adds
 * under the timer base's lock, with interrupts off, so nothing comes
 * between), otherwise the socket was killed (inet_twsk_deschedule_put()). */
struct tw_cancel {
	__u64 tw;
	__u64 at;
	struct tcptrail_tw_key key;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tw_cancel);
} tw_cancels SEC(".maps");

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &which);
	/* Atomic: one program can run in the middle of another on the same
	 * CPU (a softirq interrupting it), between a load and a store. */
	if (v)
		__sync_fetch_and_add(v, 1);
}

/* Set at the first child with an inherited cookie: only then are lookups in child_ids needed. */
__u32 tt_inherited_cookies = 0;
__u64 tt_children = 0;

/* The socket's connection id: its cookie, or its own id if it is a child
 * that inherited its listener's cookie. */
static __always_inline __u64 cookie_of(struct sock *sk)
{
	if (tt_inherited_cookies) {
		__u64 key = (__u64)sk;
		__u64 *id = bpf_map_lookup_elem(&child_ids, &key);
		if (id)
			return *id;
	}
	return bpf_get_socket_cookie(sk);
}

/* At a socket's first event: a child whose cookie is not yet its own gets
 * an id of its own; a new socket at the address of a destroyed one drops
 * that one's id.
 *
 * Seen on 6.1 (Debian 12): inet_csk_clone_lock() fires LISTEN -> SYN_RECV
 * right after sk_clone_lock(), before it copies the request's ports,
 * addresses and ir_cookie into the child, so the child still reads its
 * listener's cookie, or 0 if the listener had none, and a cookie made
 * then is overwritten a moment later. 6.18 fires it last, with the ports
 * set. The remote port, still the listener's 0, tells the two apart. */
static __always_inline __u64 first_event_cookie(struct sock *sk, int oldstate, int newstate)
{
	__u64 key = (__u64)sk;
	if (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV &&
	    (BPF_CORE_READ(sk, __sk_common.skc_cookie.counter) != 0 || BPF_CORE_READ(sk, __sk_common.skc_dport) == 0)) {
		__u64 id = TT_CHILD_ID_BIT | ((bpf_ktime_get_ns() & ~0xffULL) & ~TT_CHILD_ID_BIT) |
			   (__sync_fetch_and_add(&tt_children, 1) & 0xff);
		tt_inherited_cookies = 1;
		if (bpf_map_update_elem(&child_ids, &key, &id, BPF_ANY)) {
			count(TT_STAT_CHILD_IDS_FULL);
			return bpf_get_socket_cookie(sk);
		}
		return id;
	}
	if (oldstate == TCP_CLOSE && tt_inherited_cookies)
		bpf_map_delete_elem(&child_ids, &key);
	return cookie_of(sk);
}

/*
 * Two copies of each program.
 *
 * __bpf_trace_run() keeps a per-CPU "active" count per program and skips the
 * program (recursion_misses += 1, nothing else) when it already runs on that
 * CPU. Under connection churn that happens all the time: a hard interrupt
 * arrives while a program runs for a task-context event (connect, close, the
 * socket backlog in release_sock), and on its way out the CPU serves softirqs
 * (loopback or NIC receive, TCP timers) whose events hit the same tracepoint.
 *
 * So every tp_btf program is attached twice, copy a then copy b, one body
 * (the `copy` argument), the same maps, but each copy with its own "active"
 * count. The tracepoint calls a then b for every event. Copy a handles every
 * event it is run for; copy b handles the events the kernel skipped a for.
 * A softirq nests into the one program running, never into a softirq, so at
 * most one of the two is skipped for an event, and every event is handled
 * once. (Splitting the work by context instead, one copy for task events and
 * one for softirq events, still loses events: the kernel runs both copies
 * for every event, the softirq copy too for a task event, where it returns at
 * once, and a softirq arriving in that short run finds it active.)
 *
 * How b knows: a leaves a claim, the event's identity (the address of the
 * tracepoint's argument array and two arguments), in a per-CPU slot; b finds
 * its event's claim there, or handles the event itself and counts a rescue.
 * Between a and b for one event only a nested event can run, and a nested
 * event must not overwrite the claim: there is one slot per level, the
 * level being whether the tracepoint runs on the current task's own stack.
 * On x86-64 and arm64 a hard interrupt taken in the kernel switches to the
 * CPU's interrupt stack, and the softirqs it serves on the way out, or that
 * local_bh_enable() serves, run there too (do_softirq_own_stack); softirqs
 * that run on a task stack (ksoftirqd, on x86 after an interrupt from user
 * mode) have nothing of ours under them. So a nested event is always on the
 * other level. (TCP state changes, resets, retransmits, socket errors and
 * listen drops do not happen in hard interrupts or NMIs.)
 *
 * The accounting is exact: each miss of copy a is either a rescue by b or an
 * event lost (b skipped too, or a stale claim that matched), so user space
 * reports a's recursion_misses minus b's rescues as lost. b's misses are
 * events a handled.
 *
 * The level comes from the stack rather than the preempt count
 * (in_serving_softirq()): on x86 that is the per-CPU __preempt_count, which a
 * program reads through a typed ksym, and the verifier resolves those through
 * kallsyms, which has no data symbols without CONFIG_KALLSYMS_ALL.
 *
 * The level window is THREAD_SIZE: 16 KiB on x86-64 and arm64 without KASAN.
 * With KASAN (32 KiB) task events deep in the stack take the other slot, and
 * an event nested between a and b may then make b handle an event twice;
 * where softirqs run on the task stack (PREEMPT_RT) there is no nesting.
 */
#define TT_THREAD_SIZE (16 * 1024)

enum tt_copy {
	TT_COPY_A = 0,
	TT_COPY_B = 1,
};

struct claim {
	__u64 at; /* address of the tracepoint's argument array */
	__u64 arg0;
	__u64 arg1;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TT_HOOK_MAX * 2);
	__type(key, __u32);
	__type(value, struct claim);
} claims SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TT_HOOK_MAX);
	__type(key, __u32);
	__type(value, __u64);
} rescued SEC(".maps");

/* Whether this copy handles the event being traced: copy a always (leaving
 * its claim), copy b when a's claim for the event is not there. ctx is the
 * tracepoint's argument array, a local of bpf_trace_run*() on the stack the
 * tracepoint runs on (the program's own frame may be on a private stack). */
static __always_inline bool take(const void *ctx, enum tt_copy copy, enum tcptrail_hook hook,
				 __u64 arg0, __u64 arg1)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 at = 0;
	/* The address as a plain number: a copy of the pointer's bytes. */
	bpf_probe_read_kernel(&at, sizeof(at), &ctx);
	__u32 key = hook * 2 + (at - (__u64)task->stack < TT_THREAD_SIZE ? 0 : 1);
	struct claim *c = bpf_map_lookup_elem(&claims, &key);
	if (!c)
		return copy == TT_COPY_A;
	if (copy == TT_COPY_A) {
		c->at = at;
		c->arg0 = arg0;
		c->arg1 = arg1;
		return true;
	}
	if (c->at == at && c->arg0 == arg0 && c->arg1 == arg1) {
		c->at = 0;
		return false;
	}
	__u32 index = hook;
	__u64 *n = bpf_map_lookup_elem(&rescued, &index);
	if (n)
		__sync_fetch_and_add(n, 1);
	return true;
}

static __always_inline __u32 netns_of(const struct sock_common *skc)
{
	return BPF_CORE_READ(skc, skc_net.net, ns.inum);
}

static __always_inline bool port_in(__u16 port, const volatile __u16 *list, __u32 n)
{
	for (int i = 0; i < TT_MAX_FILTER; i++) {
		if (i >= n)
			break;
		if (list[i] == port)
			return true;
	}
	return false;
}

/* The in-kernel filters, evaluated on a filled event before it is reserved. */
static __always_inline bool wanted(const struct tcptrail_event *e)
{
	if (tt_config.family && e->family != tt_config.family)
		return false;
	if (tt_config.netns && e->netns != tt_config.netns)
		return false;
	/* An accepted socket before accept() carries its listener's owner, and
	 * the accept event its acceptor's: user space filters those by pid
	 * once accept() has named the holder. */
	if (tt_config.n_pids && !(e->flags & TT_FLAG_AWAITING_ACCEPT) && e->type != TT_EVENT_ACCEPT) {
		bool hit = false;
		for (int i = 0; i < TT_MAX_FILTER; i++) {
			if (i >= tt_config.n_pids)
				break;
			if (tt_config.pids[i] == e->pid)
				hit = true;
		}
		if (!hit)
			return false;
	}
	if (tt_config.n_ports && !port_in(e->sport, tt_config.ports, tt_config.n_ports) &&
	    !port_in(e->dport, tt_config.ports, tt_config.n_ports))
		return false;
	if (tt_config.n_lports && !port_in(e->sport, tt_config.lports, tt_config.n_lports))
		return false;
	if (tt_config.n_rports && !port_in(e->dport, tt_config.rports, tt_config.n_rports))
		return false;
	return true;
}

/* Wake user space only past a backlog; it also drains on a short timer. */
static __always_inline __u64 wakeup_flags(void)
{
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= tt_config.wakeup_bytes)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

/* What a full table kept from an event the filters keep: the counts are
 * about the record, not the whole host. */
static __always_inline void count_gaps(const struct tcptrail_event *e)
{
	if (e->type != TT_EVENT_TRANSITION)
		return;
	bool accepted = e->old_state == TCP_LISTEN && e->new_state == TCP_SYN_RECV;
	if (e->flags & TT_FLAG_UNTRACKED) {
		count(TT_STAT_TRACK_FULL);
		/* A socket's first transition: from CLOSE (connect, listen) or
		 * the clone of an accepted child. */
		if (e->old_state == TCP_CLOSE || accepted)
			count(TT_STAT_UNTRACKED_SOCKETS);
	}
	if (accepted && !(e->flags & TT_FLAG_OWNER_KNOWN))
		count(TT_STAT_OWNERLESS_CHILDREN);
}

/* Copies the filled event into the ring buffer, if it passes the filters. */
static __always_inline void emit(const struct tcptrail_event *e)
{
	if (!wanted(e)) {
		count(TT_STAT_FILTERED);
		return;
	}
	struct tcptrail_event *out = bpf_ringbuf_reserve(&events, sizeof(*out), 0);
	if (!out) {
		count(TT_STAT_LOST);
		if (e->type >= TT_EVENT_TRANSITION && e->type <= TT_EVENT_ACCEPT)
			count(TT_STAT_LOST_BY_TYPE + e->type);
		return;
	}
	__builtin_memcpy(out, e, sizeof(*out));
	bpf_ringbuf_submit(out, wakeup_flags());
	count(TT_STAT_SUBMITTED);
	count_gaps(e);
}

static __always_inline bool all_zero(const __u8 *a)
{
	__u64 w[2];
	__builtin_memcpy(w, a, 16);
	return w[0] == 0 && w[1] == 0;
}

/* ::ffff:a.b.c.d, an IPv4 peer of an AF_INET6 socket (a listener on ::). */
static __always_inline bool v4_mapped(const __u8 *a)
{
	__u64 w0;
	__u32 w2;
	__builtin_memcpy(&w0, a, 8);
	__builtin_memcpy(&w2, a + 8, 4);
	return w0 == 0 && w2 == bpf_htonl(0x0000ffff);
}

static __always_inline void to_v4(__u8 *a)
{
	__u32 v4;
	__builtin_memcpy(&v4, a + 12, 4);
	__builtin_memset(a, 0, 16);
	__builtin_memcpy(a, &v4, 4);
}

/* Endpoints, family and namespace from any socket flavour (full, request, timewait). */
static __always_inline void fill_endpoints(struct tcptrail_event *e, const struct sock_common *skc)
{
	e->family = BPF_CORE_READ(skc, skc_family);
	e->sport = BPF_CORE_READ(skc, skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	e->netns = netns_of(skc);
	if (e->family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->saddr, skc, skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->daddr, skc, skc_v6_daddr.in6_u.u6_addr8);
		/* A v4-mapped conversation is IPv4 to every filter and view
		 * (an unset side, all zeros, does not make it IPv6). */
		bool s4 = v4_mapped(e->saddr), d4 = v4_mapped(e->daddr);
		if ((s4 || d4) && (s4 || all_zero(e->saddr)) && (d4 || all_zero(e->daddr))) {
			e->family = AF_INET;
			to_v4(e->saddr);
			to_v4(e->daddr);
		}
	} else {
		__u32 s = BPF_CORE_READ(skc, skc_rcv_saddr);
		__u32 d = BPF_CORE_READ(skc, skc_daddr);
		__builtin_memcpy(e->saddr, &s, 4);
		__builtin_memcpy(e->daddr, &d, 4);
	}
}

/* An event names its socket's holder. */
static __always_inline void owner_to_event(struct tcptrail_event *e, const struct tcptrail_owner *o)
{
	e->pid = o->pid;
	__builtin_memcpy(e->comm, o->comm, TT_COMM_LEN);
	__builtin_memcpy(e->thread, o->thread, TT_COMM_LEN);
	e->flags |= TT_FLAG_OWNER_KNOWN;
}

static __always_inline void fill_owner(struct tcptrail_event *e, const struct conn_info *ci)
{
	if (ci && ci->owner_known)
		owner_to_event(e, &ci->owner);
	if (ci && ci->awaiting)
		e->flags |= TT_FLAG_AWAITING_ACCEPT;
}

/* Completes endpoints the kernel already cleared from what the socket had,
 * and remembers complete ones. */
static __always_inline void remember_endpoints(struct tcptrail_event *e, struct conn_info *ci)
{
	if (!ci)
		return;
	if (e->sport && (e->dport || !ci->dport)) {
		__builtin_memcpy(ci->saddr, e->saddr, 16);
		__builtin_memcpy(ci->daddr, e->daddr, 16);
		ci->sport = e->sport;
		ci->dport = e->dport;
		return;
	}
	if (!ci->sport)
		return;
	if (!e->sport)
		e->sport = ci->sport;
	if (!e->dport)
		e->dport = ci->dport;
	if (all_zero(e->saddr))
		__builtin_memcpy(e->saddr, ci->saddr, 16);
	if (all_zero(e->daddr))
		__builtin_memcpy(e->daddr, ci->daddr, 16);
}

static __always_inline void fill_common(struct tcptrail_event *e, const struct sock *sk,
					__u64 cookie, struct conn_info *ci, __u64 now)
{
	e->mono_ns = now;
	e->cookie = cookie;
	e->generation = ci ? ci->generation : 0;
	e->cpu = bpf_get_smp_processor_id();
	fill_endpoints(e, &sk->__sk_common);
	remember_endpoints(e, ci);
	fill_owner(e, ci);
}

/* The event held back in ci, completed from the socket as it is now. */
static __always_inline void flush_pending(const struct sock *sk, __u64 cookie, struct conn_info *ci)
{
	if (!ci->pending_new)
		return;
	/* connect()'s return and a softirq on another CPU may both get here. */
	__u32 held = __sync_lock_test_and_set(&ci->pending_new, 0);
	if (!held)
		return;
	struct tcptrail_event e = {};
	fill_common(&e, sk, cookie, ci, ci->pending_ns);
	e.type = TT_EVENT_TRANSITION;
	e.old_state = ci->pending_old;
	e.new_state = held;
	e.flags |= TT_FLAG_DEFERRED;
	emit(&e);
}

/* Records the current process as the socket's owner: its tgid, and the
 * thread group leader's name, which /proc/PID/comm and `ss -p` show (a
 * worker thread's own name, "NIO-SGLTN-1-#2", is not the process's: it is
 * kept as the thread's). */
static __always_inline void take_owner(struct conn_info *ci)
{
	struct task_struct *task = bpf_get_current_task_btf();
	ci->owner.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(ci->owner.thread, sizeof(ci->owner.thread));
	if (BPF_CORE_READ_INTO(&ci->owner.comm, task, group_leader, comm))
		__builtin_memcpy(ci->owner.comm, ci->owner.thread, TT_COMM_LEN);
	ci->owner_known = 1;
	ci->awaiting = 0;
}

/* Transitions that only run in the calling process: connect, listen, close, shutdown. */
static __always_inline bool in_owner_context(int oldstate, int newstate)
{
	return newstate == TCP_SYN_SENT || newstate == TCP_LISTEN ||
	       (oldstate == TCP_ESTABLISHED && newstate == TCP_FIN_WAIT1) ||
	       (oldstate == TCP_CLOSE_WAIT && newstate == TCP_LAST_ACK);
}

static __always_inline struct conn_info *conn_lookup(__u64 cookie)
{
	return bpf_map_lookup_elem(&conns, &cookie);
}

static __always_inline struct tcptrail_listener_key listener_key(const struct sock *sk)
{
	struct tcptrail_listener_key lk = {
		.netns = netns_of(&sk->__sk_common),
		.family = BPF_CORE_READ(sk, __sk_common.skc_family),
		.port = BPF_CORE_READ(sk, __sk_common.skc_num),
	};
	return lk;
}

/* A listener is up: its key's entry names its owner (the latest listen()
 * on a SO_REUSEPORT key) and counts it. */
static __always_inline void list_listener(const struct sock *sk, struct conn_info *ci)
{
	if (ci->listed)
		return;
	struct tcptrail_listener_key lk = listener_key(sk);
	struct tcptrail_listener *l = bpf_map_lookup_elem(&listeners, &lk);
	if (l) {
		l->owner = ci->owner;
		__sync_fetch_and_add(&l->refs, 1);
		ci->listed = 1;
		return;
	}
	struct tcptrail_listener fresh = { .owner = ci->owner, .refs = 1 };
	if (bpf_map_update_elem(&listeners, &lk, &fresh, BPF_NOEXIST) == 0) {
		ci->listed = 1;
		return;
	}
	/* Another CPU made it first, or the table is full. */
	l = bpf_map_lookup_elem(&listeners, &lk);
	if (l) {
		__sync_fetch_and_add(&l->refs, 1);
		ci->listed = 1;
	} else {
		count(TT_STAT_LISTENERS_FULL);
	}
}

/* A listener closed: the last one on its key takes the entry with it. */
static __always_inline void unlist_listener(const struct sock *sk, struct conn_info *ci)
{
	ci->listed = 0;
	struct tcptrail_listener_key lk = listener_key(sk);
	struct tcptrail_listener *l = bpf_map_lookup_elem(&listeners, &lk);
	if (l && __sync_fetch_and_add(&l->refs, -1) <= 1)
		bpf_map_delete_elem(&listeners, &lk);
}

/* --- Timewait sockets ------------------------------------------------ */

static __always_inline struct tcptrail_tw_key tw_key_of(const struct tcptrail_event *e)
{
	struct tcptrail_tw_key k = {
		.netns = e->netns, .family = e->family, .lport = e->sport, .rport = e->dport,
	};
	__builtin_memcpy(k.laddr, e->saddr, 16);
	__builtin_memcpy(k.raddr, e->daddr, 16);
	return k;
}

/* The timewait socket a timer belongs to (only meaningful for tw_timer_handler's). */
static __always_inline struct inet_timewait_sock *tw_of_timer(const struct timer_list *timer)
{
	return (struct inet_timewait_sock *)((__u64)timer - bpf_core_field_offset(struct inet_timewait_sock, tw_timer));
}

static __always_inline bool is_tw_timer(const struct timer_list *timer)
{
	return tt_config.tw_timer_fn && (__u64)BPF_CORE_READ(timer, function) == tt_config.tw_timer_fn;
}

static __always_inline struct tcptrail_tw_key tw_key(const struct inet_timewait_sock *tw)
{
	struct tcptrail_event e = {};
	fill_endpoints(&e, &tw->__tw_common);
	return tw_key_of(&e);
}

/* One transition of a connection in its timewait socket. */
static __always_inline void emit_tw(const struct tcptrail_tw *t, const struct tcptrail_tw_key *k,
				    __u8 old, __u8 new, __u8 detail, __u32 reason, __u64 now)
{
	struct tcptrail_event e = {};
	e.mono_ns = now;
	e.cookie = t->conn;
	e.generation = t->generation;
	e.cpu = bpf_get_smp_processor_id();
	e.netns = k->netns;
	e.family = k->family;
	e.sport = k->lport;
	e.dport = k->rport;
	__builtin_memcpy(e.saddr, k->laddr, 16);
	__builtin_memcpy(e.daddr, k->raddr, 16);
	e.type = TT_EVENT_TRANSITION;
	e.old_state = old;
	e.new_state = new;
	e.detail = detail;
	e.reason = reason;
	if (t->owner_known)
		owner_to_event(&e, &t->owner);
	if (t->since_ns && now >= t->since_ns) {
		e.prev_state_ns = now - t->since_ns;
		e.flags |= TT_FLAG_PREV_KNOWN;
	}
	emit(&e);
}

/* The peer's FIN reached a timewait socket in FIN_WAIT2:
 * tcp_timewait_state_process() set TIME_WAIT and rescheduled the timer. */
static __always_inline void tw_substate_check(struct tcptrail_tw *t, const struct tcptrail_tw_key *k,
					      const struct inet_timewait_sock *tw, __u8 detail, __u64 now)
{
	__u8 sub = BPF_CORE_READ(tw, tw_substate);
	if (t->linked && t->substate == TCP_FIN_WAIT2 && sub == TCP_TIME_WAIT) {
		emit_tw(t, k, TCP_FIN_WAIT2, TCP_TIME_WAIT, detail, 0, now);
		t->since_ns = now;
	}
	t->substate = sub;
}

/* The full socket's FIN_WAIT2/CLOSING -> CLOSE: if a timewait socket was just
 * made for these endpoints (its timer started in tcp_time_wait() before
 * tcp_done()), it carries this connection on. */
static __always_inline void tw_handoff(struct tcptrail_event *e, const struct conn_info *ci, __u64 now)
{
	if (!tt_config.tw_timer_fn)
		return;
	struct tcptrail_tw_key k = tw_key_of(e);
	struct tcptrail_tw *t = bpf_map_lookup_elem(&timewaits, &k);
	if (!t || t->linked)
		return;
	t->conn = e->cookie;
	t->generation = e->generation;
	t->since_ns = now;
	if (e->flags & TT_FLAG_OWNER_KNOWN) {
		t->owner.pid = e->pid;
		__builtin_memcpy(t->owner.comm, e->comm, TT_COMM_LEN);
		__builtin_memcpy(t->owner.thread, e->thread, TT_COMM_LEN);
		t->owner_known = 1;
	}
	t->linked = 1;
	e->detail = TT_TW_HANDOFF;
}

/* Cancels stashed in tw_cancels on any CPU: every timer_start on the host
 * looks at its CPU's slot only while this is not 0 (bench/hook-cost). */
__u32 tt_tw_cancels = 0;

/* A timewait timer cancelled earlier on this CPU and not restarted: killed. */
static __always_inline void tw_settle_cancel(struct tw_cancel *c, const struct timer_list *next)
{
	if (!c->tw)
		return;
	__u64 tw = c->tw;
	c->tw = 0;
	__sync_fetch_and_add(&tt_tw_cancels, -1);
	if (next && (__u64)tw_of_timer(next) == tw)
		return; /* mod_timer(): a reschedule */
	struct tcptrail_tw *t = bpf_map_lookup_elem(&timewaits, &c->key);
	if (!t || (t->tw && t->tw != tw))
		return;
	if (t->linked)
		emit_tw(t, &c->key, t->substate, TCP_CLOSE, TT_TW_KILLED, 0, c->at);
	bpf_map_delete_elem(&timewaits, &c->key);
}

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
			struct tcptrail_listener_key lk = listener_key(sk);
			struct tcptrail_listener *l = bpf_map_lookup_elem(&listeners, &lk);
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
			struct tcptrail_listener_key lk = listener_key(sk);
			struct tcptrail_listener *l = bpf_map_lookup_elem(&listeners, &lk);
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

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tt_state_a, struct sock *sk, int oldstate, int newstate)
{
	return on_set_state(ctx, TT_COPY_A, sk, oldstate, newstate);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tt_state_b, struct sock *sk, int oldstate, int newstate)
{
	return on_set_state(ctx, TT_COPY_B, sk, oldstate, newstate);
}

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

/* An event about a socket we may track: flushes what it holds, fills owner. */
static __always_inline void prepare_sock_event(struct tcptrail_event *e, struct sock *sk, __u8 type)
{
	__u64 cookie = cookie_of(sk);
	struct conn_info *ci = conn_lookup(cookie);
	if (ci)
		flush_pending(sk, cookie, ci);
	fill_common(e, sk, cookie, ci, bpf_ktime_get_ns());
	if (!ci) {
		struct tcptrail_owner *seed = bpf_map_lookup_elem(&owner_seeds, &cookie);
		if (seed)
			owner_to_event(e, seed);
	}
	e->type = type;
	e->new_state = BPF_CORE_READ(sk, __sk_common.skc_state);
	e->old_state = e->new_state;
}

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

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tt_retrans_a, struct sock *sk, struct sk_buff *skb)
{
	return on_retransmit_skb(ctx, TT_COPY_A, sk, skb);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tt_retrans_b, struct sock *sk, struct sk_buff *skb)
{
	return on_retransmit_skb(ctx, TT_COPY_B, sk, skb);
}

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

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(tt_synack_a, struct sock *listener, struct request_sock *req)
{
	return on_retransmit_synack(ctx, TT_COPY_A, listener, req);
}

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(tt_synack_b, struct sock *listener, struct request_sock *req)
{
	return on_retransmit_synack(ctx, TT_COPY_B, listener, req);
}

/* Endpoints from an incoming segment's IP and TCP headers: its source is
 * the remote end, its destination this host. */
static __always_inline bool fill_from_segment(struct tcptrail_event *e, struct sk_buff *skb)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u8 version = 0;
	bpf_probe_read_kernel(&version, 1, head + nh);
	version >>= 4;
	if (version == 4) {
		e->family = AF_INET;
		bpf_probe_read_kernel(e->daddr, 4, head + nh + 12);
		bpf_probe_read_kernel(e->saddr, 4, head + nh + 16);
	} else if (version == 6) {
		e->family = AF_INET6;
		bpf_probe_read_kernel(e->daddr, 16, head + nh + 8);
		bpf_probe_read_kernel(e->saddr, 16, head + nh + 24);
	} else {
		return false;
	}
	__be16 ports[2] = {};
	bpf_probe_read_kernel(ports, sizeof(ports), head + th);
	e->dport = bpf_ntohs(ports[0]);
	e->sport = bpf_ntohs(ports[1]);
	return true;
}

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
	} else {
		return 0;
	}
	e.detail = TT_RESET_SENT;
	e.reason = reason;
	emit(&e);
	return 0;
}

/* Linux 6.10 added the reason ("tcp: rstreason: fully support in tcp_send_reset
 * tracepoint", with enum sk_rst_reason); before, the tracepoint is (sk, skb) and
 * reading a third argument is "invalid bpf_context access". The loader picks
 * one pair by the tracepoint's prototype in the kernel's BTF. */
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tt_rst_out_a, struct sock *sk, struct sk_buff *skb, int reason)
{
	return on_send_reset(ctx, TT_COPY_A, sk, skb, reason);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tt_rst_out_b, struct sock *sk, struct sk_buff *skb, int reason)
{
	return on_send_reset(ctx, TT_COPY_B, sk, skb, reason);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tt_rst_out_old_a, struct sock *sk, struct sk_buff *skb)
{
	return on_send_reset(ctx, TT_COPY_A, sk, skb, 0);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tt_rst_out_old_b, struct sock *sk, struct sk_buff *skb)
{
	return on_send_reset(ctx, TT_COPY_B, sk, skb, 0);
}

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

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tt_rst_in_a, struct sock *sk)
{
	return on_receive_reset(ctx, TT_COPY_A, sk);
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tt_rst_in_b, struct sock *sk)
{
	return on_receive_reset(ctx, TT_COPY_B, sk);
}

static __always_inline int on_error_report(const void *ctx, enum tt_copy copy, struct sock *sk)
{
	if (!take(ctx, copy, TT_HOOK_ERROR_REPORT, (__u64)sk, 0) || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	struct tcptrail_event e = {};
	prepare_sock_event(&e, sk, TT_EVENT_ERROR);
	e.error = BPF_CORE_READ(sk, sk_err);
	emit(&e);
	return 0;
}

SEC("tp_btf/inet_sk_error_report")
int BPF_PROG(tt_error_a, struct sock *sk)
{
	return on_error_report(ctx, TT_COPY_A, sk);
}

SEC("tp_btf/inet_sk_error_report")
int BPF_PROG(tt_error_b, struct sock *sk)
{
	return on_error_report(ctx, TT_COPY_B, sk);
}

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

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tt_destroy_a, struct sock *sk)
{
	return on_destroy_sock(ctx, TT_COPY_A, sk);
}

SEC("tp_btf/tcp_destroy_sock")
int BPF_PROG(tt_destroy_b, struct sock *sk)
{
	return on_destroy_sock(ctx, TT_COPY_B, sk);
}

/*
 * A segment a timewait socket consumed: tcp_v4_rcv()/tcp_v6_rcv() free every
 * segment that reaches one with reason NOT_SPECIFIED after
 * tcp_timewait_state_process(). With Linux 6.11's rx_sk that is the timewait
 * socket itself; before, the segment's endpoints find it in the map (and the
 * namespace comes from the device). The peer's FIN in FIN_WAIT2 shows as the
 * substate turned TIME_WAIT; a reset (the peer's, or ours for a segment out
 * of window) as the timer no longer pending. Only copy a looks: this is
 * not an event the copies account for, and a nested run misses at worst a
 * substate change the timer's expiry still shows.
 */
static __always_inline void tw_segment(struct sk_buff *skb, struct sock *rx_sk, bool has_rx_sk)
{
	struct tcptrail_event seg = {};
	__u64 twp = 0;
	if (has_rx_sk) {
		if (!rx_sk)
			return;
		if (BPF_CORE_READ(rx_sk, __sk_common.skc_state) != TCP_TIME_WAIT)
			return;
		twp = (__u64)rx_sk;
		fill_endpoints(&seg, &rx_sk->__sk_common);
	} else {
		if (!fill_from_segment(&seg, skb))
			return;
		/* fill_from_segment names the segment's destination as sport. */
		seg.netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	}
	struct tcptrail_tw_key k = tw_key_of(&seg);
	struct tcptrail_tw *t = bpf_map_lookup_elem(&timewaits, &k);
	if (!t)
		return;
	if (!twp)
		twp = t->tw;
	if (!twp || (t->tw && t->tw != twp))
		return;
	t->tw = twp;
	const struct inet_timewait_sock *tw = (const struct inet_timewait_sock *)twp;
	__u64 now = bpf_ktime_get_ns();
	tw_substate_check(t, &k, tw, TT_TW_TIME_WAIT, now);
	if (BPF_CORE_READ(tw, tw_timer.entry.pprev))
		return;
	/* Descheduled: a reset killed it. */
	__u32 zero = 0;
	struct tw_cancel *c = bpf_map_lookup_elem(&tw_cancels, &zero);
	if (c && c->tw == twp) {
		c->tw = 0;
		__sync_fetch_and_add(&tt_tw_cancels, -1);
	}
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u8 flags = 0;
	bpf_probe_read_kernel(&flags, 1, head + th + 13);
	if (t->linked)
		emit_tw(t, &k, t->substate, TCP_CLOSE, TT_TW_RESET, (flags & 0x04) ? TT_RESET_RECEIVED : TT_RESET_SENT, now);
	bpf_map_delete_elem(&timewaits, &k);
}

/* A segment dropped because a listener's queue was full. The reason is
 * tested before the copies' hand-over: nearly every hit is another drop.
 * rx_sk, the socket that received it, came with Linux 6.11 ("net: add rx_sk
 * to trace_kfree_skb"); before, the namespace comes from the device the
 * segment arrived on, and the listener's cookie is not known. */
static __always_inline int on_kfree_skb(const void *ctx, enum tt_copy copy, struct sk_buff *skb, void *location,
					enum skb_drop_reason reason, struct sock *rx_sk, bool has_rx_sk)
{
	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED)) {
		if (tt_config.tw_timer_fn && skb && copy == TT_COPY_A)
			tw_segment(skb, rx_sk, has_rx_sk);
		return 0;
	}
	if (reason != bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_TCP_LISTEN_OVERFLOW) ||
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
		e.netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
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

SEC("tp_btf/kfree_skb")
int BPF_PROG(tt_kfree_a, struct sk_buff *skb, void *location, enum skb_drop_reason reason, struct sock *rx_sk)
{
	return on_kfree_skb(ctx, TT_COPY_A, skb, location, reason, rx_sk, true);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(tt_kfree_b, struct sk_buff *skb, void *location, enum skb_drop_reason reason, struct sock *rx_sk)
{
	return on_kfree_skb(ctx, TT_COPY_B, skb, location, reason, rx_sk, true);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(tt_kfree_old_a, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return on_kfree_skb(ctx, TT_COPY_A, skb, location, reason, 0, false);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(tt_kfree_old_b, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return on_kfree_skb(ctx, TT_COPY_B, skb, location, reason, 0, false);
}

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

/* Before TCP_LISTEN_OVERFLOW was an enumerator (Debian 12's 6.1 has drop
 * reasons but not that one), kfree_skb still shows the segments timewait
 * sockets consume: this program does only that. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tt_kfree_tw, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED) &&
	    tt_config.tw_timer_fn && skb)
		tw_segment(skb, 0, false);
	return 0;
}
