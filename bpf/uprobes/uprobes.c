//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Entry and RET uprobes for Go functions.
//
// One entry program and one return program serve every probed site; the
// attach cookie is the probe ID (built with LEGACY: the probed address, see
// probe_id_of). Calls are paired per goroutine on a shadow
// stack of in-flight frames, keyed by the goroutine's g pointer. A frame is
// identified by its depth: the distance from the goroutine's stack top
// (g.stack.hi) to the stack pointer at entry. At a RET the stack pointer is
// back where it was at entry, so depth matches; when Go copies the stack to
// grow it, stack.hi and SP move together, so depth survives the copy.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "regs.h"
#include "gstate.h"

#define MAX_PROBES 1024
#define MAX_SITES (4 * MAX_PROBES) // probed instructions: entries and RETs
#define MAX_STACK_DEPTH 64
#define WAKEUP_BYTES (64 << 10)
#define LONE_WAKEUP_NS 100000000ULL // see wakeup_flags; probe.LoneWakeup
#define EEXIST_ 17 // errno, without the libc headers
#define MAX_CAPTURES 4    // captured values per probe
#define CAPTURE_BYTES 64  // per value: a scalar, or a string's first bytes
#define ERR_PARTS 3       // strings read from an error value
#define ERR_BYTES 128     // per string: its first bytes
#define MAX_ERR_TYPES 32  // concrete error types whose messages are read

// Offset of g.stack.hi: g.stack is g's first field since Go 1.0.
#define G_STACK_HI 8

enum probe_flags {
	PROBE_ENTRY_ONLY = 1, // count entries per stack, no pairing
	// The instruction at the entry probe is PUSH %rbp or ENDBR64 (the
	// entry of a Go function without a stack check, or the instruction
	// after one): there, x86 kernels >= 6.11 put the return address into
	// the user stack themselves.
	PROBE_ENTRY_PUSHES_BP = 2,
	// Each call is announced at its entry (EVENT_ENTERED), so user space
	// can sample its goroutine's state while it runs.
	PROBE_ANNOUNCE = 4,
	// The function's last result is an error: at each RET its itab word
	// is in result register err_reg, its data word in the next one.
	PROBE_ERROR = 8,
	// A RET reads results (PROBE_ERROR, or a CAPTURE_AT_RETURN capture):
	// its event carries a ret_vals.
	PROBE_RETURNS = 16,
	// Some capture is read at the entry (not every one is CAPTURE_AT_RETURN).
	PROBE_ENTRY_CAPTURES = 32,
};

enum event_kind {
	EVENT_RETURN = 0,     // the call returned through a RET
	EVENT_UNWOUND = 1,    // the goroutine went on above this frame without a RET (panic, Goexit)
	EVENT_SUPERSEDED = 2, // a new call at the same depth replaced it after a panic or Goexit
	// Not a call: the probe's breaker tripped (see breaker). 3, 4 and 6
	// are kinds user space gives records of its own.
	EVENT_TRIPPED = 5,
	// Not a call's end: a call of a PROBE_ANNOUNCE probe started. end_ns
	// holds the goroutine's g address, where user space reads its state.
	EVENT_ENTERED = 7,
};

enum capture_kind {
	CAPTURE_SCALAR = 1, // size bytes
	CAPTURE_STRING = 2, // a Go string header: data pointer, length
};

enum capture_flags {
	CAPTURE_IN_REG = 1, // the value is the register (a string: reg, reg+1)
	CAPTURE_DEREF = 2,  // follow the pointer at reg+offset, then add deref_offset
	// A scalar result, in result register reg at the RET, not read at the
	// entry: user space takes it from the registers in ret_vals.
	CAPTURE_AT_RETURN = 4,
};

// Where one value is at the function's entry (or, CAPTURE_AT_RETURN, at
// its RET).
struct capture_spec {
	__u8 reg; // integer argument (result) register of Go's register ABI
	__u8 kind;
	__u8 size;
	__u8 flags;
	__s32 offset;
	__s32 deref_offset;
};

struct probe_cfg {
	__u64 min_duration_ns; // emit only calls at least this long
	__u32 sample_every;    // 1-in-N sampling at entry; 0 or 1: every call
	__u32 flags;
	__u32 ncaptures;
	// gen changes each time the entry probe is attached again: a frame
	// pushed before a detach is not the call a later RET returns from.
	__u32 gen;
	// burst_limit is the breaker: past this many entry hits on one CPU in
	// one breaker window, the probe's entries only count until it is
	// attached again (a new gen). 0: no breaker.
	__u32 burst_limit;
	__u32 err_reg; // PROBE_ERROR: the result register of the error's itab word
	struct capture_spec captures[MAX_CAPTURES];
};

// Values read at a call's entry, kept by call ID until the call's event is
// emitted, then appended to it.
struct capture_vals {
	__u32 ok;                  // bit i: value i was read
	__u32 len[MAX_CAPTURES];   // bytes of a scalar; a string's full length
	__u8 data[MAX_CAPTURES][CAPTURE_BYTES];
};

