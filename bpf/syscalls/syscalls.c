//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The system calls of traced calls, and the child processes they start.
//
// Raw tracepoints at every system call's entry and exit, on every CPU of
// the node: the first thing each does is a lookup of the caller's process
// in targets. In a target, the entry reads the calling goroutine's g from
// the user registers the kernel saved (Go keeps it in R14 on amd64, R28 on
// arm64) and looks it up in the uprobe programs' goroutine table, which is
// this object's gstates too (the loader shares it). A goroutine without a
// traced call in flight, or a thread on the runtime's own g0, stops there.
// The others' system calls belong to their innermost traced call: one at
// least span_min_ns long is written to the ring buffer, the shorter ones
// are counted per call and syscall in aggs, which user space takes at the
// call's end. A clone of a child process puts the child in children (at
// sched_process_fork, which names it as the node does) and writes its start
// to the ring buffer; the SIGCHLD of its exit writes it there with its
// command name. A child whose exit has not come when its call's record is
// read is still running: user space reads it from children.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "../uprobes/regs.h"
#include "../uprobes/gstate.h"

#define AGG_SLOTS 16 // distinct syscalls counted per call; more go to other
#define AF_NETLINK_ 16
#define CLONE_THREAD_ 0x10000
#define SIGCHLD_ 17
#define NR_CHILD 0xffffffff // an event's nr for a child process
#define NR_CHILD_START 0xfffffffe // an event's nr for a child's start

// A syscall's register arguments, and its number, per architecture.
#if defined(__TARGET_ARCH_x86)
#define REG_G r14
#define REG_ARG0 di
#define REG_ARG1 si
#define REG_ARG4 r8
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_CLONE 56
#define NR_FORK 57
#define NR_VFORK 58
#define NR_BPF 321
#define NR_EXIT 60
#define NR_EXIT_GROUP 231
#elif defined(__TARGET_ARCH_arm64)
#define REG_G regs[28]
#define REG_ARG0 regs[0]
#define REG_ARG1 regs[1]
#define REG_ARG4 regs[4]
#define NR_SENDTO 206
#define NR_RECVFROM 207
#define NR_SENDMSG 211
#define NR_RECVMSG 212
#define NR_CLONE 220
#define NR_FORK 0xfffffffe // none on arm64
#define NR_VFORK 0xfffffffe
#define NR_BPF 280
#define NR_EXIT 93
#define NR_EXIT_GROUP 94
#endif
#define NR_CLONE3 435

// What a syscall did, as events and aggs name it: the syscall's number in
// the low 16 bits, above them 1 + the command of a bpf(2), or NETLINK for
// a socket syscall on a netlink socket.
#define WHAT_NETLINK (1u << 16)
#define WHAT_BPF_CMD(cmd) (((cmd) + 1) << 16)

struct sc_event {
	__u64 call_id;  // the traced call it belongs to
	__u64 start_ns; // a child: the start of the clone that made it
	__u64 end_ns;   // a child: its exit; 0 at its start
	__s64 ret;      // a child: its PID
	__u64 exec_ns;  // a child: its exec, 0 if none
	__u32 tgid;
	__u32 tid;
	__u32 nr;       // NR_CHILD for a child process, NR_CHILD_START its start
	__u32 what;     // see WHAT_NETLINK
	char comm[16];  // a child: its command name at exit
};

// Per call: count and time of the syscalls shorter than span_min_ns, by
// what.
struct agg_slot {
	__u32 what;
	__u32 count;
	__u64 ns;
};

struct agg {
	struct agg_slot slots[AGG_SLOTS];
	struct agg_slot other; // what past AGG_SLOTS
};

// Keeps these in BTF for bpf2go.
const struct sc_event *unused_sc_event __attribute__((unused));
const struct agg *unused_agg __attribute__((unused));

// A syscall in flight in a traced call, by thread.
struct pending {
	__u64 call_id; // 0: none in flight
	__u64 start_ns;
	__u64 arg0;
	__u64 clone_flags; // a clone's, a clone3's
	__u64 addr; // a socket syscall's address: read at the exit of a receive
	__u32 nr;
	__u32 what;
};

// A child process of a traced call, by PID, until it exits.
struct child {
	__u64 call_id;
	__u64 start_ns;
	__u64 exec_ns;
	__u32 tgid;
	__u32 _pad;
	char comm[16]; // its command name: its parent's until it execs
};

volatile const __u64 span_min_ns = 1000000;

// The traced processes, by tgid.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} targets SEC(".maps");

// By thread: its syscall in flight, if call_id is not 0. A thread's entry
// stays, reused at each of its syscalls in a traced call, which so cost no
// insertion nor deletion; LRU: those of threads gone age out.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct pending);
} inflight SEC(".maps");

// By call ID. LRU: the counts of a call whose record never comes (filtered
// by its duration, or lost) age out.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct agg);
} aggs SEC(".maps");

// Scratch zero value: an agg is too large for the BPF stack.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct agg);
} agg_zero SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct child);
} children SEC(".maps");

