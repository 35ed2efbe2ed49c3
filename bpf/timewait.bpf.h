/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Following a connection into its timewait socket: the timer's start,
 * cancel and expiry, and the segments the socket consumes. */
#ifndef __TT_TIMEWAIT_BPF_H__
#define __TT_TIMEWAIT_BPF_H__

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
		t->owner.cgroup = e->cgroup;
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
		seg.netns = netns_of_segment(skb);
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

#endif /* __TT_TIMEWAIT_BPF_H__ */
