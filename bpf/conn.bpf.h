/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Per-socket tracking: connection ids, owners, listeners. */
#ifndef __TT_CONN_BPF_H__
#define __TT_CONN_BPF_H__

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
 * that one's id (the clone order before 6.15: child_cookie_not_own()). */
static __always_inline __u64 first_event_cookie(struct sock *sk, int oldstate, int newstate)
{
	__u64 key = (__u64)sk;
	if (child_cookie_not_own(sk, oldstate, newstate)) {
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

/* With --cgroup: a cgroup id not in the set joins it when one of its
 * ancestors is in it (a cgroup made under the filtered path after the start). */
static __always_inline void in_cgroup_filter(__u64 id)
{
	if (!tt_config.cgroup_filter || bpf_map_lookup_elem(&cgroup_set, &id))
		return;
	for (int level = 0; level < TT_MAX_CGROUP_LEVEL; level++) {
		__u64 up = bpf_get_current_ancestor_cgroup_id(level);
		if (!up || up == id)
			return;
		if (bpf_map_lookup_elem(&cgroup_set, &up)) {
			__u8 one = 1;
			bpf_map_update_elem(&cgroup_set, &id, &one, BPF_ANY);
			return;
		}
	}
}

/* Records the current process as the socket's owner: its tgid, and the
 * thread group leader's name, which /proc/PID/comm and `ss -p` show (a
 * worker thread's own name, "NIO-SGLTN-1-#2", is not the process's: it is
 * kept as the thread's), and the cgroup of the task that took it. */
static __always_inline void take_owner(struct conn_info *ci)
{
	struct task_struct *task = bpf_get_current_task_btf();
	ci->owner.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(ci->owner.thread, sizeof(ci->owner.thread));
	if (BPF_CORE_READ_INTO(&ci->owner.comm, task, group_leader, comm))
		__builtin_memcpy(ci->owner.comm, ci->owner.thread, TT_COMM_LEN);
	ci->owner.cgroup = bpf_get_current_cgroup_id();
	in_cgroup_filter(ci->owner.cgroup);
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

/* The entry of the listeners on sk's (netns, family, port), if any. */
static __always_inline struct tcptrail_listener *listener_of(const struct sock *sk)
{
	struct tcptrail_listener_key lk = listener_key(sk);
	return bpf_map_lookup_elem(&listeners, &lk);
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

#endif /* __TT_CONN_BPF_H__ */
