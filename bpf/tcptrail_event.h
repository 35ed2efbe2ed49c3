/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one definition of what the kernel side hands to user space.
 *
 * Included by bpf/tcptrail.bpf.c (compiled with clang -target bpf) and by the
 * Swift package through the CTCPTrailEvent module. Both compilers check the
 * static asserts at the bottom, so a layout change that is not made on both
 * sides fails the build instead of producing garbage.
 */
#ifndef TCPTRAIL_EVENT_H
#define TCPTRAIL_EVENT_H

#ifndef TCPTRAIL_BPF
#include <linux/types.h>
#endif

/* Record kinds (tcptrail_event.type). */
enum tcptrail_event_type {
	TT_EVENT_TRANSITION = 1, /* sock:inet_sock_set_state */
	TT_EVENT_RETRANSMIT = 2, /* tcp:tcp_retransmit_skb, tcp:tcp_retransmit_synack */
	TT_EVENT_RESET = 3,      /* tcp:tcp_send_reset, tcp:tcp_receive_reset */
	TT_EVENT_ERROR = 4,      /* sock:inet_sk_error_report */
	TT_EVENT_LISTEN_DROP = 5, /* skb:kfree_skb, reason TCP_LISTEN_OVERFLOW */
	TT_EVENT_ACCEPT = 6,     /* accept()/accept4() returned the socket: pid/comm are the acceptor's */
};

/* tcptrail_event.detail for TT_EVENT_RETRANSMIT. */
enum tcptrail_retransmit_kind {
	TT_RETRANSMIT_DATA = 0,
	TT_RETRANSMIT_SYN = 1,
	TT_RETRANSMIT_SYNACK = 2,
};

/* tcptrail_event.detail for TT_EVENT_RESET. */
enum tcptrail_reset_direction {
	TT_RESET_SENT = 1,
	TT_RESET_RECEIVED = 2,
};

/*
 * tcptrail_event.detail for transitions: 0 for a full socket's own; the
 * others follow a connection the kernel handed to a timewait socket
 * (tcp_time_wait()), which keeps the cookie and lives on in FIN_WAIT2 or
 * TIME_WAIT ("substate") until its timer runs out or something kills it.
 */
enum tcptrail_timewait {
	TT_TW_HANDOFF = 1,   /* the full socket's FIN_WAIT2/CLOSING -> CLOSE: a timewait socket carries on */
	TT_TW_TIME_WAIT = 2, /* FIN_WAIT2 -> TIME_WAIT in the timewait socket: the peer's FIN came */
	TT_TW_LATE = 3,      /* the same, first seen when the timer ran out (see tt_tw_expire) */
	TT_TW_EXPIRED = 4,   /* -> CLOSE: the timer ran out (2MSL, or tcp_fin_timeout in FIN_WAIT2) */
	TT_TW_RESET = 5,     /* -> CLOSE: killed by a reset; reason is TT_RESET_SENT or _RECEIVED */
	TT_TW_KILLED = 6,    /* -> CLOSE: descheduled without a reset (a new connection reused the pair) */
};

/* tcptrail_event.flags bits. */
enum tcptrail_event_flags {
	TT_FLAG_OWNER_KNOWN = 1 << 0,   /* pid/comm come from the socket's owner */
	TT_FLAG_PREV_KNOWN = 1 << 1,    /* prev_state_ns is meaningful */
	TT_FLAG_PEER_FIN = 1 << 2,      /* the peer's FIN had arrived (SOCK_DONE, set by tcp_fin) */
	TT_FLAG_DEFERRED = 1 << 3,      /* held back until the socket's addresses were set */
	TT_FLAG_NO_SOCKET = 1 << 4,     /* reset sent with no socket (e.g. SYN to a closed port) */
	TT_FLAG_REQUEST_SOCK = 1 << 5,  /* conn is a request sock (SYN-ACK retransmit) */
	TT_FLAG_UNTRACKED = 1 << 6,     /* the connection table was full: no owner, previous state or saved endpoints */
	TT_FLAG_AWAITING_ACCEPT = 1 << 7, /* an accepted socket before accept(): pid/comm are its listener's */
};

#define TT_COMM_LEN 16

