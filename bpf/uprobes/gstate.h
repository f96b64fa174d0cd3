// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The goroutine table: the traced calls in flight per goroutine. The uprobe
// programs keep it; the syscall programs (bpf/syscalls) read it, the loader
// giving them the uprobes' map in place of their own, to find the call a
// goroutine's system call belongs to. Include after bpf_helpers.h.

#pragma once

#define MAX_FRAMES 64 // in-flight traced calls per goroutine; a power of two

struct frame {
	__u64 id;
	__u64 start_ns;
	__u64 depth;
	__u64 caller; // return address at entry
	__u32 probe_id;
	__s32 stack_id;
	__u32 panics; // value of gstate.panics when the frame was pushed
	__u32 captured; // values are in the captures map under id
	__u32 gen;    // probe_cfg.gen when the frame was pushed
	__u32 _pad;
};

// The call beyond MAX_FRAMES entered last, until its RET: its entry fires
// again when its prologue calls morestack, and must not count twice.
struct overflow {
	__u64 depth; // 0: none
	__u32 probe_id;
	__u32 panics;
};

struct gstate {
	__u64 goid;
	__u32 n;      // frames in use
	__u32 panics; // runtime.gopanic and runtime.Goexit calls seen on this goroutine
	struct overflow over;
	struct frame frames[MAX_FRAMES];
};

struct gkey {
	__u64 g;
	__u32 tgid;
	__u32 _pad;
};

// The table: goroutines with traced calls in flight. Not an LRU: an
// eviction would lose frames silently, a full table is counted instead
// (untracked). An entry
// lives while its goroutine has a traced call in flight, so each call of a
// hot function inserts and deletes one. Preallocated, about 3.6 KiB each
// (15 MiB): an allocation at run time can fail on a busy CPU (on Linux 6.x
// the allocator's per-CPU cache is refilled asynchronously), which lost one
// call in a million here, and Linux 5.10 warns at load (kernel WARNING, a
// panic with panic_on_warn) about a tracing program using a map that
// allocates.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct gkey);
	__type(value, struct gstate);
} gstates SEC(".maps");
