/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
#ifndef __TT_HANDOVER_BPF_H__
#define __TT_HANDOVER_BPF_H__

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

/* The two copies of one tracepoint's program: NAME_a then NAME_b, each
 * calling HANDLER(ctx, copy, ARGS...). PARAMS is the tracepoint's
 * prototype as BPF_PROG takes it, in parentheses; ARGS what the handler
 * gets after the copy, in parentheses. */
#define TT_UNPAREN(...) __VA_ARGS__
/* Expands PARAMS before BPF_PROG pastes and counts them. */
#define TT_BPF_PROG(name, ...) BPF_PROG(name, __VA_ARGS__)
#define TT_TWO_COPIES(name, sec, handler, params, args)			\
	SEC(sec)							\
	int TT_BPF_PROG(name##_a, TT_UNPAREN params)			\
	{								\
		return handler(ctx, TT_COPY_A, TT_UNPAREN args);	\
	}								\
									\
	SEC(sec)							\
	int TT_BPF_PROG(name##_b, TT_UNPAREN params)			\
	{								\
		return handler(ctx, TT_COPY_B, TT_UNPAREN args);	\
	}

#endif /* __TT_HANDOVER_BPF_H__ */