/*
 * One fixed-size record per kernel event. Addresses are plain bytes (no
 * __int128: Swift's importer drops such declarations), in network order;
 * an IPv4 address sits in the first 4 bytes. Ports are in host order.
 */
struct tcptrail_event {
	__u64 mono_ns;        /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 cookie;         /* socket cookie: never repeats while the system runs */
	__u64 prev_state_ns;  /* time spent in old_state, if TT_FLAG_PREV_KNOWN */
	__u32 generation;     /* bumped each time one socket leaves CLOSE again */
	__u32 netns;          /* network namespace inode */
	__u32 pid;            /* owning process (tgid) */
	__s32 error;          /* errno for TT_EVENT_ERROR, err for retransmits */
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 sport;
	__u16 dport;
	__u16 family;         /* AF_INET (2) or AF_INET6 (10) */
	__u8 type;            /* enum tcptrail_event_type */
	__u8 old_state;       /* kernel TCP_* value */
	__u8 new_state;       /* kernel TCP_* value; the current state for non-transitions */
	__u8 detail;          /* retransmit kind or reset direction */
	__u8 flags;           /* enum tcptrail_event_flags */
	__u8 cpu;             /* CPU that saw the event */
	__u32 reason;         /* tcp_send_reset reason (enum sk_rst_reason) */
	char comm[TT_COMM_LEN];   /* the owner's process name (its thread group leader's) */
	char thread[TT_COMM_LEN]; /* the owner's thread that took the socket; "" if unknown */
	__u64 cgroup;         /* the owner's cgroup v2 id (its directory's inode); 0 if unknown */
};

#define TT_EVENT_SIZE 128

/* Settings written into .rodata before load (const volatile in the program). */
#define TT_MAX_FILTER 8
struct tcptrail_config {
	__u32 pids[TT_MAX_FILTER];
	__u16 ports[TT_MAX_FILTER];   /* local or remote */
	__u16 lports[TT_MAX_FILTER];
	__u16 rports[TT_MAX_FILTER];
	__u32 n_pids;
	__u32 n_ports;
	__u32 n_lports;
	__u32 n_rports;
	__u32 netns;                  /* 0: every namespace */
	__u16 family;                 /* 0: both */
	__u16 pad;
	__u64 wakeup_bytes;           /* wake user space once this much is queued */
	__u64 tw_timer_fn;            /* address of tw_timer_handler (/proc/kallsyms); 0: timewait sockets not followed */
	__u32 cgroup_filter;          /* 1: only owners in the "cgroup_set" map (--cgroup) */
	__u32 pad2;
};

/* Deepest cgroup level the --cgroup filter looks at for a cgroup made after the start. */
#define TT_MAX_CGROUP_LEVEL 32

/* Key and value of the "listeners" map: accepted children inherit the owner
 * of the listener on their port. User space seeds it at start with the
 * listeners that already exist (from /proc), the program adds new ones and
 * removes them when the last listener on the key closes. */
struct tcptrail_listener_key {
	__u32 netns;
	__u16 family;  /* AF_INET or AF_INET6 */
	__u16 port;    /* host order */
};

/* Who holds a socket: the process (tgid, leader's name) and the thread of
 * it that took the socket (accept, connect, listen, read), "" if unknown. */
struct tcptrail_owner {
	__u32 pid;
	char comm[TT_COMM_LEN];
	char thread[TT_COMM_LEN];
	__u64 cgroup;  /* cgroup v2 id of the task that took the socket (bpf_get_current_cgroup_id) */
};

struct tcptrail_listener {
	struct tcptrail_owner owner;
	__u32 refs;    /* listening sockets on the key (SO_REUSEPORT shares one) */
};

/* Key of the "timewaits" map: a timewait socket by its connection, as
 * fill_endpoints() gives it (v4-mapped pairs as IPv4). User space seeds it
 * with the timewait sockets sock_diag lists at start. */
struct tcptrail_tw_key {
	__u32 netns;
	__u16 family;
	__u16 lport;   /* host order */
	__u16 rport;
	__u16 pad;
	__u8 laddr[16];
	__u8 raddr[16];
};

