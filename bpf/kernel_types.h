/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The few kernel types tcptrail reads, declared by hand instead of a 3 MB
 * vmlinux.h. preserve_access_index makes every field access a CO-RE
 * relocation, so libbpf finds each field's real offset in the running
 * kernel's BTF at load time; only the names and types must match.
 * Anonymous unions of the kernel (skc_addrpair, skc_portpair) are flattened:
 * libbpf's CO-RE matching looks through anonymous members.
 */
#ifndef TCPTRAIL_KERNEL_TYPES_H
#define TCPTRAIL_KERNEL_TYPES_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
	BPF_EXIST = 2,
};

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
};

/* Kernel TCP states (include/net/tcp_states.h). */
enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT = 2,
	TCP_SYN_RECV = 3,
	TCP_FIN_WAIT1 = 4,
	TCP_FIN_WAIT2 = 5,
	TCP_TIME_WAIT = 6,
	TCP_CLOSE = 7,
	TCP_CLOSE_WAIT = 8,
	TCP_LAST_ACK = 9,
	TCP_LISTEN = 10,
	TCP_CLOSING = 11,
	TCP_NEW_SYN_RECV = 12,
};

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define SOCK_DONE 1 /* enum sock_flags: set by tcp_fin() when the peer's FIN arrives */

/* Only the value we test; CO-RE relocates it to the running kernel's. */
enum skb_drop_reason {
	SKB_DROP_REASON_NOT_SPECIFIED = 2,
	SKB_DROP_REASON_TCP_LISTEN_OVERFLOW = 40,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
};

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

typedef struct {
	__s64 counter;
} atomic64_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	unsigned long skc_flags; /* sk->sk_flags is a macro for this */
	atomic64_t skc_cookie;   /* 0 until someone asks for the socket's cookie */
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct hlist_node {
	struct hlist_node *next;
	struct hlist_node **pprev; /* NULL once the timer is not pending (detach_timer) */
};

struct timer_list {
	struct hlist_node entry;
	unsigned long expires; /* jiffies */
	void (*function)(struct timer_list *);
};

struct inet_timewait_sock {
	struct sock_common __tw_common;
	unsigned char tw_substate; /* TCP_FIN_WAIT2 or TCP_TIME_WAIT */
	struct timer_list tw_timer;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
	int sk_err;
};

struct request_sock {
	struct sock_common __req_common;
};

struct net_device {
	possible_net_t nd_net;
};

struct sk_buff {
	struct net_device *dev; /* the device it arrived on */
	unsigned char *head;
	__u16 transport_header;
	__u16 network_header;
};

struct file {
	void *private_data; /* a socket file's struct socket */
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct socket {
	struct file *file;
	struct sock *sk;
};

struct task_struct {
	void *stack; /* lowest address of the task's kernel stack */
	struct files_struct *files;
	struct task_struct *group_leader;
	char comm[16];
};

/* The registers a syscall returns with: only the syscall's number. */
struct pt_regs {
#if defined(__TARGET_ARCH_arm64)
	int syscallno;
#else
	unsigned long orig_ax;
#endif
};

#pragma clang attribute pop

/* Syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl,
 * include/uapi/asm-generic/unistd.h for arm64). */
#if defined(__TARGET_ARCH_arm64)
#define TT_NR_CONNECT 203
#define TT_NR_LISTEN 201
#define TT_NR_ACCEPT 202
#define TT_NR_ACCEPT4 242
#else
#define TT_NR_CONNECT 42
#define TT_NR_LISTEN 50
#define TT_NR_ACCEPT 43
#define TT_NR_ACCEPT4 288
#endif

#endif /* TCPTRAIL_KERNEL_TYPES_H */
