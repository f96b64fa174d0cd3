// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// The goroutine table: the traced calls in flight per goroutine. The uprobe
// programs keep it; the syscall programs (bpf/syscalls) read it, through the
// same map, to find the call a goroutine's system call belongs to.

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