// How the message of one concrete error type is read from its value (the
// interface's data word), as user space found its layout. Offsets are -1
// for what the type does not have.
struct err_layout {
	__u32 kind;   // user space's name for the layout, echoed in err_vals
	__s32 str[2]; // Go strings in the value
	__s32 inner;  // an error interface in the value, read one level deep
	__s32 word;   // a word in the value
	__s32 word_deref; // >= 0: the word is a pointer, report the u32 at it plus this
};

// The error a call returned, read at its RET.
struct err_vals {
	__u64 itab; // 0: nil
	__u64 type; // itab->_type: the dynamic type, named in user space
	__u32 hash; // itab->hash, the type's hash, which selects its err_layout
	__u32 kind; // of its err_layout; 0: none, only the type is known
	__u64 inner_type; // the wrapped error's type, if the layout has one
	__u32 inner_kind;
	__u32 _pad;
	__u64 word;         // the outer value's word, else the inner one's
	__u32 len[ERR_PARTS]; // full lengths: str[0], str[1], the inner str[0]
	__u32 _pad2;
	__u8 data[ERR_PARTS][ERR_BYTES];
};

// Results read at a RET: the result registers, all of them (user space
// picks the CAPTURE_AT_RETURN ones: less work here than choosing), and the
// error.
struct ret_vals {
	__u64 regs[16];
	struct err_vals err;
};

struct counters {
	__u64 hits;       // entry probe hits, including re-entries after morestack
	__u64 returns;    // RET probe hits that completed a call
	__u64 emitted;    // events written to the ring buffer
	__u64 dropped;    // events lost: ring buffer full
	__u64 unfinished; // calls that never returned through a RET
	__u64 skipped;    // entries not sampled
	__u64 filtered;   // completed calls below min_duration_ns
	__u64 reentered;  // entry re-fired for a call in flight (morestack)
	__u64 untracked;  // entries not tracked: shadow stack or goroutine table full, unreadable g
	__u64 contended;  // entries without stack or values: preempted probes on the CPU held every scratch slot
	__u64 tripped;    // times the breaker tripped
	__u64 shed;       // entries that only counted: the breaker had tripped
	__u64 unstacked;  // entries without stack: the kernel gave no user stack, or the stack table refused it
};

struct event {
	__u64 id;
	__u64 parent_id;
	__u64 root_id;
	__u64 start_ns;
	__u64 end_ns;
	__u64 goid;
	__u64 depth;
	__u64 caller;
	__u32 probe_id;
	__s32 stack_id;
	__u32 kind;
	__u32 tgid;
};

// An event of a probe with captures: the values follow the event.
struct event_captures {
	struct event e;
	struct capture_vals v;
};

// An event of a probe with PROBE_RETURNS that returned through a RET: the
// entry's values (ok 0 if none), then the results.
struct event_returns {
	struct event e;
	struct capture_vals v;
	struct ret_vals r;
};

// Keeps these in BTF for bpf2go; only their sizes are used in code.
const struct event *unused_event __attribute__((unused));
const struct capture_vals *unused_capture_vals __attribute__((unused));
const struct ret_vals *unused_ret_vals __attribute__((unused));

struct entry_key {
	__u32 probe_id;
	__s32 stack_id;
};

// Set by the loader before the programs are loaded.
volatile const __u64 goid_offset = 0; // offset of g.goid; 0: report the g address instead
volatile const __u32 capture_stacks = 0;
volatile const __u64 breaker_window_ns = 10000000;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_PROBES);
	__type(key, __u32);
	__type(value, struct probe_cfg);
} probe_cfgs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_PROBES);
	__type(key, __u32);
	__type(value, struct counters);
} probe_counters SEC(".maps");

// LEGACY builds the object for kernels before 5.15, which have no attach
// cookies for uprobes (see probe_id_of). Those before 5.12 also refuse a
// global function with a pointer argument other than the context ("Arg#0
// type PTR in emit() is not supported yet"), and emit, unwind and drop_dead
// must stay global: inlined, the verifier checks their loops at every call
// site and gives up past a million instructions. So there they take the
// goroutine's key (a scalar, with tgid) rather than its state, and look the
// state up again: one more hash lookup per call of them, on old kernels
// only.
#ifdef LEGACY
typedef __u64 gs_ref; // gkey.g
#define GS_REF(gs, g) (g)
static __always_inline struct gstate *gs_deref(gs_ref g, __u32 tgid)
{
	struct gkey key = {.g = g, .tgid = tgid};
	return bpf_map_lookup_elem(&gstates, &key);
}
#else
typedef struct gstate *gs_ref;
#define GS_REF(gs, g) (gs)
static __always_inline struct gstate *gs_deref(gs_ref gs, __u32 tgid)
{
	return gs;
}
#endif

// Scratch zero value: a gstate does not fit on the 512-byte BPF stack.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gstate);
} gstate_zero SEC(".maps");

// Captured values of calls in flight, by call ID. LRU: values of a call
// whose frame was lost (goroutine table full, tracing stopped) age out.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct capture_vals);
} captures SEC(".maps");