/* Value of the "timewaits" map. */
struct tcptrail_tw {
	__u64 conn;          /* the connection's id (cookie, or a child's own id) */
	__u64 since_ns;      /* when it entered its substate */
	__u64 tw;            /* the inet_timewait_sock's address; 0 if seeded and not yet seen */
	__u32 generation;
	struct tcptrail_owner owner;
	__u8 substate;       /* TCP_FIN_WAIT2 or TCP_TIME_WAIT, as last seen */
	__u8 owner_known;
	__u8 linked;         /* conn is known (named at the handoff, or seeded) */
	__u8 pad[5];
};

/* Indexes into the per-CPU "stats" array. */
enum tcptrail_stat {
	TT_STAT_LOST = 0,        /* bpf_ringbuf_reserve failed: event dropped */
	TT_STAT_TRACK_FULL = 1,  /* events sent of sockets the full connection table could not take */
	TT_STAT_FILTERED = 2,    /* events dropped by the in-kernel filters */
	TT_STAT_SUBMITTED = 3,   /* events written to the ring buffer */
	TT_STAT_LOST_BY_TYPE = 4, /* + event type (1..6): TT_STAT_LOST split by type */
	TT_STAT_UNTRACKED_SOCKETS = 11, /* sockets sent whose first event found the connection table full */
	TT_STAT_LISTENERS_FULL = 12,    /* listeners the full listener table could not take */
	TT_STAT_OWNERLESS_CHILDREN = 13, /* accepted sockets sent without owner (listener not in the table) */
	TT_STAT_CHILD_IDS_FULL = 14,    /* accepted sockets left with their listener's cookie (table full) */
	TT_STAT_MAX = 15,
};

/* The tracepoints that have two program copies (see "Two copies of each
 * program" in tcptrail.bpf.c): indexes into the per-CPU "rescued" array,
 * which counts the events the second copy handled because the kernel had
 * skipped the first. */
enum tcptrail_hook {
	TT_HOOK_SET_STATE = 0,
	TT_HOOK_RETRANSMIT_SKB = 1,
	TT_HOOK_RETRANSMIT_SYNACK = 2,
	TT_HOOK_SEND_RESET = 3,
	TT_HOOK_RECEIVE_RESET = 4,
	TT_HOOK_ERROR_REPORT = 5,
	TT_HOOK_DESTROY_SOCK = 6,
	TT_HOOK_KFREE_SKB = 7,
	TT_HOOK_MAX = 8,
};

_Static_assert(sizeof(struct tcptrail_event) == TT_EVENT_SIZE, "tcptrail_event size");
_Static_assert(__builtin_offsetof(struct tcptrail_event, cookie) == 8, "cookie offset");
_Static_assert(__builtin_offsetof(struct tcptrail_event, generation) == 24, "generation offset");
_Static_assert(__builtin_offsetof(struct tcptrail_event, saddr) == 40, "saddr offset");
_Static_assert(__builtin_offsetof(struct tcptrail_event, sport) == 72, "sport offset");
_Static_assert(__builtin_offsetof(struct tcptrail_event, type) == 78, "type offset");
_Static_assert(__builtin_offsetof(struct tcptrail_event, reason) == 84, "reason offset");
_Static_assert(__builtin_offsetof(struct tcptrail_event, comm) == 88, "comm offset");
_Static_assert(__builtin_offsetof(struct tcptrail_event, thread) == 104, "thread offset");
_Static_assert(__builtin_offsetof(struct tcptrail_event, cgroup) == 120, "cgroup offset");
_Static_assert(sizeof(struct tcptrail_config) == 128, "tcptrail_config size");
_Static_assert(sizeof(struct tcptrail_listener_key) == 8, "tcptrail_listener_key size");
_Static_assert(sizeof(struct tcptrail_owner) == 48, "tcptrail_owner size");
_Static_assert(__builtin_offsetof(struct tcptrail_owner, cgroup) == 40, "tcptrail_owner cgroup offset");
_Static_assert(sizeof(struct tcptrail_listener) == 56, "tcptrail_listener size");
_Static_assert(sizeof(struct tcptrail_tw_key) == 44, "tcptrail_tw_key size");
_Static_assert(sizeof(struct tcptrail_tw) == 88, "tcptrail_tw size");

#endif /* TCPTRAIL_EVENT_H */