// Nobody waits on it: user space reads it before each call's record.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} sc_events SEC(".maps");

// Events lost to a full ring buffer, per CPU.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sc_dropped SEC(".maps");

// Runs of sys_enter and sys_exit, per CPU: every system call on the node
// runs both, whatever its process. Their cost to the node is these runs
// times the cost of one, which the daemon measures at start and counts in
// its budget.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sc_runs SEC(".maps");

static __always_inline void add(void *counter)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(counter, &zero);
	if (n)
		__sync_fetch_and_add(n, 1); // no fetch: any kernel has it
}

static __always_inline int is_target(__u32 tgid)
{
	return bpf_map_lookup_elem(&targets, &tgid) != NULL;
}

// family reads the address family of the socket address at addr; 0 when
// there is none.
static __always_inline __u16 family(__u64 addr)
{
	__u16 f = 0;
	if (addr)
		bpf_probe_read_user(&f, sizeof(f), (void *)addr);
	return f;
}

SEC("raw_tracepoint/sys_enter")
int sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	add(&sc_runs);
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	if (!is_target(tgid))
		return 0;
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	struct gkey key = {.tgid = tgid};
	if (bpf_probe_read_kernel(&key.g, sizeof(key.g), &regs->REG_G) || !key.g)
		return 0;
	struct gstate *gs = bpf_map_lookup_elem(&gstates, &key);
	if (!gs)
		return 0;
	__u32 n = gs->n;
	if (n == 0 || n > MAX_FRAMES)
		return 0;

	if (ctx->args[1] > 0xffff)
		return 0; // no syscall (-1 for one ptrace or seccomp cancelled)
	struct pending p = {};
	p.nr = ctx->args[1];
	if (p.nr == NR_EXIT || p.nr == NR_EXIT_GROUP)
		return 0; // no exit to see
	p.call_id = gs->frames[(n - 1) & (MAX_FRAMES - 1)].id;
	p.what = p.nr & 0xffff;
	bpf_probe_read_kernel(&p.arg0, sizeof(p.arg0), &regs->REG_ARG0);
	switch (p.nr) {
	case NR_CLONE:
		p.clone_flags = p.arg0;
		break;
	case NR_CLONE3: // clone_args.flags
		bpf_probe_read_user(&p.clone_flags, sizeof(p.clone_flags), (void *)p.arg0);
		break;
	case NR_BPF:
		p.what |= WHAT_BPF_CMD(p.arg0 & 0x7fff);
		break;
	case NR_SENDTO:
	case NR_RECVFROM:
		bpf_probe_read_kernel(&p.addr, sizeof(p.addr), &regs->REG_ARG4);
		break;
	case NR_SENDMSG:
	case NR_RECVMSG: {
		__u64 msg = 0;
		bpf_probe_read_kernel(&msg, sizeof(msg), &regs->REG_ARG1);
		if (msg)
			bpf_probe_read_user(&p.addr, sizeof(p.addr), (void *)msg); // msghdr.msg_name
		break;
	}
	}
	// A send names its destination now; a receive's source is written
	// by the kernel, and read at the exit.
	if ((p.nr == NR_SENDTO || p.nr == NR_SENDMSG) && family(p.addr) == AF_NETLINK_)
		p.what |= WHAT_NETLINK;
	p.start_ns = bpf_ktime_get_ns();
	__u32 tid = pid_tgid;
	struct pending *q = bpf_map_lookup_elem(&inflight, &tid);
	if (q)
		__builtin_memcpy(q, &p, sizeof(p));
	else
		bpf_map_update_elem(&inflight, &tid, &p, BPF_NOEXIST);
	return 0;
}

// count adds a short syscall to its call's counts. The syscalls of one call
// come one after another, from its goroutine: no two CPUs update one agg.
static __always_inline void count(struct pending *p, __u64 d)
{
	struct agg *a = bpf_map_lookup_elem(&aggs, &p->call_id);
	if (!a) {
		__u32 zero = 0;
		struct agg *z = bpf_map_lookup_elem(&agg_zero, &zero);
		if (!z)
			return;
		bpf_map_update_elem(&aggs, &p->call_id, z, BPF_NOEXIST);
		a = bpf_map_lookup_elem(&aggs, &p->call_id);
		if (!a)
			return;
	}
	struct agg_slot *s = &a->other;
#pragma unroll
	for (int i = 0; i < AGG_SLOTS; i++) {
		if (a->slots[i].count == 0 || a->slots[i].what == p->what) {
			s = &a->slots[i];
			break;
		}
	}
	s->what = p->what;
	s->count++;
	s->ns += d;
}

