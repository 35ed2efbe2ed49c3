/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* The tables every part shares, and the config the loader writes; the
 * hand-over's own maps are in handover.bpf.h, the reader memo by its hook. */
#ifndef __TT_MAPS_BPF_H__
#define __TT_MAPS_BPF_H__

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

/* --cgroup: the cgroup ids kept, the path's subtree at start (user space
 * fills it); a cgroup made later under it joins when one of its tasks first
 * takes a socket (in_cgroup_filter()). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} cgroup_set SEC(".maps");

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

#endif /* __TT_MAPS_BPF_H__ */