// The concrete error types whose messages are read, by type hash (the
// itab's copy of it): unlike a type's address, the same in every process
// of a position-independent executable. Written at attach time.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ERR_TYPES);
	__type(key, __u32);
	__type(value, struct err_layout);
} err_layouts SEC(".maps");

struct stack_trace {
	__u64 pcs[MAX_STACK_DEPTH]; // innermost first, zero after the last
};

// Stacks by a hash of their PCs, each stored once. Not a
// BPF_MAP_TYPE_STACK_TRACE: that one drops a stack whose bucket holds
// another (seen with 42 stacks in 16384 buckets), and reusing the bucket
// would change what an ID already read means.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __s32);
	__type(value, struct stack_trace);
} stacks SEC(".maps");

// Space to build a stack and captured values in: too large for the BPF
// stack. Uprobe programs run with migration disabled but can be preempted
// (CONFIG_PREEMPT), and the task that preempts one may hit a probe on the
// same CPU: a busy count keeps it out of a slot in use (see claim). A
// preempted probe holds its slot until its task runs again, meanwhile
// every probe on that CPU needs another: with one slot, 16 busy threads on
// 2 preemptible CPUs left 62% of calls without a stack.
#define SCRATCH_SLOTS 4 // claim tries each

struct scratch {
	__u32 busy;
	__u32 _pad;
	struct stack_trace st;
	struct capture_vals v;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SCRATCH_SLOTS);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

// claim_slot returns scratch slot k of this CPU if it is free. Of two
// claimants that add to a slot at once, both back off from it. Only a
// fetch-less atomic add is used: fetching atomics need Linux 5.12.
static __always_inline struct scratch *claim_slot(__u32 k)
{
	struct scratch *s = bpf_map_lookup_elem(&scratch, &k);
	if (!s)
		return NULL;
	__sync_fetch_and_add(&s->busy, 1);
	if (*(volatile __u32 *)&s->busy == 1)
		return s;
	__sync_fetch_and_add(&s->busy, -1);
	return NULL;
}

// claim returns a free scratch slot of this CPU, or NULL while preempted
// probes hold them all. Written out, not a loop: the 6.12 verifier
// rejects the loop around the atomics.
static __always_inline struct scratch *claim(void)
{
	struct scratch *s;
	if ((s = claim_slot(0)) || (s = claim_slot(1)) || (s = claim_slot(2)) || (s = claim_slot(3)))
		return s;
	return NULL;
}

static __always_inline void release(struct scratch *s)
{
	__sync_fetch_and_add(&s->busy, -1);
}

// A probe's entry hits in the current breaker window, per CPU: no CPU
// waits for another to count.
struct burst {
	__u64 start_ns;
	__u64 hits;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_PROBES);
	__type(key, __u32);
	__type(value, struct burst);
} bursts SEC(".maps");

// Per probe, the gen whose breaker tripped, plus one (0: none): shared by
// the CPUs, so one trip stops the work on all of them.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_PROBES);
	__type(key, __u32);
	__type(value, __u32);
} tripped_gens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct entry_key);
	__type(value, __u64);
} entry_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

#ifdef LEGACY
// The probe ID of each probed instruction by its address in the target,
// written at attach time: without attach cookies, the program learns which
// site fired from the instruction pointer, which the kernel sets to the
// probed instruction's address before it runs the programs.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SITES);
	__type(key, __u64);
	__type(value, __u32);
} probe_ids SEC(".maps");

// probe_id_of gives the ID of the probe that fired; -1 for an address no
// probe of this set is attached at (another process mapping the file at a
// different address).
static __always_inline int probe_id_of(struct pt_regs *ctx, __u32 *id)
{
	__u64 ip = GO_PC(ctx);
	__u32 *v = bpf_map_lookup_elem(&probe_ids, &ip);
	if (!v)
		return -1;
	*id = *v;
	return 0;
}
#else
static __always_inline int probe_id_of(struct pt_regs *ctx, __u32 *id)
{
	*id = bpf_get_attach_cookie(ctx);
	return 0;
}
#endif

