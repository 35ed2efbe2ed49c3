/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* Building an event from a socket or a segment, the in-kernel filters, and
 * the ring buffer. */
#ifndef __TT_EMIT_BPF_H__
#define __TT_EMIT_BPF_H__

static __always_inline __u32 netns_of(const struct sock_common *skc)
{
	return BPF_CORE_READ(skc, skc_net.net, ns.inum);
}

/* A segment with no socket belongs to the namespace of the device it came in
 * on: a reset answering it, a listen drop, a timewait's segment. */
static __always_inline __u32 netns_of_segment(const struct sk_buff *skb)
{
	return BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
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
	/* --cgroup: the owner's cgroup is in the set (made at start, grown by
	 * in_cgroup_filter()); the accept cases as for --pid. */
	if (tt_config.cgroup_filter && !(e->flags & TT_FLAG_AWAITING_ACCEPT) && e->type != TT_EVENT_ACCEPT &&
	    !bpf_map_lookup_elem(&cgroup_set, &e->cgroup))
		return false;
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
	e->cgroup = o->cgroup;
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

#endif /* __TT_EMIT_BPF_H__ */