SEC("raw_tracepoint/sys_exit")
int sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	add(&sc_runs);
	// Thread IDs are unique on the node, and only the syscalls the entry
	// kept are in inflight: one lookup filters the others.
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 tgid = pid_tgid >> 32;
	__u32 tid = pid_tgid;
	struct pending *p = bpf_map_lookup_elem(&inflight, &tid);
	if (!p || !p->call_id)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	__s64 ret = ctx->args[1];
	if ((p->nr == NR_RECVFROM || p->nr == NR_RECVMSG) && ret >= 0 && family(p->addr) == AF_NETLINK_)
		p->what |= WHAT_NETLINK;

	__u64 d = now - p->start_ns;
	if (d < span_min_ns) {
		count(p, d);
	} else {
		struct sc_event *e = bpf_ringbuf_reserve(&sc_events, sizeof(*e), 0);
		if (e) {
			e->call_id = p->call_id;
			e->start_ns = p->start_ns;
			e->end_ns = now;
			e->ret = ret;
			e->exec_ns = 0;
			e->tgid = tgid;
			e->tid = tid;
			e->nr = p->nr;
			e->what = p->what;
			__builtin_memset(e->comm, 0, sizeof(e->comm));
			bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
		} else {
			add(&sc_dropped);
		}
	}
	p->call_id = 0;
	return 0;
}

// A clone in a traced call made a child: keep it by the PID the node knows
// it by (the clone returns the one its parent's PID namespace does: in a
// container, another), and tell user space it started, so that the call
// knows it even if the child outlives it. The parent's thread runs this,
// with its clone in inflight. sched_process_fork is a tracepoint of its own format, whose
// child_pid moved when Linux 6.x made the comms dynamic strings: a program
// per layout, the loader attaches the one the kernel's format file names.
static __always_inline void forked(__s32 child)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&inflight, &tid);
	if (!p || !p->call_id || child <= 0 || p->clone_flags & CLONE_THREAD_)
		return;
	if (p->nr != NR_CLONE && p->nr != NR_CLONE3 && p->nr != NR_FORK && p->nr != NR_VFORK)
		return;
	struct child c = {.call_id = p->call_id, .start_ns = p->start_ns, .tgid = bpf_get_current_pid_tgid() >> 32};
	bpf_get_current_comm(c.comm, sizeof(c.comm));
	__u32 pid = child;
	bpf_map_update_elem(&children, &pid, &c, BPF_ANY);
	struct sc_event *e = bpf_ringbuf_reserve(&sc_events, sizeof(*e), 0);
	if (!e) {
		add(&sc_dropped);
		return;
	}
	e->call_id = c.call_id;
	e->start_ns = c.start_ns;
	e->end_ns = 0;
	e->ret = pid;
	e->exec_ns = 0;
	e->tgid = c.tgid;
	e->tid = pid;
	e->nr = NR_CHILD_START;
	e->what = 0;
	__builtin_memcpy(e->comm, c.comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
}

// char parent_comm[16]; pid_t parent_pid; char child_comm[16]; pid_t child_pid
struct fork_comm16 {
	__u64 common;
	char parent_comm[16];
	__s32 parent_pid;
	char child_comm[16];
	__s32 child_pid;
};

// __data_loc char[] parent_comm; pid_t parent_pid; __data_loc char[] child_comm; pid_t child_pid
struct fork_dataloc {
	__u64 common;
	__u32 parent_comm;
	__s32 parent_pid;
	__u32 child_comm;
	__s32 child_pid;
};

SEC("tracepoint/sched/sched_process_fork")
int fork_comm16(struct fork_comm16 *ctx)
{
	forked(ctx->child_pid);
	return 0;
}

SEC("tracepoint/sched/sched_process_fork")
int fork_dataloc(struct fork_dataloc *ctx)
{
	forked(ctx->child_pid);
	return 0;
}

// The exec of a child: the kernel has given it its new command name.
SEC("raw_tracepoint/sched_process_exec")
int proc_exec(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid();
	struct child *c = bpf_map_lookup_elem(&children, &pid);
	if (c) {
		c->exec_ns = bpf_ktime_get_ns();
		bpf_get_current_comm(c->comm, sizeof(c->comm));
	}
	return 0;
}

// The kernel tells a child's parent of its exit with SIGCHLD, from the
// child's last thread to exit, once every thread has (its main thread may
// end well before the others): then a wait for it returns. So the child
// ends here, its event in the ring buffer before its parent's wait returns.
SEC("raw_tracepoint/signal_generate")
int child_exit(struct bpf_raw_tracepoint_args *ctx)
{
	if ((int)ctx->args[0] != SIGCHLD_)
		return 0;
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct child *c = bpf_map_lookup_elem(&children, &pid);
	if (!c)
		return 0;
	struct sc_event *e = bpf_ringbuf_reserve(&sc_events, sizeof(*e), 0);
	if (e) {
		e->call_id = c->call_id;
		e->start_ns = c->start_ns;
		e->end_ns = bpf_ktime_get_ns();
		e->ret = pid;
		e->exec_ns = c->exec_ns;
		e->tgid = c->tgid;
		e->tid = pid;
		e->nr = NR_CHILD;
		e->what = 0;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	} else {
		add(&sc_dropped);
	}
	bpf_map_delete_elem(&children, &pid);
	return 0;
}

char __license[] SEC("license") = "Dual BSD/GPL";