// stack_id walks the user stack at a function's entry and stores it under a
// 31-bit FNV-1a hash of its PCs; -1 when there is none or the table is
// full. Two distinct stacks share an ID with odds of about n^2/2^32 for n
// stacks in a session.
//
// At the entry the frame pointer still belongs to the caller, so the walk
// goes from the function's PC straight to the caller's caller (bpftrace's
// ustack has this gap). The return address read at entry, caller, is put
// back in second place. At a PUSH %rbp entry (pushes_bp) kernels >= 6.11
// put it there themselves; the stack is then taken as it comes, or the
// caller would appear twice.
static __always_inline __s32 stack_id(struct pt_regs *ctx, struct stack_trace *st, __u64 caller, int pushes_bp)
{
	long n;
	__u32 cnt = 0;
	if (pushes_bp) {
		n = bpf_get_stack(ctx, &st->pcs[0], sizeof(st->pcs), BPF_F_USER_STACK);
		if (n >= 16 && st->pcs[1] == caller)
			cnt = n / 8;
	}
	if (!cnt) {
		n = bpf_get_stack(ctx, &st->pcs[1], sizeof(st->pcs) - sizeof(st->pcs[0]), BPF_F_USER_STACK);
		if (n <= 0)
			return -1;
		st->pcs[0] = st->pcs[1];
		st->pcs[1] = caller;
		cnt = n / 8 + 1;
	}
	__u64 h = 14695981039346656037ULL;
	for (int i = 0; i < MAX_STACK_DEPTH; i++) {
		if (i >= cnt)
			break;
		h ^= st->pcs[i];
		h *= 1099511628211ULL;
	}
	__s32 id = (h ^ (h >> 32)) & 0x7fffffff;
	if (bpf_map_lookup_elem(&stacks, &id))
		return id; // the common case: a stack seen before
	// The scratch buffer still holds the tail of earlier, longer stacks.
	for (int i = 0; i < MAX_STACK_DEPTH; i++) {
		if (i >= cnt)
			st->pcs[i] = 0;
	}
	long err = bpf_map_update_elem(&stacks, &id, st, BPF_NOEXIST);
	if (err && err != -EEXIST_) // another CPU stored it meanwhile
		return -1;
	return id;
}

static __always_inline struct counters *counters_of(__u32 probe_id)
{
	return bpf_map_lookup_elem(&probe_counters, &probe_id);
}

// Counters are per CPU, but a preempted probe may be halfway through an
// increment: an atomic add loses none.
#define INC(c, field) __sync_fetch_and_add(&(c)->field, 1)

#define COUNT(c, field)      \
	do {                     \
		if (c)               \
			INC(c, field);   \
	} while (0)

// When a lone record last woke the reader (bpf_ktime_get_ns), shared by
// the CPUs.
__u64 lone_wakeup_ns = 0;

// wakeup_flags wakes the reader once a batch of records is waiting: waking
// it for every record (the default when it keeps up) costs the probed
// thread several microseconds per call. A record below a batch wakes it too
// when no record did for LONE_WAKEUP_NS: an idle reader blocks with no
// deadline, and wakes only for this, so an idle tracer costs nothing. Once
// woken, it polls on a short deadline for longer than LONE_WAKEUP_NS, and
// finds the lone records that did not wake it.
static __always_inline __u64 wakeup_flags(__u64 now)
{
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= WAKEUP_BYTES)
		return BPF_RB_FORCE_WAKEUP;
	// CPUs racing here may both wake it, which is harmless.
	if (now - lone_wakeup_ns >= LONE_WAKEUP_NS) {
		lone_wakeup_ns = now;
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void fill(struct event *e, struct gstate *gs, __u32 i, __u32 kind, __u64 now, __u32 tgid)
{
	struct frame *f = &gs->frames[i & (MAX_FRAMES - 1)];
	e->id = f->id;
	e->parent_id = i > 0 ? gs->frames[(i - 1) & (MAX_FRAMES - 1)].id : 0;
	e->root_id = gs->frames[0].id;
	e->start_ns = f->start_ns;
	e->end_ns = now;
	e->goid = gs->goid;
	e->depth = f->depth;
	e->caller = f->caller;
	e->probe_id = f->probe_id;
	e->stack_id = f->stack_id;
	e->kind = kind;
	e->tgid = tgid;
}

// emit writes the frame at index i of gs to the ring buffer. Its parent is
// the frame below it, the root the bottom frame. A frame with captured
// values gets the larger event that carries them; the two paths stay apart
// so the verifier sees which reservation each write goes to.
//
// A global function: the verifier checks it once, not at every call site in
// every iteration of the unwinding loops.
__attribute__((noinline)) int emit(gs_ref ref, __u32 i, __u32 kind, __u64 now, __u32 tgid)
{
	struct gstate *gs = gs_deref(ref, tgid);
	if (!gs)
		return 0;
	struct frame *f = &gs->frames[i & (MAX_FRAMES - 1)];
	struct counters *c = counters_of(f->probe_id);
	if (kind != EVENT_RETURN)
		COUNT(c, unfinished);

	if (!f->captured) {
		struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
		if (!e) {
			COUNT(c, dropped);
			return 0;
		}
		fill(e, gs, i, kind, now, tgid);
		bpf_ringbuf_submit(e, wakeup_flags(now));
		COUNT(c, emitted);
		return 0;
	}

	__u64 id = f->id;
	struct capture_vals *v = bpf_map_lookup_elem(&captures, &id);
	struct event_captures *ec = bpf_ringbuf_reserve(&events, sizeof(*ec), 0);
	if (!ec) {
		bpf_map_delete_elem(&captures, &id);
		COUNT(c, dropped);
		return 0;
	}
	fill(&ec->e, gs, i, kind, now, tgid);
	if (v)
		__builtin_memcpy(&ec->v, v, sizeof(ec->v));
	else
		ec->v.ok = 0; // evicted from the LRU: an event with no values
	bpf_map_delete_elem(&captures, &id);
	bpf_ringbuf_submit(ec, wakeup_flags(now));
	COUNT(c, emitted);
	return 0;
}

// announce writes the entry of the frame at index i of gs, which wakes the
// reader at once: user space samples the goroutine g from then on. A lost
// announcement only loses the samples.
static __always_inline void announce(struct gstate *gs, __u32 i, __u64 g, __u32 tgid)
{
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return;
	fill(e, gs, i, EVENT_ENTERED, g /* end_ns */, tgid);
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
}

// unwind reports and pops every frame deeper than depth: the goroutine is
// running above them, so they ended without a RET.
//
// A global function, like emit: inlined, its loop over MAX_FRAMES frames at
// each call site takes the verifier past its instruction limit.
__attribute__((noinline)) int unwind(gs_ref ref, __u64 depth, __u64 now, __u32 tgid)
{
	struct gstate *gs = gs_deref(ref, tgid);
	if (!gs)
		return 0;
	for (int k = 0; k < MAX_FRAMES; k++) {
		__u32 n = gs->n;
		if (n == 0 || n > MAX_FRAMES)
			return 0;
		if (gs->frames[(n - 1) & (MAX_FRAMES - 1)].depth <= depth)
			return 0;
		emit(ref, n - 1, EVENT_UNWOUND, now, tgid);
		gs->n = n - 1;
	}
	return 0;
}

struct where {
	__u64 g;
	__u64 hi; // g.stack.hi
	__u64 depth;
};

static __always_inline int locate(struct pt_regs *ctx, struct where *w)
{
	w->g = GO_G(ctx);
	if (!w->g || bpf_probe_read_user(&w->hi, sizeof(w->hi), (void *)(w->g + G_STACK_HI)))
		return -1;
	w->depth = w->hi - GO_SP(ctx);
	return 0;
}

// drop_dead pops the frames a recovered panic unwound. After a panic the
// goroutine can go on above a traced frame, or call deeper than it, without
// any event at or above its depth. A live frame still has its return address
// on the stack, at stack.hi - depth (stack copies keep that distance); a
// frame whose slot holds something else is gone. Only frames pushed before
// the goroutine's latest panic are checked, so the common path reads nothing.
// A global function, as unwind.
__attribute__((noinline)) int drop_dead(gs_ref ref, __u64 hi, __u64 now, __u32 tgid)
{
#if GO_RETURN_ADDRESS_ON_STACK
	struct gstate *gs = gs_deref(ref, tgid);
	if (!gs)
		return 0;
	for (int k = 0; k < MAX_FRAMES; k++) {
		__u32 n = gs->n;
		if (n == 0 || n > MAX_FRAMES)
			return 0;
		struct frame *f = &gs->frames[(n - 1) & (MAX_FRAMES - 1)];
		if (f->panics == gs->panics)
			return 0;
		__u64 ra = 0;
		if (!bpf_probe_read_user(&ra, sizeof(ra), (void *)(hi - f->depth)) && ra == f->caller) {
			// Alive, and so is every frame below it.
			f->panics = gs->panics;
			return 0;
		}
		emit(ref, n - 1, EVENT_UNWOUND, now, tgid);
		gs->n = n - 1;
	}
#endif
	return 0;
}

// read_capture reads one value into v's slot i. A read that faults leaves
// the slot marked unread: an empty attribute, never a failed probe.
static __always_inline void read_capture(__u64 args[16], struct capture_spec *s,
					 struct capture_vals *v, __u32 i)
{
	__u8 *dst = v->data[i];
	__u64 base = args[s->reg & 15];
	__u64 str = 0, len = 0;

	if (s->flags & CAPTURE_IN_REG) {
		if (s->kind == CAPTURE_SCALAR) {
			*(__u64 *)dst = base;
			v->len[i] = s->size;
			v->ok |= 1 << i;
			return;
		}
		str = base;
		len = args[(s->reg + 1) & 15];
	} else {
		__u64 addr = base + (__s64)s->offset;
		if (s->flags & CAPTURE_DEREF) {
			__u64 p = 0;
			if (bpf_probe_read_user(&p, sizeof(p), (void *)addr) || !p)
				return;
			addr = p + (__s64)s->deref_offset;
		}
		if (s->kind == CAPTURE_SCALAR) {
			// The mask bounds n for Linux 5.10's verifier, which
			// loses the bounds of the check below once clang folds
			// it into one comparison of n - 1.
			__u32 n = s->size & 15;
			if (n == 0 || n > 8)
				return;
			*(__u64 *)dst = 0;
			if (bpf_probe_read_user(dst, n, (void *)addr))
				return;
			v->len[i] = n;
			v->ok |= 1 << i;
			return;
		}
		__u64 hdr[2];
		if (bpf_probe_read_user(hdr, sizeof(hdr), (void *)addr))
			return;
		str = hdr[0];
		len = hdr[1];
	}
	if (s->kind != CAPTURE_STRING)
		return;
	__u32 n = len;
	if (len > CAPTURE_BYTES)
		n = CAPTURE_BYTES;
	if (n && bpf_probe_read_user(dst, n, (void *)str))
		return;
	v->len[i] = len > 0xffffffff ? 0xffffffff : len;
	v->ok |= 1 << i;
}

// read_err_str reads the Go string at base+off into part k of e.
static __always_inline void read_err_str(__u64 base, __s32 off, struct err_vals *e, __u32 k)
{
	__u64 hdr[2];
	if (off < 0 || bpf_probe_read_user(hdr, sizeof(hdr), (void *)(base + off)))
		return;
	__u32 n = hdr[1] > ERR_BYTES ? ERR_BYTES : hdr[1];
	if (n && bpf_probe_read_user(e->data[k % ERR_PARTS], n, (void *)hdr[0]))
		return;
	e->len[k % ERR_PARTS] = hdr[1] > 0xffffffff ? 0xffffffff : hdr[1];
}

static __always_inline void read_err_word(__u64 base, struct err_layout *l, struct err_vals *e)
{
	__u64 w = 0;
	if (l->word < 0 || bpf_probe_read_user(&w, sizeof(w), (void *)(base + l->word)))
		return;
	if (l->word_deref >= 0) {
		__u32 u = 0;
		if (bpf_probe_read_user(&u, sizeof(u), (void *)(w + l->word_deref)))
			return;
		w = u;
	}
	e->word = w;
}

// read_error reads the error interface (itab, data) a call returned: its
// type, and for the types in err_layouts what makes up its message.
static __always_inline void read_error(__u64 itab, __u64 data, struct err_vals *e)
{
	e->itab = itab;
	e->type = 0;
	e->hash = 0;
	e->kind = 0;
	e->inner_type = 0;
	e->inner_kind = 0;
	e->word = 0;
	e->len[0] = e->len[1] = e->len[2] = 0;
	if (!itab)
		return;
	__u64 t[3]; // itab: inter, _type, hash
	if (bpf_probe_read_user(t, sizeof(t), (void *)itab))
		return;
	e->type = t[1];
	__u32 h = t[2];
	e->hash = h;
	struct err_layout *l = bpf_map_lookup_elem(&err_layouts, &h);
	if (!l)
		return;
	e->kind = l->kind;
	read_err_str(data, l->str[0], e, 0);
	read_err_str(data, l->str[1], e, 1);
	read_err_word(data, l, e);
	__u64 in[2]; // the wrapped error: itab, data
	if (l->inner < 0 || bpf_probe_read_user(in, sizeof(in), (void *)(data + l->inner)) || !in[0])
		return;
	if (bpf_probe_read_user(t, sizeof(t), (void *)in[0]))
		return;
	e->inner_type = t[1];
	h = t[2];
	l = bpf_map_lookup_elem(&err_layouts, &h);
	if (!l)
		return;
	e->inner_kind = l->kind;
	read_err_str(in[1], l->str[0], e, 2);
	if (!e->word)
		read_err_word(in[1], l, e);
}

// emit_return writes the event of call i of gs, which returned through the
// RET that fired, with its results; the probe has PROBE_RETURNS. Inlined
// in go_return, which has the registers.
static __always_inline void emit_return(struct pt_regs *ctx, struct probe_cfg *cfg, struct gstate *gs, __u32 i, __u64 now, __u32 tgid)
{
	struct frame *f = &gs->frames[i & (MAX_FRAMES - 1)];
	struct counters *c = counters_of(f->probe_id);
	__u64 id = f->id;
	struct event_returns *er = bpf_ringbuf_reserve(&events, sizeof(*er), 0);
	if (!er) {
		if (f->captured)
			bpf_map_delete_elem(&captures, &id);
		COUNT(c, dropped);
		return;
	}
	fill(&er->e, gs, i, EVENT_RETURN, now, tgid);
	er->v.ok = 0;
	if (f->captured) {
		struct capture_vals *v = bpf_map_lookup_elem(&captures, &id);
		if (v)
			__builtin_memcpy(&er->v, v, sizeof(er->v));
		bpf_map_delete_elem(&captures, &id);
	}
	struct ret_vals *r = &er->r;
	// Results are in the argument registers, in the same order. Copied
	// into the event, not onto the BPF stack.
	go_args(ctx, r->regs);
	r->err.itab = 0;
	if (cfg->flags & PROBE_ERROR)
		read_error(r->regs[cfg->err_reg & 15], r->regs[(cfg->err_reg + 1) & 15], &r->err);
	bpf_ringbuf_submit(er, wakeup_flags(now));
	COUNT(c, emitted);
}

// capture reads the probe's values at the entry of call id into v, then
// keeps them under id.
static __always_inline int capture(struct pt_regs *ctx, struct probe_cfg *cfg, struct capture_vals *v, __u64 id)
{
	__u64 args[16];
	go_args(ctx, args);
	v->ok = 0;
#pragma unroll
	for (__u32 i = 0; i < MAX_CAPTURES; i++) {
		v->len[i] = 0;
		if (i < cfg->ncaptures && !(cfg->captures[i].flags & CAPTURE_AT_RETURN))
			read_capture(args, &cfg->captures[i], v, i);
	}
	return bpf_map_update_elem(&captures, &id, v, BPF_ANY) == 0;
}

// breaker reports whether the probe's entry must do nothing but count: its
// breaker has tripped, or trips now. The trap of a hit cannot be avoided
// while the probe is attached, only the work after it; so the first CPU to
// trip it wakes the reader at once, and user space detaches the probe in
// milliseconds rather than at its next reading of the counters.
static __always_inline int breaker(struct probe_cfg *cfg, __u32 probe_id, struct counters *c)
{
	__u32 *t = bpf_map_lookup_elem(&tripped_gens, &probe_id);
	struct burst *b = bpf_map_lookup_elem(&bursts, &probe_id);
	if (!t || !b)
		return 0;
	__u32 gen = cfg->gen + 1;
	if (*t == gen) {
		INC(c, shed);
		return 1;
	}
	__u64 now = bpf_ktime_get_ns();
	if (now - b->start_ns >= breaker_window_ns) {
		b->start_ns = now;
		b->hits = 0;
	}
	if (++b->hits <= cfg->burst_limit)
		return 0;
	// Two CPUs may trip it at once: both report, which is harmless.
	*t = gen;
	INC(c, tripped);
	INC(c, shed);
	struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 1; // the counter tells the reader at its next reading
	__builtin_memset(e, 0, sizeof(*e));
	e->probe_id = probe_id;
	e->stack_id = -1;
	e->kind = EVENT_TRIPPED;
	e->end_ns = now;
	e->tgid = bpf_get_current_pid_tgid() >> 32;
	bpf_ringbuf_submit(e, BPF_RB_FORCE_WAKEUP);
	return 1;
}

SEC("uprobe")
int go_entry(struct pt_regs *ctx)
{
	__u32 probe_id;
	if (probe_id_of(ctx, &probe_id))
		return 0;
	struct probe_cfg *cfg = bpf_map_lookup_elem(&probe_cfgs, &probe_id);
	struct counters *c = counters_of(probe_id);
	if (!cfg || !c)
		return 0;
	INC(c, hits);
	if (cfg->burst_limit && breaker(cfg, probe_id, c))
		return 0;

	if (cfg->flags & PROBE_ENTRY_ONLY) {
		struct entry_key k = {.probe_id = probe_id, .stack_id = -1};
		if (capture_stacks) {
			struct scratch *s = claim();
			if (s) {
				k.stack_id = stack_id(ctx, &s->st, GO_RETURN_ADDRESS(ctx), cfg->flags & PROBE_ENTRY_PUSHES_BP);
				release(s);
				if (k.stack_id < 0)
					INC(c, unstacked);
			} else
				INC(c, contended);
		}
		__u64 *cnt = bpf_map_lookup_elem(&entry_counts, &k);
		if (!cnt) {
			// Another CPU may insert the same stack meanwhile: insert
			// zero if absent, then add to whichever entry is there.
			__u64 zero = 0;
			bpf_map_update_elem(&entry_counts, &k, &zero, BPF_NOEXIST);
			cnt = bpf_map_lookup_elem(&entry_counts, &k);
		}
		if (cnt)
			__sync_fetch_and_add(cnt, 1);
		else
			INC(c, untracked); // table full
		return 0;
	}

	// An unsampled call is not tracked, but still clears what a panic left
	// at its depth: otherwise its RET could be paired with that frame.
	int sampled = cfg->sample_every <= 1 || bpf_get_prandom_u32() % cfg->sample_every == 0;

	struct where w;
	if (locate(ctx, &w)) {
		INC(c, untracked);
		return 0;
	}
	__u64 now = bpf_ktime_get_ns();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	__u64 goid = w.g;
	if (goid_offset)
		bpf_probe_read_user(&goid, sizeof(goid), (void *)(w.g + goid_offset));

	struct gkey key = {.g = w.g, .tgid = tgid};
	struct gstate *gs = bpf_map_lookup_elem(&gstates, &key);
	if (!gs && !sampled) {
		INC(c, skipped);
		return 0;
	}
	if (!gs) {
		__u32 zero = 0;
		struct gstate *z = bpf_map_lookup_elem(&gstate_zero, &zero);
		if (!z)
			return 0;
		bpf_map_update_elem(&gstates, &key, z, BPF_NOEXIST);
		gs = bpf_map_lookup_elem(&gstates, &key);
		if (!gs) {
			INC(c, untracked);
			return 0;
		}
		gs->goid = goid;
	}

	if (gs->goid != goid) {
		// The g was reused by a new goroutine: the old one's frames
		// ended with it.
		unwind(GS_REF(gs, w.g), 0, now, tgid);
		gs->goid = goid;
		gs->over.depth = 0;
	}
	unwind(GS_REF(gs, w.g), w.depth, now, tgid);

	__u32 n = gs->n;
	if (n > 0 && n <= MAX_FRAMES) {
		struct frame *top = &gs->frames[(n - 1) & (MAX_FRAMES - 1)];
		if (top->depth == w.depth) {
			// Same goroutine, same depth. Either the prologue called
			// morestack and jumped back to the entry (one call, keep
			// the first entry), or the frame is what a panic or Goexit
			// left behind and this is a new call.
			if (top->probe_id == probe_id && top->panics == gs->panics && top->gen == cfg->gen) {
				INC(c, reentered);
				return 0;
			}
			emit(GS_REF(gs, w.g), n - 1, EVENT_SUPERSEDED, now, tgid);
			n--;
			gs->n = n;
		}
	}
	if (!sampled) {
		INC(c, skipped);
		return 0;
	}
	drop_dead(GS_REF(gs, w.g), w.hi, now, tgid);
	n = gs->n;
	if (n >= MAX_FRAMES) {
		struct overflow *o = &gs->over;
		if (o->depth == w.depth && o->probe_id == probe_id && o->panics == gs->panics) {
			INC(c, reentered);
			return 0;
		}
		o->depth = w.depth;
		o->probe_id = probe_id;
		o->panics = gs->panics;
		INC(c, untracked);
		return 0;
	}

	struct frame *f = &gs->frames[n & (MAX_FRAMES - 1)];
	f->id = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
	f->start_ns = now;
	f->depth = w.depth;
	f->caller = GO_RETURN_ADDRESS(ctx);
	f->probe_id = probe_id;
	f->stack_id = -1;
	f->panics = gs->panics;
	f->gen = cfg->gen;
	f->captured = 0;
	if (capture_stacks || (cfg->flags & PROBE_ENTRY_CAPTURES)) {
		struct scratch *s = claim();
		if (s) {
			if (capture_stacks) {
				f->stack_id = stack_id(ctx, &s->st, f->caller, cfg->flags & PROBE_ENTRY_PUSHES_BP);
				if (f->stack_id < 0)
					INC(c, unstacked);
			}
			if (cfg->flags & PROBE_ENTRY_CAPTURES)
				f->captured = capture(ctx, cfg, &s->v, f->id);
			release(s);
		} else
			INC(c, contended);
	}
	gs->n = n + 1;
	if (cfg->flags & PROBE_ANNOUNCE)
		announce(gs, n, w.g, tgid);
	return 0;
}

SEC("uprobe")
int go_return(struct pt_regs *ctx)
{
	__u32 probe_id;
	if (probe_id_of(ctx, &probe_id))
		return 0;
	struct where w;
	if (locate(ctx, &w))
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct gkey key = {.g = w.g, .tgid = tgid};
	struct gstate *gs = bpf_map_lookup_elem(&gstates, &key);
	if (!gs)
		return 0; // not sampled, or entered before the probes were attached

	__u64 now = bpf_ktime_get_ns();
	if (goid_offset) {
		// The frames may be those of a goroutine that ended without
		// their RETs (Goexit) while the entry probes were off, so no
		// entry saw its g reused: they are not this goroutine's.
		__u64 goid = 0;
		if (!bpf_probe_read_user(&goid, sizeof(goid), (void *)(w.g + goid_offset)) && goid != gs->goid) {
			unwind(GS_REF(gs, w.g), 0, now, tgid);
			bpf_map_delete_elem(&gstates, &key);
			return 0;
		}
	}
	unwind(GS_REF(gs, w.g), w.depth, now, tgid);

	__u32 n = gs->n;
	if (n > 0 && n <= MAX_FRAMES) {
		__u32 i = (n - 1) & (MAX_FRAMES - 1);
		struct frame *top = &gs->frames[i];
		struct probe_cfg *cfg = bpf_map_lookup_elem(&probe_cfgs, &probe_id);
		if (cfg && top->depth == w.depth && top->probe_id == probe_id && top->gen != cfg->gen) {
			// Entered before the probe was detached and attached again:
			// this RET ends a later call, whose entry was not sampled.
			emit(GS_REF(gs, w.g), i, EVENT_SUPERSEDED, now, tgid);
			n--;
			gs->n = n;
		} else if (top->depth == w.depth && top->probe_id == probe_id) {
			struct counters *c = counters_of(probe_id);
			COUNT(c, returns);
			if (cfg && now - top->start_ns < cfg->min_duration_ns) {
				COUNT(c, filtered);
				if (top->captured)
					bpf_map_delete_elem(&captures, &top->id);
			} else if (cfg && (cfg->flags & PROBE_RETURNS))
				emit_return(ctx, cfg, gs, i, now, tgid);
			else
				emit(GS_REF(gs, w.g), i, EVENT_RETURN, now, tgid);
			n--;
			gs->n = n;
		} else if (gs->over.depth == w.depth)
			gs->over.depth = 0; // the call beyond MAX_FRAMES returned
	}
	if (n == 0)
		bpf_map_delete_elem(&gstates, &key);
	return 0;
}

// go_panic is attached to runtime.gopanic and runtime.Goexit: after them the
// goroutine may unwind traced frames without a RET, and a later call at the
// same depth must not be mistaken for a re-entry after morestack.
SEC("uprobe")
int go_panic(struct pt_regs *ctx)
{
	struct gkey key = {.g = GO_G(ctx), .tgid = bpf_get_current_pid_tgid() >> 32};
	struct gstate *gs = bpf_map_lookup_elem(&gstates, &key);
	if (gs)
		__sync_fetch_and_add(&gs->panics, 1);
	return 0;
}

char __license[] SEC("license") = "Dual BSD/GPL";
